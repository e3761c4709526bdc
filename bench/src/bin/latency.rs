//! Put-to-delivery latency, polling against enhanced fan-out, on the same stack in one
//! run.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo run --release -p kinesumer-bench --bin latency [-- --records 2000 --rate 100]
//! ```
//!
//! For each read mode, at its default settings: one member of a new app on a new 2-shard
//! stream, holding both shards and reading (a first record received), then `--records`
//! records put in batches of 10 at `--rate` records per second. Each record carries the
//! wall-clock time just before its PutRecords call; its latency is the time it comes out
//! of the member's record stream minus that. Prints p50, p99 and the maximum per mode.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use futures::StreamExt;
use kinesumer::store::{create_table, TableBilling};
use kinesumer::{Config, InitialPosition, Kinesumer, ReadMode};
use kinesumer_bench::{arg, create_stream, delete_stream, put_batch, Error};

const SHARDS: i32 = 2;
const BATCH: u64 = 10;
/// How long one mode may take to start or to deliver everything.
const DEADLINE: Duration = Duration::from_secs(180);

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Puts `n` records whose data is `"<tag>:<micros before the call>"`.
async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    tag: &str,
    n: u64,
) -> Result<(), Error> {
    let sent = now_micros();
    put_batch(kinesis, stream, n, |_| Blob::new(format!("{tag}:{sent}"))).await
}

/// The latencies of `records` records read in `mode`, in microseconds.
async fn measure(
    kinesis: &aws_sdk_kinesis::Client,
    table: &str,
    mode: ReadMode,
    records: u64,
    rate: u64,
) -> Result<Vec<u128>, Error> {
    let app = format!("latency-{:08x}", rand::random::<u32>());
    let stream = format!("latency-{:08x}", rand::random::<u32>());
    create_stream(kinesis, &stream, SHARDS).await?;
    let config = Config::builder(&app, table)
        .client_id("bench")
        .initial_position(InitialPosition::TrimHorizon)
        .read_mode(mode)
        .build()?;
    let member = Arc::new(Kinesumer::new(config).await?);
    let mut stream_of = member.consume([stream.as_str()]).await?;
    let started = Instant::now();
    while member.held_shards().len() < SHARDS as usize {
        if started.elapsed() > DEADLINE {
            return Err(format!("{mode:?}: shards not held within {DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading has begun once a first record comes through.
    put(kinesis, &stream, "warm-up", 1).await?;
    let first = tokio::time::timeout(DEADLINE, stream_of.next()).await?;
    if first.is_none() {
        return Err(format!("{mode:?}: the member stopped").into());
    }
    let collect = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(records as usize);
        while (latencies.len() as u64) < records {
            let Some(r) = stream_of.next().await else {
                break;
            };
            let received = now_micros();
            let data = String::from_utf8_lossy(&r.data).into_owned();
            if let Some(("measured", sent)) = data.split_once(':') {
                if let Ok(sent) = sent.parse::<u128>() {
                    latencies.push(received.saturating_sub(sent));
                }
            }
        }
        latencies
    });
    let gap = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let mut next = tokio::time::Instant::now();
    for _ in 0..records.div_ceil(BATCH) {
        tokio::time::sleep_until(next).await;
        next += gap;
        put(kinesis, &stream, "measured", BATCH).await?;
    }
    let latencies = tokio::time::timeout(DEADLINE, collect).await??;
    member.close().await?;
    if mode == ReadMode::FanOut {
        member.deregister_fan_out_consumer(&stream).await?;
    }
    let _ = delete_stream(kinesis, &stream).await;
    Ok(latencies)
}

fn percentile(sorted: &[u128], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p / 100] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let records = arg("--records", 2000).max(BATCH);
    let rate = arg("--rate", 100).max(1);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let table = format!("kinesumer-bench-{:08x}", rand::random::<u32>());
    create_table(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &table,
        TableBilling::OnDemand,
    )
    .await?;
    println!("{records} records at {rate}/s per mode, {SHARDS} shards, default settings");
    println!("| mode | records | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for mode in [ReadMode::Polling, ReadMode::FanOut] {
        let mut latencies = measure(&kinesis, &table, mode, records, rate).await?;
        latencies.sort_unstable();
        println!(
            "| {mode:?} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            latencies.len(),
            percentile(&latencies, 50),
            percentile(&latencies, 99),
            percentile(&latencies, 100),
        );
    }
    Ok(())
}
