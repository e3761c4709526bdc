//! The consumer group at scale, by simulation: `kinesumer::sim::scale` at 10 / 100 /
//! 1,000 members × 100 / 1,000 / 10,000 shards, on the real protocol code with the
//! in-memory store and the paused clock, printed as a Markdown table.
//!
//! ```sh
//! cargo run --release -p kinesumer-bench --bin scale [-- --max-members 100 --max-shards 1000]
//!     [--min-members 1000 --min-shards 10000] [--only protocol|balance]
//! ```
//!
//! Two tables: the protocol (`sim::scale::run`), and balancing on skewed loads by count,
//! by load and by the KCL 3 rule (`sim::scale::load`).
//!
//! The leader's time per tick is the library's `kinesumer_leader_tick_seconds` histogram
//! (`kinesumer::metrics::LEADER_TICK`): wall time of the tick, which on the in-memory
//! store and a single thread is the leader's CPU time (plus the simulation's own
//! bookkeeping of each request).

use std::time::Instant;

use kinesumer::sim::scale::load::{self as balance, Decider, LoadRunReport, LoadScale};
use kinesumer::sim::scale::{self, Scale, ScaleReport};
use kinesumer_bench::{arg, arg_str, Error};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// The sizes to run, within the limits given on the command line.
fn sizes() -> Vec<(usize, usize)> {
    let within = |name: &str, sizes: [usize; 3]| {
        let (min, max) = (
            arg(&format!("--min-{name}"), 0),
            arg(&format!("--max-{name}"), u64::MAX),
        );
        sizes
            .into_iter()
            .filter(move |&n| (min..=max).contains(&(n as u64)))
    };
    within("members", [10, 100, 1000])
        .flat_map(|m| within("shards", [100, 1000, 10_000]).map(move |s| (m, s)))
        .collect()
}

fn main() -> Result<(), Error> {
    let only = arg_str("--only");
    if only.as_deref() != Some("balance") {
        protocol()?;
    }
    if only.as_deref() != Some("protocol") {
        balancing();
    }
    Ok(())
}

/// The table of balancing on skewed loads, one row per size and decider.
fn balancing() {
    println!(
        "\n| members | shards | decider | start: ticks, moves / min, worst (divisible) | hot shard | cooled | join 10 % | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (members, shards) in sizes() {
        for decider in [Decider::Count, Decider::Load, Decider::Kcl3] {
            let started = Instant::now();
            let scale = LoadScale {
                members,
                shards,
                seed: 1,
            };
            let report = balance::run(&scale, decider);
            balance_row(&report, started.elapsed());
        }
    }
}

fn balance_row(r: &LoadRunReport, wall: std::time::Duration) {
    let cells: Vec<String> = r
        .phases
        .iter()
        .map(|p| {
            let ticks = p.ticks.map_or("unsettled".to_owned(), |t| t.to_string());
            let divisible = p
                .worst_divisible
                .map_or("-".to_owned(), |w| format!("{w:.2}"));
            format!(
                "{ticks}, {} / {}, {:.2} ({divisible})",
                p.moves, p.min_moves, p.worst_over_mean
            )
        })
        .collect();
    println!(
        "| {} | {} | {} | {} | {:.1} s |",
        r.scale.members,
        r.scale.shards,
        r.decider.name(),
        cells.join(" | "),
        wall.as_secs_f64(),
    );
}

/// The table of the protocol at every size.
fn protocol() -> Result<(), Error> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    println!(
        "| members | shards | start (ticks) | join 10 % (ticks) | moves / min | crash 10 % (ticks after failover) | moves / min | leader req/tick | others req/tick mean (max) | leader tick p50 / max | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (members, shards) in sizes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?;
        leader_ticks(&snapshotter);
        let started = Instant::now();
        let report = runtime.block_on(scale::run(&Scale {
            members,
            shards,
            seed: 1,
        }));
        row(&report, &leader_ticks(&snapshotter), started.elapsed());
    }
    Ok(())
}

/// The leader tick durations recorded since the last call, in milliseconds, sorted.
fn leader_ticks(snapshotter: &Snapshotter) -> Vec<f64> {
    let mut ms: Vec<f64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == kinesumer::metrics::LEADER_TICK)
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(v) => v.into_iter().map(|s| s.into_inner() * 1e3).collect(),
            _ => Vec::new(),
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn row(r: &ScaleReport, ticks_ms: &[f64], wall: std::time::Duration) {
    let p50 = ticks_ms.get(ticks_ms.len() / 2).copied().unwrap_or(0.0);
    let max = ticks_ms.last().copied().unwrap_or(0.0);
    let [start, join, crash] = [0, 1, 2].map(|i| &r.changes[i]);
    println!(
        "| {} | {} | {:.1} | {:.1} | {} / {} | {:.1} | {} / {} | {:.2} | {:.2} ({:.2}) | {:.1} / {:.1} ms | {:.0} s |",
        r.scale.members,
        r.scale.shards,
        start.ticks,
        join.ticks,
        join.moves,
        join.min_moves,
        crash.ticks,
        crash.moves,
        crash.min_moves,
        r.leader_requests_per_tick,
        r.other_requests_per_tick_mean,
        r.other_requests_per_tick_max,
        p50,
        max,
        wall.as_secs_f64(),
    );
}
