//! Helpers shared by the benchmark programs.

use std::time::Duration;

/// The boxed error of the benchmark programs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The value of `--name N` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    data: impl Fn(u64) -> aws_sdk_kinesis::primitives::Blob,
) -> Result<(), Error> {
    let entries = (0..n)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}-{}", rand::random::<u32>()))
                .data(data(i))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
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
