//! Processors: the same backlog drained by `kinesumer consume --format jsonl` and by
//! `kinesumer run -- python3 …` (a Python processor that acknowledges each batch), with
//! one processor for all the shards (`run`'s default) and with one per shard
//! (`--child-per-shard`); runs alternated, each as a new app (so from the start again).
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build --release -p kinesumer-cli -p kinesumer-bench --bin processors
//! target/release/processors --cli target/release/kinesumer [--records 50000 --runs 5]
//! ```
//!
//! Both services are moto's ([`Backlog::on_moto`]); 4 shards, 200-byte records. A run
//! ends when every record was written (consume: stdout lines; run: the counts the Python
//! processors print to stderr, one line per batch). Measured then, from `/proc`: the
//! member's CPU seconds and peak RSS (`VmHWM`), its children's CPU seconds and peak RSS
//! summed (the Python processors', still running), and the wall time from the start.

use std::process::Stdio;
use std::time::Instant;

use kinesumer_bench::procfs::{cpu_seconds, memory_mb};
use kinesumer_bench::{arg, arg_str, summary, Backlog, Error};
use tokio::io::{AsyncBufReadExt, BufReader};

const SHARDS: i32 = 4;
const PAYLOAD: usize = 200;

/// A Python processor that acknowledges each batch and prints how many records it had.
const PROCESSOR: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
import kinesumer_processor
def process(records, checkpointer):
    print(len(records), file=sys.stderr, flush=True)
kinesumer_processor.run(process)
"#;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall: f64,
    member_cpu: f64,
    children_cpu: f64,
    member_rss_mb: f64,
    children_rss_mb: f64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli =
        arg_str("--cli").ok_or("give the kinesumer binary: --cli target/release/kinesumer")?;
    let records = arg("--records", 50_000);
    let runs = arg("--runs", 5);
    let clients = std::env::current_dir()?.join("clients/python");
    let Backlog { stream, table } =
        Backlog::on_moto("processors", SHARDS, records, PAYLOAD).await?;
    let mut consume = Vec::new();
    let mut python = Vec::new();
    let mut per_shard = Vec::new();
    for i in 0..runs {
        for (name, all) in [
            ("consume", &mut consume),
            ("run python", &mut python),
            ("run python per shard", &mut per_shard),
        ] {
            let app = format!("processors-{i}-{:08x}", rand::random::<u32>());
            let mut cmd = tokio::process::Command::new(&cli);
            let member = ["--table", &table, "--stream", &stream, "--app", &app];
            let from = ["--from", "trim-horizon"];
            let run = if name == "consume" {
                cmd.arg("consume").args(member).args(from);
                drain(cmd, records, Counted::StdoutLines).await?
            } else {
                cmd.arg("run").args(member).args(from);
                if name.ends_with("per shard") {
                    cmd.arg("--child-per-shard");
                }
                let clients = clients.to_str().ok_or("a UTF-8 path")?;
                cmd.args(["--", "python3", "-c", PROCESSOR, clients]);
                drain(cmd, records, Counted::StderrCounts).await?
            };
            println!(
                "run {i} {name}: {:.0} records/s, member {:.3} CPU-s per 10,000 records, processors {:.3}, member peak RSS {:.1} MB, processors' {:.1} MB",
                records as f64 / run.wall,
                run.member_cpu * 10_000.0 / records as f64,
                run.children_cpu * 10_000.0 / records as f64,
                run.member_rss_mb,
                run.children_rss_mb,
            );
            all.push(run);
        }
    }
    for (name, all) in [
        ("consume", &consume),
        ("run python", &python),
        ("run python per shard", &per_shard),
    ] {
        let per = |f: fn(&Run) -> f64| all.iter().map(f).collect::<Vec<f64>>();
        let per_10k = |cpu: f64| cpu * 10_000.0 / records as f64;
        summary(
            &format!("{name}: records/s"),
            "",
            per(|r| 1.0 / r.wall)
                .iter()
                .map(|x| x * records as f64)
                .collect(),
        );
        summary(
            &format!("{name}: member CPU-s per 10k"),
            "s",
            per(|r| r.member_cpu).into_iter().map(per_10k).collect(),
        );
        summary(
            &format!("{name}: processors CPU-s per 10k"),
            "s",
            per(|r| r.children_cpu).into_iter().map(per_10k).collect(),
        );
        summary(
            &format!("{name}: member peak RSS"),
            "MB",
            per(|r| r.member_rss_mb),
        );
        summary(
            &format!("{name}: processors' peak RSS, summed"),
            "MB",
            per(|r| r.children_rss_mb),
        );
    }
    Ok(())
}

/// How a run's progress shows.
#[derive(Clone, Copy)]
enum Counted {
    /// One line per record on stdout.
    StdoutLines,
    /// A count per batch on stderr (`[stream/shard] N`).
    StderrCounts,
}

/// Runs `cmd` (the CLI and its arguments) until
/// `records` were processed; measures it, then stops it with SIGTERM.
async fn drain(
    mut cmd: tokio::process::Command,
    records: u64,
    counted: Counted,
) -> Result<Run, Error> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("the member exited at once")?;
    let (mut stdout, mut stderr) = (
        BufReader::new(child.stdout.take().ok_or("stdout")?).lines(),
        BufReader::new(child.stderr.take().ok_or("stderr")?).lines(),
    );
    let mut done = 0u64;
    while done < records {
        let line = match counted {
            Counted::StdoutLines => stdout.next_line().await?,
            Counted::StderrCounts => stderr.next_line().await?,
        };
        let Some(line) = line else {
            let mut rest = String::new();
            while let Ok(Some(l)) = stderr.next_line().await {
                rest.push_str(&l);
                rest.push('\n');
            }
            return Err(format!("the member ended after {done} records: {rest}").into());
        };
        done += match counted {
            Counted::StdoutLines => 1,
            Counted::StderrCounts => line
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0),
        };
    }
    let wall = started.elapsed().as_secs_f64();
    let member_cpu = cpu_seconds(&pid.to_string())?;
    let member_rss_mb = memory_mb(&pid.to_string(), "VmHWM")?;
    // Folded from +0.0: an empty f64 sum is -0.0.
    let children = children_of(pid)?;
    let (children_cpu, children_rss_mb) =
        children
            .into_iter()
            .try_fold((0.0, 0.0), |(cpu, rss), child| {
                let child = child.to_string();
                Ok::<_, Error>((
                    cpu + cpu_seconds(&child)?,
                    rss + memory_mb(&child, "VmHWM")?,
                ))
            })?;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).ok_or("pid")?,
        rustix::process::Signal::TERM,
    )?;
    // Drained meanwhile, so a member writing at its close never blocks on a full pipe.
    let drain_rest = async { while let Ok(Some(_)) = stdout.next_line().await {} };
    let drain_err = async { while let Ok(Some(_)) = stderr.next_line().await {} };
    let (_, _, status) = tokio::join!(drain_rest, drain_err, child.wait());
    status?;
    Ok(Run {
        wall,
        member_cpu,
        children_cpu,
        member_rss_mb,
        children_rss_mb,
    })
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Result<Vec<u32>, Error> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(child) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, after)| after.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    Ok(children)
}
