//! Where records go whose handler kept failing: [`DeadLetterSink`], with two sinks — a
//! JSON-lines file ([`FileSink`]) and another Kinesis stream ([`KinesisSink`]).
//!
//! A dead letter is the record (payload base64-encoded) and what happened to it: the
//! stream, shard and sequence number it came from, the last error, how many attempts it
//! had, the lease's fencing token and when it failed. Both sinks write the same JSON
//! object ([`DeadLetter::to_json`]); a record counts as processed only once its sink said
//! `Ok`.
//!
//! # Examples
//!
//! Replaying a dead-letter file is reading one JSON object per line:
//!
//! ```
//! let line = r#"{"stream":"orders","shard_id":"shardId-000000000001","sequence_number":"4959","data":"aGVsbG8=","error":"timeout","attempts":3}"#;
//! let letter: serde_json::Value = serde_json::from_str(line)?;
//! assert_eq!(letter["attempts"], 3);
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::seq::SequenceNumber;

/// A record its handler gave up on, and why.
///
/// Its `Debug` form never shows the payload or the partition key.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The stream the record was read from.
    pub stream: String,
    /// The shard it was read from.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: SequenceNumber,
    /// Its index in a KPL aggregate, if it was one's user record.
    pub sub_sequence_number: Option<u64>,
    /// Its partition key.
    pub partition_key: String,
    /// Its payload.
    pub data: Bytes,
    /// When Kinesis received it.
    pub approximate_arrival: Option<DateTime<Utc>>,
    /// The last attempt's error (or panic message).
    pub error: String,
    /// How many attempts it had.
    pub attempts: u32,
    /// The fencing token of the lease it was read under.
    pub fencing_token: u64,
    /// When the member gave up on it.
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The dead letter as one JSON object: the fields above, with `data` base64-encoded
    /// and times in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        serde_json::json!({
            "stream": self.stream,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number.as_str(),
            "sub_sequence_number": self.sub_sequence_number,
            "partition_key": self.partition_key,
            "data": base64::engine::general_purpose::STANDARD.encode(&self.data),
            "approximate_arrival": self.approximate_arrival.as_ref().map(time),
            "error": self.error,
            "attempts": self.attempts,
            "fencing_token": self.fencing_token,
            "failed_at": time(&self.failed_at),
        })
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("stream", &self.stream)
            .field("shard_id", &self.shard_id)
            .field("sequence_number", &self.sequence_number)
            .field("attempts", &self.attempts)
            .field("data_len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// A dead-letter write that failed.
#[derive(Debug, Clone, Error)]
#[error("dead-letter sink {sink}: {reason}")]
pub struct DeadLetterError {
    /// The sink (a file path, a stream name).
    pub sink: String,
    /// What went wrong, and what to do about it.
    pub reason: String,
    /// Whether writing again may succeed (a throttle, an unreachable service) — retried
    /// with backoff — or not (a record too large for the sink) — the shard stops.
    pub retryable: bool,
}

/// Where a record goes when its handler gave up ([`ErrorPolicy::dead_letter_after`]).
///
/// `send` returns `Ok` only once the letter is durably written: the record is then
/// marked processed and never read again.
///
/// [`ErrorPolicy::dead_letter_after`]: crate::ErrorPolicy::dead_letter_after
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Writes one dead letter.
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), DeadLetterError>>;
}

/// Dead letters appended to a file, one JSON object per line, each written and synced to
/// disk before it counts.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl FileSink {
    /// Opens `path` for appending, creating it if needed.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, DeadLetterError> {
        let path = path.as_ref().to_path_buf();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| file_error(&path, &e))?;
        Ok(Self {
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }
}

fn file_error(path: &Path, e: &std::io::Error) -> DeadLetterError {
    DeadLetterError {
        sink: path.display().to_string(),
        reason: e.to_string(),
        retryable: true,
    }
}

impl DeadLetterSink for FileSink {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let mut line = letter.to_json().to_string();
            line.push('\n');
            let mut file = self.file.lock().await;
            file.write_all(line.as_bytes())
                .await
                .map_err(|e| file_error(&self.path, &e))?;
            file.sync_data()
                .await
                .map_err(|e| file_error(&self.path, &e))
        })
    }
}

/// Dead letters put on another Kinesis stream (PutRecord), under the record's own
/// partition key so that one key's letters stay in order. The payload is the JSON
/// object of [`DeadLetter::to_json`], so a record larger than about 750 KiB (its base64
/// and metadata past Kinesis's 1 MiB limit) cannot be dead-lettered there and stops
/// its shard.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl KinesisSink {
    /// Puts dead letters on `stream` (a name or an ARN) with `client`.
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
        }
    }
}

/// Kinesis refuses a record larger than this (payload and partition key).
const KINESIS_MAX_RECORD: usize = 1024 * 1024;

impl DeadLetterSink for KinesisSink {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let error = |reason: String, retryable| DeadLetterError {
                sink: format!("kinesis stream {}", self.stream),
                reason,
                retryable,
            };
            let body = letter.to_json().to_string();
            // Kinesis needs a key of 1 to 256 characters; a record always has one, a
            // test record may not.
            let key = if letter.partition_key.is_empty() {
                letter.shard_id.as_str()
            } else {
                letter.partition_key.as_str()
            };
            if body.len() + key.len() > KINESIS_MAX_RECORD {
                return Err(error(
                    format!(
                        "the dead letter of record {} takes {} bytes, past Kinesis's 1 MiB \
                         record limit; use a file sink for records this large",
                        letter.sequence_number,
                        body.len()
                    ),
                    false,
                ));
            }
            let request = self.client.put_record().partition_key(key);
            let request = if self.stream.starts_with("arn:") {
                request.stream_arn(&self.stream)
            } else {
                request.stream_name(&self.stream)
            };
            request
                .data(aws_smithy_types::Blob::new(body))
                .send()
                .await
                .map(drop)
                .map_err(|e| {
                    // A missing stream does not appear by retrying: stop the shard, say so.
                    let missing = e
                        .as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception());
                    let reason = crate::aws::sdk_message("Kinesis", &e);
                    if missing {
                        error(format!("{reason}; create the dead-letter stream"), false)
                    } else {
                        error(reason, true)
                    }
                })
        })
    }
}
