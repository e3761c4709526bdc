//! The errors of a member, at start and at run time.

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::config::ConfigError;
use crate::reader::KinesisError;
use crate::store::StoreError;

/// A `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong, at start or at run time.
///
/// Errors at run time (throttling, lost leases, failed commits) are also sent to
/// [`Kinesumer::errors`](crate::Kinesumer::errors) and logged with `tracing`.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A state-store request failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// A Kinesis request failed.
    #[error("kinesis: {0}")]
    Kinesis(#[from] KinesisError),
    /// A lease this member held now names another owner: its reader stopped.
    #[error("lease of {stream}/{shard_id} lost: {reason}")]
    LeaseLost {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// Why.
        reason: String,
    },
    /// A checkpoint could not be written.
    #[error("commit of {stream}/{shard_id} failed: {source}")]
    CommitFailed {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The state-store error.
        source: StoreError,
    },
    /// The application stopped taking a shard's records (the error policy gave up on a
    /// record, or it dropped the record stream): the shard is released and read again
    /// from its checkpoint by whoever takes it next.
    #[error("delivery of {stream}/{shard_id} stopped: {reason}; the shard is released and read again from its checkpoint")]
    DeliveryStopped {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// Why.
        reason: String,
    },
    /// A dead letter could not be written; it is written again (the shard waits).
    #[error(transparent)]
    DeadLetter(#[from] crate::dead_letter::DeadLetterError),
    /// This member fenced itself again and again: its state-store requests are too slow
    /// for its timeouts. It keeps rejoining (and keeps the work its application
    /// finished), but it cannot hold shards for long until the timeouts fit the store.
    #[error(
        "fenced {fences} times within {window:?}: heartbeats to the state store took {median:?} \
         (median) and up to {max:?}, and {timed_out} of the last {heartbeats} heartbeats timed \
         out, against a request_timeout of {request_timeout:?}; raise \
         request_timeout and failover_timeout together (see \"A slow or shared state store\" \
         in docs/configuration.md)"
    )]
    RepeatedFencing {
        /// Fences within the window.
        fences: usize,
        /// The window.
        window: std::time::Duration,
        /// The median duration of the recent heartbeats.
        median: std::time::Duration,
        /// The longest of the recent heartbeats (a timed-out one counts as the timeout).
        max: std::time::Duration,
        /// How many of the recent heartbeats timed out (no answer within
        /// `request_timeout`): a store that does not answer at all shows here, not in
        /// the durations.
        timed_out: usize,
        /// How many recent heartbeats those figures are of.
        heartbeats: usize,
        /// The configured request timeout.
        request_timeout: std::time::Duration,
    },
    /// Another process registered under this client id; this one stopped for good.
    #[error("another process now runs under client id {client_id:?}; this one stopped")]
    Superseded {
        /// The client id.
        client_id: String,
    },
    /// A stream was deleted and re-created under the same name (its creation time
    /// changed). The leader retired its old leases and checkpoints: they named shards of
    /// the old stream. The new stream's shards start at the configured initial position.
    #[error(
        "stream {stream:?} was deleted and re-created (created {created}, before {previous}): \
         {retired} old leases and checkpoints retired; its shards start at the configured \
         initial position"
    )]
    StreamRecreated {
        /// The stream.
        stream: String,
        /// The old stream's creation time.
        previous: DateTime<Utc>,
        /// The new stream's creation time.
        created: DateTime<Utc>,
        /// How many leases were retired.
        retired: usize,
    },
    /// `consume` was called on a member that already consumes.
    #[error("this member already consumes; use refresh() to change its streams")]
    AlreadyConsuming,
    /// No stream was given.
    #[error("no stream to consume: give at least one stream name")]
    NoStreams,
    /// The member is closed.
    #[error("the consumer is closed")]
    Closed,
    /// [`Kinesumer::close`](crate::Kinesumer::close) left the group, but not everything
    /// finished: records marked but not committed are delivered again, and a lease not
    /// released (or the leader lock) moves after the failover timeout.
    #[error("close did not finish cleanly: {}", list(failures))]
    CloseIncomplete {
        /// What failed: failed final commits, leases lost or not released in time, a
        /// failed lock release or leave.
        failures: Vec<Error>,
    },
    /// Tasks of the member still ran when the close gave up waiting for them: most
    /// likely a handler blocking its thread (a synchronous call in an async handler),
    /// which no cancellation can interrupt. Reported inside [`Error::CloseIncomplete`].
    #[error(
        "{tasks} tasks of the member still ran {waited:?} after the close; a handler \
         blocking its thread cannot be stopped: move blocking work to \
         tokio::task::spawn_blocking"
    )]
    StillRunning {
        /// How many tasks were still running.
        tasks: usize,
        /// How long the close waited for them.
        waited: std::time::Duration,
    },
    /// The listener of [`Kinesumer::errors`](crate::Kinesumer::errors) fell behind and
    /// missed this many errors (they were logged with `tracing`).
    #[error("missed {count} errors: the listener fell behind")]
    Missed {
        /// How many.
        count: u64,
    },
}

fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
