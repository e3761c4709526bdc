//! Catching up under a slow state store (issue 24): one `kinesumer consume` process reads a
//! backlog from TRIM_HORIZON at the library's default timings while the machine is busy,
//! with the state store served by the same emulator as Kinesis (moto serves both, as in
//! the drain benchmark). Per run: the time until every record was delivered, the records
//! delivered again, and the fences the member logged.
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
//! that members fence while they catch up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kinesumer::store::{create_table, TableBilling};
use kinesumer_bench::member::Member;
use kinesumer_bench::{arg, arg_str, create_stream, put_numbered, summary, Error};

const SHARDS: i32 = 4;

/// What one run measured.
struct Run {
    drained: Duration,
    delivered: usize,
    fences: usize,
    loops: usize,
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
    let moto = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .map_err(|_| "AWS_ENDPOINT_URL_DYNAMODB is not set: eval \"$(scripts/local-stack env)\"")?;
    // Before any client is built; the member processes inherit it.
    std::env::set_var("AWS_ENDPOINT_URL_KINESIS", &moto);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let stream = format!("backlog-{:08x}", rand::random::<u32>());
    let table = format!("kinesumer-backlog-{:08x}", rand::random::<u32>());
    create_stream(&kinesis, &stream, SHARDS).await?;
    create_table(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &table,
        TableBilling::OnDemand,
    )
    .await?;
    for start in (0..records).step_by(500) {
        put_numbered(&kinesis, &stream, start..(start + 500).min(records), 1000).await?;
    }
    eprintln!("loaded {records} records into {SHARDS} shards of {stream} (table {table})");
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
                "{cli} run {i}: drained in {:.1} s, {} delivered again, {} fences, {} fencing-loop reports",
                run.drained.as_secs_f64(),
                run.delivered - records as usize,
                run.fences,
                run.loops
            );
            results[c].push(run);
        }
    }
    for (cli, runs) in clis.iter().zip(&results) {
        println!("{cli}:");
        let per = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        summary("  time to drain", "s", per(|r| r.drained.as_secs_f64()));
        let extra = |r: &Run| (r.delivered as u64 - records) as f64;
        summary("  delivered again", "", runs.iter().map(extra).collect());
        summary("  fences", "", per(|r| r.fences as f64));
    }
    Ok(())
}

/// One member process reads until every record was delivered (5 minutes at most).
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
    loop {
        let distinct = {
            let d = member.deliveries.lock().expect("lock");
            d.iter().map(|d| d.n).collect::<BTreeSet<u64>>().len()
        };
        if distinct as u64 >= records {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{cli}: {distinct} of {records} records in 5 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    member.terminate(Duration::from_secs(30)).await?;
    let delivered = member.deliveries.lock().expect("lock").len();
    Ok(Run {
        drained,
        delivered,
        fences: member.stderr_count("fenced: stopping every reader"),
        loops: member.stderr_count("times within"),
    })
}
