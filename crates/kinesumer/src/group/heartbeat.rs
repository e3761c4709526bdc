//! The heartbeat task (DESIGN §3 steps 1, 5, 6): on its own timer, never queued behind
//! other work of the tick, it beats and — for the lock holder — renews the lock,
//! concurrently, each retried at once when it fails or times out. Before each send it
//! checks the fence; a member whose fence has tripped stops beating and reports.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::Ctx;
use crate::fence::Fence;
use crate::store::{HeartbeatOutcome, Operation, Owner, StoreError};

/// Why the heartbeat task stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The fence tripped: stop every reader and rejoin as a new incarnation.
    Fenced,
    /// The member item is gone (pruned after a long pause): stop readers and rejoin.
    Missing,
    /// Another process runs under this client id: stop for good.
    Superseded,
    /// Another member holds the lock: this one was judged gone; stop readers and rejoin.
    LockLost,
}

/// What the heartbeat task shares with the coordinator.
#[derive(Debug)]
pub(crate) struct Beat {
    /// The streams the next heartbeat advertises (the coordinator's to set).
    advertised: watch::Sender<Vec<String>>,
    /// The streams of the last heartbeat that succeeded: shards of a stream are taken
    /// only once the leader can have seen this member consume it (scenario 21).
    confirmed: watch::Sender<BTreeSet<String>>,
    /// The lock term this member holds, if it leads (the coordinator's to set).
    leading: watch::Sender<Option<u64>>,
    /// How long the recent heartbeats took (a timed-out one counts as the timeout), and
    /// whether each timed out.
    latencies: Mutex<VecDeque<(Duration, bool)>>,
}

/// How many recent heartbeat durations are kept to explain repeated fencing.
const LATENCIES_KEPT: usize = 32;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Beat {
    /// A beat of a member that joined advertising `streams`, confirmed by its
    /// registration.
    pub(crate) fn new(streams: Vec<String>) -> Self {
        Self {
            confirmed: watch::Sender::new(streams.iter().cloned().collect()),
            advertised: watch::Sender::new(streams),
            leading: watch::Sender::default(),
            latencies: Mutex::default(),
        }
    }

    /// A registration (a rejoin) advertised `streams`: they count as confirmed.
    pub(crate) fn registered(&self, streams: &[String]) {
        self.confirmed
            .send_replace(streams.iter().cloned().collect());
    }

    pub(crate) fn advertised(&self) -> Vec<String> {
        self.advertised.borrow().clone()
    }

    pub(crate) fn set_advertised(&self, streams: Vec<String>) {
        self.advertised.send_replace(streams);
    }

    pub(crate) fn confirmed(&self) -> BTreeSet<String> {
        self.confirmed.borrow().clone()
    }

    pub(crate) fn leading(&self) -> Option<u64> {
        *self.leading.borrow()
    }

    pub(crate) fn set_leading(&self, term: Option<u64>) {
        self.leading.send_replace(term);
    }

    fn record_latency(&self, took: Duration, timed_out: bool) {
        let mut l = lock(&self.latencies);
        if l.len() == LATENCIES_KEPT {
            l.pop_front();
        }
        l.push_back((took, timed_out));
    }

    /// The recent heartbeats: their median and longest durations, and how many of how
    /// many timed out.
    pub(crate) fn latency(&self) -> HeartbeatStats {
        let kept = lock(&self.latencies);
        let mut l: Vec<Duration> = kept.iter().map(|(d, _)| *d).collect();
        l.sort();
        HeartbeatStats {
            median: l.get(l.len() / 2).copied().unwrap_or_default(),
            max: l.last().copied().unwrap_or_default(),
            timed_out: kept.iter().filter(|(_, t)| *t).count(),
            of: kept.len(),
        }
    }
}

/// What the recent heartbeats took ([`Beat::latency`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeartbeatStats {
    pub(crate) median: Duration,
    pub(crate) max: Duration,
    pub(crate) timed_out: usize,
    pub(crate) of: usize,
}

/// A short pause before retrying a failed request, so a refused connection does not spin
/// (a timed-out request has waited its timeout already).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Runs until the member must stop or rejoin; returns why. The first beat goes at once:
/// a started member's capacity and limits reach the leader only with a heartbeat (its
/// registration does not carry them), and until then it may be planned past its limits.
pub(crate) async fn run(ctx: Arc<Ctx>, me: Owner, fence: Arc<Fence>, beat: Arc<Beat>) -> Stop {
    let mut next = tokio::time::Instant::now();
    loop {
        let (b, r) = tokio::join!(
            heartbeat(&ctx, &me, &fence, &beat),
            renew(&ctx, &me, &fence, &beat)
        );
        if let Err(stop) = b.and(r) {
            return stop;
        }
        // Fixed rate: a slow request does not delay the beats after it.
        next = (next + ctx.jittered_interval()).max(tokio::time::Instant::now());
        tokio::time::sleep_until(next).await;
    }
}

async fn heartbeat(ctx: &Ctx, me: &Owner, fence: &Fence, beat: &Beat) -> Result<(), Stop> {
    loop {
        if !fence.check() {
            return Err(Stop::Fenced);
        }
        let streams = beat.advertised();
        let sent = fence.now();
        let load = ctx.load_report();
        let request = ctx
            .store
            .heartbeat(&me.client_id, &me.token, &streams, load.as_ref());
        let answer = ctx.timed(Operation::Heartbeat, request).await;
        let took = fence.now().saturating_sub(sent);
        crate::metrics::heartbeat(&ctx.cfg.app, took);
        beat.record_latency(took, took >= ctx.cfg.request_timeout);
        match answer {
            Ok(HeartbeatOutcome::Beat(_)) => {
                fence.beat_ok(sent);
                beat.confirmed.send_replace(streams.into_iter().collect());
                return Ok(());
            }
            Ok(HeartbeatOutcome::Superseded(_)) => return Err(Stop::Superseded),
            Ok(HeartbeatOutcome::Missing) => return Err(Stop::Missing),
            Err(e) => retry_pause(&e, "heartbeat").await,
        }
    }
}

async fn renew(ctx: &Ctx, me: &Owner, fence: &Fence, beat: &Beat) -> Result<(), Stop> {
    let Some(term) = beat.leading() else {
        return Ok(());
    };
    loop {
        if !fence.check() {
            return Err(Stop::Fenced);
        }
        let sent = fence.now();
        let request = ctx.store.renew_lock(me, term);
        match ctx.timed(Operation::RenewLock, request).await {
            Ok(()) => {
                fence.renewal_ok(sent);
                return Ok(());
            }
            Err(StoreError::ConditionFailed { .. }) => {
                // Still ours (a lost response of an earlier request) → carry on; taken by
                // another → this member has been judged gone.
                match ctx.timed(Operation::ReadLock, ctx.store.read_lock()).await {
                    Ok(Some(l)) if l.owner.as_ref() == Some(me) && l.term == term => continue,
                    Ok(_) => return Err(Stop::LockLost),
                    Err(e) => retry_pause(&e, "lock read").await,
                }
            }
            Err(e) => retry_pause(&e, "lock renewal").await,
        }
    }
}

async fn retry_pause(e: &StoreError, what: &str) {
    debug!(error = %e, "{what} failed; retrying");
    let pause = if e.is_retryable() {
        RETRY_PAUSE
    } else {
        // Not a transient failure (e.g. the table is gone): retry more slowly.
        RETRY_PAUSE * 5
    };
    tokio::time::sleep(pause).await;
}
