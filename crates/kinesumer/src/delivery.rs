//! Delivery of records to the application, and what it has processed.
//!
//! ```text
//!  reader (per shard) ──▶ shard buffer ──▶ shard task ──┬─▶ merged channel ──▶ Records (Stream)
//!                                                       └─▶ handler(record), in order per shard
//! ```
//!
//! Every record carries its shard's [`ShardTrack`]: whether the lease it was read under
//! is still held (records of a released or lost lease are dropped, never handed out),
//! the last position handed out, and the last position marked processed. A record is
//! handed out only while the member's fence allows it (DESIGN §6, exclusivity).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::{mpsc, Notify};

use crate::fence::Fence;
use crate::metrics::DeliveryMetrics;
use crate::record::Record;
use crate::seq::Position;

/// The delivery state of one shard lease, shared by its records.
#[derive(Debug)]
pub(crate) struct ShardTrack {
    pub(crate) stream: Arc<str>,
    pub(crate) shard_id: Arc<str>,
    fence: Arc<Fence>,
    active: AtomicBool,
    /// MillisBehindLatest of the last record read, `i64::MIN` when unknown.
    millis_behind: AtomicI64,
    /// Records handed out under this lease.
    handed_count: AtomicU64,
    marks: Mutex<Marks>,
    changed: Notify,
    /// Records handed out, and the commits of this lease.
    pub(crate) metrics: DeliveryMetrics,
}

#[derive(Debug, Default)]
struct Marks {
    handed: Option<Position>,
    marked: Option<Position>,
}

impl ShardTrack {
    pub(crate) fn new(stream: Arc<str>, shard_id: Arc<str>, fence: Arc<Fence>) -> Self {
        Self {
            metrics: DeliveryMetrics::new(&stream, &shard_id),
            stream,
            shard_id,
            fence,
            active: AtomicBool::new(true),
            millis_behind: AtomicI64::new(i64::MIN),
            handed_count: AtomicU64::new(0),
            marks: Mutex::new(Marks::default()),
            changed: Notify::new(),
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

/// A per-shard record handler: called for each record of a shard in order, for many
/// shards at once. See [`Kinesumer::consume_with`](crate::Kinesumer::consume_with).
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. With auto-commit, the record counts as processed when the
    /// returned future completes.
    fn handle(&self, record: Record) -> BoxFuture<'static, ()>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn handle(&self, record: Record) -> BoxFuture<'static, ()> {
        Box::pin(self(record))
    }
}

/// Where shard tasks put records.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The merged stream.
    Stream(mpsc::Sender<Record>),
    /// A per-shard handler.
    Handler(Arc<dyn Handler>),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stream(_) => f.write_str("Sink::Stream"),
            Sink::Handler(_) => f.write_str("Sink::Handler"),
        }
    }
}

/// The last record handed out by [`Records`], marked when the next one is asked for.
pub(crate) type PendingMark = Arc<Mutex<Option<(Arc<ShardTrack>, Position)>>>;

/// Marks the pending record, if any (auto-commit).
pub(crate) fn flush_pending(pending: &PendingMark) {
    let taken = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((track, pos)) = taken {
        track.mark(&pos);
    }
}

/// The records of every shard this member holds, as a [`Stream`].
///
/// Records of one shard come in order. With auto-commit (the default), a record counts
/// as processed when the next one is asked for, when this stream is dropped, or at
/// [`Kinesumer::close`](crate::Kinesumer::close) — never when it is merely handed out. Without
/// auto-commit, call [`Kinesumer::mark`](crate::Kinesumer::mark).
///
/// The stream ends (yields `None`) once the consumer is closed or stopped for good.
/// Errors do not end it: they go to [`Kinesumer::errors`](crate::Kinesumer::errors).
///
/// # Cancel safety
///
/// `next()` is cancel-safe: a record is handed out only by a poll that returns it.
pub struct Records {
    rx: mpsc::Receiver<Record>,
    pending: PendingMark,
    auto_commit: bool,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("auto_commit", &self.auto_commit)
            .finish_non_exhaustive()
    }
}

impl Records {
    pub(crate) fn new(rx: mpsc::Receiver<Record>, pending: PendingMark, auto_commit: bool) -> Self {
        Self {
            rx,
            pending,
            auto_commit,
        }
    }
}

impl Stream for Records {
    type Item = Record;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Record>> {
        if self.auto_commit {
            flush_pending(&self.pending);
        }
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(record)) => {
                    if !record.track.may_hand_out() {
                        continue;
                    }
                    let pos = record.position();
                    record.track.handed_out(&pos, record.data.len());
                    if self.auto_commit {
                        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((record.track.clone(), pos));
                    }
                    return Poll::Ready(Some(record));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        if self.auto_commit {
            flush_pending(&self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TestClock};

    fn track() -> Arc<ShardTrack> {
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let fence = Arc::new(Fence::new(
            clock.clone(),
            Duration::from_secs(60),
            clock.fencing_now(),
        ));
        Arc::new(ShardTrack::new("s".into(), "shard-0".into(), fence))
    }

    fn pos(n: u64) -> Position {
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

    #[tokio::test]
    async fn records_of_a_deactivated_lease_are_dropped_and_auto_commit_marks_on_next() {
        use futures::StreamExt;
        let t = track();
        let (tx, rx) = mpsc::channel(8);
        let pending: PendingMark = Arc::default();
        let mut records = Records::new(rx, pending, true);
        let rec = |n: u64| Record {
            stream: "s".into(),
            shard_id: "shard-0".into(),
            sequence_number: n.to_string().parse().unwrap(),
            sub_sequence_number: None,
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: bytes::Bytes::new(),
            approximate_arrival: None,
            position: pos(n),
            track: t.clone(),
        };
        tx.send(rec(1)).await.unwrap();
        tx.send(rec(2)).await.unwrap();
        let first = records.next().await.unwrap();
        assert_eq!(first.sequence_number.as_str(), "1");
        assert_eq!(t.marked(), None, "handed out is not processed");
        t.deactivate();
        drop(tx);
        assert!(
            records.next().await.is_none(),
            "record 2 of a released lease is dropped"
        );
        assert_eq!(
            t.marked(),
            Some(pos(1)),
            "asking for the next marks the previous"
        );
    }
}
