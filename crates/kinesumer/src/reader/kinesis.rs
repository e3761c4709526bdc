//! [`KinesisApi`] over the AWS SDK, and the one place where SDK errors are classified
//! into [`KinesisError`].

use std::error::Error as StdError;

use async_trait::async_trait;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::{DateTime, Utc};

use super::{IteratorStart, KinesisApi, KinesisError, RawRecord, RecordsPage, StreamShards};
use crate::seq::SequenceNumber;
use crate::store::ShardInfo;

/// Kinesis over the AWS SDK.
///
/// Build its client with the timeouts you want (the consumer's bounds every attempt by
/// `scan_timeout`). GetRecords is sent without the SDK's retries: the polling reader
/// retries it with its own backoff, within the per-shard call rate. ListShards and
/// GetShardIterator keep the client's retry configuration.
///
/// # Examples
///
/// ```no_run
/// use kinesumer::reader::{KinesisApi, SdkKinesis};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let kinesis = SdkKinesis::new(aws_sdk_kinesis::Client::new(&sdk));
/// for shard in kinesis.list_shards("orders").await?.shards {
///     println!("{} closed={}", shard.shard_id, shard.closed);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
}

impl SdkKinesis {
    /// Wraps a Kinesis client.
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl KinesisApi for SdkKinesis {
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // The first page is asked for by stream name, the later ones by the token
            // alone: ListShards refuses a request with both. No ShardFilter: the group
            // needs closed parents too, to order children after them.
            let request = match next_token.take() {
                None => self.client.list_shards().stream_name(stream),
                Some(token) => self.client.list_shards().next_token(token),
            };
            let page = request
                .send()
                .await
                .map_err(|e| classify(e, "ListShards", stream, None))?;
            shards.extend(page.shards().iter().map(shard_info));
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(StreamShards { shards }),
            }
        }
    }

    async fn stream_created(&self, stream: &str) -> Result<Option<DateTime<Utc>>, KinesisError> {
        let out = self
            .client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| classify(e, "DescribeStreamSummary", stream, None))?;
        Ok(out
            .stream_description_summary()
            .and_then(|d| chrono_time(d.stream_creation_timestamp())))
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard_id);
        let request = match start {
            IteratorStart::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            IteratorStart::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            IteratorStart::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::AtTimestamp(t) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(smithy_time(*t)),
            IteratorStart::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
        };
        let out = request
            .send()
            .await
            .map_err(|e| classify(e, "GetShardIterator", stream, Some(shard_id)))?;
        out.shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| KinesisError::Other {
                operation: "GetShardIterator",
                stream: stream.to_owned(),
                message: format!("no shard iterator returned for shard {shard_id}"),
            })
    }

    async fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, KinesisError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .customize()
            // The reader retries GetRecords itself (see the type's docs).
            .config_override(
                aws_sdk_kinesis::config::Builder::new().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| classify(e, "GetRecords", stream, Some(shard_id)))?;
        let mut records = Vec::with_capacity(out.records().len());
        let mut bytes = 0;
        for r in out.records() {
            let sequence_number: SequenceNumber =
                r.sequence_number()
                    .parse()
                    .map_err(|e: crate::seq::InvalidSequenceNumber| KinesisError::Other {
                        operation: "GetRecords",
                        stream: stream.to_owned(),
                        message: e.to_string(),
                    })?;
            let data = r.data().as_ref().to_vec();
            bytes += data.len();
            records.push(RawRecord {
                sequence_number,
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data,
                approximate_arrival: r.approximate_arrival_timestamp().and_then(chrono_time),
            });
        }
        Ok(RecordsPage {
            records,
            next_iterator: out
                .next_shard_iterator()
                .filter(|it| !it.is_empty())
                .map(str::to_owned),
            millis_behind: out.millis_behind_latest(),
            child_shards: out
                .child_shards()
                .iter()
                .map(|c| c.shard_id().to_owned())
                .collect(),
            bytes,
        })
    }
}

fn shard_info(s: &Shard) -> ShardInfo {
    let ending = s
        .sequence_number_range()
        .and_then(|r| r.ending_sequence_number())
        .map(str::to_owned);
    ShardInfo {
        shard_id: s.shard_id().to_owned(),
        parent: s.parent_shard_id().map(str::to_owned),
        adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
        closed: ending.is_some(),
        hash_range: s.hash_key_range().map(|r| {
            (
                r.starting_hash_key().to_owned(),
                r.ending_hash_key().to_owned(),
            )
        }),
        ending_sequence: ending,
    }
}

fn smithy_time(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

fn chrono_time(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Sorts an SDK failure into a [`KinesisError`], by the service's error code (the same
/// for every operation), so that every call site agrees on what is retried.
///
/// ResourceNotFound means the stream for ListShards, and the shard for the per-shard
/// calls (a shard past retention). Messages are the SDK's error chain
/// ([`DisplayErrorContext`]): they hold the service's message and the request's failure,
/// never the credentials or the records.
fn classify<E, R>(
    err: SdkError<E, R>,
    operation: &'static str,
    stream: &str,
    shard_id: Option<&str>,
) -> KinesisError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let stream = stream.to_owned();
    let code = err.code().unwrap_or_default();
    match code {
        "ResourceNotFoundException" => match shard_id {
            Some(shard_id) => KinesisError::ShardNotFound {
                stream,
                shard_id: shard_id.to_owned(),
            },
            None => KinesisError::StreamNotFound { stream },
        },
        "ProvisionedThroughputExceededException"
        | "LimitExceededException"
        | "KMSThrottlingException" => KinesisError::Throttled { operation, stream },
        "ExpiredIteratorException" => KinesisError::ExpiredIterator,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException" => KinesisError::AccessDenied {
            operation,
            stream,
            message: DisplayErrorContext(&err).to_string(),
        },
        _ => KinesisError::Other {
            operation,
            stream,
            message: DisplayErrorContext(&err).to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str) -> SdkError<GetRecordsError, ()> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("the service said so")
            .build();
        SdkError::service_error(GetRecordsError::generic(meta), ())
    }

    #[test]
    fn classification_by_code() {
        let c = |code: &str, shard: Option<&str>| classify(service_error(code), "Op", "s", shard);
        assert!(matches!(
            c("ResourceNotFoundException", None),
            KinesisError::StreamNotFound { stream } if stream == "s"
        ));
        assert!(matches!(
            c("ResourceNotFoundException", Some("shard-1")),
            KinesisError::ShardNotFound { shard_id, .. } if shard_id == "shard-1"
        ));
        let kind = |e: KinesisError| match e {
            KinesisError::Throttled { .. } => "throttled",
            KinesisError::ExpiredIterator => "expired",
            KinesisError::AccessDenied { .. } => "denied",
            _ => "other",
        };
        for (code, expected) in [
            ("ProvisionedThroughputExceededException", "throttled"),
            ("LimitExceededException", "throttled"),
            ("KMSThrottlingException", "throttled"),
            ("ExpiredIteratorException", "expired"),
            ("AccessDeniedException", "denied"),
            ("UnrecognizedClientException", "denied"),
            ("ExpiredTokenException", "denied"),
            ("InternalFailureException", "other"),
        ] {
            assert_eq!(kind(c(code, Some("x"))), expected, "{code}");
        }
        match c("InvalidArgumentException", Some("x")) {
            KinesisError::Other { message, .. } => {
                assert!(message.contains("the service said so"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(chrono_time(&smithy_time(t)), Some(t));
    }
}
