//! A healthy soak: several `kinesumer-member` processes share a stream on the local stack
//! while a producer writes numbered records at a steady rate; at the end every member is
//! stopped with SIGTERM and the run is checked.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build --release -p kinesumer --bin kinesumer-member
//! cargo run --release -p kinesumer-bench --bin soak -- [--secs 600] [--members 3] [--shards 4] [--rate 20]
//! ```
//!
//! Reports records produced, received, lost and duplicated, per-key order violations,
//! lease losses and fencings (from the members' event logs), and exit codes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesumer::store::{create_table, TableBilling};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use kinesumer_bench::{arg, create_stream, Error};

const KEYS: u64 = 32;

struct Member {
    child: Child,
    /// (partition key, record number) in delivery order.
    lines: Arc<Mutex<Vec<(String, u64)>>>,
    /// Event lines from stderr.
    events: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn member_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.with_file_name("kinesumer-member")
}

fn spawn(app: &str, table: &str, stream: &str, id: &str) -> Result<Member, Error> {
    let mut child = Command::new(member_bin())
        .args([
            "--app",
            app,
            "--table",
            table,
            "--stream",
            stream,
            "--client-id",
            id,
        ])
        .args(["--from", "trim-horizon"])
        .env("RUST_LOG", "kinesumer=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let sink = lines.clone();
    let out = tokio::spawn(async move {
        let mut r = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = r.next_line().await {
            let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
            let key = v["partition_key"].as_str().unwrap_or_default().to_owned();
            let n = v["data"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .expect("numbered record");
            sink.lock().expect("lock").push((key, n));
        }
    });
    let esink = events.clone();
    let err = tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            if line.starts_with("event ") {
                esink.lock().expect("lock").push(line);
            }
        }
    });
    Ok(Member {
        child,
        lines,
        events,
        readers: vec![out, err],
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let secs = arg("--secs", 600);
    let members = arg("--members", 3);
    let shards = arg("--shards", 4) as i32;
    let rate = arg("--rate", 20);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tag = format!("{:08x}", rand::random::<u32>());
    let (table, app, stream) = (
        format!("soak-{tag}"),
        format!("soak-{tag}"),
        format!("soak-{tag}"),
    );
    create_table(&dynamodb, &table, TableBilling::OnDemand).await?;
    create_stream(&kinesis, &stream, shards).await?;
    let mut group: Vec<Member> = (0..members)
        .map(|i| spawn(&app, &table, &stream, &format!("soak-{i}")))
        .collect::<Result<_, _>>()?;
    println!("soak: {members} members, {shards} shards, {rate} records/s for {secs} s");

    let started = Instant::now();
    let mut produced = 0u64;
    let batch = (rate / 5).max(1);
    while started.elapsed() < Duration::from_secs(secs) {
        let entries: Vec<PutRecordsRequestEntry> = (produced..produced + batch)
            .map(|n| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", n % KEYS))
                    .data(Blob::new(n.to_string()))
                    .build()
                    .expect("entry")
            })
            .collect();
        let mut pending = entries;
        while !pending.is_empty() {
            let out = kinesis
                .put_records()
                .stream_name(&stream)
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
        produced += batch;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let unique = |group: &[Member]| -> BTreeSet<u64> {
        group
            .iter()
            .flat_map(|m| {
                m.lines
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    while (unique(&group).len() as u64) < produced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut exits = Vec::new();
    for m in &mut group {
        let pid = m.child.id().expect("running") as i32;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).expect("pid"),
            rustix::process::Signal::TERM,
        )?;
        exits.push(m.child.wait().await?.code());
        for r in m.readers.drain(..) {
            r.await?;
        }
    }

    let received: usize = group
        .iter()
        .map(|m| m.lines.lock().expect("lock").len())
        .sum();
    let got = unique(&group);
    let lost = (0..produced).filter(|n| !got.contains(n)).count();
    let mut disorder = 0;
    for m in &group {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (key, n) in m.lines.lock().expect("lock").iter() {
            if last.get(key).is_some_and(|&prev| prev > *n) {
                disorder += 1;
            }
            last.insert(key.clone(), *n);
        }
    }
    let count = |needle: &str| -> usize {
        group
            .iter()
            .map(|m| {
                m.events
                    .lock()
                    .expect("lock")
                    .iter()
                    .filter(|e| e.contains(needle))
                    .count()
            })
            .sum()
    };
    for m in &group {
        for e in m.events.lock().expect("lock").iter() {
            if e.contains("Fenced") || e.contains("LeaseLost") || e.contains("Superseded") {
                println!("{e}");
            }
        }
    }
    println!("| measure | value |\n|---|---|");
    println!("| duration | {:.0} s |", started.elapsed().as_secs_f64());
    println!("| records produced | {produced} |");
    println!("| records received | {received} |");
    println!("| lost | {lost} |");
    println!("| duplicates | {} |", received - got.len());
    println!("| per-key order violations | {disorder} |");
    println!("| lease losses | {} |", count("LeaseLost"));
    println!("| fencings | {} |", count("Fenced"));
    println!("| leases taken | {} |", count("LeaseTaken"));
    println!("| exit codes | {exits:?} |");
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}
