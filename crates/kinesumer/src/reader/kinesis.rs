//! [`KinesisApi`] over the AWS SDK, and the one place where SDK errors are classified
//! into [`KinesisError`].

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ConsumerStatus, Record, Shard, ShardIteratorType, StartingPosition, StreamDescriptionSummary,
    SubscribeToShardEventStream,
};
use aws_smithy_types::event_stream::RawMessage;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{
    FanOutEvent, IteratorStart, KinesisApi, KinesisError, RawRecord, RecordsPage, StreamShards,
    Subscription,
};
use crate::backoff::Backoff;
use crate::seq::SequenceNumber;
use crate::shards::ShardInfo;

/// The waits between DescribeStreamConsumer calls while a consumer becomes ACTIVE (or
/// while one being deleted goes): DescribeStreamConsumer allows 20 calls per second per
/// stream, shared by a whole fleet starting at once.
const REGISTER_POLL_BASE: Duration = Duration::from_millis(250);
const REGISTER_POLL_CAP: Duration = Duration::from_secs(2);

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

impl crate::sealed::Sealed for SdkKinesis {}

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
                None => {
                    let (name, arn) = name_or_arn(stream);
                    self.client
                        .list_shards()
                        .set_stream_name(name)
                        .set_stream_arn(arn)
                }
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
        let summary = self.stream_summary(stream).await?;
        Ok(chrono_time(summary.stream_creation_timestamp()))
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        let (name, arn) = name_or_arn(stream);
        let request = self
            .client
            .get_shard_iterator()
            .set_stream_name(name)
            .set_stream_arn(arn)
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
            .set_stream_arn(name_or_arn(stream).1)
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
        let (records, bytes) = raw_records(out.records, "GetRecords", stream)?;
        Ok(RecordsPage {
            records,
            next_iterator: out.next_shard_iterator.filter(|it| !it.is_empty()),
            millis_behind: out.millis_behind_latest,
            child_shards: out
                .child_shards
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.shard_id)
                .collect(),
            bytes,
        })
    }

    async fn register_consumer(
        &self,
        stream: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<String, KinesisError> {
        let deadline = Instant::now() + timeout;
        let stream_arn = self.stream_arn(stream).await?;
        let mut poll = Backoff::new(REGISTER_POLL_BASE, REGISTER_POLL_CAP);
        let mut last_status = "not registered".to_owned();
        loop {
            match self.consumer_status(stream, &stream_arn, name).await {
                Ok(Some((arn, ConsumerStatus::Active))) => return Ok(arn),
                Ok(Some((_, status))) => last_status = status.as_str().to_owned(),
                Ok(None) => {
                    let registered = self
                        .client
                        .register_stream_consumer()
                        .stream_arn(&stream_arn)
                        .consumer_name(name)
                        .send()
                        .await
                        .map_err(|e| classify(e, "RegisterStreamConsumer", stream, None));
                    match registered {
                        Ok(out) => {
                            tracing::info!(
                                stream,
                                consumer = name,
                                "registered the stream consumer"
                            );
                            if let Some(c) = out.consumer() {
                                last_status = c.consumer_status().as_str().to_owned();
                            }
                        }
                        // Registered meanwhile by another member, or a fleet registering at
                        // once: the next DescribeStreamConsumer tells.
                        Err(
                            KinesisError::ResourceInUse { .. } | KinesisError::Throttled { .. },
                        ) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(KinesisError::Throttled { .. }) => {}
                Err(e) => return Err(e),
            }
            let wait = poll.next_delay().max(REGISTER_POLL_BASE);
            if Instant::now() + wait > deadline {
                return Err(KinesisError::FanOutConsumer {
                    stream: stream.to_owned(),
                    consumer: name.to_owned(),
                    reason: format!(
                        "not ACTIVE within {timeout:?} (last status: {last_status}); raise \
                         fan_out_register_timeout, or look at the consumer with `aws kinesis \
                         describe-stream-consumer` (one stuck DELETING has to go first)"
                    ),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn deregister_consumer(&self, stream: &str, name: &str) -> Result<bool, KinesisError> {
        let stream_arn = self.stream_arn(stream).await?;
        // One already being deleted counts as gone: deregistering it again is refused.
        match self.consumer_status(stream, &stream_arn, name).await? {
            None | Some((_, ConsumerStatus::Deleting)) => return Ok(false),
            Some(_) => {}
        }
        let out = self
            .client
            .deregister_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(classify(e, "DeregisterStreamConsumer", stream, None)),
        }
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        let position = match start {
            IteratorStart::After(seq) => StartingPosition::builder()
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq.as_str()),
            IteratorStart::At(seq) => StartingPosition::builder()
                .r#type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(seq.as_str()),
            IteratorStart::TrimHorizon => {
                StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::AtTimestamp(t) => StartingPosition::builder()
                .r#type(ShardIteratorType::AtTimestamp)
                .timestamp(smithy_time(*t)),
            IteratorStart::Latest => StartingPosition::builder().r#type(ShardIteratorType::Latest),
        }
        .build()
        .map_err(|e| KinesisError::Other {
            operation: "SubscribeToShard",
            stream: stream.to_owned(),
            message: e.to_string(),
        })?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(position)
            .send()
            .await
            .map_err(|e| classify(e, "SubscribeToShard", stream, Some(shard_id)))?;
        Ok(Box::new(SdkSubscription {
            events: out.event_stream,
            stream: stream.to_owned(),
            shard_id: shard_id.to_owned(),
        }))
    }
}

impl SdkKinesis {
    /// DescribeStreamSummary.
    async fn stream_summary(&self, stream: &str) -> Result<StreamDescriptionSummary, KinesisError> {
        let (name, arn) = name_or_arn(stream);
        let out = self
            .client
            .describe_stream_summary()
            .set_stream_name(name)
            .set_stream_arn(arn)
            .send()
            .await
            .map_err(|e| classify(e, "DescribeStreamSummary", stream, None))?;
        out.stream_description_summary
            .ok_or_else(|| KinesisError::Other {
                operation: "DescribeStreamSummary",
                stream: stream.to_owned(),
                message: "no stream description returned".to_owned(),
            })
    }

    /// The stream's ARN (RegisterStreamConsumer and DescribeStreamConsumer take it).
    async fn stream_arn(&self, stream: &str) -> Result<String, KinesisError> {
        match name_or_arn(stream) {
            (_, Some(arn)) => Ok(arn),
            (_, None) => Ok(self.stream_summary(stream).await?.stream_arn),
        }
    }

    /// The consumer's ARN and status; `None` when it is not registered (any more).
    async fn consumer_status(
        &self,
        stream: &str,
        stream_arn: &str,
        name: &str,
    ) -> Result<Option<(String, ConsumerStatus)>, KinesisError> {
        let out = self
            .client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .consumer_description()
                .map(|c| (c.consumer_arn().to_owned(), c.consumer_status().clone()))),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(classify(e, "DescribeStreamConsumer", stream, None)),
        }
    }
}

/// A SubscribeToShard event stream over the SDK.
struct SdkSubscription {
    events: EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
    stream: String,
    shard_id: String,
}

impl fmt::Debug for SdkSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkSubscription")
            .field("stream", &self.stream)
            .field("shard_id", &self.shard_id)
            .finish_non_exhaustive()
    }
}

impl crate::sealed::Sealed for SdkSubscription {}

#[async_trait]
impl Subscription for SdkSubscription {
    async fn next_event(&mut self) -> Result<Option<FanOutEvent>, KinesisError> {
        loop {
            let event = self
                .events
                .recv()
                .await
                .map_err(|e| classify_event(e, &self.stream, &self.shard_id))?;
            let event = match event {
                None => return Ok(None),
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => event,
                // An event type this SDK does not know: nothing to deliver.
                Some(_) => continue,
            };
            let continuation = event.continuation_sequence_number.parse().ok();
            let (records, bytes) = raw_records(event.records, "SubscribeToShard", &self.stream)?;
            return Ok(Some(FanOutEvent {
                records,
                continuation,
                millis_behind: Some(event.millis_behind_latest),
                child_shards: event
                    .child_shards
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.shard_id)
                    .collect(),
                bytes,
            }));
        }
    }
}

/// The SDK's records as [`RawRecord`]s, and their payload bytes.
fn raw_records(
    from: Vec<Record>,
    operation: &'static str,
    stream: &str,
) -> Result<(Vec<RawRecord>, usize), KinesisError> {
    // The SDK's output is taken apart, so payloads and keys move instead of being copied.
    let mut records = Vec::with_capacity(from.len());
    let mut bytes = 0;
    for r in from {
        let sequence_number: SequenceNumber =
            r.sequence_number
                .parse()
                .map_err(|e: crate::seq::InvalidSequenceNumber| KinesisError::Other {
                    operation,
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
        let data = r.data.into_bytes();
        bytes += data.len();
        records.push(RawRecord {
            sequence_number,
            partition_key: r.partition_key.unwrap_or_default(),
            data,
            approximate_arrival: r
                .approximate_arrival_timestamp
                .as_ref()
                .and_then(chrono_time),
        });
    }
    Ok((records, bytes))
}

/// A stream named by its name or by its ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`),
/// as the API takes either: `(StreamName, StreamARN)`. An ARN reaches a stream of another
/// account through the stream's resource policy, and keeps two streams of one name in two
/// accounts apart (their checkpoints are kept under the ARN).
fn name_or_arn(stream: &str) -> (Option<String>, Option<String>) {
    if stream.starts_with("arn:") {
        (None, Some(stream.to_owned()))
    } else {
        (Some(stream.to_owned()), None)
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
/// ([`sdk_message`](crate::aws::sdk_message)): they hold the service's message and the request's failure,
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
    let code = err.code().unwrap_or_default().to_owned();
    classify_as(&code, err, operation, stream, shard_id)
}

/// A SubscribeToShard event-stream failure as a [`KinesisError`]. The service's errors
/// arrive as events whose variant, not their metadata, carries the error code
/// (ResourceInUse comes so when another subscription of the consumer and shard is open).
fn classify_event(
    err: SdkError<SubscribeToShardEventStreamError, RawMessage>,
    stream: &str,
    shard_id: &str,
) -> KinesisError {
    use SubscribeToShardEventStreamError as E;
    let code = match err.as_service_error() {
        Some(E::ResourceInUseException(_)) => "ResourceInUseException",
        Some(E::ResourceNotFoundException(_)) => "ResourceNotFoundException",
        Some(E::KmsThrottlingException(_)) => "KMSThrottlingException",
        _ => err.code().unwrap_or_default(),
    }
    .to_owned();
    classify_as(&code, err, "SubscribeToShard", stream, Some(shard_id))
}

/// [`classify`] with the error code given.
fn classify_as<E, R>(
    code: &str,
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
        "ResourceInUseException" => KinesisError::ResourceInUse {
            operation,
            stream,
            message: crate::aws::sdk_message("Kinesis", &err),
        },
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException" => KinesisError::AccessDenied {
            operation,
            stream,
            message: crate::aws::sdk_message("Kinesis", &err),
        },
        _ => KinesisError::Other {
            operation,
            stream,
            message: crate::aws::sdk_message("Kinesis", &err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
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
    fn event_stream_errors_are_classified_by_their_variant() {
        use aws_sdk_kinesis::types::error::ResourceInUseException;
        let in_use = SubscribeToShardEventStreamError::ResourceInUseException(
            ResourceInUseException::builder()
                .message("Another active subscription exists")
                .build(),
        );
        let raw = RawMessage::invalid(None);
        let e = classify_event(SdkError::service_error(in_use, raw), "s", "shard-1");
        assert!(
            matches!(&e, KinesisError::ResourceInUse { message, .. } if message.contains("Another active")),
            "{e:?}"
        );
    }

    /// The status code and JSON body answering an operation, given how many times it was
    /// called before.
    type Answer = dyn Fn(&str, usize) -> (u16, String) + Send + Sync;

    /// A Kinesis endpoint answering each operation (by its X-Amz-Target) from `answer`,
    /// given the operation and how many times it was called before; every call is kept.
    #[derive(Clone)]
    struct Canned {
        answer: Arc<Answer>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl fmt::Debug for Canned {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Canned").finish_non_exhaustive()
        }
    }

    impl HttpConnector for Canned {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let op = request
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .trim_start_matches("Kinesis_20131202.")
                .to_owned();
            let before = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(op.clone());
                calls.iter().filter(|c| **c == op).count() - 1
            };
            let (status, body) = (self.answer)(&op, before);
            let mut response =
                HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    impl Canned {
        fn new(answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
            Self {
                answer: Arc::new(answer),
                calls: Arc::default(),
            }
        }

        fn kinesis(&self) -> SdkKinesis {
            let connector = SharedHttpConnector::new(self.clone());
            let conf = aws_sdk_kinesis::Config::builder()
                .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
                .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
                .credentials_provider(aws_credential_types::Credentials::for_tests())
                .http_client(http_client_fn(move |_, _| connector.clone()))
                .build();
            SdkKinesis::new(aws_sdk_kinesis::Client::from_conf(conf))
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn stream_summary() -> (u16, String) {
        let body = r#"{"StreamDescriptionSummary":{"StreamName":"s","StreamARN":"arn:aws:kinesis:us-east-1:1:stream/s","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1.0,"EnhancedMonitoring":[],"OpenShardCount":1}}"#;
        (200, body.to_owned())
    }

    fn consumer(status: &str) -> (u16, String) {
        let body = format!(
            r#"{{"ConsumerDescription":{{"ConsumerName":"app","ConsumerARN":"arn:consumer","ConsumerStatus":"{status}","ConsumerCreationTimestamp":1.0,"StreamARN":"arn:aws:kinesis:us-east-1:1:stream/s"}}}}"#
        );
        (200, body)
    }

    fn refused(code: &str) -> (u16, String) {
        (400, format!(r#"{{"__type":"{code}","message":"refused"}}"#))
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_registered_meanwhile_by_another_member_is_found() {
        let canned = Canned::new(|op, before| match (op, before) {
            ("DescribeStreamSummary", _) => stream_summary(),
            ("DescribeStreamConsumer", 0) => refused("ResourceNotFoundException"),
            ("RegisterStreamConsumer", _) => refused("ResourceInUseException"),
            ("DescribeStreamConsumer", 1) => consumer("CREATING"),
            ("DescribeStreamConsumer", _) => consumer("ACTIVE"),
            _ => refused("InvalidArgumentException"),
        });
        let arn = canned
            .kinesis()
            .register_consumer("s", "app", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(arn, "arn:consumer");
        assert_eq!(
            canned.calls(),
            [
                "DescribeStreamSummary",
                "DescribeStreamConsumer",
                "RegisterStreamConsumer",
                "DescribeStreamConsumer",
                "DescribeStreamConsumer"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_never_becomes_active_times_out_naming_it() {
        let canned = Canned::new(|op, _| match op {
            "DescribeStreamSummary" => stream_summary(),
            _ => consumer("CREATING"),
        });
        let err = canned
            .kinesis()
            .register_consumer("s", "app", Duration::from_secs(10))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, KinesisError::FanOutConsumer { consumer, .. } if consumer == "app"),
            "{err:?}"
        );
        assert!(
            text.contains("not ACTIVE within 10s") && text.contains("CREATING"),
            "{text}"
        );
    }

    #[test]
    fn times_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(chrono_time(&smithy_time(t)), Some(t));
    }
}
