//! What every shard reader shares, polling or fan-out: where it starts, what it sends to
//! its channel, how it ends, and [`Feed`] — the sending half that skips what the
//! checkpoint covers, splits aggregated records, remembers what was read and sent, and
//! turns errors into retries or ends.
//!
//! Records aggregated by the Kinesis Producer Library are split here into their user
//! records ([`Aggregation::Split`], the default; see [`super::aggregation`]), so the
//! checkpoint skip, the channel and the marks all work on user records:
//!
//! - user record `i` of `n` is sent at position `(sequence, Some(i))`, except the last,
//!   sent at `(sequence, None)`: marking it marks the whole Kinesis record, so a
//!   checkpoint carries a sub-sequence number only while it is inside an aggregate
//!   (DESIGN §3), and a closed shard whose last record is an aggregate can finish;
//! - an aggregate of no user records sends nothing. The checkpoint moves past it with the
//!   next record marked; until then a restart reads it again (and again sends nothing),
//!   and a closed shard waits only for the last item *sent* ([`ReaderEnd::ShardEnd`]),
//!   so it never stalls on one;
//! - a record that does not decode is sent as it is, as a whole record, and counted
//!   ([`crate::metrics::AGGREGATED_MALFORMED`]).
//!
//! # Cancel safety
//!
//! Every wait of a [`Feed`] ends as soon as its token is cancelled. Records already sent
//! stay sent; a record being sent when the token fires is not delivered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::BufferTx;
use tokio_util::sync::CancellationToken;

use super::{aggregation, IteratorStart, KinesisError, RawRecord};
use crate::backoff::Backoff;
use crate::config::Aggregation;
use crate::load::{LoadMeter, ShardMeter};
use crate::metrics::ReadMetrics;
use crate::seq::{Position, SequenceNumber};
use crate::shards::StoredStart;

/// The first backoff ceiling after a throttle or a transient error, and the largest.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The least wait after ResourceInUse: on the real service a second subscription of the
/// same consumer and shard within 5 s is refused, and after 5 s evicts the first one
/// (DESIGN §5). The backoff's jitter comes on top.
const RESOURCE_IN_USE_WAIT: Duration = Duration::from_secs(5);

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// After a checkpoint: everything at or before it is processed.
    After(Position),
    /// A shard without a checkpoint: its stored start.
    Start(StoredStart),
}

/// One record read, as sent to the reader's channel: a whole Kinesis record, or one user
/// record of an aggregated one.
#[derive(Debug, Clone)]
pub(crate) struct ReadItem {
    /// The record; for a user record, its own partition key and data under the
    /// aggregate's sequence number.
    pub(crate) record: RawRecord,
    /// The user record's index inside its aggregate; `None` for a whole record.
    pub(crate) sub_sequence: Option<u64>,
    /// The user record's explicit hash key, if its producer set one.
    pub(crate) explicit_hash_key: Option<String>,
    /// Where marking this item puts the shard's mark: `(sequence, sub_sequence)`, except
    /// for the last user record of an aggregate, which completes the whole record.
    pub(crate) position: Position,
    /// How far the shard's tip was ahead of the page this record came in.
    pub(crate) millis_behind: Option<i64>,
}

/// Why a reader stopped.
#[derive(Debug)]
pub(crate) enum ReaderEnd {
    /// The token was cancelled, or the channel's receiver was dropped.
    Cancelled,
    /// The end of a closed shard: every record of it was sent.
    ShardEnd {
        /// The position of the last item this reader sent; `None` if it sent none.
        last: Option<Position>,
        /// The children Kinesis announced (may be empty).
        children: Vec<String>,
    },
    /// The shard no longer exists (expired past retention): it is finished.
    ShardGone {
        /// The position of the last item this reader sent; `None` if it sent none.
        last: Option<Position>,
    },
    /// The stream is missing or access is denied: retrying will not help.
    Fatal(KinesisError),
}

/// The sending half of one shard's reader.
pub(crate) struct Feed {
    pub(crate) stream: Arc<str>,
    pub(crate) shard_id: Arc<str>,
    aggregation: Aggregation,
    out: BufferTx,
    cancel: CancellationToken,
    /// The start before anything was read.
    start: IteratorStart,
    /// The checkpoint: records at or before it are not sent again.
    skip_through: Option<Position>,
    /// The last record read into the channel (or skipped as processed).
    last_read: Option<SequenceNumber>,
    /// The position of the last item sent (what a finished shard must see marked).
    last_sent: Option<Position>,
    backoff: Backoff,
    metrics: ReadMetrics,
    /// Counts what is read into the member's load meter (`balance = load`).
    load: Option<ShardMeter>,
}

impl Feed {
    /// A feed of shard `shard_id` of `stream` from `from` into `out`, until `cancel`.
    pub(crate) fn new(
        stream: Arc<str>,
        shard_id: Arc<str>,
        from: ReadFrom,
        aggregation: Aggregation,
        out: BufferTx,
        cancel: CancellationToken,
    ) -> Self {
        let (start, skip_through) = match from {
            // AT_SEQUENCE_NUMBER: the checkpoint is inside an aggregated record whose other
            // user records are still to be delivered.
            ReadFrom::After(p) if p.sub_sequence.is_some() => {
                (IteratorStart::At(p.sequence.clone()), Some(p))
            }
            ReadFrom::After(p) => (IteratorStart::After(p.sequence.clone()), Some(p)),
            ReadFrom::Start(StoredStart::TrimHorizon) => (IteratorStart::TrimHorizon, None),
            ReadFrom::Start(StoredStart::AtTimestamp(t)) => (IteratorStart::AtTimestamp(t), None),
        };
        Self {
            metrics: ReadMetrics::new(&stream, &shard_id),
            load: None,
            stream,
            shard_id,
            aggregation,
            out,
            cancel,
            start,
            skip_through,
            last_read: None,
            last_sent: None,
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
        }
    }

    /// Counts what this feed reads into `load`, the member's load meter, if any.
    pub(crate) fn metered(mut self, load: Option<&LoadMeter>) -> Self {
        self.load = load.map(|m| m.track(self.stream.clone(), self.shard_id.clone()));
        self
    }

    /// Where reading starts again (a new iterator, a new subscription): after the last
    /// record read into the channel (not the last one the application processed, which
    /// would deliver records twice), or the original start when nothing was read yet.
    pub(crate) fn resume_start(&self) -> IteratorStart {
        match &self.last_read {
            Some(seq) => IteratorStart::After(seq.clone()),
            None => self.start.clone(),
        }
    }

    /// The last record read, if any.
    pub(crate) fn last_read(&self) -> Option<&SequenceNumber> {
        self.last_read.as_ref()
    }

    /// Records that everything up to `seq` was read (fan-out's continuation sequence
    /// number, which moves on even when no record comes). Never moves back.
    pub(crate) fn read_through(&mut self, seq: SequenceNumber) {
        if self.last_read.as_ref().is_none_or(|last| *last < seq) {
            self.last_read = Some(seq);
        }
    }

    /// A call succeeded: the next failure backs off from the start again.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// The end of a closed shard, read to its end.
    pub(crate) fn shard_end(&self, children: Vec<String>) -> ReaderEnd {
        tracing::debug!(?children, "end of closed shard");
        ReaderEnd::ShardEnd {
            last: self.last_sent.clone(),
            children,
        }
    }

    /// Sends the records that are past the checkpoint; false when cancelled or the
    /// receiver is gone.
    pub(crate) async fn deliver(
        &mut self,
        records: Vec<RawRecord>,
        millis_behind: Option<i64>,
        bytes: usize,
    ) -> bool {
        if !records.is_empty() {
            tracing::debug!(records = records.len(), bytes, ?millis_behind, "read");
        }
        self.metrics.records.increment(records.len() as u64);
        self.metrics.bytes.increment(bytes as u64);
        if let Some(load) = &self.load {
            load.record(records.len(), bytes);
        }
        if let Some(m) = millis_behind {
            self.metrics.behind.set(m as f64);
        }
        let Some(last_read) = records.last().map(|r| r.sequence_number.clone()) else {
            return true;
        };
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            self.items(record, millis_behind, &mut items);
        }
        if let Some(checkpoint) = self.skip_through.take() {
            // Compared as positions: the user records of the aggregate at the checkpoint's
            // sequence after the checkpoint's sub-sequence, and a whole record at that
            // sequence, are still to be processed.
            let processed = items.partition_point(|item| item.position <= checkpoint);
            if processed == items.len() {
                self.skip_through = Some(checkpoint);
            }
            items.drain(..processed);
        }
        let last_sent = items.last().map(|item| item.position.clone());
        let out = self.out.clone();
        match self.or_cancel(out.send_all(items)).await {
            Some(Ok(())) => {
                if last_sent.is_some() {
                    self.last_sent = last_sent;
                }
                self.read_through(last_read);
                true
            }
            None | Some(Err(_)) => false,
        }
    }

    /// Adds to `out` the items of one Kinesis record: its user records when it is an
    /// aggregate to be split (none for an empty aggregate), otherwise the record itself.
    fn items(&self, record: RawRecord, millis_behind: Option<i64>, out: &mut Vec<ReadItem>) {
        if self.aggregation == Aggregation::Split && aggregation::is_aggregated(&record.data) {
            match aggregation::decode(&record.data) {
                Ok(users) => {
                    self.metrics.aggregated.increment(1);
                    self.metrics.user_records.increment(users.len() as u64);
                    let last = users.len().saturating_sub(1);
                    out.extend(users.into_iter().enumerate().map(|(i, user)| ReadItem {
                        position: Position {
                            sequence: record.sequence_number.clone(),
                            sub_sequence: (i != last).then_some(i as u64),
                        },
                        record: RawRecord {
                            sequence_number: record.sequence_number.clone(),
                            partition_key: user.partition_key,
                            data: user.data,
                            approximate_arrival: record.approximate_arrival,
                        },
                        sub_sequence: Some(i as u64),
                        explicit_hash_key: user.explicit_hash_key,
                        millis_behind,
                    }));
                    return;
                }
                Err(e) => {
                    self.metrics.malformed.increment(1);
                    tracing::warn!(
                        error = %e,
                        sequence = %record.sequence_number,
                        "delivering a malformed aggregated record as it is"
                    );
                }
            }
        }
        out.push(ReadItem {
            position: Position::whole(record.sequence_number.clone()),
            record,
            sub_sequence: None,
            explicit_hash_key: None,
            millis_behind,
        });
    }

    /// Decides what an error means: `Ok` to try again (after the backoff, for throttles,
    /// a subscription still in use and transient errors), `Err` to stop.
    pub(crate) async fn recover(&mut self, e: KinesisError) -> Result<(), ReaderEnd> {
        let mut least = Duration::ZERO;
        match e {
            KinesisError::ShardNotFound { .. } => {
                tracing::info!("shard not found (expired past retention): finished");
                return Err(ReaderEnd::ShardGone {
                    last: self.last_sent.clone(),
                });
            }
            KinesisError::StreamNotFound { .. }
            | KinesisError::AccessDenied { .. }
            | KinesisError::FanOutConsumer { .. } => {
                tracing::warn!(error = %e, "stopping the shard's reader");
                return Err(ReaderEnd::Fatal(e));
            }
            // No wait beyond the call rate: a new iterator is all it takes.
            KinesisError::ExpiredIterator => {
                tracing::debug!(after = ?self.last_read, "shard iterator expired; getting a new one");
                return Ok(());
            }
            KinesisError::Throttled { .. } => {
                self.metrics.throttles.increment(1);
                tracing::debug!(error = %e, "throttled; backing off");
            }
            KinesisError::ResourceInUse { .. } => {
                tracing::debug!(error = %e, "subscription still in use; backing off");
                least = RESOURCE_IN_USE_WAIT;
            }
            KinesisError::Other { .. } => tracing::warn!(error = %e, "retrying after backoff"),
        }
        self.metrics.retries.increment(1);
        let delay = least + self.backoff.next_delay();
        match self.or_cancel(tokio::time::sleep(delay)).await {
            Some(()) => Ok(()),
            None => Err(ReaderEnd::Cancelled),
        }
    }

    /// Runs `f` unless the token is cancelled first (`None`).
    pub(crate) async fn or_cancel<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            v = f => Some(v),
        }
    }
}
