//! A healthy soak: several `kinesumer-member` processes share a stream on the local stack
//! while a producer writes numbered records at a steady rate; at the end every member is
//! stopped with SIGTERM and the run is checked.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build --release -p kinesumer-bench --bin kinesumer-member
//! cargo run --release -p kinesumer-bench --bin soak -- [--secs 600] [--members 3] [--shards 4] [--rate 20]
//! ```
//!
//! Reports records produced, received, lost and duplicated, per-key order violations,
//! lease losses and fencings (from the members' event logs), and exit codes.

use std::time::{Duration, Instant};

use kinesumer::store::{create_table, TableBilling};
use tokio::process::Command;

use kinesumer_bench::member::Member;
use kinesumer_bench::{arg, check, create_stream, delete_stream, put_numbered, Error};

const KEYS: u64 = 32;

fn spawn(app: &str, table: &str, stream: &str, id: &str) -> Result<Member, Error> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe.with_file_name("kinesumer-member"));
    command
        .args(["--app", app, "--table", table, "--stream", stream])
        .args(["--client-id", id, "--from", "trim-horizon"])
        .env("RUST_LOG", "kinesumer=info");
    Member::spawn(command)
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
        put_numbered(&kinesis, &stream, produced..produced + batch, KEYS).await?;
        produced += batch;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let lost = |group: &[Member]| -> u64 {
        let runs: Vec<_> = group
            .iter()
            .map(|m| m.deliveries.lock().expect("lock").clone())
            .collect();
        check::lost(produced, runs.iter().map(Vec::as_slice))
    };
    while lost(&group) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut exits = Vec::new();
    for m in &mut group {
        exits.push(m.terminate(Duration::from_secs(30)).await?.flatten());
    }
    let runs: Vec<_> = group
        .iter()
        .map(|m| m.deliveries.lock().expect("lock").clone())
        .collect();
    let received: usize = runs.iter().map(Vec::len).sum();
    let lost = check::lost(produced, runs.iter().map(Vec::as_slice));
    let duplicates = check::duplicates(runs.iter().map(Vec::as_slice));
    let disorder: u64 = runs.iter().map(|r| check::order_violations(r)).sum();
    let count = |event: &str| -> usize {
        let line = format!("event {event}");
        group.iter().map(|m| m.stderr_count(&line)).sum()
    };
    for m in &group {
        for e in m.stderr.lock().expect("lock").iter() {
            if ["event Fenced", "event LeaseLost", "event Superseded"]
                .iter()
                .any(|event| e.starts_with(event))
            {
                println!("{e}");
            }
        }
    }
    println!("| measure | value |\n|---|---|");
    println!("| duration | {:.0} s |", started.elapsed().as_secs_f64());
    println!("| records produced | {produced} |");
    println!("| records received | {received} |");
    println!("| lost | {lost} |");
    println!("| duplicates | {duplicates} |");
    println!("| per-key order violations | {disorder} |");
    println!("| lease losses | {} |", count("LeaseLost"));
    println!("| fencings | {} |", count("Fenced"));
    println!("| leases taken | {} |", count("LeaseTaken"));
    println!("| exit codes | {exits:?} |");
    delete_stream(&kinesis, &stream).await?;
    Ok(())
}
