//! The consumer group at scale, by simulation: many members sharing many shards of one
//! stream, on the real protocol code (membership, leader, assignment, leases) over the
//! in-memory store, with shards that hold no records, under tokio's paused clock.
//!
//! [`run`] starts a group, lets 10 % more members join, then crashes 10 % of the
//! members (never the leader, so the figure is the rebalancing, not a lock expiry), and
//! reports after each change how many ticks passed until the plan was held balanced, how
//! many shards moved against the fewest possible ([`min_moves`]), and the state-store
//! requests per tick of the leader and of the others while the group is steady. The
//! benchmark `bench/src/bin/scale.rs` runs it at every size; a test runs a small size.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() {
//! use kinesumer::sim::scale::{self, Scale};
//!
//! // On a current-thread runtime with the paused clock:
//! let report = scale::run(&Scale { members: 10, shards: 100, seed: 1 }).await;
//! for change in &report.changes {
//!     println!("{}: balanced after {:.1} ticks", change.what, change.ticks);
//! }
//! # }
//! ```

pub mod load;

use std::collections::BTreeMap;
use std::time::Duration;

use super::Sim;
use crate::event::Event;

const STREAM: &str = "scale";

/// The size of one simulated group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Members at the start.
    pub members: usize,
    /// Shards of the one stream.
    pub shards: usize,
    /// The seed of the library's random source (tick jitter, tokens).
    pub seed: u64,
}

/// What one change of the group cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// "start", "join 10 %" or "crash 10 %".
    pub what: String,
    /// Ticks (sync intervals) from the change until every shard was held by exactly one
    /// member and the counts differed by at most one. For a crash, counted from the
    /// moment the crashed members could first be judged gone (the failover timeout
    /// after the crash).
    pub ticks: f64,
    /// Leases taken from the change until balanced: every take is one shard moved.
    pub moves: usize,
    /// The fewest moves that reach a balanced plan from where the group stood.
    pub min_moves: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    /// The size.
    pub scale: Scale,
    /// Each change, in order.
    pub changes: Vec<Change>,
    /// State-store requests per tick of the leader, while steady.
    pub leader_requests_per_tick: f64,
    /// State-store requests per tick of the other members while steady: the mean.
    pub other_requests_per_tick_mean: f64,
    /// The same: the most of any one member.
    pub other_requests_per_tick_max: f64,
}

/// The fewest shard moves that turn a group whose members hold `held` shards each
/// (newcomers 0; the shards of crashed members held by nobody) into a balanced
/// assignment of `shards` shards over `held.len()` members: the members holding most
/// keep up to the larger share, the others up to the smaller one.
///
/// ```
/// use kinesumer::sim::scale::min_moves;
///
/// assert_eq!(min_moves(&[5, 5, 0], 10), 3); // a newcomer takes 3
/// assert_eq!(min_moves(&[4, 3], 10), 3); // 3 orphans of a crashed member
/// ```
pub fn min_moves(held: &[usize], shards: usize) -> usize {
    if held.is_empty() {
        return 0;
    }
    let (share, larger) = (shards / held.len(), shards % held.len());
    let mut held = held.to_vec();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let kept: usize = held
        .iter()
        .enumerate()
        .map(|(i, &h)| h.min(share + usize::from(i < larger)))
        .sum();
    shards - kept
}

/// Runs the start, the join and the crash at `scale`. Call on a current-thread runtime
/// with the paused clock (`tokio::test(start_paused = true)`, or a runtime built with
/// `start_paused(true)`).
///
/// # Panics
///
/// When a change is not balanced within ten minutes of simulated time, or the simulation
/// finds a protocol violation.
pub async fn run(scale: &Scale) -> ScaleReport {
    let mut sim = Sim::new(scale.seed, &[(STREAM, scale.shards)]);
    let config = Sim::config("x").build().expect("valid config");
    let tick = config.sync_interval();
    let mut names: Vec<String> = Vec::new();
    let mut changes = Vec::new();

    let joined = join(&mut sim, &mut names, scale.members).await;
    let nobody = BTreeMap::new();
    changes.push(balance(&sim, "start", joined, Duration::ZERO, tick, &names, &nobody).await);

    let before = holdings(&sim, &names);
    let joined = join(&mut sim, &mut names, (scale.members / 10).max(1)).await;
    changes.push(
        balance(
            &sim,
            "join 10 %",
            joined,
            Duration::ZERO,
            tick,
            &names,
            &before,
        )
        .await,
    );

    let leader = steady_leader(&sim).await;
    let (leader_rate, others) = requests_per_tick(&sim, &names, &leader, tick).await;

    let crashed: Vec<String> = names
        .iter()
        .filter(|n| **n != leader)
        .take((names.len() / 10).max(1))
        .cloned()
        .collect();
    let at = sim.now();
    for name in &crashed {
        sim.crash(name);
    }
    names.retain(|n| !crashed.contains(n));
    let before = holdings(&sim, &names);
    let grace = config.failover_timeout();
    changes.push(balance(&sim, "crash 10 %", at, grace, tick, &names, &before).await);

    let mean = others.iter().sum::<f64>() / others.len().max(1) as f64;
    ScaleReport {
        scale: *scale,
        changes,
        leader_requests_per_tick: leader_rate,
        other_requests_per_tick_mean: mean,
        other_requests_per_tick_max: others.iter().copied().fold(0.0, f64::max),
    }
}

/// Starts `n` more members; returns when they started.
async fn join(sim: &mut Sim, names: &mut Vec<String>, n: usize) -> Duration {
    let at = sim.now();
    for _ in 0..n {
        let name = format!("m{:05}", names.len());
        sim.start(&name, &[STREAM]).await;
        names.push(name);
    }
    at
}

/// The shards each of `names` holds now (0 for a member not running).
fn holdings(sim: &Sim, names: &[String]) -> BTreeMap<String, usize> {
    names
        .iter()
        .map(|n| (n.clone(), sim.member(n).consumer.held_shards().len()))
        .collect()
}

/// When each lease was taken since `since`, by any of `names`.
fn takes_since(sim: &Sim, names: &[String], since: Duration) -> Vec<Duration> {
    names
        .iter()
        .flat_map(|n| sim.member(n).events())
        .filter(|(at, e)| *at >= since && matches!(e, Event::LeaseTaken { .. }))
        .map(|(at, _)| at)
        .collect()
}

fn balanced(sim: &Sim, names: &[String]) -> bool {
    let counts = holdings(sim, names);
    let total: usize = counts.values().sum();
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    total == sim.kinesis().shard_count(STREAM) && max - min <= 1 && sim.unread().is_empty()
}

/// Waits until the group is balanced after a change made at `at`, and counts the ticks
/// from `at + grace` to the last lease taken, and the moves against the minimum from
/// `before` (members not in it held nothing).
async fn balance(
    sim: &Sim,
    what: &str,
    at: Duration,
    grace: Duration,
    tick: Duration,
    names: &[String],
    before: &BTreeMap<String, usize>,
) -> Change {
    sim.wait_for(what, Duration::from_secs(600), |s| balanced(s, names))
        .await;
    let held: Vec<usize> = names
        .iter()
        .map(|n| before.get(n).copied().unwrap_or(0))
        .collect();
    let takes = takes_since(sim, names, at);
    // Balanced from the last take: the snapshot `held_shards` shows lags up to a tick.
    let last = takes.iter().max().copied().unwrap_or(at);
    let since = last.saturating_sub(at + grace);
    Change {
        what: what.to_owned(),
        ticks: since.as_secs_f64() / tick.as_secs_f64(),
        moves: takes.len(),
        min_moves: min_moves(&held, sim.kinesis().shard_count(STREAM)),
    }
}

async fn steady_leader(sim: &Sim) -> String {
    sim.wait_for("a leader", Duration::from_secs(60), |s| {
        s.leader().is_some()
    })
    .await;
    sim.leader().expect("a leader")
}

/// Requests per tick over 25 ticks of a steady group (5 ticks after it was balanced):
/// the leader's, and each other's.
async fn requests_per_tick(
    sim: &Sim,
    names: &[String],
    leader: &str,
    tick: Duration,
) -> (f64, Vec<f64>) {
    const TICKS: u32 = 25;
    // The plans of members that joined without taking anything are written in the
    // ticks after the group looked balanced: let those pass first.
    sim.run_for(tick * 5).await;
    let before: Vec<_> = names
        .iter()
        .map(|n| sim.member(n).consumer.requests())
        .collect();
    sim.run_for(tick * TICKS).await;
    let mut leader_rate = 0.0;
    let mut others = Vec::new();
    for (name, before) in names.iter().zip(&before) {
        let made = sim.member(name).consumer.requests().since(before).total();
        let rate = made as f64 / f64::from(TICKS);
        if name == leader {
            leader_rate = rate;
        } else {
            others.push(rate);
        }
    }
    (leader_rate, others)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The small size of the benchmark, as a test of its properties (not its timings):
    /// every change balanced within the target ticks, moves within the minimum plus one
    /// per stream, and a non-leader's requests per tick bounded.
    #[tokio::test(start_paused = true)]
    async fn a_small_group_balances_within_three_ticks_with_the_fewest_moves() {
        let report = run(&Scale {
            members: 10,
            shards: 100,
            seed: 7,
        })
        .await;
        for c in &report.changes {
            assert!(c.ticks <= 3.0, "{c:?}");
            assert!(c.moves <= c.min_moves + 1, "{c:?}");
        }
        assert!(report.other_requests_per_tick_max <= 3.0, "{report:?}");
    }

    /// Brute force over every way to keep shards: the greedy count is the minimum.
    fn brute_min(held: &[usize], shards: usize) -> usize {
        let n = held.len();
        let (share, larger) = (shards / n, shards % n);
        // Which members get the larger share: every subset of size `larger`.
        (0u32..1 << n)
            .filter(|mask| mask.count_ones() as usize == larger)
            .map(|mask| {
                let kept: usize = (0..n)
                    .map(|i| held[i].min(share + usize::from(mask & (1 << i) != 0)))
                    .sum();
                shards - kept
            })
            .min()
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn min_moves_is_the_minimum(held in prop::collection::vec(0usize..12, 1..8), extra in 0usize..12) {
            let shards = held.iter().sum::<usize>() + extra;
            prop_assert_eq!(min_moves(&held, shards), brute_min(&held, shards));
        }
    }
}
