//! Fleet: a real group of `kinesumer consume` processes on the local stack — by default
//! 24 members on 48 shards across 2 streams — through joins, a rolling restart of every
//! member and three SIGKILLs, while a producer writes numbered records.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build --release -p kinesumer-cli -p kinesumer-bench --bin fleet
//! target/release/fleet --cli target/release/kinesumer [--members 24 --shards 24 --rate 40]
//!     [--sync-ms 1000 --failover-ms 8000 --request-ms 1000]
//! ```
//!
//! Both services are moto's (as in [`kinesumer_bench::Backlog::on_moto`]): kinesis-local slows down with
//! 48 shards. The timings default to those of the chaos run, for 24 processes on two
//! cores beside the emulators; `--sync-ms 400 --failover-ms 2200 --request-ms 250` are the
//! library's. Phases:
//!
//! 1. half the members start; the other half join at once;
//! 2. a steady window: state-store requests per member per tick (from each member's
//!    Prometheus endpoint), CPU and RSS per member (from `/proc`);
//! 3. a rolling restart: each member in turn gets SIGTERM, exits, and starts again under
//!    its id; duplicates are counted after it (0 expected: every handoff is graceful);
//! 4. three SIGKILLs, each followed by the takeover and the member's return;
//! 5. the producer stops; every record must arrive (0 lost).
//!
//! "Balanced" is read from the state store: every shard owned by a member that should be
//! up, and owned counts differing by at most one. Each change's time to balance is the
//! time from the change until that holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kinesumer::store::{DynamoStore, Operation, StateStore};
use kinesumer_bench::member::Member;
use kinesumer_bench::procfs::{cpu_seconds, memory_mb};
use kinesumer_bench::{arg, arg_str, check, create_stream, put_numbered, summary, Error};
use rustix::process::Signal;
use tokio::process::Command;

const KEYS: u64 = 64;

/// The group under test.
struct Fleet {
    cli: String,
    app: String,
    table: String,
    streams: [String; 2],
    timings: [String; 6],
    members: Vec<Option<Member>>,
    /// Deliveries of members that ended, kept for the verdicts.
    ended: Vec<Member>,
    store: DynamoStore,
    shards: usize,
}

impl Fleet {
    fn id(i: usize) -> String {
        format!("fleet-{i:02}")
    }

    fn port(i: usize) -> u16 {
        19_400 + i as u16
    }

    fn start(&mut self, i: usize) -> Result<(), Error> {
        let mut command = Command::new(&self.cli);
        command
            .args(["consume", "--app", &self.app, "--table", &self.table])
            .args(["--stream", &self.streams[0], "--stream", &self.streams[1]])
            .args(["--client-id", &Self::id(i), "--from", "trim-horizon"])
            .args(["--commit-interval-ms", "1000"])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", Self::port(i))])
            .args(&self.timings)
            .env("RUST_LOG", "kinesumer=warn");
        self.members[i] = Some(Member::spawn(command)?);
        Ok(())
    }

    /// Stops member `i` with `signal` and keeps its deliveries.
    async fn stop(&mut self, i: usize, signal: Signal) -> Result<Option<Option<i32>>, Error> {
        let mut member = self.members[i].take().ok_or("not running")?;
        member.signal(signal)?;
        let status = member.wait(Duration::from_secs(60)).await?;
        self.ended.push(member);
        Ok(status)
    }

    /// Waits until the shards are balanced over the members that are up; the time it took.
    async fn balanced(&self, since: Instant) -> Result<Duration, Error> {
        let up: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .map(Self::id)
            .collect();
        loop {
            let mut counts: BTreeMap<String, usize> = up.iter().map(|id| (id.clone(), 0)).collect();
            let mut owned = 0;
            for stream in &self.streams {
                for lease in self.store.leases(stream).await? {
                    if let Some(n) = lease.owner.and_then(|o| counts.get_mut(&o.client_id)) {
                        *n += 1;
                        owned += 1;
                    }
                }
            }
            let (min, max) = (counts.values().min(), counts.values().max());
            if owned == self.shards && max.zip(min).is_some_and(|(a, b)| a - b <= 1) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > Duration::from_secs(180) {
                return Err(format!("not balanced after 180 s: {counts:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stderr lines containing `needle`, over every member process so far.
    fn count(&self, needle: &str) -> usize {
        let all = self.members.iter().flatten().chain(&self.ended);
        all.map(|m| m.stderr_count(needle)).sum()
    }

    fn deliveries(&self) -> Vec<Vec<kinesumer_bench::member::Delivery>> {
        self.members
            .iter()
            .flatten()
            .chain(&self.ended)
            .map(|m| m.deliveries.lock().expect("lock").clone())
            .collect()
    }
}

/// What one member's Prometheus endpoint says: requests per state-store operation.
async fn requests(port: u16) -> Result<BTreeMap<String, f64>, Error> {
    let body = reqwest_lite(port).await?;
    let mut by_op = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("kinesumer_store_requests_total{"))
    {
        let op = line.split("op=\"").nth(1).and_then(|r| r.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(op), Some(value)) = (op, value) {
            by_op.insert(op.to_owned(), value);
        }
    }
    Ok(by_op)
}

/// GET /metrics over a plain TCP connection (no HTTP client in the bench's dependencies).
async fn reqwest_lite(port: u16) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// CPU seconds and resident MB of process `pid`.
fn usage(pid: u32) -> Result<(f64, f64), Error> {
    let pid = pid.to_string();
    Ok((cpu_seconds(&pid)?, memory_mb(&pid, "VmRSS")?))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli =
        arg_str("--cli").ok_or("give the kinesumer binary: --cli target/release/kinesumer")?;
    let n = arg("--members", 24) as usize;
    let shards = arg("--shards", 24) as i32;
    let rate = arg("--rate", 40);
    let (sync, failover, request) = (
        arg("--sync-ms", 1000),
        arg("--failover-ms", 8000),
        arg("--request-ms", 1000),
    );
    let moto = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .map_err(|_| "AWS_ENDPOINT_URL_DYNAMODB is not set: eval \"$(scripts/local-stack env)\"")?;
    // Before any client is built; the member processes inherit it.
    std::env::set_var("AWS_ENDPOINT_URL_KINESIS", &moto);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tag = format!("{:08x}", rand::random::<u32>());
    let table = format!("fleet-{tag}");
    kinesumer::store::create_table(&dynamodb, &table, kinesumer::store::TableBilling::OnDemand)
        .await?;
    let streams = [format!("fleet-a-{tag}"), format!("fleet-b-{tag}")];
    for s in &streams {
        create_stream(&kinesis, s, shards).await?;
    }
    let app = format!("fleet-{tag}");
    let mut fleet = Fleet {
        cli,
        store: DynamoStore::new(dynamodb, &table, &app),
        app,
        table,
        streams: streams.clone(),
        timings: [
            "--sync-interval-ms".into(),
            sync.to_string(),
            "--failover-timeout-ms".into(),
            failover.to_string(),
            "--request-timeout-ms".into(),
            request.to_string(),
        ],
        members: (0..n).map(|_| None).collect(),
        ended: Vec::new(),
        shards: 2 * shards as usize,
    };
    println!(
        "fleet: {n} members, {} shards on 2 streams, {rate} records/s, timings {sync}/{failover}/{request} ms",
        2 * shards
    );

    // The producer: numbered records, alternately on each stream, until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let producer = {
        let (kinesis, streams) = (kinesis.clone(), streams.clone());
        tokio::spawn(async move {
            let mut produced = 0u64;
            let batch = (rate / 5).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !*stop_rx.borrow_and_update() {
                tick.tick().await;
                let stream = &streams[(produced / batch % 2) as usize];
                put_numbered(&kinesis, stream, produced..produced + batch, KEYS).await?;
                produced += batch;
            }
            Ok::<u64, Error>(produced)
        })
    };

    // 1. Half, then the other half joining at once.
    let started = Instant::now();
    for i in 0..n / 2 {
        fleet.start(i)?;
    }
    let first = fleet.balanced(started).await?;
    println!(
        "start of {}: balanced after {:.1} s",
        n / 2,
        first.as_secs_f64()
    );
    let joined = Instant::now();
    for i in n / 2..n {
        fleet.start(i)?;
    }
    let join = fleet.balanced(joined).await?;
    println!(
        "join of {}: balanced after {:.1} s",
        n - n / 2,
        join.as_secs_f64()
    );

    // 2. A steady window.
    let window = Duration::from_secs(30);
    let pids: Vec<u32> = (0..n)
        .map(|i| fleet.members[i].as_ref().map_or(0, Member::pid))
        .collect();
    let before: Vec<_> =
        futures::future::try_join_all((0..n).map(|i| requests(Fleet::port(i)))).await?;
    let cpu_before: Vec<(f64, f64)> = pids.iter().map(|&p| usage(p)).collect::<Result<_, _>>()?;
    tokio::time::sleep(window).await;
    let after: Vec<_> =
        futures::future::try_join_all((0..n).map(|i| requests(Fleet::port(i)))).await?;
    let cpu_after: Vec<(f64, f64)> = pids.iter().map(|&p| usage(p)).collect::<Result<_, _>>()?;
    let ticks = window.as_secs_f64() * 1000.0 / sync as f64;
    let secs = window.as_secs_f64();
    let (mut per_tick, mut writes_per_s, mut reads_per_s, mut commits_per_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (b, a) in before.iter().zip(&after) {
        let delta =
            |op: &str| a.get(op).copied().unwrap_or(0.0) - b.get(op).copied().unwrap_or(0.0);
        let is_write = |op: &str| {
            Operation::ALL
                .iter()
                .any(|o| o.name() == op && o.is_write())
        };
        // Checkpoints are the application's (one per shard per commit interval while
        // records flow); the rest is the group's coordination.
        let coordination: Vec<&str> = a
            .keys()
            .map(String::as_str)
            .filter(|op| *op != "checkpoint")
            .collect();
        let sum = |f: &dyn Fn(&str) -> bool| {
            coordination
                .iter()
                .filter(|op| f(op))
                .map(|op| delta(op))
                .sum::<f64>()
        };
        per_tick.push(sum(&|_| true) / ticks);
        writes_per_s.push(sum(&|op| is_write(op)) / secs);
        reads_per_s.push(sum(&|op| !is_write(op)) / secs);
        commits_per_s.push(delta("checkpoint") / secs);
    }
    summary("coordination requests per member per tick", "", per_tick);
    summary(
        "coordination writes per member per second",
        "",
        writes_per_s.clone(),
    );
    summary(
        "coordination reads per member per second",
        "",
        reads_per_s.clone(),
    );
    summary("checkpoint writes per member per second", "", commits_per_s);
    let cpu: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| (a.0 - b.0) / secs * 100.0)
        .collect();
    summary("CPU per member", "%", cpu);
    summary(
        "RSS per member",
        "MB",
        cpu_after.iter().map(|u| u.1).collect(),
    );
    // On-demand prices (us-east-1, since November 2024): $0.625 per million write request
    // units, $0.125 per million read request units; a heartbeat is one write unit, a
    // strongly consistent read of one small item one read unit (the per-tick read fetches
    // two), as in docs/configuration.md.
    let month = 30.0 * 24.0 * 3600.0;
    let cost: Vec<f64> = writes_per_s
        .iter()
        .zip(&reads_per_s)
        .map(|(w, r)| (w * 0.625 + r * 2.0 * 0.125) * month / 1e6)
        .collect();
    summary("coordination cost per member per month", "$", cost);

    // 3. A rolling restart.
    let mut restarts = Vec::new();
    for i in 0..n {
        let at = Instant::now();
        let status = fleet.stop(i, Signal::TERM).await?;
        if status != Some(Some(0)) {
            return Err(format!("{} exited with {status:?} on SIGTERM", Fleet::id(i)).into());
        }
        fleet.start(i)?;
        restarts.push(fleet.balanced(at).await?.as_secs_f64());
    }
    summary("rolling restart: balanced after each member", "s", restarts);
    let runs = fleet.deliveries();
    let dups = check::duplicates(runs.iter().map(Vec::as_slice));
    println!(
        "rolling restart: {dups} records delivered twice; {} fencings so far",
        fleet.count("fenced: stopping every reader")
    );

    // 4. Three SIGKILLs, each member back once its shards moved.
    let mut takeovers = Vec::new();
    for i in [1, n / 2, n - 1] {
        let at = Instant::now();
        fleet.stop(i, Signal::KILL).await?;
        takeovers.push(fleet.balanced(at).await?.as_secs_f64());
        let back = Instant::now();
        fleet.start(i)?;
        fleet.balanced(back).await?;
    }
    summary(
        "SIGKILL: shards balanced over the others after",
        "s",
        takeovers,
    );

    // 5. The end: every record delivered.
    stop_tx.send_replace(true);
    let produced = producer.await??;
    let deadline = Instant::now() + Duration::from_secs(120);
    let lost = loop {
        let runs = fleet.deliveries();
        let lost = check::lost(produced, runs.iter().map(Vec::as_slice));
        if lost == 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for i in 0..n {
        fleet.stop(i, Signal::TERM).await?;
    }
    let runs = fleet.deliveries();
    let all_dups = check::duplicates(runs.iter().map(Vec::as_slice));
    println!(
        "records: produced {produced}, lost {lost}, delivered twice {all_dups} (after the SIGKILLs: {})",
        all_dups - dups
    );
    if lost > 0 || dups > 0 {
        return Err("records were lost, or the rolling restart delivered some twice".into());
    }
    Ok(())
}
