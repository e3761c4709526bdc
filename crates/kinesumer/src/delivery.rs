//! Delivery of records to the application, and what it has processed.
//!
//! ```text
//!  reader (per shard) ──▶ shard buffer ──▶ shard task ──┬─▶ merged channel ──▶ Records (Stream)
//!                                                       ├─▶ handler(record), in order per shard
//!                                                       └─▶ processor: assigned, process(batch) …,
//!                                                           revoking | lost | shard_ended
//! ```
//!
//! Every record carries its lease's [`ShardTrack`](crate::checkpoint::ShardTrack): a record
//! is handed out only while the lease is held and the member's fence allows it (DESIGN
//! §6, exclusivity), and handing it out and processing it move the lease's marks.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;

use crate::checkpoint::{flush_pending, Leaving, PendingMark, ShardTrack};
use crate::flow::Flow;
use crate::handler::{handle, ErrorPolicy, Handled, Handler, OnRecord};
use crate::processor::{Assigned, Batch, Batching, Checkpointer, OnBatch, ProcessorFactory, Start};
use crate::reader::buffer::{BufferRx, CHUNKS_PER_BUFFER};
use crate::reader::feed::ReadItem;
use crate::record::Record;
use crate::signals::Signals;

/// Where shard tasks put records.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The merged stream, fed chunks of at most `chunk` records of one shard.
    Stream {
        tx: mpsc::Sender<Vec<Record>>,
        chunk: usize,
    },
    /// A per-shard handler, and what to do when it fails.
    Handler(Arc<dyn Handler>, ErrorPolicy),
    /// A processor per shard, fed batches.
    Processor(Arc<dyn ProcessorFactory>, ErrorPolicy, Batching),
}

impl Sink {
    /// A sink to the merged stream of at most about `records` records in flight, and the
    /// stream.
    pub(crate) fn stream(
        records: usize,
        pending: PendingMark,
        auto_commit: bool,
    ) -> (Sink, Records) {
        // As the shard buffer's: each chunk at most a part of the bound, one record at least.
        let chunk = (records / CHUNKS_PER_BUFFER).max(1);
        let (tx, rx) = mpsc::channel(records.div_ceil(chunk).max(1));
        let records = Records {
            rx,
            current: std::collections::VecDeque::new(),
            pending,
            auto_commit,
        };
        (Sink::Stream { tx, chunk }, records)
    }

    /// Whether the application hears of the lease's end (a processor): the shard task
    /// then waits for its delivery to end rather than for its records' marks.
    pub(crate) fn follows_lease(&self) -> bool {
        matches!(self, Sink::Processor(..))
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stream { .. } => f.write_str("Sink::Stream"),
            Sink::Handler(_, policy) => write!(f, "Sink::Handler({policy:?})"),
            Sink::Processor(_, policy, batching) => {
                write!(f, "Sink::Processor({policy:?}, {batching:?})")
            }
        }
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
    rx: mpsc::Receiver<Vec<Record>>,
    /// The chunk being handed out.
    current: std::collections::VecDeque<Record>,
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

impl Stream for Records {
    type Item = Record;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Record>> {
        if self.auto_commit {
            flush_pending(&self.pending);
        }
        loop {
            let Some(record) = self.current.pop_front() else {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(chunk)) => {
                        self.current = chunk.into();
                        continue;
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            };
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
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        if self.auto_commit {
            flush_pending(&self.pending);
        }
    }
}

/// Why a shard's delivery ended.
#[derive(Debug)]
pub(crate) enum DeliveryEnd {
    /// The reader ended and every record read was passed on.
    Drained,
    /// The application dropped its record stream.
    StreamDropped,
    /// A record could not be handed out: the fence tripped.
    NotAllowed,
    /// The error policy stopped the shard at a record that kept failing.
    HandlerStopped(String),
}

/// Moves records from the shard's buffer to the application, in order.
pub(crate) async fn deliver(rx: BufferRx, track: Arc<ShardTrack>, to: Delivery) -> DeliveryEnd {
    match &to.sink {
        Sink::Stream { tx, chunk } => to_stream(rx, track, tx, *chunk, &to.flow).await,
        Sink::Handler(handler, policy) => to_handler(rx, track, &**handler, policy, &to).await,
        Sink::Processor(factory, policy, batching) => {
            process(rx, track, &**factory, policy, *batching, &to).await
        }
    }
}

/// Where a shard's records go, and what the application is told.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) sink: Sink,
    pub(crate) auto_commit: bool,
    pub(crate) signals: Signals,
    /// Where reading starts (for a processor's `assigned`).
    pub(crate) start: Start,
    /// How long a handoff waits (a processor's `revoking` deadline).
    pub(crate) handoff_timeout: Duration,
    /// Pauses and the rate limit.
    pub(crate) flow: Flow,
}

/// The next record of the shard once it is not paused, admitted by the rate limit;
/// `None` once the reader ended and everything read was taken.
async fn next(rx: &mut BufferRx, flow: &Flow, track: &ShardTrack) -> Option<ReadItem> {
    flow.unpaused(&track.stream, &track.shard_id).await;
    let item = rx.recv().await?;
    // A pause that came while this waited for the record holds it too.
    flow.unpaused(&track.stream, &track.shard_id).await;
    flow.admit(1).await;
    Some(item)
}

/// Passes records to the merged stream (handed out when the application asks): the
/// next one, and what else is buffered now, up to `chunk`.
async fn to_stream(
    mut rx: BufferRx,
    track: Arc<ShardTrack>,
    tx: &mpsc::Sender<Vec<Record>>,
    chunk: usize,
    flow: &Flow,
) -> DeliveryEnd {
    let now = Batching {
        max_records: chunk,
        max_bytes: usize::MAX,
        max_wait: Duration::ZERO,
    };
    while let Some(first) = next(&mut rx, flow, &track).await {
        let records = collect(first, &mut rx, now, &track).await;
        flow.admit(records.len() - 1).await;
        if tx.send(records.into_records()).await.is_err() {
            return DeliveryEnd::StreamDropped;
        }
    }
    DeliveryEnd::Drained
}

/// Hands record by record to a handler, under the error policy.
async fn to_handler(
    mut rx: BufferRx,
    track: Arc<ShardTrack>,
    handler: &dyn Handler,
    policy: &ErrorPolicy,
    to: &Delivery,
) -> DeliveryEnd {
    while let Some(item) = next(&mut rx, &to.flow, &track).await {
        track.set_millis_behind(item.millis_behind);
        let record = Record::new(item, track.clone());
        let pos = record.position();
        if !track.may_hand_out() {
            return DeliveryEnd::NotAllowed;
        }
        track.handed_out(&pos, record.data.len());
        let mut work = OnRecord {
            handler,
            record: &record,
        };
        let records = std::slice::from_ref(&record);
        let may_retry = || track.may_retry();
        match handle(&mut work, records, policy, &to.signals, may_retry).await {
            Handled::Done | Handled::DeadLettered if to.auto_commit => track.mark(&pos),
            Handled::Done | Handled::DeadLettered => {}
            Handled::LeaseLost => return DeliveryEnd::NotAllowed,
            Handled::Stopped(reason) => {
                // Nothing of this shard is in the application's hands any more: the
                // release need not wait for the failed record.
                track.give_back();
                return DeliveryEnd::HandlerStopped(reason);
            }
        }
    }
    DeliveryEnd::Drained
}

/// Runs a shard's processor: assigned, batches, then revoking, lost or shard_ended.
async fn process(
    mut rx: BufferRx,
    track: Arc<ShardTrack>,
    factory: &dyn ProcessorFactory,
    policy: &ErrorPolicy,
    batching: Batching,
    to: &Delivery,
) -> DeliveryEnd {
    let shard = crate::store::ShardRef {
        stream: track.stream.to_string(),
        shard_id: track.shard_id.to_string(),
    };
    let mut processor = factory.create(&shard, Checkpointer::new(track.clone()));
    processor
        .assigned(&Assigned {
            stream: shard.stream,
            shard_id: shard.shard_id,
            fencing_token: track.token,
            start: to.start.clone(),
        })
        .await;
    let mut leaving = track.leaving();
    // Records handed to the processor and not marked, oldest first.
    let mut unmarked: Vec<Record> = Vec::new();
    loop {
        // A shard's end is heard once every record read was processed; a revoke or a
        // loss at once (after the batch in hand).
        let taken_away = |w: &Option<Leaving>| matches!(w, Some(Leaving::Revoked | Leaving::Lost));
        let first = tokio::select! {
            biased;
            _ = leaving.wait_for(taken_away) => break,
            item = async {
                to.flow.unpaused(&track.stream, &track.shard_id).await;
                rx.recv().await
            } => item,
        };
        let Some(first) = first else {
            // The reader ended: at a shard's end, or by a failure the shard task reports.
            let _ = leaving.wait_for(Option::is_some).await;
            break;
        };
        let batch = collect(first, &mut rx, batching, &track).await;
        to.flow.unpaused(&track.stream, &track.shard_id).await;
        to.flow.admit(batch.len()).await;
        if !track.may_hand_out() {
            break;
        }
        for record in batch.records() {
            track.handed_out(&record.position(), record.data.len());
        }
        // What a failure covers: this batch, and what the processor was given before and
        // has not marked (a buffering processor's) — all of it is dead-lettered, since
        // the mark after a dead letter moves past it.
        let marked = track.marked();
        unmarked.retain(|r| marked.as_ref().is_none_or(|m| r.position() > *m));
        unmarked.extend_from_slice(batch.records());
        let mut work = OnBatch {
            processor: &mut *processor,
            batch: &batch,
        };
        let last = batch.records().last().map(Record::position);
        let may_retry = || track.may_retry();
        match handle(&mut work, &unmarked, policy, &to.signals, may_retry).await {
            Handled::Done if to.auto_commit => last.iter().for_each(|p| track.mark(p)),
            Handled::Done => {}
            Handled::DeadLettered => last.iter().for_each(|p| track.mark(p)),
            Handled::LeaseLost => break,
            Handled::Stopped(reason) => {
                // The shard is released next: what the processor holds may be flushed.
                processor
                    .revoking(tokio::time::Instant::now() + to.handoff_timeout)
                    .await;
                track.give_back();
                return DeliveryEnd::HandlerStopped(reason);
            }
        }
    }
    let why = *leaving.borrow();
    match why {
        Some(Leaving::Revoked) => {
            processor
                .revoking(tokio::time::Instant::now() + to.handoff_timeout)
                .await;
            // What the processor did not mark by now it will not process.
            track.give_back();
            DeliveryEnd::NotAllowed
        }
        Some(Leaving::Ended) => {
            processor.shard_ended().await;
            DeliveryEnd::Drained
        }
        Some(Leaving::Lost) | None => {
            processor.lost().await;
            DeliveryEnd::NotAllowed
        }
    }
}

/// A batch that starts with `first`: what else is buffered, and what arrives within
/// `max_wait`, up to the limits.
async fn collect(
    first: ReadItem,
    rx: &mut BufferRx,
    batching: Batching,
    track: &Arc<ShardTrack>,
) -> Batch {
    let deadline = tokio::time::Instant::now() + batching.max_wait;
    let mut bytes = first.record.data.len();
    track.set_millis_behind(first.millis_behind);
    let mut records = Vec::with_capacity((rx.ready() + 1).min(batching.max_records.max(1)));
    records.push(Record::new(first, track.clone()));
    while !batching.full(records.len(), bytes) {
        let next = match rx.try_recv() {
            Some(item) => Some(item),
            None if batching.max_wait.is_zero() => None,
            None => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(item) = next else { break };
        bytes += item.record.data.len();
        track.set_millis_behind(item.millis_behind);
        records.push(Record::new(item, track.clone()));
    }
    Batch::new(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::track_tests::{pos, track};

    /// Record `n` of the lease that `t` follows.
    fn rec(t: &Arc<ShardTrack>, n: u64) -> Record {
        Record {
            stream: "s".into(),
            shard_id: t.shard_id.clone(),
            sequence_number: n.to_string().parse().unwrap(),
            sub_sequence_number: None,
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: bytes::Bytes::new(),
            approximate_arrival: None,
            position: pos(n),
            track: t.clone(),
        }
    }

    /// An auto-committing record stream and the sender that feeds it.
    fn auto_commit_stream() -> (mpsc::Sender<Vec<Record>>, Records) {
        let (sink, records) = Sink::stream(8, PendingMark::default(), true);
        let Sink::Stream { tx, .. } = sink else {
            unreachable!("a stream sink")
        };
        (tx, records)
    }

    #[tokio::test]
    async fn records_of_a_deactivated_lease_are_dropped_and_auto_commit_marks_on_next() {
        use futures::StreamExt;
        let t = track();
        let (tx, mut records) = auto_commit_stream();
        let rec = |n: u64| rec(&t, n);
        tx.send(vec![rec(1), rec(2)]).await.unwrap();
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

    #[tokio::test]
    async fn auto_commit_marks_the_record_before_on_its_own_lease_when_the_next_is_of_another() {
        use futures::StreamExt;
        let (a, b) = (track(), track());
        let (tx, mut records) = auto_commit_stream();
        tx.send(vec![rec(&a, 1), rec(&a, 2)]).await.unwrap();
        tx.send(vec![rec(&b, 7)]).await.unwrap();
        records.next().await.unwrap();
        records.next().await.unwrap();
        assert_eq!(
            a.marked(),
            Some(pos(1)),
            "the first, once the second is asked for"
        );
        assert!(
            !a.all_processed(),
            "the second is in the application's hands"
        );
        records.next().await.unwrap();
        assert_eq!(a.marked(), Some(pos(2)));
        assert!(a.all_processed());
        assert_eq!(b.marked(), None, "handed out is not processed");
        drop(records);
        assert_eq!(
            b.marked(),
            Some(pos(7)),
            "the stream dropped, it counts as processed"
        );
        assert!(b.all_processed());
    }
}
