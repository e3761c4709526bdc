//! Self-fencing (DESIGN §3 step 5): the latch that stops a member from handing out
//! records or writing checkpoints once its last successful heartbeat (or, for the lock
//! holder, lock renewal) was *sent* longer ago than `fence_fraction × failover_timeout`.
//!
//! The age is measured on the fencing clock, which counts suspended time, and is checked
//! before each heartbeat, renewal, hand-out and checkpoint write — not only in the tick
//! loop, because a paused process wakes up inside its readers. Once tripped, the fence
//! stays tripped: a late heartbeat that succeeds must never revive a member whose shards
//! may already be elsewhere. Each incarnation has its own fence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

const NOT_LEADER: u64 = u64::MAX;

/// The fence of one incarnation.
#[derive(Debug)]
pub(crate) struct Fence {
    clock: Arc<dyn Clock>,
    deadline: Duration,
    /// Fencing-clock nanos at which the last successful heartbeat was sent.
    last_beat: AtomicU64,
    /// Same for the last successful lock renewal (or take), `NOT_LEADER` when not holding.
    last_renewal: AtomicU64,
    tripped: AtomicBool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Fence {
    /// A fence whose first "heartbeat" is the registration sent at `registered_at`.
    pub(crate) fn new(clock: Arc<dyn Clock>, deadline: Duration, registered_at: Duration) -> Self {
        Self {
            clock,
            deadline,
            last_beat: AtomicU64::new(nanos(registered_at)),
            last_renewal: AtomicU64::new(NOT_LEADER),
            tripped: AtomicBool::new(false),
        }
    }

    /// Whether this incarnation may still act. Trips the latch when a deadline passed.
    pub(crate) fn check(&self) -> bool {
        if self.tripped.load(Ordering::Acquire) {
            return false;
        }
        let now = nanos(self.clock.fencing_now());
        let deadline = nanos(self.deadline);
        let beat = self.last_beat.load(Ordering::Acquire);
        let renewal = self.last_renewal.load(Ordering::Acquire);
        let stale = |sent: u64| sent != NOT_LEADER && now.saturating_sub(sent) > deadline;
        if stale(beat) || stale(renewal) {
            self.trip();
            return false;
        }
        true
    }

    /// Trips the latch for good (deadline passed, lock lost, superseded).
    pub(crate) fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
    }

    /// A heartbeat sent at `sent_at` succeeded.
    pub(crate) fn beat_ok(&self, sent_at: Duration) {
        self.last_beat.fetch_max(nanos(sent_at), Ordering::AcqRel);
    }

    /// The lock was taken or renewed by a request sent at `sent_at`.
    pub(crate) fn renewal_ok(&self, sent_at: Duration) {
        let sent = nanos(sent_at);
        let _ = self
            .last_renewal
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(if old == NOT_LEADER {
                    sent
                } else {
                    old.max(sent)
                })
            });
    }

    /// This incarnation no longer holds the lock (released it gracefully).
    pub(crate) fn not_leader(&self) {
        self.last_renewal.store(NOT_LEADER, Ordering::Release);
    }

    /// The fencing clock now.
    pub(crate) fn now(&self) -> Duration {
        self.clock.fencing_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;

    fn fence() -> (Arc<TestClock>, Fence) {
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let f = Fence::new(clock.clone(), Duration::from_secs(1), clock.fencing_now());
        (clock, f)
    }

    #[tokio::test(start_paused = true)]
    async fn trips_after_the_deadline_and_stays_tripped() {
        let (clock, f) = fence();
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(f.check());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!f.check());
        // A late heartbeat that then succeeds does not revive it (scenario 20).
        f.beat_ok(clock.fencing_now());
        assert!(!f.check());
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspend_counts() {
        let (clock, f) = fence();
        clock.suspend(Duration::from_secs(5));
        assert!(!f.check());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_holder_fences_on_stale_renewals() {
        let (clock, f) = fence();
        f.renewal_ok(clock.fencing_now());
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(600)).await;
            f.beat_ok(clock.fencing_now());
        }
        assert!(
            !f.check(),
            "renewals stale for 1.8 s while heartbeats succeed"
        );
    }
}
