//! The demo: three members share an 8-shard stream on the local stack; one leaves and
//! its shards move. Run it with `scripts/demo` (which starts the local stack).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use futures::StreamExt;
use kinesumer::store::{create_table, TableBilling};
use kinesumer::{Config, InitialPosition, Kinesumer};

const TABLE: &str = "kinesumer-demo";
const APP: &str = "demo";
const SHARDS: i32 = 8;

type Received = Arc<Mutex<Vec<(String, String)>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let stream = format!("demo-{:06x}", rand::random::<u32>() & 0xff_ffff);

    println!("▶ state-store table {TABLE}, stream {stream} with {SHARDS} shards");
    create_table(&dynamodb, TABLE, TableBilling::OnDemand).await?;
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(SHARDS)
        .send()
        .await?;
    wait_active(&kinesis, &stream).await?;

    let received: Received = Arc::default();
    let mut members = Vec::new();
    for n in 1..=3 {
        members.push(start_member(&format!("member-{n}"), &stream, &received).await?);
    }
    println!("▶ three members joined; waiting for the plan");
    wait_balanced(&members, SHARDS as usize, 3).await;
    print_owners(&members, &received);

    let mut produced = produce(&kinesis, &stream, 0, 2000).await?;
    wait_received(&received, produced).await;
    print_owners(&members, &received);

    let leaving = members.pop().expect("three members");
    println!("▶ {} leaves (graceful close)", leaving.client_id());
    let started = Instant::now();
    leaving.close().await;
    wait_balanced(&members, SHARDS as usize, 2).await;
    println!("  its shards were held again after {:?}", started.elapsed());
    produced += produce(&kinesis, &stream, 2000, 1000).await?;
    wait_received(&received, produced).await;
    print_owners(&members, &received);

    let got = received.lock().expect("lock").clone();
    let unique: BTreeSet<&String> = got.iter().map(|(_, seq)| seq).collect();
    println!(
        "▶ summary: produced {produced}, received {}, duplicates {}, lost {}",
        got.len(),
        got.len() - unique.len(),
        produced - unique.len()
    );
    for m in &members {
        m.close().await;
    }
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}

async fn start_member(
    id: &str,
    stream: &str,
    received: &Received,
) -> Result<Kinesumer, Box<dyn std::error::Error>> {
    let config = Config::builder(APP, TABLE)
        .client_id(id)
        .initial_position(InitialPosition::TrimHorizon)
        .build()?;
    let member = Kinesumer::new(config).await?;
    let mut records = member.consume([stream]).await?;
    let received = received.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        while let Some(record) = records.next().await {
            received
                .lock()
                .expect("lock")
                .push((id.clone(), record.sequence_number.to_string()));
        }
    });
    Ok(member)
}

async fn wait_active(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..100 {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        let active = d.stream_description_summary().map(|s| s.stream_status())
            == Some(&aws_sdk_kinesis::types::StreamStatus::Active);
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("stream did not become ACTIVE".into())
}

async fn produce(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    first: usize,
    count: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    println!("▶ producing {count} records under 100 partition keys");
    let entries: Vec<PutRecordsRequestEntry> = (first..first + count)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{}", i % 100))
                .data(Blob::new(format!("record {i}")))
                .build()
                .expect("entry")
        })
        .collect();
    for batch in entries.chunks(500) {
        let mut pending = batch.to_vec();
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
    }
    Ok(count)
}

async fn wait_balanced(members: &[Kinesumer], shards: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let counts: Vec<usize> = members.iter().map(|m| m.held_shards().len()).collect();
        let total: usize = counts.iter().sum();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        if counts.len() == n && total == shards && max.zip(min).is_some_and(|(a, b)| a - b <= 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("  (the group did not balance within 30 s)");
}

async fn wait_received(received: &Received, produced: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let unique: BTreeSet<String> = received
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        if unique.len() >= produced {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  (not every record arrived within 60 s)");
}

fn print_owners(members: &[Kinesumer], received: &Received) {
    let counts: BTreeMap<String, usize> =
        received
            .lock()
            .expect("lock")
            .iter()
            .fold(BTreeMap::new(), |mut m, (id, _)| {
                *m.entry(id.clone()).or_default() += 1;
                m
            });
    println!("  {:<10} {:>8}  shards", "member", "records");
    for m in members {
        let shards: Vec<String> = m
            .held_shards()
            .iter()
            .map(|s| s.shard_id.trim_start_matches("shardId-0000000").to_owned())
            .collect();
        let leader = if m.is_leader() { " (leader)" } else { "" };
        println!(
            "  {:<10} {:>8}  {}{leader}",
            m.client_id(),
            counts.get(m.client_id()).copied().unwrap_or(0),
            shards.join(" ")
        );
    }
}
