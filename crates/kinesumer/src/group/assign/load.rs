//! Balancing by load (`balance = load`, issue 21): each member's share of the group's
//! measured load in proportion to its capacity, within a tolerance, then shard counts;
//! sticky, a bounded number of moves per tick, and no move back and forth.
//!
//! # Units
//!
//! A shard's load is one number, its smoothed throughput in *shard units*: the larger of
//! its bytes per second over 1 MiB/s and its records per second over 1,000 — the write
//! limit of one Kinesis shard, so a shard written at its limit weighs 1
//! ([`ShardLoad::units`](crate::store::ShardLoad::units)). A member's *target* is its
//! capacity's share of the total load of the shards it could hold:
//! `target = capacity × load / Σ capacity`; its *ratio* is its load over its target.
//!
//! # Rules
//!
//! A member's *band* is its target ± `tolerance` (10 %); its *excess* is how far its load
//! lies outside the band, and the group's excess is the sum over members.
//!
//! Unheld shards (new, or whose holder is gone) are placed first, heaviest first, each on
//! a consumer it fits in the band of, else alone on an empty one, else anywhere — and
//! among those on the one whose ratio after taking it is lowest (then the fewest shards
//! per capacity, then client id): a group that starts from nothing starts balanced, and these
//! placements are not limited per tick. Held shards then move, at most `max_moves` per
//! plan, by three rules in order:
//!
//! 1. **Load**: while some member is outside its band, the most over member gives the
//!    shard that removes the most excess to one of the members of lowest ratio — or, when no single
//!    shard does, exchanges one for a lighter one of a member among the lowest ratios —
//!    and then the most under member takes the shard that removes the most excess from one
//!    of the members of highest ratio. A move
//!    must remove excess, lower the pair's higher ratio (the worse of the two gets better)
//!    and narrow their gap. The moves of this rule are one batch: it is dropped when it
//!    found nothing more to do yet removed no more than `min_gain` (5 %) of a capacity
//!    unit's share of excess — a small, noisy imbalance moves nothing.
//!
//!    **Two steps** (then, within the moves left): a member still over its band gives its
//!    heaviest shard to a larger member (of a higher target) that would carry it at a
//!    lower ratio, and that member sheds shards to the lowest ratios, as rule 1 would,
//!    while it is over its band — in the same plan, as one step: kept only when every
//!    member it touched ends below the giver's ratio by more than `min_gain` and it
//!    lowers Φ. A hot shard on a capacity-1 member thus moves to a capacity-2 member
//!    that first has to make room for it, which no single move can do.
//! 2. **Alone**: a member holding a shard that by itself exceeds its band (a shard
//!    heavier than the tolerance) gives away its other shards, each to a member that stays
//!    at or below the giver's new ratio.
//! 3. **Count**: a shard moves from the member with the most shards per capacity to one
//!    with fewer, when that makes counts more even and load no less even.
//!
//! A shard moved recently (*cooling*, decided by the caller) is not moved again.
//!
//! A plan is where the rules end, not the way there: a shard they moved may move again
//! in the same plan (the potential below still falls with every move), and the moves
//! listed are the handoffs from the input's holders to that end — a shard the rules take
//! away and bring back is not moved, one they move twice is handed off once. `max_moves`
//! counts the shards handed off.
//!
//! # Why it is calm
//!
//! Every move strictly lowers `(Φ, Ψ)` in lexicographic order, where
//! `Φ = Σ load² / target` and `Ψ = Σ count² / capacity`: for a move of load `l` from `d`
//! to `r`, `ΔΦ = −l × (gap before + gap after)` with the ratio gaps `d − r` signed, so a
//! move that narrows the gap lowers Φ (rule 1 requires it); a two-step plan only when its
//! moves together lower Φ (one of them alone may raise it); an alone move is taken only
//! when it lowers Φ, or Ψ at equal Φ; a count move only when it lowers Ψ and does not
//! raise Φ. A strictly decreasing potential over finitely many plans cannot cycle: on a
//! constant load the plans converge, and the plan reached is a fixed point — no shard
//! goes back and forth. Within the bands nothing moves for load (there is no excess to
//! remove). Under a changing load, cooling keeps a moved shard in place until its new
//! holder has measured it.
//!
//! What the tolerance can promise is bounded by one shard's weight: placing shards is bin
//! packing, so a member may stay over its band by up to one of its shards (the property
//! tests state the bounds), and a shard heavier than the band is left alone — on a larger
//! member where the two steps fit in a plan's moves.

use std::collections::{BTreeMap, BTreeSet};

use super::Assignment;
use crate::load::Limits;

/// A member, for the load balancing.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadMember {
    /// The streams it consumes.
    pub streams: BTreeSet<String>,
    /// Its capacity (weight), > 0: its share of the load is proportional to it.
    pub capacity: f64,
    /// The most shards and load it takes: hard limits.
    pub limits: Limits,
}

/// A shard, for the load balancing.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadShard {
    /// The client id of its live holder, if any (a holder that is not a member, or does
    /// not consume the stream, counts as none).
    pub holder: Option<String>,
    /// Its load, in shard units (module documentation), ≥ 0.
    pub load: f64,
    /// Moved recently: it stays where it is (it may still be placed if unheld).
    pub cooling: bool,
}

/// Input of [`assign_by_load`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadInput {
    /// Client id → the member.
    pub members: BTreeMap<String, LoadMember>,
    /// Stream → shard id → shard.
    pub shards: BTreeMap<String, BTreeMap<String, LoadShard>>,
}

/// The knobs of the load balancing ([`crate::Config`]'s `load_tolerance`,
/// `load_min_gain`, `load_max_moves`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// The band around each member's target within which nothing moves for load, as a
    /// fraction of the target (0.1: ±10 %).
    pub tolerance: f64,
    /// The least improvement of a pair's ratio that justifies a load move, as a fraction
    /// of the target.
    pub min_gain: f64,
    /// The most moves of held shards per plan (placements of unheld shards not counted).
    pub max_moves: usize,
}

impl Default for Balance {
    fn default() -> Self {
        Self {
            tolerance: 0.1,
            min_gain: 0.05,
            max_moves: 32,
        }
    }
}

/// Why a held shard was moved by [`assign_by_load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveKind {
    /// Its holder was outside its load band (rule 1).
    Load,
    /// Its holder also holds a shard heavier than its band, which is left alone (rule 2).
    Alone,
    /// The counts were uneven (rule 3).
    Count,
    /// Its holder was over one of its limits.
    Limit,
}

/// The result of [`assign_by_load`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Every member of the input, with the shards it should hold; a shard no consumer of
    /// its stream has room for within its limits is in no one's.
    pub assignment: Assignment,
    /// The held shards moved, (stream, shard id) → why; placements of unheld shards are
    /// not listed. At most `max_moves` besides those of [`MoveKind::Limit`].
    pub moved: BTreeMap<(String, String), MoveKind>,
}

/// Plans which member holds which shard by load (module documentation).
///
/// # Examples
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use kinesumer::group::assign::load::{assign_by_load, Balance, LoadInput, LoadMember, LoadShard};
///
/// let streams = BTreeSet::from(["s".to_string()]);
/// let member = |capacity| LoadMember { streams: streams.clone(), capacity, limits: Default::default() };
/// let shard = |holder: &str, load| LoadShard { holder: Some(holder.to_string()), load, cooling: false };
/// let input = LoadInput {
///     members: BTreeMap::from([("a".to_string(), member(1.0)), ("b".to_string(), member(1.0))]),
///     // "a" holds a hot shard and two others; "b" one.
///     shards: BTreeMap::from([("s".to_string(), BTreeMap::from([
///         ("hot".to_string(), shard("a", 1.0)),
///         ("s1".to_string(), shard("a", 0.1)),
///         ("s2".to_string(), shard("a", 0.1)),
///         ("s3".to_string(), shard("b", 0.1)),
///     ]))]),
/// };
/// let plan = assign_by_load(&input, &Balance::default());
/// // The hot shard is heavier than a's band: it is left alone there.
/// assert_eq!(plan.assignment["a"]["s"], BTreeSet::from(["hot".to_string()]));
/// assert_eq!(plan.moved.len(), 2);
/// ```
pub fn assign_by_load(input: &LoadInput, balance: &Balance) -> LoadPlan {
    let mut state = State::new(input, balance);
    let start: Vec<Option<usize>> = state.shards.iter().map(|s| s.holder).collect();
    let shed = state.shed();
    state.place_unheld();
    let mut limited = BTreeMap::new();
    for (s, from) in shed {
        let shard = &state.shards[s];
        if shard.holder.is_some_and(|to| to != from) {
            let key = (state.streams[shard.stream].to_owned(), shard.id.to_owned());
            limited.insert(key, MoveKind::Limit);
        }
    }
    let mut moved = BTreeMap::new();
    if state.mean > 0.0 {
        // Rule 1, as one batch: kept only if it removes more than the least gain of the
        // excess beyond the bands, or stopped at the move budget with more to do.
        let before = state.clone();
        let excess = state.excess();
        let mut batch = BTreeMap::new();
        let exhausted = state.run(&mut batch, balance.max_moves, State::load_move);
        if exhausted && excess - state.excess() <= balance.min_gain * state.mean {
            state = before;
            batch.clear();
        }
        moved.append(&mut batch);
        while let Some((next, shards)) = state.hot_move(balance.max_moves - moved.len()) {
            state = next;
            for s in shards {
                let shard = &state.shards[s];
                let key = (state.streams[shard.stream].to_owned(), shard.id.to_owned());
                moved.insert(key, MoveKind::Load);
            }
        }
        state.run(&mut moved, balance.max_moves, |s, _| s.alone_move());
    }
    state.run(&mut moved, balance.max_moves, |s, _| s.count_move());
    moved.append(&mut limited);
    moved.retain(|(stream, id), _| {
        let s = state
            .index(stream, id)
            .expect("a moved shard is one of the input");
        state.shards[s].holder != start[s]
    });
    LoadPlan {
        assignment: state.assignment(),
        moved,
    }
}

/// Each member's load over its target under `assignment` (members with no target — no
/// consumed load — are left out): the measure of the balance.
pub fn ratios(input: &LoadInput, assignment: &Assignment) -> BTreeMap<String, f64> {
    let mut load: BTreeMap<&str, f64> = BTreeMap::new();
    for (member, streams) in assignment {
        let sum = streams
            .iter()
            .flat_map(|(stream, shards)| shards.iter().map(move |s| (stream, s)))
            .filter_map(|(stream, shard)| input.shards.get(stream)?.get(shard))
            .map(|s| s.load)
            .sum();
        load.insert(member, sum);
    }
    let state = State::new(input, &Balance::default());
    state
        .ids
        .iter()
        .zip(&state.target)
        .filter(|(_, &t)| t > 0.0)
        .map(|(id, t)| (id.to_string(), load.get(id).copied().unwrap_or(0.0) / t))
        .collect()
}

/// The fewest moves of held shards any plan needs to bring every member of `assignment`
/// that can be within its band there, and to leave a shard heavier than its holder's
/// band alone, by a lower bound: a member above its band must give away at least as many
/// shards as its heaviest ones it takes to get under, and one below it must take at
/// least as many as the heaviest shards that fit its band it takes to get over (each
/// move serves one giver and one taker; one that all of them leave short is left out);
/// a member holding a shard heavier than its band
/// cannot get there, but must give away its other shards, or that shard to a member that
/// gives away all of its own.
pub fn fewest_moves(input: &LoadInput, assignment: &Assignment, tolerance: f64) -> usize {
    let state = State::new(input, &Balance::default());
    let mut held: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (member, streams) in assignment {
        let loads = held.entry(member).or_default();
        for (stream, shards) in streams {
            for shard in shards {
                if let Some(s) = input.shards.get(stream).and_then(|s| s.get(shard)) {
                    loads.push(s.load);
                }
            }
        }
    }
    let mut all: Vec<f64> = held.values().flatten().copied().collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let (mut give, mut take, mut alone) = (0, 0, 0);
    let fewest_held = |except: &str| {
        let others = held.iter().filter(|(id, _)| **id != except);
        others.map(|(_, loads)| loads.len()).min()
    };
    for (id, &target) in state.ids.iter().zip(&state.target) {
        if target <= 0.0 {
            continue;
        }
        let (upper, lower) = (target * (1.0 + tolerance), target * (1.0 - tolerance));
        let mut loads = held.get(id).cloned().unwrap_or_default();
        loads.sort_by(|a, b| b.total_cmp(a));
        let load: f64 = loads.iter().sum();
        if loads.first().is_some_and(|&heaviest| heaviest > upper) {
            // Over because of one shard: no move brings it within its band.
            let emptied = fewest_held(id).map_or(usize::MAX, |n| n + 1);
            alone = alone.max((loads.len() - 1).min(emptied));
        } else if load > upper {
            let mut left = load;
            for l in &loads {
                if left <= upper {
                    break;
                }
                left -= l;
                give += 1;
            }
        } else if load < lower {
            let (mut got, mut needs) = (load, 0);
            for l in all.iter().filter(|&&l| l <= upper) {
                if got >= lower {
                    break;
                }
                got += l;
                needs += 1;
            }
            // Short of its band with every shard that fits it: it cannot get there.
            if got >= lower {
                take += needs;
            }
        }
    }
    give.max(take).max(alone)
}

/// How many of the lowest-ratio members an over member tries to exchange a shard with.
const SWAP_PARTNERS: usize = 4;

/// The most pairs of shards an exchange between two members tries.
const SWAP_PAIRS: usize = 10_000;

/// How many of the lowest-ratio members an over member tries to give a shard to, and of
/// the highest-ratio members an under member tries to take one from: the extremes are
/// where a move helps most, and the search stays linear in the members at a thousand.
const PARTNERS: usize = 16;

/// One shard of the input.
#[derive(Debug, Clone)]
struct Shard<'a> {
    stream: usize,
    id: &'a str,
    load: f64,
    cooling: bool,
    holder: Option<usize>,
}

/// A move considered: shard `shard` from its holder to `to`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    shard: usize,
    to: usize,
    /// A swap: this shard of `to` goes the other way.
    back: Option<usize>,
    kind: MoveKind,
    /// Higher is better.
    score: f64,
    /// The load handed off (both ways for a swap): the lighter of equals wins.
    moved_load: f64,
}

impl Candidate {
    fn one(shard: usize, to: usize, kind: MoveKind, score: f64, moved_load: f64) -> Self {
        Self {
            shard,
            to,
            back: None,
            kind,
            score,
            moved_load,
        }
    }
}

/// Relief below this fraction of the mean load is rounding, not relief.
const EPSILON: f64 = 1e-9;

/// The assignment being built, with every member's load and count kept up to date.
#[derive(Debug, Clone)]
struct State<'a> {
    balance: Balance,
    ids: Vec<&'a str>,
    capacity: Vec<f64>,
    /// Each member's most shards and most load (`usize::MAX`, infinite: none).
    max_count: Vec<usize>,
    max_load: Vec<f64>,
    /// Each member's share of the total load, at most its most load; 0 when there is no
    /// load.
    target: Vec<f64>,
    /// The total load over the total capacity: the target of capacity 1.
    mean: f64,
    streams: Vec<&'a str>,
    /// Per stream, the members consuming it (ascending).
    consumers: Vec<Vec<usize>>,
    shards: Vec<Shard<'a>>,
    load: Vec<f64>,
    /// Per member, the shards it holds.
    held: Vec<BTreeSet<usize>>,
}

impl<'a> State<'a> {
    fn new(input: &'a LoadInput, balance: &Balance) -> Self {
        let ids: Vec<&str> = input.members.keys().map(String::as_str).collect();
        let capacity: Vec<f64> = input
            .members
            .values()
            .map(|m| m.capacity.max(f64::MIN_POSITIVE))
            .collect();
        let mut streams = Vec::new();
        let mut consumers = Vec::new();
        let mut shards = Vec::new();
        for (stream, listed) in &input.shards {
            let consuming: Vec<usize> = input
                .members
                .values()
                .enumerate()
                .filter(|(_, m)| m.streams.contains(stream))
                .map(|(i, _)| i)
                .collect();
            if consuming.is_empty() {
                continue;
            }
            let index = streams.len();
            for (id, shard) in listed {
                let holder = shard
                    .holder
                    .as_deref()
                    .and_then(|h| ids.binary_search(&h).ok())
                    .filter(|m| consuming.binary_search(m).is_ok());
                shards.push(Shard {
                    stream: index,
                    id: id.as_str(),
                    load: shard.load.max(0.0),
                    cooling: shard.cooling,
                    holder,
                });
            }
            streams.push(stream.as_str());
            consumers.push(consuming);
        }
        // Only members that consume a stream with shards share in the load.
        let mut eligible = vec![false; ids.len()];
        for (stream, consuming) in consumers.iter().enumerate() {
            if shards.iter().any(|s| s.stream == stream) {
                consuming.iter().for_each(|&m| eligible[m] = true);
            }
        }
        let total: f64 = shards.iter().map(|s| s.load).sum();
        let weight: f64 = (0..ids.len())
            .filter(|&m| eligible[m])
            .map(|m| capacity[m])
            .sum();
        let mean = if total > 0.0 { total / weight } else { 0.0 };
        let limits = input.members.values().map(|m| m.limits);
        let max_count = limits
            .clone()
            .map(|l| l.max_shards.unwrap_or(usize::MAX))
            .collect();
        let max_load: Vec<f64> = limits.map(|l| l.max_units()).collect();
        let target = shares(total, &capacity, &max_load, &eligible);
        let mut state = Self {
            balance: *balance,
            max_count,
            max_load,
            load: vec![0.0; ids.len()],
            held: vec![BTreeSet::new(); ids.len()],
            ids,
            capacity,
            target,
            mean,
            streams,
            consumers,
            shards,
        };
        for s in 0..state.shards.len() {
            if let Some(m) = state.shards[s].holder {
                state.load[m] += state.shards[s].load;
                state.held[m].insert(s);
            }
        }
        state
    }

    /// The index of shard `id` of `stream` (the shards are in stream, then id order).
    fn index(&self, stream: &str, id: &str) -> Option<usize> {
        self.shards
            .binary_search_by(|s| (self.streams[s.stream], s.id).cmp(&(stream, id)))
            .ok()
    }

    fn ratio(&self, m: usize) -> f64 {
        if self.target[m] > 0.0 {
            self.load[m] / self.target[m]
        } else {
            0.0
        }
    }

    /// Whether member `m` has room for one more shard of load `l` within its limits.
    fn fits(&self, m: usize, l: f64) -> bool {
        self.held[m].len() < self.max_count[m] && within(self.load[m] + l, self.max_load[m])
    }

    /// Takes shards off every member over a limit, cooling or not (a limit is hard):
    /// over its most shards, its lightest; over its most load, the lightest shard that
    /// alone brings it within, else its heaviest, until it is within. They are unheld
    /// now, to be placed where they fit; returns each with the member it came from.
    fn shed(&mut self) -> Vec<(usize, usize)> {
        let mut shed = Vec::new();
        for m in 0..self.ids.len() {
            loop {
                let by_load = |a: &usize, b: &usize| {
                    let (la, lb) = (self.shards[*a].load, self.shards[*b].load);
                    la.total_cmp(&lb).then(a.cmp(b))
                };
                let held = self.held[m].iter().copied();
                let s = if self.held[m].len() > self.max_count[m] {
                    held.min_by(by_load)
                } else if !within(self.load[m], self.max_load[m]) {
                    let over = self.load[m] - self.max_load[m];
                    let enough = held.clone().filter(|&s| self.shards[s].load >= over);
                    enough.min_by(by_load).or_else(|| held.max_by(by_load))
                } else {
                    None
                };
                let Some(s) = s else { break };
                self.load[m] -= self.shards[s].load;
                self.held[m].remove(&s);
                self.shards[s].holder = None;
                shed.push((s, m));
            }
        }
        shed
    }

    fn per_capacity(&self, m: usize, count: usize) -> f64 {
        count as f64 / self.capacity[m]
    }

    /// Whether shard `s` alone exceeds member `m`'s band.
    fn too_heavy_for(&self, s: usize, m: usize) -> bool {
        self.target[m] > 0.0
            && self.shards[s].load > self.target[m] * (1.0 + self.balance.tolerance)
    }

    /// Per member, whether it holds a shard that alone exceeds its band (it should hold
    /// nothing else). One pass over the shards: called once per move searched.
    fn alone_heavy(&self) -> Vec<bool> {
        let mut heavy = vec![false; self.ids.len()];
        for (s, shard) in self.shards.iter().enumerate() {
            if let Some(m) = shard.holder {
                heavy[m] |= self.too_heavy_for(s, m);
            }
        }
        heavy
    }

    /// Places every unheld shard, heaviest first (ties by stream and shard id).
    fn place_unheld(&mut self) {
        let mut unheld: Vec<usize> = (0..self.shards.len())
            .filter(|&s| self.shards[s].holder.is_none())
            .collect();
        unheld.sort_by(|&a, &b| self.shards[b].load.total_cmp(&self.shards[a].load));
        let mut heavy = self.alone_heavy();
        for s in unheld {
            let load = self.shards[s].load;
            let key = |m: usize| {
                let ratio = if self.target[m] > 0.0 {
                    (self.load[m] + load) / self.target[m]
                } else {
                    0.0
                };
                let count = self.per_capacity(m, self.held[m].len() + 1);
                // Within the band first; else alone on an empty member; else anywhere.
                let upper = self.target[m] * (1.0 + self.balance.tolerance);
                let fit = if self.load[m] + load <= upper {
                    0
                } else if self.held[m].is_empty() {
                    1
                } else {
                    2
                };
                (heavy[m], fit, ratio, count)
            };
            let best = self.consumers[self.shards[s].stream]
                .iter()
                .copied()
                .filter(|&m| self.fits(m, load))
                .min_by(|&a, &b| {
                    let (ka, kb) = (key(a), key(b));
                    ka.0.cmp(&kb.0)
                        .then(ka.1.cmp(&kb.1))
                        .then(ka.2.total_cmp(&kb.2))
                        .then(ka.3.total_cmp(&kb.3))
                        .then(a.cmp(&b))
                });
            if let Some(m) = best {
                self.shards[s].holder = Some(m);
                self.load[m] += load;
                self.held[m].insert(s);
                heavy[m] |= self.too_heavy_for(s, m);
            }
        }
    }

    /// Applies a move; returns the shards moved.
    fn apply(&mut self, c: &Candidate) -> Vec<usize> {
        let from = self.shards[c.shard].holder.expect("a move of a held shard");
        self.move_shard(c.shard, from, c.to);
        if let Some(back) = c.back {
            self.move_shard(back, c.to, from);
        }
        [Some(c.shard), c.back].into_iter().flatten().collect()
    }

    fn move_shard(&mut self, s: usize, from: usize, to: usize) {
        let load = self.shards[s].load;
        self.load[from] -= load;
        self.held[from].remove(&s);
        self.load[to] += load;
        self.held[to].insert(s);
        self.shards[s].holder = Some(to);
    }

    fn assignment(&self) -> Assignment {
        let mut plan: Assignment = self
            .ids
            .iter()
            .map(|&id| (id.to_owned(), BTreeMap::new()))
            .collect();
        for shard in &self.shards {
            if let Some(m) = shard.holder {
                plan.get_mut(self.ids[m])
                    .expect("a member")
                    .entry(self.streams[shard.stream].to_owned())
                    .or_default()
                    .insert(shard.id.to_owned());
            }
        }
        plan
    }

    /// The change of Φ = Σ load² / target if load `l` moves from `d` to `r`.
    fn delta_phi(&self, d: usize, r: usize, l: f64) -> f64 {
        if l == 0.0 {
            return 0.0;
        }
        let (td, tr) = (self.target[d], self.target[r]);
        l * (l * (1.0 / td + 1.0 / tr) - 2.0 * (self.ratio(d) - self.ratio(r)))
    }

    /// The change of Ψ = Σ count² / capacity if one shard moves from `d` to `r`.
    fn delta_psi(&self, d: usize, r: usize) -> f64 {
        let (cd, cr) = (self.held[d].len() as f64, self.held[r].len() as f64);
        (1.0 - 2.0 * cd) / self.capacity[d] + (2.0 * cr + 1.0) / self.capacity[r]
    }

    /// Whether `r` consumes the stream of shard `s`.
    fn consumes(&self, r: usize, s: usize) -> bool {
        self.consumers[self.shards[s].stream]
            .binary_search(&r)
            .is_ok()
    }

    fn movable(&self, m: usize) -> impl Iterator<Item = usize> + '_ {
        self.held[m]
            .iter()
            .copied()
            .filter(|&s| !self.shards[s].cooling)
    }

    /// Applies the moves `next` finds, recording them in `moved`, until `moved` holds
    /// `budget` moves; `next` is told whether two more fit (a swap). Returns whether it
    /// stopped because `next` found none.
    fn run(
        &mut self,
        moved: &mut BTreeMap<(String, String), MoveKind>,
        budget: usize,
        next: impl Fn(&Self, bool) -> Option<Candidate>,
    ) -> bool {
        while moved.len() < budget {
            let Some(candidate) = next(self, budget - moved.len() >= 2) else {
                return true;
            };
            for s in self.apply(&candidate) {
                let shard = &self.shards[s];
                let key = (self.streams[shard.stream].to_owned(), shard.id.to_owned());
                moved.insert(key, candidate.kind);
            }
        }
        false
    }

    /// How far member `m` with load `load` is outside its band, in load.
    fn excess_at(&self, m: usize, load: f64) -> f64 {
        let t = self.target[m];
        let tolerance = self.balance.tolerance;
        (load - t * (1.0 + tolerance)).max(0.0) + (t * (1.0 - tolerance) - load).max(0.0)
    }

    /// Every member's distance outside its band, summed.
    fn excess(&self) -> f64 {
        (0..self.ids.len())
            .map(|m| self.excess_at(m, self.load[m]))
            .sum()
    }

    /// Rule 1's measure of moving load `l` from `d` to `r`: how much excess it removes,
    /// less what it pushes `r` over its band (an overshoot is excess to undo by another
    /// move) — when it removes some, lowers the pair's higher ratio (the worse of the two
    /// gets better) and narrows their gap (lowers Φ).
    fn relief(&self, d: usize, r: usize, l: f64) -> Option<f64> {
        let before = self.excess_at(d, self.load[d]) + self.excess_at(r, self.load[r]);
        let after = self.excess_at(d, self.load[d] - l) + self.excess_at(r, self.load[r] + l);
        let upper = self.target[r] * (1.0 + self.balance.tolerance);
        let overshoot = (self.load[r] + l - upper).max(0.0) - (self.load[r] - upper).max(0.0);
        let worst = self.ratio(d).max(self.ratio(r));
        let worst_after =
            ((self.load[d] - l) / self.target[d]).max((self.load[r] + l) / self.target[r]);
        (before - after > EPSILON * self.mean
            && worst_after < worst
            && self.delta_phi(d, r, l) < 0.0)
            .then_some(before - after - overshoot)
    }

    /// Rule 1: the most over member gives the shard that relieves the most; else the most
    /// under member takes the one that does; with `swaps`, an exchange of two shards where
    /// no single move helps an over member.
    fn load_move(&self, swaps: bool) -> Option<Candidate> {
        let tolerance = self.balance.tolerance;
        let members: Vec<usize> = (0..self.ids.len())
            .filter(|&m| self.target[m] > 0.0)
            .collect();
        let mut by_ratio = members.clone();
        by_ratio.sort_by(|&a, &b| self.ratio(a).total_cmp(&self.ratio(b)).then(a.cmp(&b)));
        let mut best: Option<Candidate> = None;
        for &d in by_ratio.iter().rev() {
            let rd = self.ratio(d);
            if rd <= 1.0 + tolerance {
                break;
            }
            for s in self.movable(d) {
                let l = self.shards[s].load;
                // A receiver at or above the giver's ratio cannot narrow the gap; the
                // lowest ratios are the likeliest to help.
                let receivers = by_ratio.iter().take_while(|&&r| self.ratio(r) < rd);
                for &r in receivers.filter(|&&r| r != d).take(PARTNERS) {
                    if self.consumes(r, s) && self.fits(r, l) {
                        if let Some(score) = self.relief(d, r, l) {
                            keep_best(&mut best, Candidate::one(s, r, MoveKind::Load, score, l));
                        }
                    }
                }
            }
            if best.is_none() && swaps {
                best = self.swap(d, &by_ratio);
            }
            if best.is_some() {
                return best;
            }
        }
        for &r in &by_ratio {
            let rr = self.ratio(r);
            if rr >= 1.0 - tolerance {
                break;
            }
            let givers = by_ratio.iter().rev().take_while(|&&d| self.ratio(d) > rr);
            for &d in givers.take(PARTNERS) {
                for s in self.movable(d).filter(|&s| self.consumes(r, s)) {
                    let l = self.shards[s].load;
                    if !self.fits(r, l) {
                        continue;
                    }
                    if let Some(score) = self.relief(d, r, l) {
                        keep_best(&mut best, Candidate::one(s, r, MoveKind::Load, score, l));
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// The best exchange of a shard of `d` for a lighter one of a member among the
    /// [`SWAP_PARTNERS`] lowest ratios (members of at most [`SWAP_PAIRS`] pairs): it moves load `l_s − l_t`, as a single move of
    /// that load would, and leaves the counts as they are.
    fn swap(&self, d: usize, by_ratio: &[usize]) -> Option<Candidate> {
        let mut best = None;
        let partners = by_ratio.iter().filter(|&&r| r != d).take(SWAP_PARTNERS);
        // Where members hold many shards a single move finds its way; pairs are tried
        // where shards are coarse, and the search stays small.
        let coarse = |r: usize| self.held[d].len() * self.held[r].len() <= SWAP_PAIRS;
        for &r in partners.filter(|&&r| coarse(r)) {
            for s in self.movable(d).filter(|&s| self.consumes(r, s)) {
                for t in self.movable(r).filter(|&t| self.consumes(d, t)) {
                    let l = self.shards[s].load - self.shards[t].load;
                    // Counts stay; `r` gains load `l`.
                    if l <= 0.0 || !within(self.load[r] + l, self.max_load[r]) {
                        continue;
                    }
                    if let Some(score) = self.relief(d, r, l) {
                        let both = self.shards[s].load + self.shards[t].load;
                        let mut c = Candidate::one(s, r, MoveKind::Load, score, both);
                        c.back = Some(t);
                        keep_best(&mut best, c);
                    }
                }
            }
        }
        best
    }

    /// Φ = Σ load² / target, over the members with a target.
    fn phi(&self) -> f64 {
        (0..self.ids.len())
            .filter(|&m| self.target[m] > 0.0)
            .map(|m| self.load[m] * self.load[m] / self.target[m])
            .sum()
    }

    /// Rule 1's two steps, within `room` moves: a member over its band gives its
    /// heaviest shard to a larger member (of a higher target) that would carry it at a
    /// lower ratio, which sheds shards to others, most relief first, while it is over its
    /// band. Kept when every member it touched ends below the giver's ratio by more than
    /// `min_gain`, Φ is lower and the larger member is within its limits; the best (the
    /// lowest of those ratios, then the fewest moves) of the [`SWAP_PARTNERS`] lowest
    /// ratios among the larger members. Returns the state after it and the shards moved.
    fn hot_move(&self, room: usize) -> Option<(Self, Vec<usize>)> {
        if room == 0 {
            return None;
        }
        let tolerance = self.balance.tolerance;
        let mut by_ratio: Vec<usize> = (0..self.ids.len())
            .filter(|&m| self.target[m] > 0.0)
            .collect();
        by_ratio.sort_by(|&a, &b| self.ratio(a).total_cmp(&self.ratio(b)).then(a.cmp(&b)));
        let phi = self.phi();
        let over = by_ratio
            .iter()
            .rev()
            .take_while(|&&d| self.ratio(d) > 1.0 + tolerance);
        for &d in over.take(SWAP_PARTNERS) {
            let rd = self.ratio(d);
            let by_load = |&a: &usize, &b: &usize| {
                let (la, lb) = (self.shards[a].load, self.shards[b].load);
                la.total_cmp(&lb).then(b.cmp(&a))
            };
            let Some(h) = self.movable(d).max_by(by_load) else {
                continue;
            };
            let l = self.shards[h].load;
            let larger = by_ratio.iter().copied().filter(|&r| {
                self.target[r] > self.target[d]
                    && self.consumes(r, h)
                    && l / self.target[r] < rd - self.balance.min_gain
            });
            let mut best: Option<(f64, Self, Vec<usize>)> = None;
            let tries = larger
                .take(SWAP_PARTNERS)
                .flat_map(|r| [(r, false), (r, true)]);
            for (r, lightest) in tries {
                let mut next = self.clone();
                next.move_shard(h, d, r);
                let mut shards = vec![h];
                let mut touched = vec![d, r];
                while shards.len() < room && next.ratio(r) > 1.0 + tolerance {
                    let Some(c) = next.shed_from(r, lightest) else {
                        break;
                    };
                    touched.push(c.to);
                    shards.extend(next.apply(&c));
                }
                let worst = touched.iter().map(|&m| next.ratio(m)).fold(0.0, f64::max);
                let kept = worst < rd - self.balance.min_gain
                    && next.phi() < phi
                    && next.held[r].len() <= next.max_count[r]
                    && within(next.load[r], next.max_load[r]);
                let better = best.as_ref().is_none_or(|(w, _, moved)| {
                    worst < *w || (worst == *w && shards.len() < moved.len())
                });
                if kept && better {
                    best = Some((worst, next, shards));
                }
            }
            if let Some((_, next, shards)) = best {
                return Some((next, shards));
            }
        }
        None
    }

    /// The shard of `r` whose move to one of the [`PARTNERS`] lowest ratios relieves the
    /// most (rule 1's measure) or, `lightest`, the lightest that relieves some (many
    /// light shards fill a gap one heavy shard overshoots).
    fn shed_from(&self, r: usize, lightest: bool) -> Option<Candidate> {
        let mut receivers: Vec<usize> = (0..self.ids.len())
            .filter(|&q| q != r && self.target[q] > 0.0)
            .collect();
        receivers.sort_by(|&a, &b| self.ratio(a).total_cmp(&self.ratio(b)).then(a.cmp(&b)));
        receivers.truncate(PARTNERS);
        let mut shards: Vec<usize> = self.movable(r).collect();
        if lightest {
            shards.sort_by(|&a, &b| self.shards[a].load.total_cmp(&self.shards[b].load));
        }
        let mut best = None;
        for s in shards {
            let l = self.shards[s].load;
            for &q in &receivers {
                if self.consumes(q, s) && self.fits(q, l) {
                    if let Some(score) = self.relief(r, q, l) {
                        keep_best(&mut best, Candidate::one(s, q, MoveKind::Load, score, l));
                    }
                }
            }
            if lightest && best.is_some() {
                break;
            }
        }
        best
    }

    /// Rule 2.
    fn alone_move(&self) -> Option<Candidate> {
        let heavy = self.alone_heavy();
        for d in 0..self.ids.len() {
            if self.held[d].len() < 2 || !heavy[d] {
                continue;
            }
            let heaviest = self.held[d]
                .iter()
                .copied()
                .max_by(|&a, &b| self.shards[a].load.total_cmp(&self.shards[b].load))?;
            let mut best: Option<Candidate> = None;
            for s in self.movable(d).filter(|&s| s != heaviest) {
                let l = self.shards[s].load;
                let after = self.ratio(d) - l / self.target[d];
                for &r in &self.consumers[self.shards[s].stream] {
                    if r == d || self.target[r] <= 0.0 || heavy[r] || !self.fits(r, l) {
                        continue;
                    }
                    let nr = self.ratio(r) + l / self.target[r];
                    let phi = self.delta_phi(d, r, l);
                    let lower = phi < 0.0 || (phi == 0.0 && self.delta_psi(d, r) < 0.0);
                    if nr <= after && lower && best.is_none_or(|b| -nr > b.score) {
                        best = Some(Candidate::one(s, r, MoveKind::Alone, -nr, l));
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// Rule 3: the member with the most shards per capacity gives its lightest shard to
    /// one of those with the fewest, when that lowers Ψ and does not raise Φ.
    fn count_move(&self) -> Option<Candidate> {
        let heavy = self.alone_heavy();
        let count = |m: usize| self.held[m].len() as f64;
        // What a move from `d` to `r` changes Ψ by is `taking(r) − giving(d)`.
        let giving = |d: usize| (2.0 * count(d) - 1.0) / self.capacity[d];
        let taking = |r: usize| (2.0 * count(r) + 1.0) / self.capacity[r];
        let mut givers: Vec<usize> = (0..self.ids.len())
            .filter(|&d| !self.held[d].is_empty())
            .collect();
        givers.sort_by(|&a, &b| giving(b).total_cmp(&giving(a)).then(a.cmp(&b)));
        let mut takers: Vec<usize> = (0..self.ids.len()).filter(|&r| !heavy[r]).collect();
        takers.sort_by(|&a, &b| taking(a).total_cmp(&taking(b)).then(a.cmp(&b)));
        for d in givers {
            let mut best: Option<Candidate> = None;
            let helpful = takers.iter().take_while(|&&r| taking(r) < giving(d));
            for &r in helpful.filter(|&&r| r != d).take(PARTNERS) {
                // The lightest shard changes the load least: if it raises Φ, all do.
                let lightest = self
                    .movable(d)
                    .filter(|&s| self.consumes(r, s))
                    .min_by(|&a, &b| {
                        self.shards[a]
                            .load
                            .total_cmp(&self.shards[b].load)
                            .then(a.cmp(&b))
                    });
                let Some(s) = lightest else { continue };
                let l = self.shards[s].load;
                let raises = (self.target[r] <= 0.0 && l > 0.0) || self.delta_phi(d, r, l) > 0.0;
                if raises || !self.fits(r, l) {
                    continue;
                }
                let gain = giving(d) - taking(r);
                if best.is_none_or(|b| gain > b.score) {
                    best = Some(Candidate::one(s, r, MoveKind::Count, gain, l));
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// Whether `load` is within `max`, but for rounding (loads are kept as running sums).
fn within(load: f64, max: f64) -> bool {
    load <= max + 1e-9 * max.abs()
}

/// Each member's target: its capacity's part of `total`, at most its most load, the
/// part a limit cuts off going to the others in proportion to their capacities (water
/// filling); 0 for a member not `eligible`. When the limits add up to less than the
/// total, each target is its limit.
fn shares(total: f64, capacity: &[f64], max_load: &[f64], eligible: &[bool]) -> Vec<f64> {
    let mut capped = vec![false; capacity.len()];
    let mut rate = 0.0;
    loop {
        let free = |m: usize| eligible[m] && !capped[m];
        let fixed: f64 = (0..capacity.len())
            .filter(|&m| eligible[m] && capped[m])
            .map(|m| max_load[m])
            .sum();
        let weight: f64 = (0..capacity.len())
            .filter(|&m| free(m))
            .map(|m| capacity[m])
            .sum();
        if weight <= 0.0 {
            break;
        }
        rate = (total - fixed).max(0.0) / weight;
        let newly: Vec<usize> = (0..capacity.len())
            .filter(|&m| free(m) && capacity[m] * rate > max_load[m])
            .collect();
        if newly.is_empty() {
            break;
        }
        newly.into_iter().for_each(|m| capped[m] = true);
    }
    (0..capacity.len())
        .map(|m| match (eligible[m], capped[m]) {
            (false, _) => 0.0,
            (true, true) => max_load[m],
            (true, false) => capacity[m] * rate,
        })
        .collect()
}

/// Keeps the better of `best` and `c`: the higher score, then the lighter load moved (a
/// heavy shard costs more to hand off), then the first.
fn keep_best(best: &mut Option<Candidate>, c: Candidate) {
    let better = best.is_none_or(|b| {
        let tie = (c.score - b.score).abs() <= EPSILON * c.score.abs().max(b.score.abs());
        if tie {
            c.moved_load < b.moved_load
        } else {
            c.score > b.score
        }
    });
    if better {
        *best = Some(c);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const BALANCE: Balance = Balance {
        tolerance: 0.1,
        min_gain: 0.05,
        max_moves: 4,
    };

    /// Members `m0..` of the given capacities, all consuming stream `s`; shards
    /// `shard-00..` of the given loads, held by the member of that index (none past the
    /// members).
    fn input(capacities: &[f64], shards: &[(f64, Option<usize>)]) -> LoadInput {
        let streams = BTreeSet::from(["s".to_owned()]);
        LoadInput {
            members: capacities
                .iter()
                .enumerate()
                .map(|(i, &capacity)| {
                    let streams = streams.clone();
                    let limits = Limits::default();
                    (
                        format!("m{i}"),
                        LoadMember {
                            streams,
                            capacity,
                            limits,
                        },
                    )
                })
                .collect(),
            shards: BTreeMap::from([(
                "s".to_owned(),
                shards
                    .iter()
                    .enumerate()
                    .map(|(i, &(load, holder))| {
                        let holder = holder.map(|h| format!("m{h}"));
                        let shard = LoadShard {
                            holder,
                            load,
                            cooling: false,
                        };
                        (format!("shard-{i:02}"), shard)
                    })
                    .collect(),
            )]),
        }
    }

    /// Capacities 1 or 2; loads skewed (most light, a few ten times heavier); holders
    /// random, some not members.
    fn inputs(members: usize, shards: usize) -> impl Strategy<Value = LoadInput> {
        let load = prop_oneof![4 => 0.01..0.2f64, 1 => 0.5..2.0f64, 1 => Just(0.0)];
        (
            vec(prop_oneof![Just(1.0), Just(2.0)], 1..=members),
            vec((load, proptest::option::of(0..members + 1)), 0..=shards),
        )
            .prop_map(|(capacities, shards)| input(&capacities, &shards))
    }

    /// The input with `plan` as the holders and nothing cooling.
    fn held_as(input: &LoadInput, plan: &Assignment) -> LoadInput {
        let mut next = input.clone();
        for (stream, shards) in &mut next.shards {
            for (id, shard) in shards.iter_mut() {
                shard.holder = plan
                    .iter()
                    .find(|(_, streams)| streams.get(stream).is_some_and(|s| s.contains(id)))
                    .map(|(m, _)| m.clone());
                shard.cooling = false;
            }
        }
        next
    }

    /// Plans tick after tick on a constant load, as the leader does: a shard moved stays
    /// put (cools) for the next `COOLING` plans. Ends with the first plan that moves
    /// nothing while nothing cools: the plan reached, and the moves for load (rule 1)
    /// it took.
    fn converge(input: &LoadInput) -> (Assignment, usize, f64) {
        const COOLING: usize = 3;
        let mut current = input.clone();
        let mut moves = 0;
        let mut moved_load = 0.0;
        let mut moved_at: BTreeMap<(String, String), usize> = BTreeMap::new();
        for round in 0..500 {
            moved_at.retain(|_, &mut at| round - at <= COOLING);
            for (stream, shards) in &mut current.shards {
                for (id, shard) in shards.iter_mut() {
                    shard.cooling = moved_at.contains_key(&(stream.clone(), id.clone()));
                }
            }
            let plan = assign_by_load(&current, &BALANCE);
            assert!(rule_moves(&plan) <= BALANCE.max_moves);
            if plan.moved.is_empty() && moved_at.is_empty() {
                return (plan.assignment, moves, moved_load);
            }
            for ((stream, id), kind) in &plan.moved {
                if *kind == MoveKind::Load {
                    moves += 1;
                    moved_load += current.shards[stream][id].load;
                }
            }
            moved_at.extend(plan.moved.into_keys().map(|k| (k, round)));
            current = held_as(&current, &plan.assignment);
        }
        panic!("no fixed point after 500 plans");
    }

    /// The moves counted against the budget: all but those off a member over a limit.
    fn rule_moves(plan: &LoadPlan) -> usize {
        plan.moved
            .values()
            .filter(|&&k| k != MoveKind::Limit)
            .count()
    }

    /// [`inputs`] with limits: each member without, with a most shards (1–4), a most
    /// load (0.1–1.5 shard units), or both.
    fn limited_inputs(members: usize, shards: usize) -> impl Strategy<Value = LoadInput> {
        let limits = (
            proptest::option::of(1..=4usize),
            proptest::option::of(0.1..1.5f64),
        );
        (inputs(members, shards), vec(limits, members)).prop_map(|(mut input, limits)| {
            for (member, (max_shards, max_units)) in input.members.values_mut().zip(limits) {
                member.limits = Limits {
                    max_shards,
                    max_bytes_per_sec: max_units.map(|u| u * 1_048_576.0),
                };
            }
            input
        })
    }

    /// Whether every member of `plan` is within its limits.
    fn within_limits(input: &LoadInput, plan: &Assignment) -> Result<(), TestCaseError> {
        for (m, held) in member_loads(input, plan) {
            let limits = input.members[&m].limits;
            let load: f64 = held.iter().sum();
            prop_assert!(
                held.len() <= limits.max_shards.unwrap_or(usize::MAX),
                "{m}: {} shards",
                held.len()
            );
            prop_assert!(
                within(load, limits.max_units()),
                "{m}: load {load} over {}",
                limits.max_units()
            );
        }
        Ok(())
    }

    fn planned(plan: &Assignment) -> usize {
        plan.values()
            .flat_map(|s| s.values())
            .map(BTreeSet::len)
            .sum()
    }

    fn member_loads(input: &LoadInput, plan: &Assignment) -> BTreeMap<String, Vec<f64>> {
        plan.iter()
            .map(|(m, streams)| {
                let loads = streams
                    .iter()
                    .flat_map(|(st, shards)| shards.iter().map(|s| input.shards[st][s].load))
                    .collect();
                (m.clone(), loads)
            })
            .collect()
    }

    fn target(input: &LoadInput, member: &str) -> f64 {
        let total: f64 = input
            .shards
            .values()
            .flat_map(|s| s.values())
            .map(|s| s.load)
            .sum();
        let weight: f64 = input.members.values().map(|m| m.capacity).sum();
        input.members[member].capacity * total / weight
    }

    /// Calls `each` with every plan of the shards of stream `s` (in shard order, the
    /// member index of each) and the members' loads under it (in client id order).
    fn every_plan(input: &LoadInput, mut each: impl FnMut(&[usize], &[f64])) {
        let members = input.members.len();
        let loads: Vec<f64> = input.shards["s"].values().map(|s| s.load).collect();
        let mut choice = vec![0; loads.len()];
        loop {
            let mut sums = vec![0.0; members];
            for (l, &c) in loads.iter().zip(&choice) {
                sums[c] += l;
            }
            each(&choice, &sums);
            // Next plan, like an odometer; done when every digit wraps around.
            let mut wrapped = true;
            for c in &mut choice {
                *c += 1;
                if *c < members {
                    wrapped = false;
                    break;
                }
                *c = 0;
            }
            if wrapped {
                return;
            }
        }
    }

    /// The best plan's highest ratio, by trying every one.
    fn best_worst_ratio(input: &LoadInput) -> f64 {
        let targets: Vec<f64> = input.members.keys().map(|m| target(input, m)).collect();
        let mut best = f64::INFINITY;
        every_plan(input, |_, sums| {
            let worst = sums
                .iter()
                .zip(&targets)
                .map(|(s, t)| s / t)
                .fold(0.0, f64::max);
            best = best.min(worst);
        });
        best
    }

    /// How far the members' loads (in client id order) are outside their bands, summed.
    fn excess(input: &LoadInput, sums: &[f64]) -> f64 {
        let band = BALANCE.tolerance;
        input
            .members
            .keys()
            .zip(sums)
            .map(|(m, &load)| {
                let t = target(input, m);
                (load - t * (1.0 + band)).max(0.0) + (t * (1.0 - band) - load).max(0.0)
            })
            .sum()
    }

    fn member_sums(input: &LoadInput, plan: &Assignment) -> Vec<f64> {
        member_loads(input, plan)
            .values()
            .map(|l| l.iter().sum())
            .collect()
    }

    /// The least any plan at least as close to the bands moves.
    #[derive(Debug)]
    struct Fewest {
        /// Shards.
        moves: usize,
        /// Load.
        load: f64,
        /// Shards, of the plans that move no more load than given.
        within_load: usize,
    }

    /// The fewest moves from the holders of `input` to a plan at least as close to the
    /// bands (its [`excess`] no higher than `at_most`), the least load any such plan
    /// moves, and the fewest moves of those moving no more than `load`, by trying every
    /// plan.
    fn fewest_as_good(input: &LoadInput, at_most: f64, load: f64) -> Fewest {
        let members: Vec<&String> = input.members.keys().collect();
        let shards: Vec<&LoadShard> = input.shards["s"].values().collect();
        let mut fewest = Fewest {
            moves: usize::MAX,
            load: f64::INFINITY,
            within_load: usize::MAX,
        };
        every_plan(input, |choice, sums| {
            if excess(input, sums) <= at_most + 1e-9 {
                let (mut moves, mut moved) = (0, 0.0);
                for (s, &c) in shards.iter().zip(choice) {
                    if s.holder.as_deref() != Some(members[c].as_str()) {
                        moves += 1;
                        moved += s.load;
                    }
                }
                fewest.moves = fewest.moves.min(moves);
                fewest.load = fewest.load.min(moved);
                if moved <= load + 1e-9 {
                    fewest.within_load = fewest.within_load.min(moves);
                }
            }
        });
        fewest
    }

    /// What a member's joining cost: the moves to a new fixed point, their load, and the
    /// fewest any plan at least as close to the bands needs.
    #[derive(Debug)]
    struct Join {
        moves: usize,
        moved: f64,
        fewest: Fewest,
    }

    /// A member of `capacity` joins the group at the fixed point `input` converges to.
    fn after_a_join(input: &LoadInput, capacity: f64) -> Join {
        let (plan, ..) = converge(input);
        let mut joined = held_as(input, &plan);
        let streams = BTreeSet::from(["s".into()]);
        let limits = Limits::default();
        joined.members.insert(
            "joiner".into(),
            LoadMember {
                streams,
                capacity,
                limits,
            },
        );
        let (after, moves, moved) = converge(&joined);
        let at_most = excess(&joined, &member_sums(&joined, &after));
        let fewest = fewest_as_good(&joined, at_most, moved);
        Join {
            moves,
            moved,
            fewest,
        }
    }

    /// Moves are a cost to keep low, but finding the fewest is bin packing: over 2,000
    /// joins (a fixed seed), at most 1 in 80 takes more handoffs than a plan at least as
    /// close to the bands that moves no more load. Letting a shard move again within a
    /// plan and listing only the handoffs to where the rules end brought that from 68 to
    /// 23; the numbers are printed (`-- --nocapture`).
    #[test]
    fn moves_after_a_join_are_mostly_the_fewest() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let joins = (inputs(3, 7), prop_oneof![Just(1.0), Just(2.0)]);
        let cases = 2_000;
        let (mut dominated, mut more, mut surplus) = (0, 0, 0);
        for _ in 0..cases {
            let (input, capacity) = joins.new_tree(&mut runner).expect("a join").current();
            let j = after_a_join(&input, capacity);
            dominated += usize::from(j.moves > j.fewest.within_load);
            more += usize::from(j.moves > j.fewest.moves);
            surplus += j.moves.saturating_sub(j.fewest.moves);
        }
        println!(
            "{cases} joins: {dominated} with more handoffs than a plan as good moving no more \
             load; {more} with more than the fewest ({surplus} handoffs more in all)"
        );
        assert!(dominated * 80 <= cases, "{dominated} of {cases}");
    }

    proptest! {
        #[test]
        fn every_shard_goes_to_one_member(input in inputs(6, 30)) {
            let plan = assign_by_load(&input, &BALANCE);
            prop_assert!(input.members.keys().eq(plan.assignment.keys()));
            let planned: usize = plan.assignment.values().flat_map(|s| s.values()).map(BTreeSet::len).sum();
            prop_assert_eq!(planned, input.shards.values().map(BTreeMap::len).sum::<usize>());
            prop_assert!(rule_moves(&plan) <= BALANCE.max_moves);
        }

        /// A move listed is a handoff: the shard ends on another member than it was on.
        #[test]
        fn every_move_listed_changes_a_holder(input in inputs(6, 30)) {
            let plan = assign_by_load(&input, &BALANCE);
            let after = held_as(&input, &plan.assignment);
            for (stream, id) in plan.moved.keys() {
                let (before, now) = (&input.shards[stream][id].holder, &after.shards[stream][id].holder);
                prop_assert_ne!(before, now, "{} is listed as moved", id);
            }
        }

        #[test]
        fn a_plan_reached_is_a_fixed_point(input in inputs(6, 30)) {
            let (plan, ..) = converge(&input);
            let again = assign_by_load(&held_as(&input, &plan), &BALANCE);
            prop_assert!(again.moved.is_empty());
            prop_assert_eq!(again.assignment, plan);
        }

        #[test]
        fn within_tolerance_after_convergence(input in inputs(6, 30)) {
            let (plan, ..) = converge(&input);
            let loads = member_loads(&input, &plan);
            let heaviest = input.shards.values().flat_map(|s| s.values()).map(|s| s.load).fold(0.0, f64::max);
            for (m, held) in &loads {
                let t = target(&input, m);
                let load: f64 = held.iter().sum();
                if t == 0.0 || held.len() < 2 {
                    continue;
                }
                // ±10 %, or one shard's granularity where that is the floor.
                let slack = (BALANCE.tolerance * t).max(heaviest) + BALANCE.min_gain * t;
                prop_assert!(load <= t + slack, "{m}: {load} > {t} + {slack}");
            }
        }

        #[test]
        fn never_exceeds_a_capacity_by_more_than_a_shard_when_feasible(input in inputs(3, 7)) {
            let (plan, ..) = converge(&input);
            let band = 1.0 + BALANCE.tolerance;
            let loaded = input.shards["s"].values().any(|s| s.load > 0.0);
            if loaded && best_worst_ratio(&input) <= band {
                // Placing shards is bin packing: a local search may miss the one packing
                // that fits, but not by more than one shard's weight (the floor of the
                // tolerance), as the smallest member would carry it.
                let smallest = input.members.keys().map(|m| target(&input, m)).fold(f64::INFINITY, f64::min);
                for (m, held) in member_loads(&input, &plan) {
                    let t = target(&input, &m);
                    let load: f64 = held.iter().sum();
                    let heaviest = held.iter().copied().fold(0.0, f64::max);
                    let slack = heaviest * t / smallest;
                    prop_assert!(load <= t * band + slack, "{m}: {load} > {} + {slack}", t * band);
                }
            }
        }

        #[test]
        fn within_the_band_nothing_moves_for_load(input in inputs(6, 30)) {
            let plan = assign_by_load(&input, &BALANCE);
            let start = held_as(&input, &plan.assignment);
            let r = ratios(&start, &plan.assignment);
            let within = r.values().all(|&r| {
                (1.0 - BALANCE.tolerance..=1.0 + BALANCE.tolerance).contains(&r)
            });
            let next = assign_by_load(&start, &BALANCE);
            if within {
                prop_assert!(next.moved.values().all(|k| *k == MoveKind::Count), "{:?}", next.moved);
            }
        }

        #[test]
        fn moves_after_a_join_stay_near_the_fewest(input in inputs(3, 7), capacity in prop_oneof![Just(1.0), Just(2.0)]) {
            let j = after_a_join(&input, capacity);
            // At most three times the fewest handoffs, plus two — unless it moved many
            // light shards where one heavy one would do, and then no plan as good moves
            // less load. How often it is more than the fewest:
            // `moves_after_a_join_are_mostly_the_fewest`.
            prop_assert!(
                j.moves <= 3 * j.fewest.moves + 2 || j.moved <= j.fewest.load * (1.0 + 1e-9),
                "{j:?}"
            );
        }

        #[test]
        fn a_shard_heavier_than_the_tolerance_is_placed_alone(
            capacities in vec(prop_oneof![Just(1.0), Just(2.0)], 2..=6),
            light in vec((0.01..0.1f64, proptest::option::of(0..6usize)), 1..30),
            hot_holder in proptest::option::of(0..6usize),
        ) {
            let mut shards = light;
            let total: f64 = shards.iter().map(|s| s.0).sum();
            // Four times the rest: over any member's band (a target is at most 2/3 of the total).
            shards.push((total * 4.0, hot_holder));
            let input = input(&capacities, &shards);
            let (plan, ..) = converge(&input);
            let hot = format!("shard-{:02}", shards.len() - 1);
            let (holder, held) = plan.iter().find(|(_, s)| s.get("s").is_some_and(|s| s.contains(&hot))).unwrap();
            prop_assert_eq!(held["s"].len(), 1, "{} holds {:?}", holder, held);
        }

        /// Limits are exact: no plan, from any holders (over limits too), puts a member
        /// over one, nor does any plan on the way to a fixed point; and the plan reached
        /// with limits is a fixed point too.
        #[test]
        fn never_over_a_limit(input in limited_inputs(6, 30)) {
            within_limits(&input, &assign_by_load(&input, &BALANCE).assignment)?;
            let (plan, ..) = converge(&input);
            within_limits(&input, &plan)?;
            let again = assign_by_load(&held_as(&input, &plan), &BALANCE);
            prop_assert!(again.moved.is_empty());
        }

        /// Feasible by shard limits is exact: the limits add up to the shards (a member
        /// without a limit takes any number), and then every shard is planned.
        #[test]
        fn every_shard_planned_when_the_shard_limits_add_up(input in limited_inputs(6, 30)) {
            let mut input = input;
            input.members.values_mut().for_each(|m| m.limits.max_bytes_per_sec = None);
            let room = input.members.values().map(|m| m.limits.max_shards.unwrap_or(usize::MAX)).fold(0, usize::saturating_add);
            let shards = input.shards["s"].len();
            let plan = assign_by_load(&input, &BALANCE);
            if room >= shards {
                prop_assert_eq!(planned(&plan.assignment), shards);
            }
        }

        /// Feasible by load limits, as defined here: the room every member has beyond the
        /// heaviest shard adds up to the total load, Σ max(0, limit − heaviest) ≥ Σ load.
        /// Then, heaviest first, a shard always finds a member with room, and every shard
        /// is planned. (Whether any packing exists is bin packing, NP-hard: a feasible plan
        /// that needs the one exact packing may be missed, and its shards left unplanned.)
        #[test]
        fn every_shard_planned_when_the_load_limits_leave_room_for_the_heaviest(input in limited_inputs(6, 30)) {
            let mut input = input;
            input.members.values_mut().for_each(|m| m.limits.max_shards = None);
            let loads = input.shards["s"].values().map(|s| s.load);
            let (total, heaviest) = loads.fold((0.0, 0.0), |(t, h), l| (t + l, f64::max(h, l)));
            let room: f64 = input.members.values().map(|m| (m.limits.max_units() - heaviest).max(0.0)).sum();
            let plan = assign_by_load(&input, &BALANCE);
            if room >= total {
                prop_assert_eq!(planned(&plan.assignment), input.shards["s"].len());
            }
        }

        /// Members of capacities 1 and 2, light shards of one load and one hot shard
        /// beyond a capacity-1 member's band, held by one: converged, the hot shard is on
        /// a capacity-2 member whenever some plan putting it there has a worst ratio lower
        /// by more than the least gain (by trying every plan).
        #[test]
        fn a_hot_shard_goes_to_a_larger_member_where_that_lowers_the_worst_ratio(
            more in vec(prop_oneof![Just(1.0), Just(2.0)], 0..=2),
            holders in vec(proptest::option::of(0..4usize), 0..=4),
            times in 1.2..2.5f64,
        ) {
            let capacities: Vec<f64> = [1.0, 2.0].into_iter().chain(more).collect();
            let weight: f64 = capacities.iter().sum();
            let light: Vec<(f64, Option<usize>)> = holders.into_iter().map(|h| (0.1, h)).collect();
            let rest: f64 = light.iter().map(|s| s.0).sum();
            // The hot shard is `times` the share of a capacity 1 of the whole load.
            let hot = times * rest / (weight - times);
            let mut shards = light;
            shards.push((hot.max(0.1), Some(0)));
            let input = input(&capacities, &shards);
            let (plan, ..) = converge(&input);
            let r = ratios(&input, &plan);
            let worst = r.values().copied().fold(0.0, f64::max);
            let hot_id = format!("shard-{:02}", shards.len() - 1);
            let holder = plan.iter().find(|(_, s)| s.get("s").is_some_and(|s| s.contains(&hot_id))).unwrap().0;
            if input.members[holder].capacity < 2.0 {
                let targets: Vec<f64> = input.members.keys().map(|m| target(&input, m)).collect();
                let mut larger = f64::INFINITY;
                every_plan(&input, |choice, sums| {
                    if capacities[choice[shards.len() - 1]] == 2.0 {
                        let w = sums.iter().zip(&targets).map(|(s, t)| s / t).fold(0.0, f64::max);
                        larger = larger.min(w);
                    }
                });
                prop_assert!(
                    larger >= worst - BALANCE.min_gain,
                    "{holder} keeps it at worst {worst}, where a larger member gives {larger}: {plan:?}"
                );
            }
        }

        #[test]
        fn is_deterministic(input in inputs(6, 30)) {
            prop_assert_eq!(assign_by_load(&input, &BALANCE), assign_by_load(&input, &BALANCE));
        }
    }

    #[test]
    fn the_fewest_moves_leave_a_hot_shard_alone() {
        // m0 holds a shard heavier than any band and three light ones; m1 holds two.
        let mut shards = vec![(3.0, Some(0))];
        shards.extend([(0.1, Some(0)); 3]);
        shards.extend([(0.1, Some(1)); 2]);
        let two = input(&[1.0, 1.0], &shards);
        let as_held = |input: &LoadInput| {
            let mut plan: Assignment = input
                .members
                .keys()
                .map(|m| (m.clone(), BTreeMap::new()))
                .collect();
            for (id, s) in &input.shards["s"] {
                let member = plan
                    .get_mut(s.holder.as_deref().expect("held"))
                    .expect("a member");
                member.entry("s".to_owned()).or_default().insert(id.clone());
            }
            plan
        };
        // Its three light shards go, or the hot one goes and m1's two: three moves.
        assert_eq!(fewest_moves(&two, &as_held(&two), BALANCE.tolerance), 3);
        // With an empty member beside them, the hot shard alone can go there.
        let three = input(&[1.0, 1.0, 1.0], &shards);
        assert_eq!(fewest_moves(&three, &as_held(&three), BALANCE.tolerance), 1);
    }

    #[test]
    fn a_member_of_capacity_two_carries_twice_the_load() {
        let shards: Vec<(f64, Option<usize>)> = (0..30).map(|_| (0.1, Some(0))).collect();
        let (plan, ..) = converge(&input(&[1.0, 2.0], &shards));
        assert_eq!(plan["m0"]["s"].len(), 10);
        assert_eq!(plan["m1"]["s"].len(), 20);
    }

    #[test]
    fn a_hot_shard_moves_to_a_larger_member_that_makes_room() {
        // m0 (capacity 1) holds the hot shard at 1.5 times its share; m1 (capacity 2)
        // is at 0.75 and must shed two shards to carry it: one plan of three moves.
        let shards = [
            (1.5, Some(0)),
            (0.5, Some(1)),
            (0.5, Some(1)),
            (0.5, Some(1)),
        ];
        let input = input(&[1.0, 2.0], &shards);
        let plan = assign_by_load(&input, &BALANCE);
        assert_eq!(plan.assignment["m1"]["s"].len(), 2);
        assert!(plan.assignment["m1"]["s"].contains("shard-00"));
        assert_eq!(plan.moved.len(), 3);
        let r = ratios(&input, &plan.assignment);
        assert!(r.values().all(|&r| (r - 1.0).abs() < 1e-9), "{r:?}");
    }

    #[test]
    fn cooling_shards_stay() {
        let mut input = input(&[1.0, 1.0], &[(1.0, Some(0)), (1.0, Some(0))]);
        for shard in input.shards.get_mut("s").unwrap().values_mut() {
            shard.cooling = true;
        }
        assert!(assign_by_load(&input, &BALANCE).moved.is_empty());
    }
}
