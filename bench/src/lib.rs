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

/// Prints `name`: the median (min–max) of `values` and how many there were. Whole numbers
/// from 10 up, three decimals below.
pub fn summary(name: &str, unit: &str, mut values: Vec<f64>) {
    if values.is_empty() {
        println!("{name:<22} no runs");
        return;
    }
    values.sort_by(f64::total_cmp);
    let f = |v: f64| {
        if v.abs() >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    println!(
        "{name:<22} median {:>8}{unit}   (min {} – max {}{unit}, {} runs)",
        f(values[values.len() / 2]),
        f(values[0]),
        f(values[values.len() - 1]),
        values.len()
    );
}

/// Puts `n` records in one PutRecords call (at most 500), each under a random
/// partition key and with the data `data` makes of its index; refused records are an
/// error.
pub async fn put_batch(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    n: u64,
    data: impl Fn(u64) -> Blob,
) -> Result<(), Error> {
    let records = (0..n).map(|i| (format!("key-{i}-{}", rand::random::<u32>()), data(i)));
    put_records(kinesis, stream, records).await
}

/// Puts the records numbered `numbers` in one PutRecords call, each with its number as
/// payload and the key `key-<number mod keys>`, so each key's records land in number
/// order; refused records are an error (the emulator never refuses one).
pub async fn put_numbered(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    numbers: Range<u64>,
    keys: u64,
) -> Result<(), Error> {
    let records = numbers.map(|n| (format!("key-{}", n % keys), Blob::new(n.to_string())));
    put_records(kinesis, stream, records).await
}

/// One PutRecords call of (partition key, data) pairs; refused records are an error.
async fn put_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: impl Iterator<Item = (String, Blob)>,
) -> Result<(), Error> {
    let entries = records
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(data)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = entries.len();
    let out = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await?;
    match out.failed_record_count().unwrap_or(0) {
        0 => Ok(()),
        refused => Err(format!("{refused} of {n} records refused").into()),
    }
}
