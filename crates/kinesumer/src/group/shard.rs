//! One shard task per shard a member is taking, holding or releasing (DESIGN §3 step 4,
//! §6): one operation per shard at a time.
//!
//! ```text
//! acquire ──▶ hold: reader ─▶ deliver, commit every commit_interval ──▶ release
//!   │             │                                     │
//!   │ live owner: poll lease + own plan (≤ 2 × handoff)  └─ lease lost / fenced: stop at once
//!   └─ not acquired                                        shard end: finish (shard_end)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, JoinMap};
use tracing::{debug, info, warn, Instrument};

use super::Ctx;
use crate::checkpoint::Leaving;
use crate::checkpoint::{CommitEnd, CommitTimer, HeldLease, LeaseCheckpoint, ShardTrack};
use crate::config::ReadMode;
use crate::delivery::{deliver, Delivery, DeliveryEnd};
use crate::error::Error;
use crate::event::Event;
use crate::fence::Fence;
use crate::handler::panic_message;
use crate::processor::Start;
use crate::reader::buffer::{self, BufferTx};
use crate::reader::fanout::{self, FanOutConfig};
use crate::reader::feed::{ReadFrom, ReaderEnd};
use crate::reader::polling::{self, PollingConfig};
use crate::reader::KinesisError;
use crate::seq::Position;
use crate::store::{LeaseItem, LeaseSeen, Operation, Owner, PlannedShard, ShardRef, StoreError};

const COMMIT_REFUSED: &str =
    "a checkpoint write was refused: the lease names another owner, or this member fenced itself";
const LEASE_MOVED: &str = "the lease names another owner";
const PLAN_SHOWS_NEWER: &str = "the leader's plan shows a newer lease of this shard";

/// How often a taker re-reads a lease still held by a live owner (DESIGN §3: 100–200 ms).
const HANDOFF_POLL: Duration = Duration::from_millis(150);
/// How long a shard whose reader failed for good is left before it is taken again.
/// How long a processor may take to hear that its lease was lost (its batch in hand,
/// then `lost`) before its delivery is stopped: the new holder reads meanwhile.
const LOST_GRACE: Duration = Duration::from_secs(1);
pub(crate) const FAILURE_COOLDOWN: Duration = Duration::from_secs(5);

/// What the coordinator asks of a shard task.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// Give the shard up as planned: stop reading, wait for handed-out records, commit,
    /// release.
    Release,
    /// Commit the mark now.
    Commit(oneshot::Sender<Result<(), Error>>),
    /// The leader's plan shows a newer lease than this one: stop at once, write nothing.
    Lost,
    /// The member fenced itself: hand out nothing more, commit what the application has
    /// processed (conditional as always: refused if the lease moved on), stop.
    Fenced,
}

/// The job of a shard task.
#[derive(Debug, Clone)]
pub(crate) enum ShardJob {
    /// Take (or find held) and read a planned shard.
    Take {
        planned: PlannedShard,
        /// Poll a live owner for up to twice `handoff_timeout`; otherwise read once.
        fast_poll: bool,
        /// This process's previous incarnation, which fenced and stopped its readers: a
        /// lease it names is taken at once, without waiting for the leader to judge it.
        predecessor: Option<Owner>,
    },
    /// The plan lists the shard under "release" but this process does not know it holds
    /// it (a take that landed late): release it if the lease still names this member.
    ReleaseOnly,
}

/// How a shard task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not taken: a live owner still holds it, or the plan moved on.
    NotAcquired { polled: bool },
    /// Released as planned (or was not ours to release).
    Released,
    /// The lease names another owner now.
    Lost,
    /// The shard was read to its end and written `shard_end`.
    Finished,
    /// The reader failed for good (stream gone, access denied); released.
    Failed,
    /// Stopped without a write (fenced, superseded, closing without a lease).
    Stopped,
}

/// What the coordinator keeps of a running shard task.
#[derive(Debug)]
pub(crate) struct ShardHandle {
    /// Unbounded: a release or a commit is never dropped (the coordinator must not wait
    /// on a shard task, and each shard gets at most a command per tick and per commit()).
    pub(crate) cmds: mpsc::UnboundedSender<ShardCmd>,
    pub(crate) cancel: CancellationToken,
    /// The lease counter while held; 0 while taking or when not ours.
    pub(crate) counter: Arc<AtomicU64>,
}

impl ShardHandle {
    /// Whether the shard is held (taken) rather than being taken.
    pub(crate) fn held(&self) -> bool {
        self.counter.load(Ordering::Acquire) != 0
    }
}

/// Starts a shard task in `tasks`, under its shard: the map owns it (aborting it when the
/// member drops the map, and its reader and delivery with it) and yields its outcome.
pub(crate) fn spawn(
    ctx: Arc<Ctx>,
    me: Owner,
    fence: Arc<Fence>,
    key: ShardRef,
    job: ShardJob,
    tasks: &mut JoinMap<ShardRef, Outcome>,
) -> ShardHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let counter = Arc::new(AtomicU64::new(0));
    let task = ShardTask {
        ctx,
        me,
        fence,
        key: key.clone(),
        cancel: cancel.clone(),
        counter: counter.clone(),
        cmds: cmd_rx,
    };
    let span = tracing::info_span!("shard", stream = %key.stream, shard = %key.shard_id);
    let tracker = task.ctx.tasks.clone();
    tasks.spawn(
        key,
        tracker
            .track_future(async move {
                let outcome = task.run(job).await;
                debug!(?outcome, "shard task ended");
                outcome
            })
            .instrument(span),
    );
    ShardHandle {
        cmds: cmd_tx,
        cancel,
        counter,
    }
}

struct ShardTask {
    ctx: Arc<Ctx>,
    me: Owner,
    fence: Arc<Fence>,
    key: ShardRef,
    cancel: CancellationToken,
    counter: Arc<AtomicU64>,
    cmds: mpsc::UnboundedReceiver<ShardCmd>,
}

/// A lease this task holds: its checkpoint, and where its reader starts.
struct Held {
    checkpoint: LeaseCheckpoint,
    from: ReadFrom,
}

/// What to do with a lease, given what was read and what the plan says.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// It already names this member (a take whose response was lost).
    Held,
    /// Finished: nothing to read.
    Finished,
    /// Take it, expecting exactly this.
    Take(LeaseSeen),
    /// A live owner holds it.
    Wait,
}

fn decide(
    lease: Option<&LeaseItem>,
    planned: &PlannedShard,
    me: &Owner,
    predecessor: Option<&Owner>,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Take(LeaseSeen {
            exists: false,
            owner: None,
            lease_counter: None,
        });
    };
    if lease.shard_end {
        return Decision::Finished;
    }
    if lease.owner.as_ref() == Some(me) {
        return Decision::Held;
    }
    let seen = LeaseSeen {
        exists: true,
        owner: lease.owner.clone(),
        lease_counter: lease.lease_counter,
    };
    match &lease.owner {
        None => Decision::Take(seen),
        Some(owner) if Some(owner) == predecessor => Decision::Take(seen),
        Some(owner)
            if planned.owner_gone
                && planned.owner.as_ref() == Some(owner)
                && planned.lease_counter == lease.lease_counter =>
        {
            Decision::Take(seen)
        }
        Some(_) => Decision::Wait,
    }
}

fn read_from(item: &LeaseItem, fallback: &crate::shards::StoredStart) -> ReadFrom {
    match (&item.checkpoint, &item.start) {
        (Some(position), _) => ReadFrom::After(position.clone()),
        (None, Some(start)) => ReadFrom::Start(start.clone()),
        (None, None) => ReadFrom::Start(fallback.clone()),
    }
}

/// Where the reader stands on a closed shard's end.
enum Ending {
    /// Still reading.
    Reading,
    /// It read to the end of a closed shard (or the shard vanished): `last`, the last
    /// position it sent (none under this lease), must be processed before the shard is
    /// finished.
    Ended { last: Option<Position> },
}

/// Why holding ended.
enum HoldEnd {
    Release,
    Fenced,
    Lost(&'static str),
    Finished,
    Failed,
    Stopped,
}

impl ShardTask {
    async fn run(mut self, job: ShardJob) -> Outcome {
        match job {
            ShardJob::ReleaseOnly => self.release_if_named().await,
            ShardJob::Take {
                planned,
                fast_poll,
                predecessor,
            } => {
                let held = match self.acquire(planned, fast_poll, predecessor).await {
                    Ok(held) => held,
                    Err(outcome) => return outcome,
                };
                self.hold(held).await
            }
        }
    }

    fn shard_error(&self, reason: impl Into<String>) -> Error {
        Error::LeaseLost {
            stream: self.key.stream.clone(),
            shard_id: self.key.shard_id.clone(),
            reason: reason.into(),
        }
    }

    fn event_lease(&self, make: fn(String, String) -> Event) {
        self.ctx
            .signals
            .event(make(self.key.stream.clone(), self.key.shard_id.clone()));
    }

    async fn read_lease(&self) -> Result<Option<LeaseItem>, StoreError> {
        self.ctx
            .timed(
                Operation::Lease,
                self.ctx.store.lease(&self.key.stream, &self.key.shard_id),
            )
            .await
    }

    /// Takes the planned shard, or finds it already held (DESIGN §3 step 4).
    async fn acquire(
        &mut self,
        mut planned: PlannedShard,
        fast_poll: bool,
        predecessor: Option<Owner>,
    ) -> Result<Held, Outcome> {
        let wait_until = self.fence.now()
            + if fast_poll {
                self.ctx.cfg.handoff_timeout * 2
            } else {
                Duration::ZERO
            };
        loop {
            if self.cancel.is_cancelled() || !self.fence.check() {
                return Err(Outcome::Stopped);
            }
            let lease = match self.read_lease().await {
                Ok(lease) => lease,
                Err(e) => {
                    debug!(error = %e, "lease read failed");
                    if !self.pause_before_retry(wait_until).await {
                        return Err(Outcome::NotAcquired { polled: fast_poll });
                    }
                    continue;
                }
            };
            match decide(lease.as_ref(), &planned, &self.me, predecessor.as_ref()) {
                Decision::Held => {
                    let item = lease.expect("held implies an item");
                    return Ok(self.held_from(&item, &planned));
                }
                Decision::Finished => return Err(Outcome::Finished),
                Decision::Take(seen) => {
                    // The lease read may have waited out a pause: a fenced member takes
                    // nothing (scenario 5).
                    if !self.fence.check() {
                        return Err(Outcome::Stopped);
                    }
                    let start = planned
                        .start
                        .pin(self.ctx.clock.wall(), self.ctx.cfg.latest_skew_margin);
                    let take = self.ctx.store.take_lease(
                        &self.key.stream,
                        &self.key.shard_id,
                        &self.me,
                        &seen,
                        &start,
                    );
                    match self.ctx.timed(Operation::TakeLease, take).await {
                        Ok(item) => {
                            // Read from the checkpoint the take returned, never the one read
                            // before: a slow previous owner may have committed in between
                            // (scenario 1).
                            return Ok(self.held_from(&item, &planned));
                        }
                        // The lease moved between the read and the take: read it again
                        // after a handoff poll, not at once (a lease that keeps moving
                        // would have this member spin on the store).
                        Err(StoreError::ConditionFailed { .. }) => {
                            if !self.pause(HANDOFF_POLL).await {
                                return Err(Outcome::Stopped);
                            }
                        }
                        Err(e) => {
                            // The take may have landed: the next read tells (scenario 17).
                            debug!(error = %e, "take failed; re-reading");
                            continue;
                        }
                    }
                }
                Decision::Wait => {
                    if !self.pause_before_retry(wait_until).await {
                        return Err(Outcome::NotAcquired { polled: fast_poll });
                    }
                    // Re-read the own plan too: an owner that died meanwhile is marked gone,
                    // and a plan that moved the shard elsewhere ends the wait (scenario 3).
                    match self.current_plan_entry().await {
                        Some(entry) => planned = entry,
                        None => return Err(Outcome::NotAcquired { polled: fast_poll }),
                    }
                }
            }
        }
    }

    /// Sleeps one handoff poll if the wait window allows; false when it is over.
    async fn pause_before_retry(&self, wait_until: Duration) -> bool {
        if self.fence.now() + HANDOFF_POLL > wait_until {
            return false;
        }
        self.pause(HANDOFF_POLL).await
    }

    /// Sleeps `d`; false when the task is cancelled meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// This shard's entry in the member's current plan (a plan of the lock's term for this
    /// incarnation), or `None` when there is no current plan or it does not list the shard.
    async fn current_plan_entry(&self) -> Option<PlannedShard> {
        let read = self.ctx.store.read_lock_and_plan(&self.me.client_id);
        let (lock, plan) = self
            .ctx
            .timed(Operation::ReadLockAndPlan, read)
            .await
            .ok()?;
        let (lock, plan) = (lock?, plan?);
        if plan.term != lock.term || plan.token != self.me.token {
            return None;
        }
        plan.streams
            .get(&self.key.stream)?
            .iter()
            .find(|p| p.shard_id == self.key.shard_id)
            .cloned()
    }

    fn held_from(&self, item: &LeaseItem, planned: &PlannedShard) -> Held {
        let counter = item.lease_counter.unwrap_or(1);
        self.counter.store(counter, Ordering::Release);
        let fallback = planned
            .start
            .pin(self.ctx.clock.wall(), self.ctx.cfg.latest_skew_margin);
        let lease = HeldLease {
            key: self.key.clone(),
            owner: self.me.clone(),
            counter,
        };
        Held {
            checkpoint: LeaseCheckpoint::new(
                self.ctx.store.clone(),
                self.ctx.signals.clone(),
                self.ctx.cfg.clone(),
                self.fence.clone(),
                lease,
                item.checkpoint.clone(),
            ),
            from: read_from(item, &fallback),
        }
    }

    /// Reads and delivers the shard until it is released, lost, finished or stopped.
    async fn hold(&mut self, mut held: Held) -> Outcome {
        info!(counter = held.checkpoint.counter(), "lease taken");
        self.event_lease(|stream, shard_id| Event::LeaseTaken { stream, shard_id });
        let track = held.checkpoint.track();
        let (tx, rx) = buffer::channel(self.ctx.cfg.shard_buffer, self.ctx.cfg.shard_buffer_bytes);
        let reader_cancel = self.cancel.child_token();
        let mut reader = AbortOnDropHandle::new(self.spawn_reader(
            track.stream.clone(),
            track.shard_id.clone(),
            held.from.clone(),
            tx,
            reader_cancel.clone(),
        ));
        let to = Delivery {
            sink: self.ctx.sink.clone(),
            auto_commit: self.ctx.cfg.auto_commit,
            signals: self.ctx.signals.clone(),
            start: Start::from(&held.from),
            handoff_timeout: self.ctx.cfg.handoff_timeout,
            flow: self.ctx.flow.clone(),
        };
        let mut deliver = AbortOnDropHandle::new(
            self.ctx
                .tasks
                .spawn(deliver(rx, track.clone(), to).in_current_span()),
        );
        let end = self
            .hold_loop(&mut held, &track, &mut reader, &mut deliver)
            .await;
        reader_cancel.cancel();
        // Read to its end by the loop already, or stopping now.
        if !reader.is_finished() {
            let _ = (&mut reader).await;
        }
        match end {
            HoldEnd::Release | HoldEnd::Failed => track.leave(Leaving::Revoked),
            HoldEnd::Lost(_) | HoldEnd::Fenced | HoldEnd::Stopped => track.leave(Leaving::Lost),
            // The processor heard of the end before the shard was finished.
            HoldEnd::Finished => track.deactivate(),
        }
        let handoff = self.ctx.cfg.handoff_timeout;
        let outcome = match end {
            HoldEnd::Release | HoldEnd::Failed => {
                let processed = if self.ctx.sink.follows_lease() {
                    // The processor's revoking marks what it flushed, and gives back the rest.
                    self.end_delivery(&mut deliver, handoff).await
                } else {
                    let processed = track.wait_processed(handoff).await;
                    deliver.abort();
                    processed
                };
                if !processed {
                    // Rebalancing must not hang on a stuck application: release anyway;
                    // the records in its hands may be delivered again by the next owner.
                    self.event_lease(|stream, shard_id| Event::LeaseLost { stream, shard_id });
                }
                match held.checkpoint.final_commit(&track, &self.cancel).await {
                    Err(CommitEnd::Lost) => self.lost(COMMIT_REFUSED),
                    _ if !self.release(held.checkpoint.counter()).await => self.lost(LEASE_MOVED),
                    _ if matches!(end, HoldEnd::Failed) => Outcome::Failed,
                    _ => {
                        self.event_lease(|stream, shard_id| Event::LeaseReleased {
                            stream,
                            shard_id,
                        });
                        Outcome::Released
                    }
                }
            }
            HoldEnd::Lost(reason) => {
                self.end_delivery(&mut deliver, LOST_GRACE).await;
                self.lost(reason)
            }
            HoldEnd::Fenced => {
                self.end_delivery(&mut deliver, LOST_GRACE).await;
                // Finished work survives the fence: a write refused because the lease
                // moved on is as it should be; an unreachable store is said.
                if let Err(CommitEnd::Failed(e)) = held.checkpoint.commit_after_fence(&track).await
                {
                    warn!(error = %e, "fenced: the records processed since the last commit could not be committed");
                }
                Outcome::Stopped
            }
            HoldEnd::Finished => {
                deliver.abort();
                self.event_lease(|stream, shard_id| Event::ShardFinished { stream, shard_id });
                Outcome::Finished
            }
            HoldEnd::Stopped => {
                self.end_delivery(&mut deliver, LOST_GRACE).await;
                Outcome::Stopped
            }
        };
        self.counter.store(0, Ordering::Release);
        outcome
    }

    /// Lets a processor hear how its lease ended — revoking, lost — for up to `within`,
    /// then stops the delivery. Returns whether it ended in time.
    async fn end_delivery(
        &self,
        deliver: &mut AbortOnDropHandle<DeliveryEnd>,
        within: Duration,
    ) -> bool {
        let ended = !self.ctx.sink.follows_lease()
            || deliver.is_finished()
            || tokio::time::timeout(within, &mut *deliver).await.is_ok();
        deliver.abort();
        ended
    }

    /// Starts the shard's reader of the configured [`ReadMode`]; both send to `out` and
    /// end the same ways, so holding, fencing, marks and commits do not depend on it.
    fn spawn_reader(
        &self,
        stream: Arc<str>,
        shard_id: Arc<str>,
        from: ReadFrom,
        out: BufferTx,
        cancel: CancellationToken,
    ) -> JoinHandle<ReaderEnd> {
        let cfg = &self.ctx.cfg;
        let kinesis = self.ctx.kinesis.clone();
        match cfg.read_mode {
            ReadMode::Polling => {
                let polling = PollingConfig {
                    limit: cfg.scan_limit,
                    scan_interval: cfg.scan_interval,
                    scan_timeout: cfg.scan_timeout,
                    aggregation: cfg.aggregation,
                    load: self.ctx.load_meter(),
                };
                let read =
                    polling::read_shard(kinesis, stream, shard_id, from, polling, out, cancel);
                self.ctx.tasks.spawn(read.in_current_span())
            }
            ReadMode::FanOut => {
                let Some(consumer_arn) = self.ctx.consumer_arns.get(&stream) else {
                    // consume() and refresh() register every stream before it is read.
                    let e = KinesisError::FanOutConsumer {
                        stream: stream.to_string(),
                        consumer: cfg.fan_out_consumer_name(),
                        reason: "not registered by this member".to_owned(),
                    };
                    return self.ctx.tasks.spawn(async move { ReaderEnd::Fatal(e) });
                };
                let fan_out = FanOutConfig {
                    consumer_arn,
                    aggregation: cfg.aggregation,
                    end_check_interval: cfg.shard_sync_interval,
                    load: self.ctx.load_meter(),
                };
                let fence = self.fence.clone();
                let may_subscribe = Arc::new(move || fence.check());
                let read = fanout::read_shard(
                    kinesis,
                    stream,
                    shard_id,
                    from,
                    fan_out,
                    may_subscribe,
                    out,
                    cancel,
                );
                self.ctx.tasks.spawn(read.in_current_span())
            }
        }
    }

    /// Reports a lost lease (an error and an event).
    fn lost(&self, reason: &str) -> Outcome {
        self.ctx.signals.error(self.shard_error(reason));
        self.event_lease(|stream, shard_id| Event::LeaseLost { stream, shard_id });
        Outcome::Lost
    }

    async fn hold_loop(
        &mut self,
        held: &mut Held,
        track: &Arc<ShardTrack>,
        reader: &mut AbortOnDropHandle<ReaderEnd>,
        deliver: &mut AbortOnDropHandle<DeliveryEnd>,
    ) -> HoldEnd {
        let (mut reading, mut delivering) = (true, true);
        let mut commit_timer = CommitTimer::start(self.ctx.cfg.commit_interval).await;
        let mut ending = Ending::Reading;
        // After a failed shard-end write: when to try again.
        let mut finish_again_at: Option<tokio::time::Instant> = None;
        loop {
            let end_processed = async {
                if let Some(at) = finish_again_at {
                    tokio::time::sleep_until(at).await;
                }
                match &ending {
                    Ending::Ended { last: Some(last) } => {
                        track.wait_marked(last).await;
                    }
                    Ending::Ended { last: None } => {}
                    Ending::Reading => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return HoldEnd::Stopped,
                cmd = self.cmds.recv() => match cmd {
                    Some(ShardCmd::Release) => return HoldEnd::Release,
                    Some(ShardCmd::Lost) => return HoldEnd::Lost(PLAN_SHOWS_NEWER),
                    Some(ShardCmd::Fenced) => return HoldEnd::Fenced,
                    Some(ShardCmd::Commit(ack)) => {
                        let result = held.checkpoint.commit(track).await;
                        let lost = matches!(result, Err(CommitEnd::Lost));
                        let _ = ack.send(result.map_err(|e| e.into_error(&self.key)));
                        if lost {
                            return HoldEnd::Lost(COMMIT_REFUSED);
                        }
                    }
                    None => return HoldEnd::Stopped,
                },
                end = &mut *reader, if reading => {
                    reading = false;
                    match end {
                        Ok(ReaderEnd::ShardEnd { last, children }) => {
                            // Finished once the last item sent is processed (the last user
                            // record of an aggregate stands for the whole record).
                            info!(?children, "read to the end of a closed shard");
                            track.leave(Leaving::Ended);
                            ending = Ending::Ended { last };
                        }
                        Ok(ReaderEnd::ShardGone { last }) => {
                            info!("the shard expired past retention");
                            track.leave(Leaving::Ended);
                            ending = Ending::Ended { last };
                        }
                        Ok(ReaderEnd::Fatal(e)) => {
                            self.ctx.signals.error(Error::Kinesis(e));
                            return HoldEnd::Failed;
                        }
                        Ok(ReaderEnd::Cancelled) => return HoldEnd::Stopped,
                        Err(join) => {
                            self.ctx.signals.error(self.shard_error(format!("reader task failed: {join}")));
                            return HoldEnd::Failed;
                        }
                    }
                }
                end = &mut *deliver, if delivering => {
                    delivering = false;
                    let reason = match end {
                        // The reader ended (the shard's end) and every record was passed on.
                        Ok(DeliveryEnd::Drained) => continue,
                        // The fence tripped: the coordinator stops this task.
                        Ok(DeliveryEnd::NotAllowed) => continue,
                        Ok(DeliveryEnd::StreamDropped) => "the application dropped its record stream".to_owned(),
                        Ok(DeliveryEnd::HandlerStopped(reason)) => reason,
                        Err(join) if join.is_panic() => format!("the delivery task panicked: {}", panic_message(&*join.into_panic())),
                        Err(join) => format!("the delivery task ended: {join}"),
                    };
                    tracing::warn!(%reason, "delivery stopped; releasing the shard");
                    self.event_lease(|stream, shard_id| Event::DeliveryStopped { stream, shard_id });
                    self.ctx.signals.error(Error::DeliveryStopped {
                        stream: self.key.stream.clone(),
                        shard_id: self.key.shard_id.clone(),
                        reason,
                    });
                    return HoldEnd::Failed;
                }
                // A processor hears of the end (shard_ended) before the shard is finished.
                _ = end_processed, if matches!(ending, Ending::Ended { .. }) && !(delivering && self.ctx.sink.follows_lease()) => {
                    return match held.checkpoint.finish(track).await {
                        Ok(()) => HoldEnd::Finished,
                        Err(CommitEnd::Lost) => HoldEnd::Lost(COMMIT_REFUSED),
                        // Retried a sync interval later, commands answered meanwhile.
                        Err(CommitEnd::Failed(_)) => {
                            finish_again_at =
                                Some(tokio::time::Instant::now() + self.ctx.cfg.sync_interval);
                            continue;
                        }
                    };
                }
                _ = commit_timer.due(&held.checkpoint, track) => {
                    if let Err(CommitEnd::Lost) = held.checkpoint.commit(track).await {
                        return HoldEnd::Lost(COMMIT_REFUSED);
                    }
                }
            }
        }
    }

    /// Releases a held lease, retrying transient failures until it lands or a fresh read
    /// shows it no longer names this owner (its own release may have landed unseen).
    /// Returns false when the lease was not this owner's to release.
    async fn release(&self, counter: u64) -> bool {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(50), self.ctx.cfg.sync_interval);
        loop {
            let request = self.ctx.store.release_lease(
                &self.key.stream,
                &self.key.shard_id,
                &self.me,
                counter,
            );
            match self.ctx.timed(Operation::ReleaseLease, request).await {
                Ok(()) => return true,
                // A refusal too is read before it is believed: the SDK retries a request
                // whose answer was lost, and the retry of a release that landed is refused.
                Err(e) => debug!(error = %e, "release failed; checking the lease"),
            }
            if let Ok(item) = self.read_lease().await {
                if let Some(released) = after_failed_release(item.as_ref(), &self.me, counter) {
                    return released;
                }
            }
            // A cancellation (the member dropped) ends the retries, during the wait too.
            if !self.pause(backoff.next_delay()).await {
                return false;
            }
        }
    }

    /// A plan's release list names this shard: release it if the lease names this member.
    async fn release_if_named(&self) -> Outcome {
        match self.read_lease().await {
            Ok(Some(item)) if item.owner.as_ref() == Some(&self.me) => {
                if self.release(item.lease_counter.unwrap_or(0)).await {
                    Outcome::Released
                } else {
                    Outcome::Lost
                }
            }
            _ => Outcome::Released,
        }
    }
}

/// What a lease read after a failed release says: `Some(true)` when the release landed
/// (free, its counter moved on by one), `Some(false)` when the lease is not this owner's,
/// `None` when it is still held as before (release again).
fn after_failed_release(item: Option<&LeaseItem>, me: &Owner, counter: u64) -> Option<bool> {
    let Some(item) = item else {
        return Some(false);
    };
    if item.owner.as_ref() == Some(me) && item.lease_counter == Some(counter) {
        return None;
    }
    Some(item.owner.is_none() && item.lease_counter == Some(counter + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str, token: &str) -> Owner {
        Owner {
            client_id: id.into(),
            token: token.into(),
        }
    }

    fn lease(owner: Option<Owner>, counter: Option<u64>, shard_end: bool) -> LeaseItem {
        LeaseItem {
            stream: "s".into(),
            shard_id: "shard".into(),
            checkpoint: None,
            owner,
            lease_counter: counter,
            start: None,
            shard_end,
            millis_behind: None,
            last_update: None,
        }
    }

    fn planned(owner: Option<Owner>, counter: Option<u64>, gone: bool) -> PlannedShard {
        PlannedShard {
            shard_id: "shard".into(),
            owner,
            lease_counter: counter,
            owner_gone: gone,
            start: crate::store::PlanStart::TrimHorizon,
        }
    }

    #[test]
    fn a_refused_release_is_judged_by_the_lease_read_after_it() {
        let me = owner("a", "1");
        // The SDK's retry of a release that landed is refused: the read shows it landed.
        let landed = lease(None, Some(4), false);
        assert_eq!(after_failed_release(Some(&landed), &me, 3), Some(true));
        assert_eq!(
            after_failed_release(Some(&lease(Some(me.clone()), Some(3), false)), &me, 3),
            None,
            "still held: release again"
        );
        let taken = lease(Some(owner("b", "2")), Some(4), false);
        assert_eq!(after_failed_release(Some(&taken), &me, 3), Some(false));
        assert_eq!(after_failed_release(None, &me, 3), Some(false));
    }

    #[test]
    fn decisions_follow_the_design() {
        let me = owner("a", "1");
        let other = owner("b", "2");
        let p = planned(None, None, false);
        assert!(matches!(decide(None, &p, &me, None), Decision::Take(s) if !s.exists));
        assert_eq!(
            decide(
                Some(&lease(Some(me.clone()), Some(3), false)),
                &p,
                &me,
                None
            ),
            Decision::Held
        );
        assert_eq!(
            decide(Some(&lease(None, Some(3), true)), &p, &me, None),
            Decision::Finished
        );
        assert_eq!(
            decide(Some(&lease(Some(me.clone()), Some(3), true)), &p, &me, None),
            Decision::Finished
        );
        assert!(matches!(
            decide(Some(&lease(None, Some(3), false)), &p, &me, None),
            Decision::Take(LeaseSeen {
                exists: true,
                owner: None,
                lease_counter: Some(3)
            })
        ));
        // A live owner: wait.
        assert_eq!(
            decide(
                Some(&lease(Some(other.clone()), Some(3), false)),
                &p,
                &me,
                None
            ),
            Decision::Wait
        );
        // Gone, with the counter the plan names: take.
        let gone = planned(Some(other.clone()), Some(3), true);
        assert!(matches!(
            decide(
                Some(&lease(Some(other.clone()), Some(3), false)),
                &gone,
                &me,
                None
            ),
            Decision::Take(_)
        ));
        // Gone, but the counter moved since the leader looked: wait.
        assert_eq!(
            decide(
                Some(&lease(Some(other.clone()), Some(4), false)),
                &gone,
                &me,
                None
            ),
            Decision::Wait
        );
        // A lease of this process's previous incarnation: taken at once.
        let before = owner("a", "0");
        assert!(matches!(
            decide(
                Some(&lease(Some(before.clone()), Some(3), false)),
                &p,
                &me,
                Some(&before)
            ),
            Decision::Take(_)
        ));
    }
}
