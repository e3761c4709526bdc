//! Reading shards: the seam over Kinesis ([`KinesisApi`]), its implementation over the
//! AWS SDK ([`SdkKinesis`]), and the two readers (one task per owned shard): polling
//! with GetRecords, and enhanced fan-out with SubscribeToShard. Both send through the
//! same feed (`reader/feed.rs`: checkpoint skip, aggregation splitting, error handling).

pub mod aggregation;
pub(crate) mod buffer;
pub(crate) mod fanout;
pub(crate) mod feed;
mod kinesis;
pub(crate) mod polling;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::seq::SequenceNumber;
use crate::shards::ShardInfo;

pub use kinesis::SdkKinesis;

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IteratorStart {
    /// AFTER_SEQUENCE_NUMBER: resume after a checkpoint.
    After(SequenceNumber),
    /// AT_SEQUENCE_NUMBER: resume inside an aggregated record, or retry a record.
    At(SequenceNumber),
    /// TRIM_HORIZON: the oldest record kept.
    TrimHorizon,
    /// AT_TIMESTAMP.
    AtTimestamp(DateTime<Utc>),
    /// LATEST: only records written after the call.
    Latest,
}

/// One Kinesis record as GetRecords returned it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The sequence number.
    pub sequence_number: SequenceNumber,
    /// The partition key.
    pub partition_key: String,
    /// The payload.
    pub data: Bytes,
    /// When Kinesis received it.
    pub approximate_arrival: Option<DateTime<Utc>>,
}

impl fmt::Debug for RawRecord {
    // Payloads are never printed: they may hold personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRecord")
            .field("sequence_number", &self.sequence_number)
            .field("partition_key_len", &self.partition_key.len())
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// One GetRecords response.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    /// The records, in order.
    pub records: Vec<RawRecord>,
    /// The iterator for the next call; `None` at the end of a closed shard.
    pub next_iterator: Option<String>,
    /// How far the shard's tip is ahead of the last record returned.
    pub millis_behind: Option<i64>,
    /// The children announced at the end of a closed shard.
    pub child_shards: Vec<String>,
    /// The payload bytes returned (for the 2 MB/s per-shard read limit).
    pub bytes: usize,
}

/// One event of an enhanced fan-out subscription (a SubscribeToShardEvent).
#[derive(Debug, Clone, Default)]
pub struct FanOutEvent {
    /// The records, in order (often none: the service also sends empty events).
    pub records: Vec<RawRecord>,
    /// Where the next subscription continues (AFTER_SEQUENCE_NUMBER): it moves on even
    /// when no record comes.
    pub continuation: Option<SequenceNumber>,
    /// How far the shard's tip is ahead of this event.
    pub millis_behind: Option<i64>,
    /// The children announced at the end of a closed shard; the last event of the shard.
    pub child_shards: Vec<String>,
    /// The payload bytes of the records.
    pub bytes: usize,
}

/// An open SubscribeToShard event stream. Dropping it ends the subscription.
#[async_trait]
pub trait Subscription: crate::sealed::Sealed + Send + fmt::Debug {
    /// The next event; `Ok(None)` when the service ended the subscription (it does
    /// every 5 minutes). A subscription the service refuses fails here, on its first
    /// event (ResourceInUse while another subscription of the consumer and shard is
    /// open or was just dropped), not when it is opened.
    async fn next_event(&mut self) -> Result<Option<FanOutEvent>, KinesisError>;
}

/// The shards of a stream as a full, unfiltered, paged ListShards returns them.
#[derive(Debug, Clone, Default)]
pub struct StreamShards {
    /// Every shard still within retention.
    pub shards: Vec<ShardInfo>,
}

/// A Kinesis failure, classified for the reader's decisions.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum KinesisError {
    /// The stream does not exist.
    #[error("stream {stream:?} not found; create it, or check the name, region and account")]
    StreamNotFound {
        /// The stream name.
        stream: String,
    },
    /// The shard no longer exists (expired past retention).
    #[error("shard {shard_id} of stream {stream:?} not found")]
    ShardNotFound {
        /// The stream name.
        stream: String,
        /// The shard id.
        shard_id: String,
    },
    /// ProvisionedThroughputExceeded, or LimitExceeded: back off.
    #[error("kinesis throttled {operation} on stream {stream:?}")]
    Throttled {
        /// The API call.
        operation: &'static str,
        /// The stream name.
        stream: String,
    },
    /// The shard iterator expired (after 5 minutes): get a new one.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// Credentials were refused or lack permission: not retried quickly.
    #[error("access denied for {operation} on stream {stream:?}: {message}")]
    AccessDenied {
        /// The API call.
        operation: &'static str,
        /// The stream name.
        stream: String,
        /// What the service said.
        message: String,
    },
    /// ResourceInUse: a subscription of the same consumer and shard is still open (or
    /// was dropped moments ago), or a stream consumer is being registered.
    #[error("kinesis {operation} on stream {stream:?}: resource in use: {message}")]
    ResourceInUse {
        /// The API call.
        operation: &'static str,
        /// The stream name.
        stream: String,
        /// What the service said.
        message: String,
    },
    /// The enhanced fan-out stream consumer could not be registered, found or made
    /// ACTIVE.
    #[error("enhanced fan-out consumer {consumer:?} of stream {stream:?}: {reason}")]
    FanOutConsumer {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
        /// What went wrong and what to do about it.
        reason: String,
    },
    /// Anything else (timeouts, connection failures, 5xx): retried with backoff.
    #[error("kinesis {operation} on stream {stream:?} failed: {message}")]
    Other {
        /// The API call.
        operation: &'static str,
        /// The stream name.
        stream: String,
        /// What the SDK said (never credentials, never payloads).
        message: String,
    },
}

/// The Kinesis calls the consumer makes: the seam that lets simulations run without
/// Kinesis. [`SdkKinesis`] is the implementation over the AWS SDK.
///
/// Sealed: callable, not implementable outside this crate; its error classification
/// drives the readers' backoff, and it grows with the readers. Endpoints, proxies,
/// interceptors and retries belong to the SDK client you pass
/// ([`Kinesumer::from_sdk_config`](crate::Kinesumer::from_sdk_config)); tests use
/// `SimKinesis` (feature `test-util`).
///
/// # Cancel safety
///
/// Every method is cancel safe: the calls read, except `register_consumer` and
/// `deregister_consumer`, which are idempotent (dropped part-way, calling again finds
/// the consumer as the first call left it). A dropped GetRecords loses nothing: the
/// reader asks again with the same iterator, or a new one from its last position.
#[async_trait]
pub trait KinesisApi: crate::sealed::Sealed + Send + Sync + fmt::Debug + 'static {
    /// Every shard of the stream (full, unfiltered, paged ListShards).
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError>;

    /// When the stream was created (DescribeStreamSummary), if the service says. A stream
    /// deleted and re-created under the same name has a new creation time, and its shard
    /// ids name other shards. The default says nothing (`None`): no re-creation is ever
    /// judged.
    async fn stream_created(&self, stream: &str) -> Result<Option<DateTime<Utc>>, KinesisError> {
        let _ = stream;
        Ok(None)
    }

    /// A shard iterator.
    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError>;

    /// One GetRecords call.
    async fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, KinesisError>;

    /// Registers the enhanced fan-out consumer `name` of `stream`, or finds it
    /// registered, and waits up to `timeout` until it is ACTIVE; returns its ARN.
    ///
    /// The default refuses: an implementation without fan-out serves polling only.
    async fn register_consumer(
        &self,
        stream: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<String, KinesisError> {
        let _ = (name, timeout);
        Err(no_fan_out("RegisterStreamConsumer", stream))
    }

    /// Deregisters the enhanced fan-out consumer `name` of `stream`; `false` when
    /// there was none, or it was being deleted already.
    ///
    /// The default refuses, as for [`register_consumer`](KinesisApi::register_consumer).
    async fn deregister_consumer(&self, stream: &str, name: &str) -> Result<bool, KinesisError> {
        let _ = name;
        Err(no_fan_out("DeregisterStreamConsumer", stream))
    }

    /// Opens a SubscribeToShard event stream of consumer `consumer_arn` on shard
    /// `shard_id` of `stream`, from `start`.
    ///
    /// The default refuses, as for [`register_consumer`](KinesisApi::register_consumer).
    async fn subscribe(
        &self,
        consumer_arn: &str,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        let _ = (consumer_arn, shard_id, start);
        Err(no_fan_out("SubscribeToShard", stream))
    }
}

/// Runs one Kinesis call within `limit`: one that does not answer in time (a connection
/// that hangs; the SDK sets no read timeout of its own) fails as a transient error
/// naming the call, and is retried like any other.
pub(crate) async fn within<T>(
    limit: Duration,
    operation: &'static str,
    stream: &str,
    call: impl std::future::Future<Output = Result<T, KinesisError>>,
) -> Result<T, KinesisError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(KinesisError::Other {
            operation,
            stream: stream.to_owned(),
            message: format!("timed out after {limit:?}"),
        })
    })
}

fn no_fan_out(operation: &'static str, stream: &str) -> KinesisError {
    KinesisError::Other {
        operation,
        stream: stream.to_owned(),
        message: "this KinesisApi implementation has no enhanced fan-out; use ReadMode::Polling"
            .to_owned(),
    }
}
