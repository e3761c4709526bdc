//! Delivery of records to the application, and what it has processed.
//!
//! ```text
//!  reader (per shard) ──▶ shard buffer ──▶ shard task ──┬─▶ merged channel ──▶ Records (Stream)
//!                                                       └─▶ handler(record), in order per shard
//! ```
//!
//! Every record carries its lease's [`ShardTrack`](crate::checkpoint::ShardTrack): a record
//! is handed out only while the lease is held and the member's fence allows it (DESIGN
//! §6, exclusivity), and handing it out and processing it move the lease's marks.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::checkpoint::{flush_pending, PendingMark, ShardTrack};
use crate::handler::{handle, ErrorPolicy, Handled, Handler, OnRecord};
use crate::reader::feed::ReadItem;
use crate::record::Record;
use crate::signals::Signals;

/// Where shard tasks put records.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The merged stream.
    Stream(mpsc::Sender<Record>),
    /// A per-shard handler, and what to do when it fails.
    Handler(Arc<dyn Handler>, ErrorPolicy),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stream(_) => f.write_str("Sink::Stream"),
            Sink::Handler(_, policy) => write!(f, "Sink::Handler({policy:?})"),
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
pub(crate) async fn deliver(
    mut rx: mpsc::Receiver<ReadItem>,
    track: Arc<ShardTrack>,
    sink: Sink,
    auto_commit: bool,
    signals: Signals,
) -> DeliveryEnd {
    while let Some(item) = rx.recv().await {
        track.set_millis_behind(item.millis_behind);
        let record = Record::new(item, track.clone());
        let pos = record.position();
        match &sink {
            Sink::Stream(tx) => {
                if tx.send(record).await.is_err() {
                    return DeliveryEnd::StreamDropped;
                }
            }
            Sink::Handler(handler, policy) => {
                if !track.may_hand_out() {
                    return DeliveryEnd::NotAllowed;
                }
                track.handed_out(&pos, record.data.len());
                let mut work = OnRecord {
                    handler: &**handler,
                    record: &record,
                };
                match handle(&mut work, std::slice::from_ref(&record), policy, &signals).await {
                    Handled::Done if auto_commit => track.mark(&pos),
                    Handled::Done => {}
                    Handled::Stopped(reason) => {
                        // Nothing of this shard is in the application's hands any more:
                        // the release need not wait for the failed record.
                        track.give_back();
                        return DeliveryEnd::HandlerStopped(reason);
                    }
                }
            }
        }
    }
    DeliveryEnd::Drained
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::track_tests::{pos, track};

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
