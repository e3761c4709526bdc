//! Drain: one member reads `--records` records of 200 bytes, pre-loaded in a 4-shard
//! stream, from TRIM_HORIZON, in a process of its own; `--runs` times, each as a new app
//! (so from the start again). Each run is followed by one of the floor: a raw loop over
//! the same SDK in a process of its own — GetRecords on every shard with the library's
//! default limit, records discarded, no group — and the member's CPU per record is
//! reported as a ratio to the floor's. The floor calls one shard at a time; a second
//! floor (`--raw-concurrent`) reads every shard at once, a task each, as the member does,
//! so what reading shards concurrently costs through the SDK alone is known too.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build --release -p kinesumer-bench --bin drain
//! target/release/drain [--records 50000 --runs 5]
//! ```
//!
//! Both services are moto's ([`Backlog::on_moto`]). The member process reports its own
//! figures when it has read every record: the wall time from its start and from its first
//! record, its CPU time (user + system of every thread, `CLOCK_PROCESS_CPUTIME_ID`: to the
//! nanosecond, where `/proc/self/stat` counts 10 ms ticks, a sixth of the floor's whole
//! run), its peak RSS (`VmHWM`) and what is resident at the end: private memory
//! (`RssAnon`) and mapped files, the executable's pages mostly (`RssFile`), all from
//! `/proc/self/status`. Printed per run, then as the median (min–max).
//!
//! To profile the member alone (the stream and table are printed when loaded):
//!
//! ```text
//! AWS_ENDPOINT_URL_KINESIS=$AWS_ENDPOINT_URL_DYNAMODB valgrind --tool=callgrind \
//!   target/release/drain --member --slow --app A --table T --stream S --records 20000
//! ```

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kinesumer::{Config, InitialPosition, Kinesumer};
use kinesumer_bench::procfs::memory_mb;
use kinesumer_bench::{arg, summary, Backlog, Error};

const SHARDS: i32 = 4;
const PAYLOAD: usize = 200;

/// What one member process measured of itself.
#[derive(Debug, Clone, Copy)]
struct Run {
    records: u64,
    wall: f64,
    reading: f64,
    cpu: f64,
    rss_mb: f64,
    anon_mb: f64,
    file_mb: f64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--member") {
        return member(&args).await;
    }
    if args.iter().any(|a| a == "--raw") {
        return raw(&args, false).await;
    }
    if args.iter().any(|a| a == "--raw-concurrent") {
        return raw(&args, true).await;
    }
    let records = arg("--records", 50_000);
    let runs = arg("--runs", 5);
    let Backlog { stream, table } = Backlog::on_moto("drain", SHARDS, records, PAYLOAD).await?;
    let mut all = Vec::new();
    let mut floor = Vec::new();
    let mut concurrent = Vec::new();
    for i in 0..runs {
        let app = format!("drain-{i}-{:08x}", rand::random::<u32>());
        for (mode, runs) in [
            ("--member", &mut all),
            ("--raw", &mut floor),
            ("--raw-concurrent", &mut concurrent),
        ] {
            let run = spawn(mode, &app, &table, &stream, records).await?;
            println!(
                "run {i} {mode}: {:.0} records/s ({:.0} from the first record), {:.4} CPU-s per 10,000 records, peak RSS {:.1} MB (at the end: {:.1} MB anonymous, {:.1} MB files)",
                run.records as f64 / run.wall,
                run.records as f64 / run.reading,
                run.cpu * 10_000.0 / run.records as f64,
                run.rss_mb,
                run.anon_mb,
                run.file_mb
            );
            runs.push(run);
        }
    }
    let per = |f: fn(&Run) -> f64| all.iter().map(f).collect::<Vec<f64>>();
    summary("records/s", "", per(|r| r.records as f64 / r.wall));
    summary(
        "records/s from first",
        "",
        per(|r| r.records as f64 / r.reading),
    );
    summary(
        "CPU-s per 10k records",
        "s",
        per(|r| r.cpu * 10_000.0 / r.records as f64),
    );
    summary("peak RSS", "MB", per(|r| r.rss_mb));
    summary("RssAnon at the end", "MB", per(|r| r.anon_mb));
    summary("RssFile at the end", "MB", per(|r| r.file_mb));
    let floor_cpu = |r: &Run| r.cpu * 10_000.0 / r.records as f64;
    summary(
        "raw SDK loop: CPU-s per 10k records",
        "s",
        floor.iter().map(floor_cpu).collect(),
    );
    for (name, f) in [
        ("raw SDK loop: peak RSS", (|r| r.rss_mb) as fn(&Run) -> f64),
        ("raw SDK loop: RssAnon", |r| r.anon_mb),
        ("raw SDK loop: RssFile", |r| r.file_mb),
    ] {
        summary(name, "MB", floor.iter().map(f).collect());
    }
    summary(
        "raw SDK loop, shards at once: CPU-s per 10k records",
        "s",
        concurrent.iter().map(floor_cpu).collect(),
    );
    for (name, floor) in [
        ("member CPU / raw SDK loop CPU (same run)", &floor),
        (
            "member CPU / shards-at-once loop CPU (same run)",
            &concurrent,
        ),
    ] {
        summary(
            name,
            "",
            all.iter()
                .zip(floor)
                .map(|(m, f)| (m.cpu / m.records as f64) / (f.cpu / f.records as f64))
                .collect(),
        );
    }
    Ok(())
}

/// Runs this program as a member (`--member`) or as the raw loop (`--raw`).
async fn spawn(
    mode: &str,
    app: &str,
    table: &str,
    stream: &str,
    records: u64,
) -> Result<Run, Error> {
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .args([mode, "--app", app, "--table", table, "--stream", stream])
        .args(["--records", &records.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(format!("the member process failed: {}", out.status).into());
    }
    let line = String::from_utf8(out.stdout)?;
    let v: serde_json::Value = serde_json::from_str(line.trim())?;
    let f = |k: &str| v[k].as_f64().ok_or_else(|| format!("no {k} in {line}"));
    Ok(Run {
        records: f("records")? as u64,
        wall: f("wall")?,
        reading: f("reading")?,
        cpu: f("cpu")?,
        rss_mb: f("rss_mb")?,
        anon_mb: f("anon_mb")?,
        file_mb: f("file_mb")?,
    })
}

/// The member process: reads until it has `--records` records, closes, reports.
async fn member(args: &[String]) -> Result<(), Error> {
    let started = Instant::now();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("{name} is missing"))
    };
    let want = arg("--records", 50_000);
    let mut config = Config::builder(value("--app")?, value("--table")?)
        .client_id("drain")
        .initial_position(InitialPosition::TrimHorizon);
    if args.iter().any(|a| a == "--slow") {
        // Under a profiler (valgrind runs it some 50 times slower).
        config = config
            .sync_interval(Duration::from_secs(2))
            .failover_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(5));
    }
    let config = config.build()?;
    let consumer = Kinesumer::new(config).await?;
    let mut records = consumer.consume([value("--stream")?]).await?;
    let mut first = None;
    let mut got = 0u64;
    while got < want {
        let Some(record) = records.next().await else {
            return Err("the record stream ended early".into());
        };
        first.get_or_insert_with(Instant::now);
        got += 1;
        drop(record);
    }
    let reading = first.map_or(Duration::ZERO, |f| f.elapsed());
    let wall = started.elapsed();
    let usage = self_usage()?;
    consumer.close().await?;
    report(got, wall, reading, usage);
    Ok(())
}

/// The floor: GetRecords on every shard, from TRIM_HORIZON, with the library's default
/// limit, until `--records` records came; nothing else. One shard after the other, or
/// (`concurrent`) every shard at once, a task each, waiting 200 ms after an empty page.
async fn raw(args: &[String], concurrent: bool) -> Result<(), Error> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let started = Instant::now();
    let want = arg("--records", 50_000);
    let stream = args
        .iter()
        .position(|a| a == "--stream")
        .and_then(|i| args.get(i + 1))
        .ok_or("--stream is missing")?;
    // The member's clients trust the CA bundle of AWS_CA_BUNDLE when it is set: the
    // system's roots and the bundle's are parsed into a TLS configuration as each client
    // is built and again at its first request, milliseconds of CPU each time. The
    // floor's client must trust the same, or the floor is cheaper for that alone.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(path) = std::env::var_os("AWS_CA_BUNDLE") {
        loader = loader.http_client(kinesumer::ca_bundle_http_client(path.as_ref())?);
    }
    let kinesis = aws_sdk_kinesis::Client::new(&loader.load().await);
    let limit = Config::builder("floor", "floor").build()?.scan_limit();
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?;
        iterators.push(it.shard_iterator().map(str::to_owned));
    }
    let floor = Arc::new(Floor {
        kinesis,
        limit,
        want,
        got: AtomicU64::new(0),
        first: OnceLock::new(),
    });
    if concurrent {
        let mut tasks = tokio::task::JoinSet::new();
        for it in iterators {
            let floor = floor.clone();
            tasks.spawn(async move { floor.read(&mut [it], true).await });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
    } else {
        floor.read(&mut iterators, false).await?;
    }
    floor.report(started)
}

/// What the floor's readers share.
struct Floor {
    kinesis: aws_sdk_kinesis::Client,
    limit: i32,
    want: u64,
    got: AtomicU64,
    first: OnceLock<Instant>,
}

impl Floor {
    /// Calls GetRecords on `iterators` in turn until `want` records came (of every reader).
    async fn read(&self, iterators: &mut [Option<String>], idle: bool) -> Result<(), Error> {
        // Until the count is reached, or every shard read is closed and read to its end.
        while self.got.load(Ordering::Relaxed) < self.want && iterators.iter().any(Option::is_some)
        {
            for it in iterators.iter_mut() {
                let Some(current) = it.take() else { continue };
                let page = self
                    .kinesis
                    .get_records()
                    .shard_iterator(current)
                    .limit(self.limit)
                    .send()
                    .await?;
                if page.records().is_empty() {
                    if idle {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } else {
                    self.first.get_or_init(Instant::now);
                }
                self.got
                    .fetch_add(page.records().len() as u64, Ordering::Relaxed);
                *it = page.next_shard_iterator().map(str::to_owned);
            }
        }
        Ok(())
    }

    fn report(&self, started: Instant) -> Result<(), Error> {
        let reading = self.first.get().map_or(Duration::ZERO, Instant::elapsed);
        let wall = started.elapsed();
        report(
            self.got.load(Ordering::Relaxed),
            wall,
            reading,
            self_usage()?,
        );
        Ok(())
    }
}

/// What a measured process prints: one JSON line.
fn report(got: u64, wall: Duration, reading: Duration, usage: Usage) {
    println!(
        "{}",
        serde_json::json!({
            "records": got,
            "wall": wall.as_secs_f64(),
            "reading": reading.as_secs_f64(),
            "cpu": usage.cpu,
            "rss_mb": usage.peak_mb,
            "anon_mb": usage.anon_mb,
            "file_mb": usage.file_mb,
        })
    );
}

/// What this process used so far.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// CPU seconds, user + system, of every thread.
    cpu: f64,
    /// Peak resident set (`VmHWM`), MB.
    peak_mb: f64,
    /// Resident now: private memory, and mapped files (MB).
    anon_mb: f64,
    file_mb: f64,
}

fn self_usage() -> Result<Usage, Error> {
    let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Ok(Usage {
        cpu: cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9,
        peak_mb: memory_mb("self", "VmHWM")?,
        anon_mb: memory_mb("self", "RssAnon")?,
        file_mb: memory_mb("self", "RssFile")?,
    })
}
