//! The randomized run of the simulation harness: many seeds of random crashes, pauses,
//! lost responses, slow and failing requests, wall steps and leader changes, with the
//! invariants checked every 50 ms of simulated time and, at the end, nothing lost and
//! every shard read. Each seed runs on a fresh current-thread runtime with the paused
//! clock, so a failing seed replays exactly.
//!
//! `KINESUMER_SEEDS=n` runs seeds `0..n` (default 200); `KINESUMER_SEED=s` replays one.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sim::{Handout, RandomFaults, Sim};

const S: &str = "orders";
const NAMES: [&str; 3] = ["a", "b", "c"];

/// One seed's run; returns every hand-out, or panics at the first violation.
async fn run(seed: u64) -> Vec<Handout> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::new(seed, &[(S, 4)]);
    for name in NAMES {
        sim.start(name, &[S]).await;
    }
    let mut paused: Vec<(String, u32)> = Vec::new();
    for step in 0..40u32 {
        match rng.random_range(0..10) {
            0 => {
                let name = NAMES[rng.random_range(0..3)];
                sim.crash(name);
                sim.start(name, &[S]).await;
            }
            1 | 2 => {
                let name = match sim.leader() {
                    Some(leader) if rng.random_bool(0.5) => leader,
                    _ => NAMES[rng.random_range(0..3)].to_owned(),
                };
                if !sim.member(&name).is_paused() {
                    sim.pause(&name);
                    paused.push((name, step + rng.random_range(1..12)));
                }
            }
            3 => {
                let name = NAMES[rng.random_range(0..3)];
                let mut faults = RandomFaults::new(rng.random());
                faults.fail = 0.05;
                faults.lose_response = 0.05;
                faults.hang = 0.02;
                faults.slow = 0.1;
                faults.max_delay = Duration::from_millis(240);
                sim.member(name).store.set_random(Some(faults));
            }
            4 => sim.member(NAMES[rng.random_range(0..3)]).store.clear(),
            5 => {
                let step = chrono::Duration::seconds(rng.random_range(-400..400));
                sim.member(NAMES[rng.random_range(0..3)])
                    .clock
                    .step_wall(step);
            }
            _ => {
                sim.put(S, rng.random_range(1..10));
            }
        }
        paused.retain(|(name, until)| {
            let due = *until <= step;
            if due {
                sim.resume(name);
            }
            !due
        });
        sim.run_for(Duration::from_millis(500)).await;
    }
    for name in NAMES {
        sim.member(name).store.clear();
        if sim.member(name).is_paused() {
            sim.resume(name);
        }
    }
    sim.put(S, 10);
    let limit = Duration::from_secs(120);
    sim.wait_for("every shard read", limit, |s| s.unread().is_empty())
        .await;
    sim.wait_for("every record handed out", limit, |s| s.lost().is_empty())
        .await;
    sim.monitor().handouts()
}

fn run_seed(seed: u64) -> Result<Vec<Handout>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(run(seed)))).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_failures_keep_every_invariant() {
    let seeds = match env("KINESUMER_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env("KINESUMER_SEEDS").unwrap_or(200),
    };
    let started = std::time::Instant::now();
    let count = seeds.end - seeds.start;
    let failed: Vec<String> = seeds
        .filter_map(|seed| {
            run_seed(seed)
                .err()
                .map(|e| format!("seed {seed} (replay: KINESUMER_SEED={seed}): {e}"))
        })
        .collect();
    eprintln!("{count} seeds in {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn a_seed_replays_exactly() {
    assert_eq!(run_seed(7), run_seed(7));
}
