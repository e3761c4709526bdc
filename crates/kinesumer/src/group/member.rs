//! The coordinator: one task per member that registers, follows the leader lock, leads
//! when it holds it, and follows its plan by starting and stopping shard tasks
//! (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

use super::heartbeat::{self, Beat, Stop};
use super::leader::{Leader, TickError};
use super::tasks::{ShardTasks, Starter};
use super::Ctx;
use crate::checkpoint::{flush_pending, PendingMark};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::fence::Fence;
use crate::metrics::RebalanceTimer;
use crate::store::{
    LockItem, Operation, Owner, PlanItem, PlannedShard, Registration, ShardRef, StoreError,
};

/// What the public handle asks of the coordinator.
#[derive(Debug)]
pub(crate) enum Command {
    Refresh(Vec<String>, oneshot::Sender<Result<()>>),
    Commit(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<()>),
}

/// What the public handle can read of the member at any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) token: String,
    pub(crate) held: BTreeSet<ShardRef>,
    pub(crate) leader_term: Option<u64>,
    pub(crate) running: bool,
}

/// Fences within [`REPEATED_FENCE_WINDOW`] (or ten failover timeouts, if longer) that make
/// a [`Error::RepeatedFencing`].
const REPEATED_FENCES: usize = 3;
const REPEATED_FENCE_WINDOW: Duration = Duration::from_secs(60);

fn new_token() -> String {
    format!("{:016x}", crate::random::u64())
}

/// How many times a start retries a registration that failed for a transient reason
/// (a slow or throttled request): the put is unconditional, so a retry is safe.
const REGISTER_ATTEMPTS: u32 = 5;

/// Registers a new incarnation, with its capacity and limits when it has them (so the
/// leader never plans past a limit it has not heard yet); returns when (fencing clock)
/// the request that landed was sent.
async fn register(ctx: &Ctx, client_id: &str, token: &str, streams: &[String]) -> Result<Duration> {
    let report = ctx.load_report();
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(50), ctx.cfg.sync_interval);
    let mut attempt = 1;
    loop {
        let sent = ctx.clock.fencing_now();
        let request = ctx.store.register(
            client_id,
            token,
            streams,
            &Registration::Start,
            report.as_ref(),
        );
        match ctx.timed(Operation::Register, request).await {
            Ok(()) => return Ok(sent),
            Err(e) if e.is_retryable() && attempt < REGISTER_ATTEMPTS => {
                debug!(error = %e, attempt, "registration failed; retrying");
                attempt += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts the heartbeat task of incarnation `me`, logging in `span` (the member's).
fn spawn_heartbeat(
    ctx: &Arc<Ctx>,
    me: &Owner,
    fence: &Arc<Fence>,
    beat: &Arc<Beat>,
    span: tracing::Span,
) -> AbortOnDropHandle<Stop> {
    let run = heartbeat::run(ctx.clone(), me.clone(), fence.clone(), beat.clone());
    AbortOnDropHandle::new(ctx.tasks.spawn(run.instrument(span)))
}

/// The coordinator of one member.
#[derive(Debug)]
pub(crate) struct Coordinator {
    ctx: Arc<Ctx>,
    me: Owner,
    /// This process's previous incarnation after a fence: its readers have stopped, so
    /// the leases it names are this incarnation's to take back at once.
    predecessor: Option<Owner>,
    fence: Arc<Fence>,
    beat: Arc<Beat>,
    heartbeat: AbortOnDropHandle<Stop>,
    shards: ShardTasks,
    leader: Option<Leader>,
    lock: LockWatch,
    cmds: mpsc::Receiver<Command>,
    /// Commands received during a rejoin, handled once it is done.
    deferred: VecDeque<Command>,
    status: Arc<watch::Sender<Status>>,
    pending: PendingMark,
    /// The shards of the plan last followed; `None` before the first, and after fencing.
    planned: Option<BTreeSet<ShardRef>>,
    rebalance: RebalanceTimer,
    /// When (fencing clock) this member fenced itself recently.
    fences: VecDeque<Duration>,
    /// Set when the coordinator ends (closed or superseded), to what it ends with: the
    /// close's result, or why it stopped for good.
    ended: Option<Result<()>>,
}

/// What a follower knows of the leader lock.
#[derive(Debug, Default)]
struct LockWatch {
    /// The lock as last seen, and when (fencing clock) it was first seen so.
    seen: Option<(LockItem, Duration)>,
    /// The last lock take: when it was sent and whom it took the lock from.
    take_sent: Option<(Duration, Option<Owner>)>,
}

impl Coordinator {
    /// Registers this process as a new incarnation and starts the coordinator.
    ///
    /// # Errors
    ///
    /// The registration's error (a missing table, an unreachable endpoint).
    pub(crate) async fn start(
        ctx: Arc<Ctx>,
        client_id: String,
        streams: Vec<String>,
        cmds: mpsc::Receiver<Command>,
        status: Arc<watch::Sender<Status>>,
        pending: PendingMark,
    ) -> Result<JoinHandle<Result<()>>> {
        // Everything this member logs carries its application and client id; shard tasks
        // add the stream and shard.
        let span = tracing::info_span!("member", app = %ctx.cfg.app, member = %client_id);
        let token = new_token();
        let sent = register(&ctx, &client_id, &token, &streams)
            .instrument(span.clone())
            .await?;
        let me = Owner { client_id, token };
        let fence = Arc::new(Fence::new(
            ctx.clock.clone(),
            ctx.cfg.fence_deadline(),
            sent,
        ));
        let beat = Arc::new(Beat::new(streams));
        let heartbeat = spawn_heartbeat(&ctx, &me, &fence, &beat, span.clone());
        span.in_scope(|| {
            ctx.signals.event(Event::Joined {
                client_id: me.client_id.clone(),
            });
            info!(incarnation = %me.token, "joined the group");
        });
        let mut coordinator = Coordinator {
            ctx,
            me,
            predecessor: None,
            fence,
            beat,
            heartbeat,
            shards: ShardTasks::default(),
            leader: None,
            lock: LockWatch::default(),
            cmds,
            deferred: VecDeque::new(),
            status,
            pending,
            planned: None,
            rebalance: RebalanceTimer::default(),
            fences: VecDeque::new(),
            ended: None,
        };
        coordinator.publish();
        let tasks = coordinator.ctx.tasks.clone();
        Ok(tasks.spawn(coordinator.run().instrument(span)))
    }

    async fn run(mut self) -> Result<()> {
        let mut next_tick = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                stop = &mut self.heartbeat => {
                    let stop = stop.unwrap_or(Stop::Fenced);
                    match stop {
                        Stop::Superseded => self.superseded().await,
                        Stop::Fenced => self.fence_and_rejoin("heartbeats failed past the fence deadline").await,
                        Stop::Missing => self.fence_and_rejoin("the member item is gone").await,
                        Stop::LockLost => self.fence_and_rejoin("another member took the leader lock").await,
                    }
                }
                (key, end) = self.shards.next_end() => self.shards.ended(key, end, self.fence.now()),
                cmd = self.cmds.recv() => self.on_command(cmd).await,
                _ = tokio::time::sleep_until(next_tick) => {
                    self.tick().await;
                    // Fixed rate: the tick's own requests do not stretch the period.
                    next_tick = (next_tick + self.ctx.jittered_interval())
                        .max(tokio::time::Instant::now());
                }
            }
            self.publish();
            while self.ended.is_none() {
                let Some(cmd) = self.deferred.pop_front() else {
                    break;
                };
                self.on_command(Some(cmd)).await;
                self.publish();
            }
            if let Some(ended) = self.ended.take() {
                return ended;
            }
        }
    }

    /// A command of the public handle; `None`: the handle is gone.
    async fn on_command(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(Command::Refresh(streams, ack)) => {
                let _ = ack.send(self.refresh(streams).await);
            }
            Some(Command::Commit(ack)) => self.shards.commit(ack, self.ctx.cfg.commit_timeout),
            Some(Command::Close(ack)) => {
                self.close().await;
                let _ = ack.send(());
            }
            None => self.close().await,
        }
    }

    /// Publishes the status and the member's metrics, and times a rebalance: settled once
    /// every shard task runs a held lease of the plan and nothing else.
    fn publish(&mut self) {
        let held = self.shards.held();
        let leader = self.leader.is_some();
        crate::metrics::member(&self.ctx.cfg.app, held.len(), leader);
        if let Some(planned) = &self.planned {
            let settled = held.len() == self.shards.len() && &held == planned;
            if let Some(took) =
                self.rebalance
                    .observe(&self.ctx.cfg.app, settled, self.ctx.clock.fencing_now())
            {
                info!(?took, shards = held.len(), "holding the planned shards");
            }
        }
        let status = Status {
            token: self.me.token.clone(),
            held,
            leader_term: self.leader.as_ref().map(|l| l.term),
            running: self.ended.is_none(),
        };
        self.status.send_if_modified(|now| {
            let changed = *now != status;
            *now = status;
            changed
        });
    }

    /// One tick (DESIGN §3 steps 2–4, and 6–10 for the leader).
    async fn tick(&mut self) {
        if !self.fence.check() {
            return;
        }
        let read = self
            .ctx
            .timed(
                Operation::ReadLockAndPlan,
                self.ctx.store.read_lock_and_plan(&self.me.client_id),
            )
            .await;
        let (lock, plan) = match read {
            Ok(read) => read,
            Err(e) => {
                debug!(error = %e, "lock and plan read failed; skipping this tick");
                return;
            }
        };
        if !self.update_lock(lock.as_ref()).await {
            return;
        }
        let term = match (&self.leader, &lock) {
            (Some(l), _) => l.term,
            (None, Some(l)) => l.term,
            (None, None) => return,
        };
        let plan = match self.leader.as_mut() {
            None => plan,
            Some(leader) => match leader.tick(&self.ctx, &self.fence).await {
                Ok(plans) => plans.get(&self.me.client_id).cloned(),
                Err(TickError::Deposed) => {
                    self.fence_and_rejoin("a newer leader term refused this leader's plan")
                        .await;
                    return;
                }
                // The heartbeat task reports the fence and the member rejoins.
                Err(TickError::Fenced) => return,
                Err(TickError::Store(e)) => {
                    debug!(error = %e, "leader read failed; following the stored plan");
                    plan
                }
            },
        };
        self.follow(plan, term);
    }

    /// Steps 3 and 6: recognises its own lock (even after a lost response), notices a
    /// lost one, and takes an expired or free one. Returns false when it fenced.
    async fn update_lock(&mut self, lock: Option<&LockItem>) -> bool {
        let now = self.fence.now();
        if let Some(l) = lock.filter(|l| l.owner.as_ref() == Some(&self.me)) {
            if self.leader.as_ref().map(|x| x.term) != Some(l.term) {
                // A take that landed with its response lost (scenario 17): the renewal
                // age counts from that take's send time.
                let (sent, deposed) = self.lock.take_sent.clone().unwrap_or((now, None));
                self.fence.renewal_ok(sent);
                self.become_leader(l.term, deposed, sent);
            }
            return true;
        }
        if let Some(leader) = &self.leader {
            let reason = format!("lost the leader lock of term {}", leader.term);
            self.fence_and_rejoin(&reason).await;
            return false;
        }
        let seen = lock.cloned().unwrap_or_default();
        if self.lock.seen.as_ref().is_none_or(|(w, _)| w != &seen) {
            self.lock.seen = Some((seen.clone(), now));
        }
        let since = self.lock.seen.as_ref().map_or(now, |(_, s)| *s);
        if seen.owner.is_some() && now.saturating_sub(since) < self.ctx.cfg.failover_timeout {
            return true;
        }
        if !self.fence.check() {
            return true;
        }
        self.lock.take_sent = Some((now, seen.owner.clone()));
        let take = self.ctx.store.take_lock(&self.me, lock);
        match self.ctx.timed(Operation::TakeLock, take).await {
            Ok(new) => {
                self.fence.renewal_ok(now);
                self.become_leader(new.term, seen.owner, now);
            }
            Err(e) => debug!(error = %e, "lock take failed"),
        }
        true
    }

    fn become_leader(&mut self, term: u64, deposed: Option<Owner>, since: Duration) {
        info!(term, "became the leader");
        self.leader = Some(Leader::new(term, since, deposed));
        self.beat.set_leading(Some(term));
        self.lock.seen = None;
        self.ctx.signals.event(Event::LeaderGained { term });
    }

    /// Step 4: follows a current plan; keeps what it holds without one.
    fn follow(&mut self, plan: Option<PlanItem>, term: u64) {
        let Some(plan) = plan.filter(|p| p.term == term && p.token == self.me.token) else {
            return;
        };
        let confirmed = self.beat.confirmed();
        let allowed: BTreeSet<String> = self
            .beat
            .advertised()
            .into_iter()
            .filter(|s| confirmed.contains(s))
            .collect();
        let desired: BTreeMap<ShardRef, PlannedShard> = plan
            .streams
            .iter()
            .filter(|(stream, _)| allowed.contains(*stream))
            .flat_map(|(stream, shards)| {
                shards.iter().map(move |p| {
                    let key = ShardRef {
                        stream: stream.clone(),
                        shard_id: p.shard_id.clone(),
                    };
                    (key, p.clone())
                })
            })
            .collect();
        self.planned = Some(desired.keys().cloned().collect());
        let starter = Starter {
            ctx: &self.ctx,
            me: &self.me,
            fence: &self.fence,
            predecessor: self.predecessor.as_ref(),
        };
        self.shards.follow(&starter, desired, &plan.release);
    }

    /// `refresh(streams)`: releases the leases of dropped streams before the next
    /// heartbeat advertises the new set; shards of added streams are taken only after a
    /// heartbeat advertising them succeeded (DESIGN §3, scenarios 9 and 21).
    async fn refresh(&mut self, streams: Vec<String>) -> Result<()> {
        let keep: BTreeSet<&String> = streams.iter().collect();
        let dropped: Vec<ShardRef> = self
            .shards
            .keys()
            .into_iter()
            .filter(|k| !keep.contains(&k.stream))
            .collect();
        let _ = self.release_and_wait(&dropped).await;
        self.beat.set_advertised(streams);
        Ok(())
    }

    /// Releases the given shards, waiting for at most the time a release can take;
    /// the shards stopped because they did not release in time.
    async fn release_and_wait(&mut self, keys: &[ShardRef]) -> Vec<ShardRef> {
        let cfg = &self.ctx.cfg;
        let limit = cfg.handoff_timeout + cfg.commit_timeout + cfg.request_timeout * 8;
        self.shards.release_and_wait(keys, limit, &self.fence).await
    }

    fn drop_leadership(&mut self) {
        if let Some(leader) = self.leader.take() {
            self.ctx
                .signals
                .event(Event::LeaderLost { term: leader.term });
        }
        self.beat.set_leading(None);
        self.fence.not_leader();
    }

    /// Step 5: stop every reader, commit what the application processed, and rejoin as a
    /// new incarnation.
    async fn fence_and_rejoin(&mut self, reason: &str) {
        warn!(reason, "fenced: stopping every reader and rejoining");
        self.fence.trip();
        self.heartbeat.abort();
        self.shards.stop_all().await;
        self.drop_leadership();
        self.lock.seen = None;
        self.planned = None;
        self.rebalance.reset();
        self.ctx.signals.event(Event::Fenced {
            reason: reason.to_owned(),
        });
        self.count_fence();
        let old_token = self.me.token.clone();
        let token = new_token();
        let streams = self.beat.advertised();
        let how = Registration::Rejoin { old_token };
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), self.ctx.cfg.failover_timeout);
        let sent = loop {
            let sent = self.ctx.clock.fencing_now();
            let register =
                self.ctx
                    .store
                    .register(&self.me.client_id, &token, &streams, &how, None);
            // A retry after a lost response finds its own new token and succeeds
            // (scenario 23); another token means a newer process runs under this id.
            match self.ctx.timed(Operation::Register, register).await {
                Ok(()) => break sent,
                Err(StoreError::ConditionFailed { .. }) => return self.superseded().await,
                Err(e) => {
                    debug!(error = %e, "rejoin failed; retrying");
                    // A close does not wait for the store: this incarnation is fenced
                    // and holds nothing, so closing it needs no request to succeed.
                    tokio::select! {
                        biased;
                        cmd = self.cmds.recv() => match cmd {
                            Some(Command::Refresh(..) | Command::Commit(_)) => {
                                self.deferred.extend(cmd);
                            }
                            close => return self.on_command(close).await,
                        },
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        self.predecessor = Some(Owner {
            client_id: self.me.client_id.clone(),
            token: std::mem::replace(&mut self.me.token, token),
        });
        self.fence = Arc::new(Fence::new(
            self.ctx.clock.clone(),
            self.ctx.cfg.fence_deadline(),
            sent,
        ));
        self.beat.registered(&streams);
        self.heartbeat = spawn_heartbeat(
            &self.ctx,
            &self.me,
            &self.fence,
            &self.beat,
            tracing::Span::current(),
        );
        info!(incarnation = %self.me.token, "rejoined as a new incarnation");
        self.ctx.signals.event(Event::Joined {
            client_id: self.me.client_id.clone(),
        });
    }

    /// Notes a fence; the third within the window is reported as its own error, with the
    /// heartbeats' durations and what to change, so a member that keeps fencing (a state
    /// store too slow for its timeouts) does not just cycle quietly.
    fn count_fence(&mut self) {
        let now = self.ctx.clock.fencing_now();
        let window = REPEATED_FENCE_WINDOW.max(self.ctx.cfg.failover_timeout * 10);
        self.fences.retain(|at| now.saturating_sub(*at) < window);
        self.fences.push_back(now);
        if self.fences.len() < REPEATED_FENCES {
            return;
        }
        let beats = self.beat.latency();
        crate::metrics::repeated_fencing(&self.ctx.cfg.app);
        self.ctx.signals.error(Error::RepeatedFencing {
            fences: self.fences.len(),
            window,
            median: beats.median,
            max: beats.max,
            timed_out: beats.timed_out,
            heartbeats: beats.of,
            request_timeout: self.ctx.cfg.request_timeout,
        });
    }

    /// Another process runs under this client id: stop for good (scenario 7).
    async fn superseded(&mut self) {
        warn!("another process registered under this client id; stopping for good");
        self.fence.trip();
        self.heartbeat.abort();
        self.shards.stop_all().await;
        self.drop_leadership();
        self.ctx.signals.event(Event::Superseded);
        let error = Error::Superseded {
            client_id: self.me.client_id.clone(),
        };
        self.ctx.signals.error(error.clone());
        self.ended = Some(Err(error));
    }

    /// Graceful close: stop readers, commit, release every lease and the lock, leave.
    /// Its outcome lists what did not finish: the final commits and releases that failed
    /// (as the shard tasks reported them), the shards that did not release in time, and
    /// a failed lock release or leave.
    async fn close(&mut self) {
        // Subscribed before the shards are told to release, so no report of theirs is
        // missed.
        let mut reports = self.ctx.signals.errors.subscribe();
        flush_pending(&self.pending);
        let keys = self.shards.keys();
        let stuck = self.release_and_wait(&keys).await;
        let mut failures: Vec<Error> = std::iter::from_fn(|| reports.try_recv().ok())
            .filter(|e| matches!(e, Error::CommitFailed { .. } | Error::LeaseLost { .. }))
            .collect();
        failures.extend(stuck.into_iter().map(|key| Error::LeaseLost {
            stream: key.stream,
            shard_id: key.shard_id,
            reason: "not released in time; it moves after the failover timeout".into(),
        }));
        self.heartbeat.abort();
        if let Some(leader) = &self.leader {
            let release = self.ctx.store.release_lock(&self.me, leader.term);
            if let Err(e) = self.ctx.timed(Operation::ReleaseLock, release).await {
                debug!(error = %e, "lock release failed; it expires after the failover timeout");
                failures.push(e.into());
            }
        }
        self.drop_leadership();
        let leave = self.ctx.store.leave(&self.me.client_id, &self.me.token);
        if let Err(e) = self.ctx.timed(Operation::Leave, leave).await {
            debug!(error = %e, "leave failed; the leader will judge this member gone");
            failures.push(e.into());
        }
        self.fence.trip();
        if failures.is_empty() {
            info!("left the group");
            self.ended = Some(Ok(()));
        } else {
            info!("left the group, not cleanly");
            self.ended = Some(Err(Error::CloseIncomplete { failures }));
        }
    }
}
