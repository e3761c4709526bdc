//! Helpers shared by the benchmark programs and the chaos harness.

use std::ops::Range;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

pub mod check;
pub mod member;
pub mod proxy;

/// The boxed error of the benchmark programs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The value of `--name N` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of `--name VALUE` on the command line.
pub fn arg_str(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.nth(1)
}

/// Creates a stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), Error> {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await?;
    loop {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        if d.stream_description_summary().map(|s| s.stream_status())
            == Some(&aws_sdk_kinesis::types::StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes a stream.
pub async fn delete_stream(kinesis: &aws_sdk_kinesis::Client, name: &str) -> Result<(), Error> {
    kinesis.delete_stream().stream_name(name).send().await?;
    Ok(())
}

/// Puts the records numbered `numbers`, each with its number as payload and the key
/// `key-<number mod keys>`, in one PutRecords call; refused entries are sent again
/// (the emulator never refuses one, so each key's records land in number order).
pub async fn put_numbered(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    numbers: Range<u64>,
    keys: u64,
) -> Result<(), Error> {
    let mut pending: Vec<PutRecordsRequestEntry> = numbers
        .map(|n| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{}", n % keys))
                .data(Blob::new(n.to_string()))
                .build()
        })
        .collect::<Result<_, _>>()?;
    while !pending.is_empty() {
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(pending.clone()))
            .send()
            .await?;
        pending = out
            .records()
            .iter()
            .zip(pending)
            .filter(|(r, _)| r.error_code().is_some())
            .map(|(_, e)| e)
            .collect();
    }
    Ok(())
}
