//! Catching up under a slow state store (issue 24): one `kinesumer consume` process reads a
//! backlog of `--records` records of 200 bytes on a 4-shard stream from TRIM_HORIZON at
//! the library's default timings while the machine is busy, with the state store served
//! by the same emulator as Kinesis ([`Backlog::on_moto`], as in the drain benchmark).
//! Per run: the time until every record was delivered, the deliveries, the records
//! delivered again, the fences the member logged, the shards whose commit of the
//! processed marks failed at a fence, and its `RepeatedFencing` reports.
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
//! CI machine shared with other work is busy.
//!
//! A state store too slow for the member's timeouts, so that it fences while it catches
//! up, two ways: `--store-delay-ms N` puts a proxy between the members and the state
//! store (Kinesis is read directly) that, from the first record delivered on, holds each
//! request for a random time up to N ms ([`TcpMode::Delay`]): the store slows down while
//! the member reads hard, at the default timeouts (the member joins at full speed, as its
//! first requests would fail and end `consume` otherwise). `--request-timeout-ms N`
//! passes a shorter state-store request timeout to the members instead.
//!
//! A run that has not delivered every record within `--deadline-secs` (300) is counted
//! as not drained, at the deadline; a member that exits ends the benchmark with an error.
//! `--log-dir DIR` keeps each member's stderr (the fences' reasons) as `DIR/<app>.log`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kinesumer_bench::member::Member;
use kinesumer_bench::proxy::{TcpMode, TcpProxy};
use kinesumer_bench::{arg, arg_str, check, endpoint, summary, Backlog, Error};

const SHARDS: i32 = 4;
const PAYLOAD: usize = 200;

/// The library's log line of a fence (`group/member.rs`).
const FENCED: &str = "fenced: stopping every reader";
/// Its log line when a fenced shard could not commit what the application processed (one
/// per shard).
const FENCE_COMMIT_FAILED: &str = "since the last commit could not be committed";
/// The CLI's warning of `Error::RepeatedFencing`.
const REPEATED_FENCING: &str = "times within";

/// What every run shares.
struct Setup {
    backlog: Backlog,
    records: u64,
    /// `--request-timeout-ms` for the members.
    request_timeout_ms: Option<String>,
    /// The proxy in front of the state store, and its delay once reading started.
    store: Option<(TcpProxy, Duration)>,
    deadline: Duration,
    /// Where each member's stderr is kept.
    log_dir: Option<String>,
}

/// What one run measured.
struct Run {
    /// Until every record was delivered, or the deadline.
    drained: Duration,
    /// Whether every record was delivered by the deadline.
    complete: bool,
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
    let runs = arg("--runs", 5);
    let store = match arg("--store-delay-ms", 0) {
        0 => None,
        ms => {
            let proxy = TcpProxy::start(endpoint("AWS_ENDPOINT_URL_DYNAMODB")?).await?;
            Some((proxy, Duration::from_millis(ms)))
        }
    };
    let setup = Setup {
        backlog: Backlog::on_moto("backlog", SHARDS, records, PAYLOAD).await?,
        records,
        request_timeout_ms: arg_str("--request-timeout-ms"),
        store,
        deadline: Duration::from_secs(arg("--deadline-secs", 300)),
        log_dir: arg_str("--log-dir"),
    };
    let _load = if args.iter().any(|a| a == "--no-load") {
        None
    } else {
        Some(Load::start(2)?)
    };
    let mut results: Vec<Vec<Run>> = clis.iter().map(|_| Vec::new()).collect();
    for i in 0..runs {
        for (c, cli) in clis.iter().enumerate() {
            let app = format!("backlog-{i}-{c}-{:08x}", rand::random::<u32>());
            let run = drain(cli, &app, &setup).await?;
            println!(
                "{cli} run {i}: {} {:.1} s, {} delivered, {} again, {} fences ({} shard commits failed at a fence), {} RepeatedFencing",
                if run.complete { "drained in" } else { "NOT drained in" },
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
        let undrained = runs.iter().filter(|r| !r.complete).count();
        if undrained > 0 {
            println!("  ({undrained} not drained: counted at the deadline)");
        }
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

/// One member process reads until every record was delivered (or the deadline), then is
/// stopped.
async fn drain(cli: &str, app: &str, setup: &Setup) -> Result<Run, Error> {
    let Backlog { stream, table } = &setup.backlog;
    let mut command = tokio::process::Command::new(cli);
    command
        .args([
            "consume", "--app", app, "--table", table, "--stream", stream,
        ])
        .args(["--from", "trim-horizon", "--format", "jsonl"]);
    if let Some(ms) = &setup.request_timeout_ms {
        command.args(["--request-timeout-ms", ms]);
    }
    if let Some((proxy, _)) = &setup.store {
        proxy.set(TcpMode::Pass);
        command.env("AWS_ENDPOINT_URL_DYNAMODB", proxy.url());
    }
    let mut member = Member::spawn(command)?;
    let started = Instant::now();
    // The records seen so far, kept up as deliveries arrive (a fencing member delivers
    // hundreds of thousands).
    let mut seen = HashSet::new();
    let mut checked = 0;
    loop {
        {
            let d = member.deliveries.lock().expect("lock");
            seen.extend(d[checked..].iter().map(|d| d.n));
            checked = d.len();
        }
        if let Some((proxy, delay)) = setup.store.as_ref().filter(|_| checked > 0) {
            proxy.set(TcpMode::Delay(*delay));
        }
        if seen.len() as u64 >= setup.records || started.elapsed() >= setup.deadline {
            break;
        }
        if let Some(status) = member.exited()? {
            let stderr = member.stderr.lock().expect("lock").join("\n");
            return Err(format!(
                "{cli} exited ({status:?}) after {} records:\n{stderr}",
                seen.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    member.terminate(Duration::from_secs(30)).await?;
    if let Some(dir) = &setup.log_dir {
        let stderr = member.stderr.lock().expect("lock").join("\n");
        std::fs::write(format!("{dir}/{app}.log"), stderr)?;
    }
    let deliveries = member.deliveries.lock().expect("lock");
    Ok(Run {
        drained,
        complete: seen.len() as u64 >= setup.records,
        delivered: deliveries.len() as u64,
        duplicates: check::duplicates([deliveries.as_slice()]),
        fences: member.stderr_count(FENCED),
        fence_commits_failed: member.stderr_count(FENCE_COMMIT_FAILED),
        repeated_fencing: member.stderr_count(REPEATED_FENCING),
    })
}
