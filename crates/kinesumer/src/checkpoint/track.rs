//! The marks of one lease: what was handed to the application and what it processed.
//!
//! Every record carries its shard's [`ShardTrack`]: whether the lease it was read under
//! is still held (records of a released or lost lease are dropped, never handed out),
//! the last position handed out, and the last position marked processed. A record is
//! handed out only while the member's fence allows it (DESIGN §6, exclusivity). The
//! commit ([`super::LeaseCheckpoint`]) reads the mark; nothing here writes the store.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::fence::Fence;
use crate::metrics::DeliveryMetrics;
use crate::seq::Position;

/// The delivery state of one shard lease, shared by its records.
#[derive(Debug)]
pub(crate) struct ShardTrack {
    pub(crate) stream: Arc<str>,
    pub(crate) shard_id: Arc<str>,
    /// The lease counter of the take: the fencing token of this lease's records.
    pub(crate) token: u64,
    fence: Arc<Fence>,
    active: AtomicBool,
    /// MillisBehindLatest of the last record read, `i64::MIN` when unknown.
    millis_behind: AtomicI64,
    /// Records handed out under this lease.
    handed_count: AtomicU64,
    marks: Mutex<Marks>,
    changed: Notify,
    /// Why the lease is ending, once it is: what a processor is told.
    leaving: watch::Sender<Option<Leaving>>,
    /// Records handed out, and the commits of this lease.
    pub(crate) metrics: DeliveryMetrics,
}

/// Why a lease's delivery ends, as its processor hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Given up gracefully (a handoff, a close, a failure): revoking.
    Revoked,
    /// Taken away, or the member fenced itself or stopped: lost.
    Lost,
    /// The reader reached the end of a closed shard: ended, once all is processed.
    Ended,
}

#[derive(Debug, Default)]
struct Marks {
    handed: Option<Position>,
    marked: Option<Position>,
}

impl ShardTrack {
    pub(crate) fn new(stream: Arc<str>, shard_id: Arc<str>, token: u64, fence: Arc<Fence>) -> Self {
        Self {
            metrics: DeliveryMetrics::new(&stream, &shard_id),
            stream,
            shard_id,
            token,
            fence,
            active: AtomicBool::new(true),
            millis_behind: AtomicI64::new(i64::MIN),
            handed_count: AtomicU64::new(0),
            marks: Mutex::new(Marks::default()),
            changed: Notify::new(),
            leaving: watch::Sender::new(None),
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a record of this lease may be handed out now: the lease is held and the
    /// fence allows it. Records that may not are dropped.
    pub(crate) fn may_hand_out(&self) -> bool {
        self.active.load(Ordering::Acquire) && self.fence.check()
    }

    /// Whether a record already handed out may be tried again (or dead-lettered): the
    /// lease was not lost and the fence allows it. A planned handoff (revoked) waits for
    /// the records in the application's hands, so their retries go on until it releases.
    pub(crate) fn may_retry(&self) -> bool {
        !matches!(*self.leaving.borrow(), Some(Leaving::Lost)) && self.fence.check()
    }

    /// Records the lag reported with the last record read.
    pub(crate) fn set_millis_behind(&self, millis: Option<i64>) {
        if let Some(m) = millis {
            self.millis_behind.store(m, Ordering::Relaxed);
        }
    }

    /// The lag reported with the last record read, if any.
    pub(crate) fn millis_behind(&self) -> Option<i64> {
        Some(self.millis_behind.load(Ordering::Relaxed)).filter(|&m| m != i64::MIN)
    }

    /// Records that `pos`, a record of `bytes` bytes of data, was handed to the
    /// application.
    pub(crate) fn handed_out(&self, pos: &Position, bytes: usize) {
        self.metrics.records.increment(1);
        self.metrics.bytes.increment(bytes as u64);
        self.handed_count.fetch_add(1, Ordering::Relaxed);
        self.marks().handed = Some(pos.clone());
    }

    /// Marks `pos` and everything before it processed. Marks never move back.
    pub(crate) fn mark(&self, pos: &Position) {
        let mut m = self.marks();
        if m.marked.as_ref().is_none_or(|old| old < pos) {
            m.marked = Some(pos.clone());
            drop(m);
            self.changed.notify_waiters();
        }
    }

    /// How many records were handed out under this lease.
    pub(crate) fn handed_count(&self) -> u64 {
        self.handed_count.load(Ordering::Relaxed)
    }

    /// The last marked position.
    pub(crate) fn marked(&self) -> Option<Position> {
        self.marks().marked.clone()
    }

    /// Stops handing out this lease's records: those still buffered are dropped.
    pub(crate) fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Says why the lease's delivery ends; a revoked or lost lease is deactivated too.
    pub(crate) fn leave(&self, why: Leaving) {
        self.leaving.send_replace(Some(why));
        if why != Leaving::Ended {
            self.deactivate();
        }
    }

    /// Why the lease's delivery ends, once it does.
    pub(crate) fn leaving(&self) -> watch::Receiver<Option<Leaving>> {
        self.leaving.subscribe()
    }

    /// Takes back what was handed out and not marked: the application will not process
    /// it (its delivery stopped), so nothing is waited for.
    pub(crate) fn give_back(&self) {
        let mut m = self.marks();
        m.handed = m.marked.clone();
        drop(m);
        self.changed.notify_waiters();
    }

    /// Whether every record handed out is marked.
    pub(crate) fn all_processed(&self) -> bool {
        let m = self.marks();
        match (&m.handed, &m.marked) {
            (None, _) => true,
            (Some(h), Some(k)) => k >= h,
            (Some(_), None) => false,
        }
    }

    /// Waits until everything handed out is marked, for at most `timeout`. Returns
    /// whether it was.
    pub(crate) async fn wait_processed(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.all_processed() {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until `pos` is marked (for a shard's end: every record processed), or the
    /// lease is deactivated. Returns whether it was marked.
    pub(crate) async fn wait_marked(&self, pos: &Position) -> bool {
        loop {
            let changed = self.changed.notified();
            if self.marked().is_some_and(|m| &m >= pos) {
                return true;
            }
            if !self.active.load(Ordering::Acquire) {
                return false;
            }
            changed.await;
        }
    }
}

/// The last record handed out by [`Records`](crate::Records), marked when the next one is
/// asked for (auto-commit).
pub(crate) type PendingMark = Arc<Mutex<Option<(Arc<ShardTrack>, Position)>>>;

/// Marks the pending record, if any (auto-commit).
pub(crate) fn flush_pending(pending: &PendingMark) {
    let taken = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((track, pos)) = taken {
        track.mark(&pos);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{Clock, TestClock};

    /// A track of shard `shard-0` of stream `s` under a fence that does not trip.
    pub(crate) fn track() -> Arc<ShardTrack> {
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let fence = Arc::new(Fence::new(
            clock.clone(),
            Duration::from_secs(60),
            clock.fencing_now(),
        ));
        Arc::new(ShardTrack::new("s".into(), "shard-0".into(), 1, fence))
    }

    pub(crate) fn pos(n: u64) -> Position {
        Position::whole(n.to_string().parse().unwrap())
    }

    #[test]
    fn marks_never_move_back() {
        let t = track();
        t.mark(&pos(10));
        t.mark(&pos(9));
        assert_eq!(t.marked(), Some(pos(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_processed_returns_when_the_handed_out_record_is_marked() {
        let t = track();
        t.handed_out(&pos(5), 1);
        assert!(!t.wait_processed(Duration::from_millis(100)).await);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait_processed(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        t.mark(&pos(5));
        assert!(waiter.await.unwrap());
    }
}
