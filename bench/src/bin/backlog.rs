//! Catching up under a slow state store (issue 24): one `kinesumer consume` process reads a
//! backlog of `--records` records of 200 bytes on a 4-shard stream from TRIM_HORIZON at
//! the library's default timings while the machine is busy, with the state store served
//! by the same emulator as Kinesis ([`Backlog::on_moto`], as in the drain benchmark).
//! Per run: the time until every record was delivered, the deliveries, the records
//! delivered again, the fences the member logged, the fences whose commit of the
//! processed marks failed, and its `RepeatedFencing` reports.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build -p kinesumer-cli -p kinesumer-bench
//! target/debug/backlog --cli target/debug/kinesumer [--cli OTHER] [--records 50000 --runs 5]
//! ```
//!
//! Each `--cli` is a `kinesumer` binary; with several (e.g. one built before a change),
//! runs alternate between them on the same stream, each run as a new app. Two busy
//! processes at nice 0 run beside the whole benchmark (`--no-load` leaves them out), as a
//! CI machine shared with other work is busy. `--request-timeout-ms N` passes a shorter
//! state-store request timeout to the members: a store too slow for its timeouts, so
//! that members fence while they catch up. A run that has not delivered every record
//! within 5 minutes, or whose member exits, ends the benchmark with an error.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kinesumer_bench::member::Member;
use kinesumer_bench::{arg, arg_str, check, summary, Backlog, Error};

const SHARDS: i32 = 4;
const PAYLOAD: usize = 200;

/// The library's log line of a fence (`group/member.rs`).
const FENCED: &str = "fenced: stopping every reader";
/// Its log line when a fenced shard could not commit what the application processed.
const FENCE_COMMIT_FAILED: &str = "since the last commit could not be committed";
/// The CLI's warning of `Error::RepeatedFencing`.
const REPEATED_FENCING: &str = "times within";

/// What one run measured.
struct Run {
    drained: Duration,
    delivered: u64,
    duplicates: u64,
    fences: usize,
    fence_commits_failed: usize,
    repeated_fencing: usize,
}

/// Busy processes, killed when dropped.
struct Load {
    _children: Vec<tokio::process::Child>,
}

impl Load {
    fn start(n: usize) -> Result<Self, Error> {
        let spin = |_| {
            tokio::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .kill_on_drop(true)
                .spawn()
        };
        Ok(Self {
            _children: (0..n).map(spin).collect::<Result<_, _>>()?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let clis: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--cli")
        .map(|w| w[1].clone())
        .collect();
    if clis.is_empty() {
        return Err("give a kinesumer binary: --cli target/debug/kinesumer".into());
    }
    let records = arg("--records", 50_000);
    let timeout = arg_str("--request-timeout-ms");
    let runs = arg("--runs", 5);
    let Backlog { stream, table } = Backlog::on_moto("backlog", SHARDS, records, PAYLOAD).await?;
    let _load = if args.iter().any(|a| a == "--no-load") {
        None
    } else {
        Some(Load::start(2)?)
    };
    let mut results: Vec<Vec<Run>> = clis.iter().map(|_| Vec::new()).collect();
    for i in 0..runs {
        for (c, cli) in clis.iter().enumerate() {
            let app = format!("backlog-{i}-{c}-{:08x}", rand::random::<u32>());
            let run = drain(cli, &app, &table, &stream, records, timeout.as_deref()).await?;
            println!(
                "{cli} run {i}: drained in {:.1} s, {} delivered, {} again, {} fences ({} of them failed to commit), {} RepeatedFencing",
                run.drained.as_secs_f64(),
                run.delivered,
                run.duplicates,
                run.fences,
                run.fence_commits_failed,
                run.repeated_fencing
            );
            results[c].push(run);
        }
    }
    for (cli, runs) in clis.iter().zip(&results) {
        println!("{cli}:");
        let per = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        summary("  time to drain", "s", per(|r| r.drained.as_secs_f64()));
        summary("  delivered", "", per(|r| r.delivered as f64));
        summary("  delivered again", "", per(|r| r.duplicates as f64));
        summary("  fences", "", per(|r| r.fences as f64));
        summary(
            "  fence commits failed",
            "",
            per(|r| r.fence_commits_failed as f64),
        );
        summary("  RepeatedFencing", "", per(|r| r.repeated_fencing as f64));
    }
    Ok(())
}

/// One member process reads until every record was delivered (5 minutes at most), then
/// is stopped.
async fn drain(
    cli: &str,
    app: &str,
    table: &str,
    stream: &str,
    records: u64,
    request_timeout_ms: Option<&str>,
) -> Result<Run, Error> {
    let mut command = tokio::process::Command::new(cli);
    command
        .args([
            "consume", "--app", app, "--table", table, "--stream", stream,
        ])
        .args(["--from", "trim-horizon", "--format", "jsonl"]);
    if let Some(ms) = request_timeout_ms {
        command.args(["--request-timeout-ms", ms]);
    }
    let mut member = Member::spawn(command)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    // The records seen so far, kept up as deliveries arrive (a fencing member delivers
    // hundreds of thousands).
    let mut seen = HashSet::new();
    let mut checked = 0;
    while (seen.len() as u64) < records {
        {
            let d = member.deliveries.lock().expect("lock");
            seen.extend(d[checked..].iter().map(|d| d.n));
            checked = d.len();
        }
        if let Some(status) = member.exited()? {
            let stderr = member.stderr.lock().expect("lock").join("\n");
            return Err(format!(
                "{cli} exited ({status:?}) after {} records:\n{stderr}",
                seen.len()
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!("{cli}: {} of {records} records in 5 minutes", seen.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    member.terminate(Duration::from_secs(30)).await?;
    let deliveries = member.deliveries.lock().expect("lock");
    Ok(Run {
        drained,
        delivered: deliveries.len() as u64,
        duplicates: check::duplicates([deliveries.as_slice()]),
        fences: member.stderr_count(FENCED),
        fence_commits_failed: member.stderr_count(FENCE_COMMIT_FAILED),
        repeated_fencing: member.stderr_count(REPEATED_FENCING),
    })
}
