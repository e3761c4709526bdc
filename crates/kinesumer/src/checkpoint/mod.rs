//! Checkpoints (DESIGN §3 "Checkpoints and fencing", §6): the marks of a lease and the
//! writes that make them checkpoints.
//!
//! ```text
//!  delivery ──handed_out / mark──▶ ShardTrack (marks) ──marked()──▶ LeaseCheckpoint ──▶ store
//!                                                                   every commit_interval,
//!                                                                   or commit_records behind,
//!                                                                   at the shard's end,
//!                                                                   before a release (retried),
//!                                                                   after a fence (unfenced)
//! ```
//!
//! Every write is conditional on the owner, the lease counter and the checkpoint this
//! owner last saw, one at a time per lease. A write whose outcome is unknown (it timed
//! out, or was refused) is followed by a read of the lease before the next one: the
//! store's checkpoint is adopted if the lease is still ours, or the lease is lost. So a
//! deposed owner never moves a checkpoint and checkpoints never go backwards.
//!
//! The shard task ([`crate::group`]) owns a lease's lifecycle (take, hold, release); it
//! holds one [`LeaseCheckpoint`] while it holds the lease and asks it to commit.

mod track;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::Error;
use crate::fence::Fence;
use crate::seq::Position;
use crate::signals::Signals;
use crate::store::{self, CheckpointWrite, Operation, Owner, ShardRef, StateStore, StoreError};

#[cfg(test)]
pub(crate) use track::tests as track_tests;
pub(crate) use track::{flush_pending, Leaving, PendingMark, ShardTrack};

/// The most often a shard commits by records handed out ([`Config::commit_records`]).
///
/// [`Config::commit_records`]: crate::Config::commit_records
const CATCH_UP_COMMIT: Duration = Duration::from_secs(1);

/// One lease as held: the shard, its owner and the lease counter of the take.
#[derive(Debug, Clone)]
pub(crate) struct HeldLease {
    pub(crate) key: ShardRef,
    pub(crate) owner: Owner,
    pub(crate) counter: u64,
}

/// Why a commit did not write.
#[derive(Debug)]
pub(crate) enum CommitEnd {
    /// The lease is no longer this member's (or the fence tripped).
    Lost,
    /// The write failed; retried at the next commit.
    Failed(StoreError),
}

impl CommitEnd {
    /// The error the application is told for a commit it asked for.
    pub(crate) fn into_error(self, key: &ShardRef) -> Error {
        match self {
            CommitEnd::Lost => Error::LeaseLost {
                stream: key.stream.clone(),
                shard_id: key.shard_id.clone(),
                reason: "the lease names another owner, or this member fenced itself".into(),
            },
            CommitEnd::Failed(source) => Error::CommitFailed {
                stream: key.stream.clone(),
                shard_id: key.shard_id.clone(),
                source,
            },
        }
    }
}

/// Whether a write is the last of a closed shard, and whether the fence is checked first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A mark that moved, while the member may act.
    Mark,
    /// The shard's end (`shard_end`), with the mark if it moved.
    ShardEnd,
    /// The mark of what the application processed before the member fenced itself.
    AfterFence,
}

/// The checkpoint of one lease this member holds: what the store has, and the writes
/// that move it.
#[derive(Debug)]
pub(crate) struct LeaseCheckpoint {
    store: Arc<dyn StateStore>,
    signals: Signals,
    cfg: Arc<Config>,
    fence: Arc<Fence>,
    lease: HeldLease,
    /// The checkpoint as the store has it (what the next write is conditional on).
    committed: Option<Position>,
    /// A write's outcome is unknown: re-read the lease before the next one.
    reread: bool,
    /// Records handed out when the last commit read the mark.
    handed_at_commit: u64,
}

impl LeaseCheckpoint {
    /// The checkpoint of `lease`, taken with `committed` stored.
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        signals: Signals,
        cfg: Arc<Config>,
        fence: Arc<Fence>,
        lease: HeldLease,
        committed: Option<Position>,
    ) -> Self {
        Self {
            store,
            signals,
            cfg,
            fence,
            lease,
            committed,
            reread: false,
            handed_at_commit: 0,
        }
    }

    /// The lease counter of the take.
    pub(crate) fn counter(&self) -> u64 {
        self.lease.counter
    }

    /// The marks of this lease's records. They start at the checkpoint, so a shard whose
    /// last record was processed before this lease counts as processed up to there.
    pub(crate) fn track(&self) -> Arc<ShardTrack> {
        let key = &self.lease.key;
        let track = ShardTrack::new(
            key.stream.as_str().into(),
            key.shard_id.as_str().into(),
            self.lease.counter,
            self.fence.clone(),
        );
        if let Some(committed) = &self.committed {
            track.mark(committed);
        }
        Arc::new(track)
    }

    /// Writes the mark as the checkpoint if it moved, while the fence allows it.
    pub(crate) async fn commit(&mut self, track: &ShardTrack) -> Result<(), CommitEnd> {
        self.write(track, Write::Mark).await
    }

    /// Writes the shard's end (and the mark, if it moved): the shard is finished.
    pub(crate) async fn finish(&mut self, track: &ShardTrack) -> Result<(), CommitEnd> {
        self.write(track, Write::ShardEnd).await
    }

    /// The commit a fenced member makes of the records its application processed before
    /// the fence (issue 24): not fenced itself, but conditional on the owner and lease
    /// counter as always, so it is refused once the lease has moved on, and a taker that
    /// read before it lands starts from the checkpoint its take returns (scenario 1).
    pub(crate) async fn commit_after_fence(&mut self, track: &ShardTrack) -> Result<(), CommitEnd> {
        self.write(track, Write::AfterFence).await
    }

    /// The last commit of a lease given up (a release, a failed reader or delivery): a
    /// failed write is retried with backoff for up to `commit_timeout`, so one throttled
    /// write does not make the next owner deliver again everything since the last
    /// periodic commit. A cancellation ends the retries.
    pub(crate) async fn final_commit(
        &mut self,
        track: &ShardTrack,
        cancel: &CancellationToken,
    ) -> Result<(), CommitEnd> {
        let deadline = Instant::now() + self.cfg.commit_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), self.cfg.sync_interval);
        loop {
            match self.commit(track).await {
                Err(CommitEnd::Failed(e)) => {
                    let retry_at = Instant::now() + backoff.next_delay();
                    if retry_at >= deadline || cancel.is_cancelled() {
                        return Err(CommitEnd::Failed(e));
                    }
                    debug!(error = %e, "final commit failed; retrying");
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(CommitEnd::Failed(e)),
                        _ = tokio::time::sleep_until(retry_at) => {}
                    }
                }
                done => return done,
            }
        }
    }

    /// Whether `commit_records` records were handed out since the last commit read the
    /// mark: a shard catching up on a backlog commits by records too, so a crash or a
    /// fence repeats about a second of work.
    fn behind_by_records(&self, track: &ShardTrack) -> bool {
        let records = self.cfg.commit_records;
        records > 0 && track.handed_count().saturating_sub(self.handed_at_commit) >= records
    }

    async fn write(&mut self, track: &ShardTrack, how: Write) -> Result<(), CommitEnd> {
        if self.reread {
            self.reread_after_timeout().await?;
        }
        let handed = track.handed_count();
        let mark = track.marked();
        let moved = mark.is_some() && mark > self.committed;
        let shard_end = how == Write::ShardEnd;
        if !moved && !shard_end {
            return Ok(());
        }
        if how != Write::AfterFence && !self.fence.check() {
            return Err(CommitEnd::Lost);
        }
        let write = CheckpointWrite {
            position: if moved { mark.clone() } else { None },
            shard_end,
            millis_behind: track.millis_behind(),
        };
        let HeldLease {
            key,
            owner,
            counter,
        } = &self.lease;
        let request = self.store.checkpoint(
            &key.stream,
            &key.shard_id,
            owner,
            *counter,
            self.committed.as_ref(),
            &write,
        );
        match store::timed(Operation::Checkpoint, self.cfg.request_timeout, request).await {
            Ok(()) => {
                if moved {
                    self.committed = mark;
                }
                self.handed_at_commit = handed;
                track.metrics.commits.increment(1);
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => {
                track.metrics.commit_failures.increment(1);
                // Either the lease moved on (lost) or an earlier write of ours that timed
                // out landed late: re-read to tell.
                self.reread = true;
                self.reread_after_timeout().await?;
                let key = &self.lease.key;
                Err(CommitEnd::Failed(StoreError::ConditionFailed {
                    item: format!("checkpoint {}/{}", key.stream, key.shard_id),
                }))
            }
            Err(e) => {
                self.reread = true;
                track.metrics.commit_failures.increment(1);
                self.signals.error(Error::CommitFailed {
                    stream: self.lease.key.stream.clone(),
                    shard_id: self.lease.key.shard_id.clone(),
                    source: e.clone(),
                });
                Err(CommitEnd::Failed(e))
            }
        }
    }

    /// After a write whose outcome is unknown: adopt what the store holds if the lease is
    /// still ours, or report the lease lost.
    async fn reread_after_timeout(&mut self) -> Result<(), CommitEnd> {
        let key = &self.lease.key;
        let read = self.store.lease(&key.stream, &key.shard_id);
        match store::timed(Operation::Lease, self.cfg.request_timeout, read).await {
            Ok(Some(item))
                if item.owner.as_ref() == Some(&self.lease.owner)
                    && item.lease_counter == Some(self.lease.counter) =>
            {
                self.committed = item.checkpoint;
                self.reread = false;
                Ok(())
            }
            Ok(_) => Err(CommitEnd::Lost),
            Err(e) => Err(CommitEnd::Failed(e)),
        }
    }
}

/// When a held lease's mark is due to be committed: every `commit_interval`, and, while
/// the shard catches up, once `commit_records` records were handed out since the last
/// commit (checked once a second).
#[derive(Debug)]
pub(crate) struct CommitTimer {
    periodic: Interval,
    catch_up: Interval,
}

impl CommitTimer {
    /// A timer whose first commit is due one `commit_interval` from now.
    pub(crate) async fn start(commit_interval: Duration) -> Self {
        let mut periodic = interval(commit_interval);
        periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
        periodic.tick().await;
        let mut catch_up = interval(CATCH_UP_COMMIT);
        catch_up.set_missed_tick_behavior(MissedTickBehavior::Delay);
        catch_up.tick().await;
        Self { periodic, catch_up }
    }

    /// Waits until a commit of `checkpoint` is due.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits on intervals, which are.
    pub(crate) async fn due(&mut self, checkpoint: &LeaseCheckpoint, track: &ShardTrack) {
        let by_records = checkpoint.cfg.commit_records > 0;
        loop {
            tokio::select! {
                biased;
                _ = self.periodic.tick() => return,
                _ = self.catch_up.tick(), if by_records => {
                    if checkpoint.behind_by_records(track) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::track_tests::pos;
    use super::*;
    use crate::clock::{Clock, TestClock};
    use crate::shards::StoredStart;
    use crate::store::{LeaseSeen, MemoryStore};

    struct Setup {
        store: Arc<MemoryStore>,
        fence: Arc<Fence>,
        clock: Arc<TestClock>,
        checkpoint: LeaseCheckpoint,
        track: Arc<ShardTrack>,
    }

    fn me() -> Owner {
        Owner {
            client_id: "a".into(),
            token: "1".into(),
        }
    }

    fn key() -> ShardRef {
        ShardRef {
            stream: "s".into(),
            shard_id: "shard-0".into(),
        }
    }

    /// A lease of `shard-0` taken by `a#1`, its checkpoint and marks.
    async fn setup(commit_records: u64) -> Setup {
        let store = Arc::new(MemoryStore::new("app"));
        let seen = LeaseSeen {
            exists: false,
            owner: None,
            lease_counter: None,
        };
        let item = store
            .take_lease("s", "shard-0", &me(), &seen, &StoredStart::TrimHorizon)
            .await
            .unwrap();
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let fence = Arc::new(Fence::new(
            clock.clone(),
            Duration::from_secs(60),
            clock.fencing_now(),
        ));
        let cfg = Config::builder("app", "table")
            .commit_records(commit_records)
            .build()
            .unwrap();
        let lease = HeldLease {
            key: key(),
            owner: me(),
            counter: item.lease_counter.unwrap(),
        };
        let checkpoint = LeaseCheckpoint::new(
            store.clone(),
            Signals::new("app", 16),
            Arc::new(cfg),
            fence.clone(),
            lease,
            item.checkpoint,
        );
        let track = checkpoint.track();
        Setup {
            store,
            fence,
            clock,
            checkpoint,
            track,
        }
    }

    async fn stored(store: &MemoryStore) -> Option<Position> {
        store
            .lease("s", "shard-0")
            .await
            .unwrap()
            .unwrap()
            .checkpoint
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_writes_only_a_mark_that_moved() {
        let mut s = setup(0).await;
        s.checkpoint.commit(&s.track).await.unwrap();
        assert_eq!(s.store.requests().0.get(&Operation::Checkpoint), None);
        s.track.handed_out(&pos(5), 1);
        s.track.mark(&pos(5));
        s.checkpoint.commit(&s.track).await.unwrap();
        assert_eq!(stored(&s.store).await, Some(pos(5)));
        s.checkpoint.commit(&s.track).await.unwrap();
        assert_eq!(s.store.requests().0[&Operation::Checkpoint], 1);
        // A new lease's marks start at the checkpoint.
        assert_eq!(s.checkpoint.track().marked(), Some(pos(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_moved_on_is_lost_and_its_checkpoint_kept() {
        let mut s = setup(0).await;
        let other = Owner {
            client_id: "b".into(),
            token: "2".into(),
        };
        s.store
            .release_lease("s", "shard-0", &me(), s.checkpoint.counter())
            .await
            .unwrap();
        let seen = LeaseSeen {
            exists: true,
            owner: None,
            lease_counter: Some(s.checkpoint.counter() + 1),
        };
        s.store
            .take_lease("s", "shard-0", &other, &seen, &StoredStart::TrimHorizon)
            .await
            .unwrap();
        s.track.mark(&pos(7));
        assert!(matches!(
            s.checkpoint.commit(&s.track).await,
            Err(CommitEnd::Lost)
        ));
        assert_eq!(stored(&s.store).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_landing_write_is_read_back_before_the_next_one() {
        let mut s = setup(0).await;
        // An earlier write of ours whose answer was lost lands: the store has 5.
        let late = CheckpointWrite {
            position: Some(pos(5)),
            shard_end: false,
            millis_behind: None,
        };
        let counter = s.checkpoint.counter();
        s.store
            .checkpoint("s", "shard-0", &me(), counter, None, &late)
            .await
            .unwrap();
        s.track.mark(&pos(6));
        assert!(matches!(
            s.checkpoint.commit(&s.track).await,
            Err(CommitEnd::Failed(StoreError::ConditionFailed { .. }))
        ));
        s.checkpoint.commit(&s.track).await.unwrap();
        assert_eq!(stored(&s.store).await, Some(pos(6)), "never backwards");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_member_commits_only_what_was_processed_before_the_fence() {
        let mut s = setup(0).await;
        s.track.mark(&pos(3));
        s.clock.suspend(Duration::from_secs(120));
        assert!(!s.fence.check());
        assert!(matches!(
            s.checkpoint.commit(&s.track).await,
            Err(CommitEnd::Lost)
        ));
        s.checkpoint.commit_after_fence(&s.track).await.unwrap();
        assert_eq!(stored(&s.store).await, Some(pos(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_is_written_even_without_a_new_mark() {
        let mut s = setup(0).await;
        s.checkpoint.finish(&s.track).await.unwrap();
        let item = s.store.lease("s", "shard-0").await.unwrap().unwrap();
        assert!(item.shard_end);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_makes_a_commit_due_by_records() {
        let s = setup(3).await;
        let mut timer = CommitTimer::start(Duration::from_secs(60)).await;
        for n in 1..=3 {
            s.track.handed_out(&pos(n), 1);
        }
        let started = Instant::now();
        timer.due(&s.checkpoint, &s.track).await;
        assert_eq!(
            started.elapsed(),
            CATCH_UP_COMMIT,
            "at the next catch-up check"
        );
        let idle = setup(0).await;
        let mut timer = CommitTimer::start(Duration::from_secs(60)).await;
        idle.track.handed_out(&pos(1), 1);
        let started = Instant::now();
        timer.due(&idle.checkpoint, &idle.track).await;
        assert_eq!(started.elapsed(), Duration::from_secs(60), "by time only");
    }
}
