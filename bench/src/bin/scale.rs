//! The consumer group at scale, by simulation: `kinesumer::sim::scale` at 10 / 100 /
//! 1,000 members × 100 / 1,000 / 10,000 shards, on the real protocol code with the
//! in-memory store and the paused clock, printed as a Markdown table.
//!
//! ```sh
//! cargo run --release -p kinesumer-bench --bin scale [-- --max-members 100 --max-shards 1000]
//! ```
//!
//! The leader's time per tick is the library's `kinesumer_leader_tick_seconds` histogram
//! (`kinesumer::metrics::LEADER_TICK`): wall time of the tick, which on the in-memory
//! store and a single thread is the leader's CPU time (plus the simulation's own
//! bookkeeping of each request).

use std::time::Instant;

use kinesumer::sim::scale::{self, Scale, ScaleReport};
use kinesumer_bench::{arg, Error};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn main() -> Result<(), Error> {
    let max_members = arg("--max-members", 1000) as usize;
    let max_shards = arg("--max-shards", 10_000) as usize;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    println!(
        "| members | shards | start (ticks) | join 10 % (ticks) | moves / min | crash 10 % (ticks after failover) | moves / min | leader req/tick | others req/tick mean (max) | leader tick p50 / max | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for members in [10, 100, 1000].into_iter().filter(|&m| m <= max_members) {
        for shards in [100, 1000, 10_000].into_iter().filter(|&s| s <= max_shards) {
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
