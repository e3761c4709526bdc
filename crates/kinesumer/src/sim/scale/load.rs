//! Balancing by load at scale: the leader's decisions tick by tick on skewed loads, side
//! by side for three deciders — count ([`assign::assign`]), load ([`assign_by_load`])
//! and a re-implementation of the KCL 3 rule ([`Decider::Kcl3`]).
//!
//! This simulation is of the plans, not of the protocol (that is [`super::run`]): each
//! tick the leader sees every held shard's load smoothed over `WINDOW` ticks (as
//! members report it), plans, and the plan is held at once; a moved shard keeps its last
//! seen load until its new holder has measured it. Members alternate capacity 1 and 2;
//! shard loads follow Zipf's law (s = 1) over a random order of the shards. Four changes
//! are measured, each over [`PHASE`] ticks:
//!
//! 1. **start**: every shard unheld, nothing measured yet;
//! 2. **hot shard**: a shard of median load becomes three times a capacity-1 member's
//!    share;
//! 3. **cooled**: it goes back to its load;
//! 4. **join 10 %**: a tenth more members (capacities 1 and 2 alternating).
//!
//! For each: the ticks from the change to the last move (`None` when moves go on to the
//! end: no fixed point), the moves (lease takes, placements included), the fewest moves
//! that reach the tolerance band and leave a hot shard alone from where the group stood
//! ([`load::fewest_moves`], a lower bound), and the worst member's load over its share
//! at the end.
//!
//! # The KCL 3 rule
//!
//! Re-implemented from the description and structure of
//! `VarianceBasedLeaseAssignmentDecider` in awslabs/amazon-kinesis-client
//! (`amazon-kinesis-client/src/main/java/software/amazon/kinesis/coordinator/assignment/`,
//! KCL 3.x, read at commit 025813c3be9152cf0da3469d5ef095421569219a), with its defaults
//! from `LeaseManagementConfig.WorkerUtilizationAwareAssignmentConfig`: re-balance 10 %,
//! dampening 60 %, throughput overshoot allowed, variance balancing every 3rd run. A
//! worker's metric is its utilization — here its load over its capacity, which is what a
//! CPU metric measures on machines of different sizes. Unassigned shards go one by one
//! to the worker of lowest utilization. Every 3rd tick, when a worker is outside ±10 % of
//! the fleet's mean utilization, each worker at or above the upper limit (or else the
//! most utilized) gives up to `load × (u − mean) / u × 60 %`: its shards in a random
//! order, skipping any that would overshoot that amount (or, when none fits, its lightest
//! one), each to the worker of lowest utilization, until a taker would go above the mean.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::group::assign::load::{self, assign_by_load, Balance, LoadInput, LoadMember, LoadShard};
use crate::group::assign::{self, AssignInput, Assignment};
use crate::load::Limits;

const STREAM: &str = "scale";

/// The smoothing window of measured loads, and how long a moved shard cools, in ticks.
pub const WINDOW: usize = 10;

/// The ticks each change is watched for.
pub const PHASE: usize = 150;

/// Who plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// Balancing by count ([`assign::assign`]).
    Count,
    /// Balancing by load ([`assign_by_load`], the default knobs and 32 moves per tick).
    Load,
    /// The KCL 3 variance rule, re-implemented (module documentation).
    Kcl3,
}

impl Decider {
    /// Its name in the benchmark's table.
    pub fn name(self) -> &'static str {
        match self {
            Decider::Count => "count",
            Decider::Load => "load",
            Decider::Kcl3 => "KCL 3 rule",
        }
    }
}

/// The size of one simulated group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadScale {
    /// Members at the start.
    pub members: usize,
    /// Shards of the one stream.
    pub shards: usize,
    /// The seed of the shard order and of the KCL rule's shuffles.
    pub seed: u64,
}

/// What one change cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// "start", "hot shard", "cooled" or "join 10 %".
    pub what: &'static str,
    /// Ticks from the change to its last move; `None` when it still moved in the last
    /// `WINDOW` ticks of the phase.
    pub ticks: Option<usize>,
    /// Lease takes in the phase.
    pub moves: usize,
    /// A lower bound on the takes that bring every member that can be within the band
    /// there and leave a shard heavier than its holder's band alone, from where the group
    /// stood ([`load::fewest_moves`], plus the shards nobody
    /// held).
    pub min_moves: usize,
    /// The highest member load over its share (by capacity) at the end of the phase.
    pub worst_over_mean: f64,
    /// The same among members holding more than one shard: the imbalance a plan could
    /// still change (a member holding one shard heavier than its share is as good as it
    /// gets); `None` when no member holds more than one.
    pub worst_divisible: Option<f64>,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRunReport {
    /// The size.
    pub scale: LoadScale,
    /// Who planned.
    pub decider: Decider,
    /// Each change, in order.
    pub phases: Vec<Phase>,
}

/// The group being simulated.
struct Group {
    capacities: BTreeMap<String, f64>,
    /// The true load of each shard.
    truth: Vec<f64>,
    /// The load the leader has seen of each shard.
    seen: Vec<f64>,
    holders: Vec<Option<String>>,
    /// The tick until which each shard cools.
    cool_until: Vec<usize>,
    tick: usize,
    runs: usize,
    rng: StdRng,
}

fn shard_id(i: usize) -> String {
    format!("shardId-{i:012}")
}

impl Group {
    fn add_members(&mut self, n: usize) {
        let first = self.capacities.len();
        for i in first..first + n {
            let capacity = if i % 2 == 0 { 1.0 } else { 2.0 };
            self.capacities.insert(format!("m{i:05}"), capacity);
        }
    }

    fn input(&self, loads: &[f64]) -> LoadInput {
        let streams = BTreeSet::from([STREAM.to_owned()]);
        let members = self
            .capacities
            .iter()
            .map(|(id, &capacity)| {
                let streams = streams.clone();
                let limits = Limits::default();
                (
                    id.clone(),
                    LoadMember {
                        streams,
                        capacity,
                        limits,
                    },
                )
            })
            .collect();
        let shards = (0..loads.len())
            .map(|i| {
                let shard = LoadShard {
                    holder: self.holders[i].clone(),
                    load: loads[i],
                    cooling: self.tick < self.cool_until[i],
                };
                (shard_id(i), shard)
            })
            .collect();
        LoadInput {
            members,
            shards: BTreeMap::from([(STREAM.to_owned(), shards)]),
        }
    }

    /// One tick: measure, plan, hold the plan; returns the takes.
    fn tick(&mut self, decider: Decider) -> usize {
        let alpha = 1.0 - (-1.0 / WINDOW as f64).exp();
        for i in 0..self.truth.len() {
            if self.holders[i].is_some() {
                self.seen[i] += alpha * (self.truth[i] - self.seen[i]);
            }
        }
        let plan: Vec<Option<String>> = match decider {
            Decider::Count => {
                let streams = BTreeSet::from([STREAM.to_owned()]);
                let count = AssignInput {
                    members: self
                        .capacities
                        .keys()
                        .map(|id| (id.clone(), streams.clone()))
                        .collect(),
                    shards: BTreeMap::from([(
                        STREAM.to_owned(),
                        (0..self.truth.len())
                            .map(|i| (shard_id(i), self.holders[i].clone()))
                            .collect(),
                    )]),
                };
                holders_of(&assign::assign(&count), self.truth.len())
            }
            Decider::Load => {
                let balance = Balance {
                    max_moves: 32,
                    ..Balance::default()
                };
                let planned = assign_by_load(&self.input(&self.seen), &balance);
                holders_of(&planned.assignment, self.truth.len())
            }
            Decider::Kcl3 => self.kcl3(),
        };
        let mut takes = 0;
        for (i, holder) in plan.into_iter().enumerate() {
            if holder != self.holders[i] {
                takes += 1;
                self.cool_until[i] = self.tick + WINDOW;
                self.holders[i] = holder;
            }
        }
        self.tick += 1;
        takes
    }

    /// The KCL 3 rule (module documentation).
    fn kcl3(&mut self) -> Vec<Option<String>> {
        const THRESHOLD: f64 = 0.10;
        const DAMPENING: f64 = 0.60;
        const EVERY: usize = 3;
        let ids: Vec<String> = self.capacities.keys().cloned().collect();
        let capacity: Vec<f64> = self.capacities.values().copied().collect();
        let index: BTreeMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut holders: Vec<Option<usize>> = self
            .holders
            .iter()
            .map(|h| h.as_deref().and_then(|h| index.get(h).copied()))
            .collect();
        // A shard not measured yet counts as the mean measured one (KCL extrapolates a
        // lease without throughput data from the fleet's averages).
        let measured: Vec<f64> = self.seen.iter().copied().filter(|&l| l > 0.0).collect();
        let fallback = match measured.len() {
            0 => 1.0,
            n => measured.iter().sum::<f64>() / n as f64,
        };
        let seen: Vec<f64> = self
            .seen
            .iter()
            .map(|&l| if l > 0.0 { l } else { fallback })
            .collect();
        let mut load = vec![0.0; ids.len()];
        for (s, h) in holders.iter().enumerate() {
            if let Some(w) = h {
                load[*w] += seen[s];
            }
        }
        let utilization = |load: &[f64], w: usize| load[w] / capacity[w];
        let least_utilized = |load: &[f64]| {
            (0..ids.len()).min_by(|&a, &b| {
                utilization(load, a)
                    .total_cmp(&utilization(load, b))
                    .then(a.cmp(&b))
            })
        };
        // Unassigned shards, one by one, to the least utilized worker.
        for s in 0..holders.len() {
            if holders[s].is_none() {
                if let Some(w) = least_utilized(&load) {
                    holders[s] = Some(w);
                    load[w] += seen[s];
                }
            }
        }
        let run = self.runs;
        self.runs += 1;
        if run.is_multiple_of(EVERY) {
            let mean =
                (0..ids.len()).map(|w| utilization(&load, w)).sum::<f64>() / ids.len() as f64;
            let (upper, lower) = (mean * (1.0 + THRESHOLD), mean * (1.0 - THRESHOLD));
            let outside = (0..ids.len()).any(|w| {
                let u = utilization(&load, w);
                u > upper || u < lower
            });
            if outside && mean > 0.0 {
                let mut givers: Vec<usize> = (0..ids.len())
                    .filter(|&w| utilization(&load, w) >= upper)
                    .collect();
                if givers.is_empty() {
                    givers.extend(
                        (0..ids.len()).max_by(|&a, &b| {
                            utilization(&load, a).total_cmp(&utilization(&load, b))
                        }),
                    );
                }
                let mut amounts: Vec<(usize, f64)> = givers
                    .into_iter()
                    .map(|w| {
                        let u = utilization(&load, w);
                        (w, load[w] * (u - mean) / u * DAMPENING)
                    })
                    .collect();
                amounts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for (giver, amount) in amounts {
                    let mut held: Vec<usize> = (0..holders.len())
                        .filter(|&s| holders[s] == Some(giver))
                        .collect();
                    held.shuffle(&mut self.rng);
                    let mut left = amount;
                    let mut taken = Vec::new();
                    for &s in &held {
                        if left - seen[s] > 0.0 {
                            left -= seen[s];
                            taken.push(s);
                        }
                    }
                    if taken.is_empty() {
                        taken.extend(
                            held.iter()
                                .copied()
                                .min_by(|&a, &b| seen[a].total_cmp(&seen[b])),
                        );
                    }
                    for s in taken {
                        let Some(taker) = least_utilized(&load) else {
                            break;
                        };
                        if (load[taker] + seen[s]) / capacity[taker] > mean {
                            break;
                        }
                        load[giver] -= seen[s];
                        load[taker] += seen[s];
                        holders[s] = Some(taker);
                    }
                }
            }
        }
        holders
            .into_iter()
            .map(|h| h.map(|w| ids[w].clone()))
            .collect()
    }

    fn assignment(&self) -> Assignment {
        let mut plan: Assignment = self
            .capacities
            .keys()
            .map(|id| (id.clone(), BTreeMap::new()))
            .collect();
        for (i, holder) in self.holders.iter().enumerate() {
            if let Some(h) = holder {
                let streams = plan.entry(h.clone()).or_default();
                streams
                    .entry(STREAM.to_owned())
                    .or_default()
                    .insert(shard_id(i));
            }
        }
        plan
    }

    /// Watches one change for [`PHASE`] ticks.
    fn phase(&mut self, what: &'static str, decider: Decider) -> Phase {
        let truth = self.input(&self.truth);
        let unheld = self.holders.iter().filter(|h| h.is_none()).count();
        let min_moves = unheld + load::fewest_moves(&truth, &self.assignment(), 0.1);
        let (mut moves, mut last) = (0, None);
        for t in 0..PHASE {
            let takes = self.tick(decider);
            if takes > 0 {
                moves += takes;
                last = Some(t + 1);
            }
        }
        let ticks = match last {
            None => Some(0),
            Some(t) if t <= PHASE - WINDOW => Some(t),
            Some(_) => None,
        };
        let assignment = self.assignment();
        let ratios = load::ratios(&self.input(&self.truth), &assignment);
        let worst = ratios.values().copied().fold(0.0, f64::max);
        let divisible = ratios
            .iter()
            .filter(|(m, _)| assignment[*m].values().map(BTreeSet::len).sum::<usize>() > 1)
            .map(|(_, &r)| r)
            .reduce(f64::max);
        Phase {
            what,
            ticks,
            moves,
            min_moves,
            worst_over_mean: worst,
            worst_divisible: divisible,
        }
    }
}

/// Which member holds each of `shards` shards in `assignment`.
fn holders_of(assignment: &Assignment, shards: usize) -> Vec<Option<String>> {
    let mut holders = vec![None; shards];
    for (member, streams) in assignment {
        for shard in streams.values().flatten() {
            if let Some(i) = shard
                .strip_prefix("shardId-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                holders[i] = Some(member.clone());
            }
        }
    }
    holders
}

/// Runs the four changes at `scale` with `decider`.
pub fn run(scale: &LoadScale, decider: Decider) -> LoadRunReport {
    let mut rng = StdRng::seed_from_u64(scale.seed);
    let mut order: Vec<usize> = (0..scale.shards).collect();
    order.shuffle(&mut rng);
    // Zipf (s = 1) over a random order; the total is half the members' capacity.
    let mut truth: Vec<f64> = order.iter().map(|&rank| 1.0 / (rank + 1) as f64).collect();
    let mut group = Group {
        capacities: BTreeMap::new(),
        truth: Vec::new(),
        seen: vec![0.0; scale.shards],
        holders: vec![None; scale.shards],
        cool_until: vec![0; scale.shards],
        tick: 0,
        runs: 0,
        rng,
    };
    group.add_members(scale.members);
    let capacity: f64 = group.capacities.values().sum();
    let total: f64 = truth.iter().sum();
    truth.iter_mut().for_each(|l| *l *= 0.5 * capacity / total);
    group.truth = truth;

    let mut phases = vec![group.phase("start", decider)];
    // The shard of median load turns hot: three times a capacity-1 member's share.
    let median = order
        .iter()
        .position(|&rank| rank == scale.shards / 2)
        .unwrap_or(0);
    let before = group.truth[median];
    group.truth[median] = 3.0 * 0.5;
    phases.push(group.phase("hot shard", decider));
    group.truth[median] = before;
    phases.push(group.phase("cooled", decider));
    group.add_members((scale.members / 10).max(1));
    phases.push(group.phase("join 10 %", decider));
    LoadRunReport {
        scale: *scale,
        decider,
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small size of the benchmark, as a test of its properties: balancing by load
    /// settles every change, leaves every member that holds more than one shard near its
    /// band, and never worse than balancing by count; the KCL rule is measured only.
    #[test]
    fn load_settles_every_change_near_the_band_at_a_small_size() {
        let scale = LoadScale {
            members: 10,
            shards: 100,
            seed: 3,
        };
        let load = run(&scale, Decider::Load);
        let count = run(&scale, Decider::Count);
        for (l, c) in load.phases.iter().zip(&count.phases) {
            assert!(l.ticks.is_some(), "{l:?} settles");
            assert!(l.worst_divisible.is_some_and(|w| w < 1.25), "{l:?}");
            assert!(l.worst_divisible <= c.worst_divisible, "{l:?}\n{c:?}");
        }
        let kcl = run(&scale, Decider::Kcl3);
        assert_eq!(kcl.phases.len(), 4);
    }
}
