//! The fullest way in: a [`Processor`] per shard, told of every step of the shard's
//! lease — assigned, batches, revoking, lost, ended — and given records in batches.
//!
//! ```text
//!  lease taken ──▶ assigned(start) ──▶ process(batch) … ──┬─▶ revoking(deadline)  a handoff or close: flush
//!                                                         ├─▶ lost()              taken away: commits refused
//!                                                         └─▶ shard_ended()       closed shard done: children next
//! ```
//!
//! A batch counts as processed when `process` returns `Ok` (with auto-commit) or when the
//! processor marks its records ([`Checkpointer::mark`]) — for a processor that buffers
//! and writes later. A failed `process` (an error or a panic) goes to the member's
//! [`ErrorPolicy`](crate::ErrorPolicy), which retries the whole batch, then stops the
//! shard or dead-letters each of its records.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::checkpoint::ShardTrack;
use crate::handler::{caught, Attempt, HandlerError};
use crate::reader::feed::ReadFrom;
use crate::record::Record;
use crate::seq::Position;
use crate::shards::StoredStart;
use crate::store::ShardRef;

/// What a processor is told when its shard's lease is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assigned {
    /// The stream.
    pub stream: String,
    /// The shard.
    pub shard_id: String,
    /// The lease's fencing token ([`Record::fencing_token`]).
    pub fencing_token: u64,
    /// Where reading starts.
    pub start: Start,
}

/// Where a shard's reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// After the checkpoint: everything up to it was processed.
    After(Position),
    /// The oldest record (no checkpoint yet).
    TrimHorizon,
    /// The first record at or after this time (no checkpoint yet; LATEST is pinned this
    /// way when the shard is first taken).
    AtTimestamp(DateTime<Utc>),
}

impl From<&ReadFrom> for Start {
    fn from(from: &ReadFrom) -> Self {
        match from {
            ReadFrom::After(p) => Start::After(p.clone()),
            ReadFrom::Start(StoredStart::TrimHorizon) => Start::TrimHorizon,
            ReadFrom::Start(StoredStart::AtTimestamp(t)) => Start::AtTimestamp(*t),
        }
    }
}

/// Records of one shard, in order, handed to [`Processor::process`].
#[derive(Clone)]
pub struct Batch {
    records: Vec<Record>,
}

impl Batch {
    /// The records, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none (never, for a batch handed to a processor).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The payload bytes of all records.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.data.len()).sum()
    }

    /// The fencing token of the lease the batch was read under.
    pub fn fencing_token(&self) -> u64 {
        self.records.first().map_or(0, Record::fencing_token)
    }

    /// How far behind the tip of its shard the reader was at its last read, in
    /// milliseconds (Kinesis's `MillisBehindLatest`), when Kinesis said: 0 is caught up.
    pub fn millis_behind_latest(&self) -> Option<i64> {
        self.records.first().and_then(|r| r.track.millis_behind())
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.records.first();
        f.debug_struct("Batch")
            .field("len", &self.records.len())
            .field("first", &first.map(|r| &r.sequence_number))
            .field("last", &self.records.last().map(|r| &r.sequence_number))
            .finish()
    }
}

/// Marks records of the processor's shard as processed, for a processor that does not
/// let `Ok` do it (with [`Config::auto_commit`](crate::ConfigBuilder::auto_commit) off,
/// or to mark inside a batch). Marks never move back; they are committed at the next
/// commit, and at a handoff after [`Processor::revoking`] returns.
#[derive(Clone)]
pub struct Checkpointer {
    track: Arc<ShardTrack>,
}

impl Checkpointer {
    /// Marks `record` and every record before it in its shard.
    pub fn mark(&self, record: &Record) {
        self.track.mark(&record.position());
    }
}

impl fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpointer")
            .field("stream", &self.track.stream)
            .field("shard_id", &self.track.shard_id)
            .finish()
    }
}

/// One shard's processor: created when the member takes the shard's lease, dropped when
/// it gives it up. Every method but `process` has a default that does nothing.
///
/// Calls come one at a time, in order; they never overlap.
///
/// # Examples
///
/// A processor that buffers records and writes them every 100, or when the shard is
/// taken away:
///
/// ```
/// use kinesumer::processor::{Assigned, Batch, Checkpointer, Processor};
/// use kinesumer::{HandlerError, Record};
///
/// struct Buffered {
///     buffer: Vec<Record>,
///     checkpointer: Checkpointer,
/// }
///
/// impl Buffered {
///     async fn flush(&mut self) {
///         // Write self.buffer somewhere durable, then:
///         if let Some(last) = self.buffer.last() {
///             self.checkpointer.mark(last);
///         }
///         self.buffer.clear();
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl Processor for Buffered {
///     async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError> {
///         self.buffer.extend_from_slice(batch.records());
///         if self.buffer.len() >= 100 {
///             self.flush().await;
///         }
///         Ok(())
///     }
///
///     async fn revoking(&mut self, _deadline: tokio::time::Instant) {
///         self.flush().await;
///     }
/// }
/// ```
#[async_trait]
pub trait Processor: Send + 'static {
    /// The lease was taken; batches from `assigned.start` follow.
    async fn assigned(&mut self, assigned: &Assigned) {
        let _ = assigned;
    }

    /// Processes a batch. With auto-commit, `Ok` marks the whole batch processed. A
    /// failure or a panic goes to the error policy, which may call it again with the same
    /// batch.
    async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError>;

    /// The shard is being taken away gracefully (a planned handoff, or the member's
    /// close): mark what is done before `deadline` (the handoff timeout); the marks are
    /// committed once this returns. No batch follows.
    async fn revoking(&mut self, deadline: Instant) {
        let _ = deadline;
    }

    /// The lease was lost (another member took it, or this member fenced itself): marks
    /// are no longer committed, and the new holder may read the same records again.
    async fn lost(&mut self) {}

    /// The shard was closed (resharded) and its last record processed. Its children are
    /// read only after this returns.
    async fn shard_ended(&mut self) {}
}

/// Makes a [`Processor`] for each shard the member takes.
///
/// Closures `Fn(&ShardRef, Checkpointer) -> P` implement it.
pub trait ProcessorFactory: Send + Sync + 'static {
    /// A processor for `shard`; `checkpointer` marks its records.
    fn create(&self, shard: &ShardRef, checkpointer: Checkpointer) -> Box<dyn Processor>;
}

impl<F, P> ProcessorFactory for F
where
    F: Fn(&ShardRef, Checkpointer) -> P + Send + Sync + 'static,
    P: Processor,
{
    fn create(&self, shard: &ShardRef, checkpointer: Checkpointer) -> Box<dyn Processor> {
        Box::new(self(shard, checkpointer))
    }
}

/// How records are grouped into batches: a batch is handed over when it holds
/// `max_records` records or `max_bytes` bytes of payload, or `max_wait` after its first
/// record — whichever comes first. Default: 500 records, 4 MiB, no wait (what was read
/// already goes in one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// The most records in one batch (at least 1).
    pub max_records: usize,
    /// The most payload bytes in one batch; a single larger record still makes a batch.
    pub max_bytes: usize,
    /// How long to wait for more records after the first.
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_records: 500,
            max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::ZERO,
        }
    }
}

impl Batching {
    /// Whether a batch of `records` records and `bytes` bytes is full.
    pub(crate) fn full(&self, records: usize, bytes: usize) -> bool {
        records >= self.max_records.max(1) || bytes >= self.max_bytes
    }
}

/// A processor on one batch.
pub(crate) struct OnBatch<'a> {
    pub(crate) processor: &'a mut dyn Processor,
    pub(crate) batch: &'a Batch,
}

impl Attempt for OnBatch<'_> {
    fn attempt(&mut self) -> impl std::future::Future<Output = Result<(), String>> + Send + '_ {
        caught(|| self.processor.process(self.batch))
    }
}

impl Batch {
    pub(crate) fn new(records: Vec<Record>) -> Self {
        Self { records }
    }

    pub(crate) fn into_records(self) -> Vec<Record> {
        self.records
    }
}

impl Checkpointer {
    pub(crate) fn new(track: Arc<ShardTrack>) -> Self {
        Self { track }
    }
}

#[cfg(test)]
mod tests;
