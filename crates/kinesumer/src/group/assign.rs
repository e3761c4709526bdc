//! The assignment: which member should hold which shard (DESIGN §3 step 8, "Plans").
//!
//! The leader calls [`assign`] every tick with the alive members, the streams each
//! consumes, the [`eligible`] shards of every stream and their current holders. It is a
//! pure, deterministic function: no I/O, no clock, no randomness. Its rules, in priority
//! order:
//!
//! 1. **Per-stream balance** (hard rule): for each stream, the shard counts of any two
//!    members consuming it differ by at most one; a shard goes only to a member that
//!    consumes its stream; the shards of a stream nobody consumes go to no one.
//! 2. **Stickiness**: the fewest [`moves`] — a shard stays with its current holder
//!    whenever balance allows.
//! 3. **Total evenness**: among those plans, the smallest max − min of the members'
//!    totals across streams.
//! 4. Remaining ties are broken by sorted client id and shard id.
//!
//! # Algorithm
//!
//! Per stream with `k` shards and `n` consumers, rule 1 fixes the counts: every consumer
//! gets `q = k / n`, and `r = k % n` of them get one more (the *extra*). Once the counts
//! are fixed, keeping each consumer's held shards up to its count is optimal for rule 2,
//! so the only choice left that matters is *who gets the extras*. A consumer already
//! holding more than `q` keeps one more shard in place if it gets an extra; any other
//! consumer gains nothing from it. So, with `c` such consumers, the plans with the fewest
//! moves are exactly those that give the extras to `r` of the `c` (when `c ≥ r`), or to
//! all `c` plus any `r − c` others (when `c < r`). Every such choice moves the same number
//! of shards, which leaves rule 3 free to pick among them.
//!
//! Rule 3 couples the streams. Each member's total is a fixed part (its `q`s and the
//! extras it must get) plus the open extras it is given. Whether all totals can lie in
//! `[floor, ceiling]` is a flow problem (streams hand out their open extras, one per
//! member at most, members take between `floor` and `ceiling` minus their fixed part),
//! solved by a small max-flow with lower bounds (the private `flow` module). The possible total vectors
//! are the integer points of a sum of uniform-matroid base polytopes — an M-convex set —
//! which has a least majorized element (A. Tamir, "Least majorized elements and
//! generalized polymatroids", Math. of OR 20(3), 1995): one plan both has the lowest
//! possible ceiling and, under it, the highest possible floor. So two binary searches
//! find the smallest spread exactly: the lowest feasible ceiling, then the highest
//! feasible floor under it. Each search is over a range no wider than the number of
//! streams, so the whole costs a few flows on a graph of (streams × consumers) edges.
//!
//! Finally each stream is laid out: every consumer keeps its held shards up to its count
//! (lowest shard ids first), and the rest — shards given up, unheld shards, shards whose
//! holder is not a member or no longer consumes the stream — go in shard id order to the
//! consumers short of their count, in client id order. Cost: O(S log S) for S shards plus
//! the flows, well under a millisecond per thousand shards.

mod flow;
pub mod limits;
pub mod load;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::shards::ShardInfo;
use flow::Network;

/// Input of the assignment: the alive members and the streams each consumes, and per
/// stream its eligible shards with their current holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignInput {
    /// Client id → the streams that member consumes.
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// Stream → eligible shard id → client id of its current live holder, if any. A holder
    /// that is not in `members`, or does not consume that stream, counts as no holder.
    pub shards: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl AssignInput {
    /// The current holders as an [`Assignment`], holders that are not members included:
    /// the `before` to compare a plan with in [`moves`].
    pub fn held(&self) -> Assignment {
        let mut held = Assignment::new();
        for (stream, shards) in &self.shards {
            for (shard, holder) in shards {
                if let Some(holder) = holder {
                    held.entry(holder.clone())
                        .or_default()
                        .entry(stream.clone())
                        .or_default()
                        .insert(shard.clone());
                }
            }
        }
        held
    }
}

/// Client id → stream → shard ids. In a plan from [`assign`] every member of the input
/// appears, with only the streams in which it gets at least one shard.
pub type Assignment = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Plans which member holds which shard: balanced per stream, then sticky, then even in
/// totals, then ordered by ids (see the [module documentation](self) for the rules and
/// the algorithm).
///
/// # Examples
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use kinesumer::group::assign::{assign, moves, AssignInput};
///
/// let consumes = |streams: &[&str]| streams.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
/// let input = AssignInput {
///     members: BTreeMap::from([
///         ("a".to_string(), consumes(&["orders"])),
///         ("b".to_string(), consumes(&["orders"])),
///     ]),
///     // "a" holds all three shards; "b" has just joined.
///     shards: BTreeMap::from([(
///         "orders".to_string(),
///         ["s0", "s1", "s2"].iter().map(|s| (s.to_string(), Some("a".to_string()))).collect(),
///     )]),
/// };
/// let plan = assign(&input);
/// // "a" keeps two (it already holds more than its share, so it keeps the extra), "b" gets one.
/// assert_eq!(plan["a"]["orders"].len(), 2);
/// assert_eq!(plan["b"]["orders"].len(), 1);
/// assert_eq!(moves(&input.held(), &plan), 1);
/// ```
pub fn assign(input: &AssignInput) -> Assignment {
    let members: Vec<&str> = input.members.keys().map(String::as_str).collect();
    let streams: Vec<StreamPlan<'_>> = input
        .shards
        .iter()
        .filter_map(|(stream, shards)| StreamPlan::new(input, &members, stream, shards))
        .collect();
    let extras = even_extras(&streams, members.len());

    let mut plan: Assignment = members
        .iter()
        .map(|&member| (member.to_owned(), BTreeMap::new()))
        .collect();
    for (stream, chosen) in streams.iter().zip(&extras) {
        for (&member, shards) in stream.consumers.iter().zip(stream.lay_out(chosen)) {
            if !shards.is_empty() {
                let streams = plan.entry(members[member].to_owned()).or_default();
                streams.insert(
                    stream.name.to_owned(),
                    shards.into_iter().map(str::to_owned).collect(),
                );
            }
        }
    }
    plan
}

/// The shards that may be planned (DESIGN §4): listed, not finished, and whose parent and
/// adjacent parent are each finished or no longer listed. So a child is read only after
/// every record of its parents, and records of one partition key stay in order across
/// splits and merges.
///
/// `shards` is the stream's shard list; `finished` holds the ids whose lease is
/// `shard_end`.
pub fn eligible(shards: &[ShardInfo], finished: &BTreeSet<String>) -> BTreeSet<String> {
    let listed: HashSet<&str> = shards.iter().map(|shard| shard.shard_id.as_str()).collect();
    let done = |id: &String| finished.contains(id) || !listed.contains(id.as_str());
    shards
        .iter()
        .filter(|shard| !finished.contains(&shard.shard_id))
        .filter(|shard| {
            [&shard.parent, &shard.adjacent_parent]
                .into_iter()
                .flatten()
                .all(done)
        })
        .map(|shard| shard.shard_id.clone())
        .collect()
}

/// The number of shard moves from `before` to `after`: the shards that `after` gives to
/// a holder other than their holder in `before` (including shards `before` leaves
/// unheld). Each one is a lease take. A shard `after` leaves to no one does not count.
pub fn moves(before: &Assignment, after: &Assignment) -> usize {
    let before = holders(before);
    holders(after)
        .into_iter()
        .filter(|(shard, holder)| before.get(shard) != Some(holder))
        .count()
}

/// (stream, shard) → holder.
fn holders(assignment: &Assignment) -> HashMap<(&str, &str), &str> {
    let mut holders = HashMap::new();
    for (client, streams) in assignment {
        for (stream, shards) in streams {
            for shard in shards {
                holders.insert((stream.as_str(), shard.as_str()), client.as_str());
            }
        }
    }
    holders
}

/// One consumed stream, with the counts that rules 1 and 2 leave.
#[derive(Debug)]
struct StreamPlan<'a> {
    name: &'a str,
    /// The consuming members (indices into the sorted client ids), ascending.
    consumers: Vec<usize>,
    /// Per consumer, the shards it holds now, ascending.
    held: Vec<Vec<&'a str>>,
    /// Shards with no valid holder, ascending.
    unheld: Vec<&'a str>,
    /// Every consumer gets `base` shards, or `base + 1` with an extra (rule 1).
    base: usize,
    /// Consumers (positions in `consumers`) that get an extra in every plan with the
    /// fewest moves (rule 2).
    forced: Vec<usize>,
    /// Consumers among which `open_extras` more extras go; any choice moves as few
    /// shards, so rule 3 picks.
    open: Vec<usize>,
    open_extras: usize,
}

impl<'a> StreamPlan<'a> {
    /// `None` for a stream no member consumes: its shards go to no one.
    fn new(
        input: &AssignInput,
        members: &[&str],
        name: &'a str,
        shards: &'a BTreeMap<String, Option<String>>,
    ) -> Option<Self> {
        let consumers: Vec<usize> = input
            .members
            .values()
            .enumerate()
            .filter(|(_, streams)| streams.contains(name))
            .map(|(member, _)| member)
            .collect();
        if consumers.is_empty() {
            return None;
        }
        let mut held = vec![Vec::new(); consumers.len()];
        let mut unheld = Vec::new();
        for (shard, holder) in shards {
            let position = holder
                .as_deref()
                .and_then(|holder| members.binary_search(&holder).ok())
                .and_then(|member| consumers.binary_search(&member).ok());
            match position {
                Some(position) => held[position].push(shard.as_str()),
                None => unheld.push(shard.as_str()),
            }
        }

        let base = shards.len() / consumers.len();
        let extras = shards.len() % consumers.len();
        // An extra keeps one more shard in place exactly when it goes to a consumer that
        // holds more than `base` now: give extras to as many of those as possible.
        let (over, rest): (Vec<usize>, Vec<usize>) =
            (0..consumers.len()).partition(|&position| held[position].len() > base);
        let (mut forced, mut open, mut open_extras) = if over.len() >= extras {
            (Vec::new(), over, extras)
        } else {
            let open_extras = extras - over.len();
            (over, rest, open_extras)
        };
        if open_extras == open.len() {
            forced.append(&mut open);
            open_extras = 0;
        }
        if open_extras == 0 {
            open.clear();
        }
        Some(Self {
            name,
            consumers,
            held,
            unheld,
            base,
            forced,
            open,
            open_extras,
        })
    }

    /// The shards of each consumer, given the `chosen` open consumers that get an extra.
    fn lay_out(&self, chosen: &[usize]) -> Vec<Vec<&'a str>> {
        let mut counts = vec![self.base; self.consumers.len()];
        for &position in self.forced.iter().chain(chosen) {
            counts[position] += 1;
        }
        let mut pool = self.unheld.clone();
        let mut plan: Vec<Vec<&str>> = self
            .held
            .iter()
            .zip(&counts)
            .map(|(held, &count)| {
                let (keep, give_up) = held.split_at(held.len().min(count));
                pool.extend_from_slice(give_up);
                keep.to_vec()
            })
            .collect();
        pool.sort_unstable();
        let mut pool = pool.into_iter();
        for (shards, &count) in plan.iter_mut().zip(&counts) {
            shards.extend(pool.by_ref().take(count - shards.len()));
        }
        plan
    }
}

/// Chooses, per stream, the open consumers that get an extra so that the spread of the
/// members' totals is the smallest possible (rule 3). `members` is the number of members.
fn even_extras(streams: &[StreamPlan<'_>], members: usize) -> Vec<Vec<usize>> {
    // With no bounds, any choice will do: the first open consumers of each stream.
    let unbounded: Vec<Vec<usize>> = streams
        .iter()
        .map(|stream| stream.open[..stream.open_extras].to_vec())
        .collect();
    if members == 0 || streams.iter().all(|stream| stream.open_extras == 0) {
        return unbounded;
    }
    // Every member's total is `fixed` plus between 0 and `open` extras.
    let mut fixed = vec![0; members];
    let mut open = vec![0; members];
    for stream in streams {
        for &member in &stream.consumers {
            fixed[member] += stream.base;
        }
        for &position in &stream.forced {
            fixed[stream.consumers[position]] += 1;
        }
        for &position in &stream.open {
            open[stream.consumers[position]] += 1;
        }
    }
    let most = || fixed.iter().zip(&open).map(|(fixed, open)| fixed + open);
    let lowest_floor = fixed.iter().copied().min().unwrap_or(0);
    let highest_floor = most().min().unwrap_or(0);
    let lowest_ceiling = fixed.iter().copied().max().unwrap_or(0);
    let highest_ceiling = most().max().unwrap_or(0);

    // The lowest ceiling, then the highest floor under it: by Tamir's theorem (module
    // documentation) one plan reaches both, so this is the smallest spread.
    let (ceiling, any_floor) =
        first_feasible(lowest_ceiling, highest_ceiling, unbounded, |ceiling| {
            solve_extras(streams, &fixed, lowest_floor, ceiling)
        });
    let (_, extras) = first_feasible(0, highest_floor - lowest_floor, any_floor, |below| {
        solve_extras(streams, &fixed, highest_floor - below, ceiling)
    });
    extras
}

/// The smallest `x` in `low..=high` for which `solve` finds a solution, with that
/// solution; `at_high` is a solution for `high`. `solve` must be monotone: a solution for
/// `x` implies one for every larger `x`.
fn first_feasible<T>(
    mut low: usize,
    mut high: usize,
    mut at_high: T,
    solve: impl Fn(usize) -> Option<T>,
) -> (usize, T) {
    while low < high {
        let middle = low + (high - low) / 2;
        match solve(middle) {
            Some(solution) => (high, at_high) = (middle, solution),
            None => low = middle + 1,
        }
    }
    (high, at_high)
}

/// Gives out every stream's open extras so that each member's total lies in
/// `[floor, ceiling]`, or `None` when that is impossible.
///
/// A flow with lower bounds: source → stream carries exactly its open extras, stream →
/// member at most 1, member → sink between `floor` and `ceiling` minus the member's fixed
/// part. The lower bounds become demands on a super source and super sink, with sink →
/// source closing the circulation; all bounds hold exactly when the maximum flow from the
/// super source saturates them.
fn solve_extras(
    streams: &[StreamPlan<'_>],
    fixed: &[usize],
    floor: usize,
    ceiling: usize,
) -> Option<Vec<Vec<usize>>> {
    const SOURCE: usize = 0;
    const SINK: usize = 1;
    const SUPER_SOURCE: usize = 2;
    const SUPER_SINK: usize = 3;
    let stream_node = |stream: usize| 4 + stream;
    let member_node = |member: usize| 4 + streams.len() + member;
    let mut network = Network::new(4 + streams.len() + fixed.len());

    let extras: usize = streams.iter().map(|stream| stream.open_extras).sum();
    let mut demand = 0;
    for (member, &fixed) in fixed.iter().enumerate() {
        let low = floor.saturating_sub(fixed);
        let spare = ceiling.checked_sub(fixed)?.checked_sub(low)?;
        network.add_edge(member_node(member), SINK, spare);
        network.add_edge(member_node(member), SUPER_SINK, low);
        demand += low;
    }
    network.add_edge(SUPER_SOURCE, SINK, demand);
    network.add_edge(SINK, SOURCE, extras);
    network.add_edge(SOURCE, SUPER_SINK, extras);
    let edges: Vec<Vec<(usize, usize)>> = streams
        .iter()
        .enumerate()
        .map(|(index, stream)| {
            network.add_edge(SUPER_SOURCE, stream_node(index), stream.open_extras);
            stream
                .open
                .iter()
                .map(|&position| {
                    let member = member_node(stream.consumers[position]);
                    (position, network.add_edge(stream_node(index), member, 1))
                })
                .collect()
        })
        .collect();

    (network.max_flow(SUPER_SOURCE, SUPER_SINK) == extras + demand).then(|| {
        edges
            .iter()
            .map(|edges| {
                edges
                    .iter()
                    .filter(|&&(_, edge)| network.flow(edge) == 1)
                    .map(|&(position, _)| position)
                    .collect()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;

    use super::*;

    const STREAMS: [&str; 3] = ["s0", "s1", "s2"];

    /// Client `i`; ids past the members of an input are holders that are not members.
    fn client(i: usize) -> String {
        format!("m{i}")
    }

    /// An input with `subscriptions[i]` the streams (indices) of member `i`, and per shard
    /// its stream and the client index of its holder.
    fn input(subscriptions: &[BTreeSet<usize>], shards: &[(usize, Option<usize>)]) -> AssignInput {
        let mut input = AssignInput::default();
        for (i, streams) in subscriptions.iter().enumerate() {
            let streams = streams.iter().map(|&s| STREAMS[s].to_owned()).collect();
            input.members.insert(client(i), streams);
        }
        for (i, &(stream, holder)) in shards.iter().enumerate() {
            let stream = input.shards.entry(STREAMS[stream].to_owned()).or_default();
            stream.insert(format!("shard-{i:02}"), holder.map(client));
        }
        input
    }

    /// Random inputs: up to `members` members (plus two holders that are not members),
    /// `streams` streams and `shards` shards.
    fn inputs(members: usize, streams: usize, shards: usize) -> impl Strategy<Value = AssignInput> {
        (
            vec(btree_set(0..streams, 0..=streams), 0..=members),
            vec(
                (0..streams, proptest::option::of(0..members + 2)),
                0..=shards,
            ),
        )
            .prop_map(|(subscriptions, shards)| input(&subscriptions, &shards))
    }

    /// The same members and shards, with `plan` as the current holders.
    fn held_as(input: &AssignInput, plan: &Assignment) -> AssignInput {
        let holders = holders(plan);
        let mut next = input.clone();
        for (stream, shards) in &mut next.shards {
            for (shard, holder) in shards {
                *holder = holders
                    .get(&(stream.as_str(), shard.as_str()))
                    .map(|&h| h.to_owned());
            }
        }
        next
    }

    /// Rule 1: every consumed shard goes to exactly one consumer of its stream, per-stream
    /// counts differ by at most one, unconsumed streams go to no one, every member appears.
    fn assert_balanced(input: &AssignInput, plan: &Assignment) {
        assert!(
            input.members.keys().eq(plan.keys()),
            "every member appears, no one else"
        );
        let holders = holders(plan);
        for (stream, shards) in &input.shards {
            let consumers: Vec<&String> = input
                .members
                .iter()
                .filter(|(_, s)| s.contains(stream))
                .map(|(m, _)| m)
                .collect();
            for shard in shards.keys() {
                match holders.get(&(stream.as_str(), shard.as_str())) {
                    Some(holder) => assert!(consumers.iter().any(|c| c == holder)),
                    None => assert!(consumers.is_empty(), "{stream}/{shard} unassigned"),
                }
            }
        }
        assert!(
            is_balanced(input, plan),
            "per-stream counts differ by more than one"
        );
        let consumed = input
            .shards
            .iter()
            .filter(|(stream, _)| input.members.values().any(|s| s.contains(*stream)));
        let planned = plan.values().flat_map(BTreeMap::values).map(BTreeSet::len);
        assert_eq!(
            planned.sum::<usize>(),
            consumed.map(|(_, shards)| shards.len()).sum::<usize>(),
            "each consumed shard planned once, nothing else"
        );
    }

    /// Rule 3's measure: max − min of the members' totals.
    fn spread(plan: &Assignment) -> usize {
        let totals: Vec<usize> = plan
            .values()
            .map(|streams| streams.values().map(BTreeSet::len).sum())
            .collect();
        totals
            .iter()
            .max()
            .map_or(0, |max| max - totals.iter().min().unwrap_or(max))
    }

    /// The best (moves, spread) over every balanced plan, by enumerating them all.
    fn brute_force(input: &AssignInput) -> (usize, usize) {
        let shards: Vec<(&String, &String, Vec<&String>)> = input
            .shards
            .iter()
            .flat_map(|(stream, shards)| shards.keys().map(move |shard| (stream, shard)))
            .map(|(stream, shard)| {
                let consumers = input.members.iter().filter(|(_, s)| s.contains(stream));
                (stream, shard, consumers.map(|(m, _)| m).collect())
            })
            .collect();
        let before = input.held();
        let mut best = (usize::MAX, usize::MAX);
        let mut choice = vec![0; shards.len()];
        loop {
            let mut plan: Assignment = input
                .members
                .keys()
                .map(|m| (m.clone(), BTreeMap::new()))
                .collect();
            for ((stream, shard, consumers), &c) in shards.iter().zip(&choice) {
                if let Some(&member) = consumers.get(c) {
                    let streams = plan.get_mut(member).expect("a member");
                    streams
                        .entry((*stream).clone())
                        .or_default()
                        .insert((*shard).clone());
                }
            }
            if is_balanced(input, &plan) {
                best = best.min((moves(&before, &plan), spread(&plan)));
            }
            // Next choice, like an odometer; done when every digit wraps around.
            let mut wrapped = true;
            for ((_, _, consumers), c) in shards.iter().zip(&mut choice) {
                *c += 1;
                if *c < consumers.len() {
                    wrapped = false;
                    break;
                }
                *c = 0;
            }
            if wrapped {
                return best;
            }
        }
    }

    /// Rule 1's counts: those of any two consumers of a stream differ by at most one.
    fn is_balanced(input: &AssignInput, plan: &Assignment) -> bool {
        input.members.iter().all(|(member, streams)| {
            streams.iter().all(|stream| {
                let count = |m: &String| plan[m].get(stream).map_or(0, BTreeSet::len);
                input
                    .members
                    .iter()
                    .filter(|(_, s)| s.contains(stream))
                    .all(|(other, _)| count(member).abs_diff(count(other)) <= 1)
            })
        })
    }

    proptest! {
        #[test]
        fn is_optimal_against_brute_force(input in inputs(4, 2, 7)) {
            let plan = assign(&input);
            assert_balanced(&input, &plan);
            prop_assert_eq!((moves(&input.held(), &plan), spread(&plan)), brute_force(&input));
        }

        #[test]
        fn is_deterministic(input in inputs(6, 3, 30)) {
            // Rebuild the input inserting everything in reverse order.
            let mut reversed = AssignInput::default();
            for (member, streams) in input.members.iter().rev() {
                reversed.members.insert(member.clone(), streams.iter().rev().cloned().collect());
            }
            for (stream, shards) in input.shards.iter().rev() {
                let shards = shards.iter().rev().map(|(s, h)| (s.clone(), h.clone()));
                reversed.shards.insert(stream.clone(), shards.collect());
            }
            prop_assert_eq!(assign(&input), assign(&reversed));
            prop_assert_eq!(assign(&input), assign(&input));
        }

        #[test]
        fn is_stable_on_its_own_plan(input in inputs(8, 3, 40)) {
            let plan = assign(&input);
            let again = assign(&held_as(&input, &plan));
            prop_assert_eq!(moves(&plan, &again), 0);
            prop_assert_eq!(again, plan);
        }

        #[test]
        fn a_leaver_moves_only_its_own_shards(input in inputs(8, 3, 40), leaver in 0..8usize) {
            let plan = assign(&input);
            let leaver = client(leaver);
            let mut next = held_as(&input, &plan);
            next.members.remove(&leaver);
            let replanned = assign(&next);
            let after = holders(&replanned);
            for (shard, holder) in holders(&plan) {
                if holder != leaver {
                    prop_assert_eq!(after.get(&shard), Some(&holder));
                }
            }
        }

        #[test]
        fn a_joiner_moves_little(
            input in inputs(8, 3, 40),
            everyone_consumes_all in any::<bool>(),
            joiner_streams in btree_set(0..3usize, 0..=3),
        ) {
            let mut input = input;
            if everyone_consumes_all {
                let all: BTreeSet<String> = input.shards.keys().cloned().collect();
                input.members.values_mut().for_each(|streams| *streams = all.clone());
            }
            let plan = assign(&input);
            let mut next = held_as(&input, &plan);
            let joiner_streams: BTreeSet<String> = match everyone_consumes_all {
                true => input.shards.keys().cloned().collect(),
                false => joiner_streams.iter().map(|&s| STREAMS[s].to_owned()).collect(),
            };
            next.members.insert("joiner".to_owned(), joiner_streams.clone());
            let moved = moves(&plan, &assign(&next));

            // Per stream the joiner consumes, at most its new share moves; nothing else.
            let bound: usize = joiner_streams.iter().filter_map(|stream| {
                let shards = input.shards.get(stream)?.len();
                let consumers = input.members.values().filter(|s| s.contains(stream)).count();
                Some(shards.div_ceil(consumers + 1))
            }).sum();
            prop_assert!(moved <= bound, "{} > {}", moved, bound);
            if everyone_consumes_all {
                let shards: usize = input.shards.values().map(BTreeMap::len).sum();
                let bound = shards.div_ceil(input.members.len() + 1) + input.shards.len();
                prop_assert!(moved <= bound, "{} > {}", moved, bound);
            }
        }
    }

    fn shard(id: &str, parent: Option<&str>, adjacent_parent: Option<&str>) -> ShardInfo {
        ShardInfo {
            shard_id: id.to_owned(),
            parent: parent.map(str::to_owned),
            adjacent_parent: adjacent_parent.map(str::to_owned),
            closed: false,
            hash_range: None,
            ending_sequence: None,
        }
    }

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    /// `a` splits into `b` and `c`, which merge back into `d`.
    fn split_then_merge() -> Vec<ShardInfo> {
        vec![
            shard("a", None, None),
            shard("b", Some("a"), None),
            shard("c", Some("a"), None),
            shard("d", Some("b"), Some("c")),
        ]
    }

    #[test]
    fn children_wait_for_every_parent() {
        let shards = split_then_merge();
        assert_eq!(eligible(&shards, &ids(&[])), ids(&["a"]));
        assert_eq!(eligible(&shards, &ids(&["a"])), ids(&["b", "c"]));
        // A merge child waits for its adjacent parent too, and for its parent.
        assert_eq!(eligible(&shards, &ids(&["a", "b"])), ids(&["c"]));
        assert_eq!(eligible(&shards, &ids(&["a", "c"])), ids(&["b"]));
        assert_eq!(eligible(&shards, &ids(&["a", "b", "c"])), ids(&["d"]));
        assert_eq!(eligible(&shards, &ids(&["a", "b", "c", "d"])), ids(&[]));
    }

    #[test]
    fn parents_no_longer_listed_count_as_finished() {
        // "a" expired past retention: its children are eligible at once.
        let shards = &split_then_merge()[1..];
        assert_eq!(eligible(shards, &ids(&[])), ids(&["b", "c"]));
        // Only the adjacent parent is gone: the merge child still waits for "b".
        let without_c = [shard("b", None, None), shard("d", Some("b"), Some("c"))];
        assert_eq!(eligible(&without_c, &ids(&[])), ids(&["b"]));
        assert_eq!(eligible(&without_c, &ids(&["b"])), ids(&["d"]));
    }

    /// Random lineage: shard `i` has up to two parents among the shards before it, is
    /// listed or not (expired), and starts finished or not.
    fn lineages() -> impl Strategy<Value = (Vec<ShardInfo>, BTreeSet<String>)> {
        use prop::sample::Index;
        let spec = (any::<Index>(), any::<Index>(), 0..3usize, any::<bool>());
        (vec(spec, 1..14), vec(any::<Index>(), 0..8)).prop_map(|(specs, finished)| {
            let mut listed = Vec::new();
            for (i, &(parent, adjacent, parents, is_listed)) in specs.iter().enumerate() {
                // Shard 0 has no parent; a merge's two parents differ.
                let parent = (i > 0 && parents > 0).then(|| parent.index(i));
                let adjacent = parent.filter(|_| parents == 2).map(|_| adjacent.index(i));
                let adjacent = adjacent.filter(|&a| Some(a) != parent);
                let name = |n: Option<usize>| n.map(|n| n.to_string());
                if is_listed {
                    listed.push(shard(
                        &i.to_string(),
                        name(parent).as_deref(),
                        name(adjacent).as_deref(),
                    ));
                }
            }
            let finished = finished
                .iter()
                .map(|f| f.index(specs.len()).to_string())
                .collect();
            (listed, finished)
        })
    }

    proptest! {
        #[test]
        fn eligible_follows_the_lineage((shards, finished) in lineages()) {
            let listed: BTreeSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
            let parents = |s: &ShardInfo| [s.parent.clone(), s.adjacent_parent.clone()].into_iter().flatten();
            // Finish eligible shards one at a time, as readers reach their ends.
            let mut finished = finished;
            loop {
                let ready = eligible(&shards, &finished);
                for shard in shards.iter().filter(|s| ready.contains(&s.shard_id)) {
                    prop_assert!(!finished.contains(&shard.shard_id), "finished shards never eligible");
                    for parent in parents(shard) {
                        prop_assert!(finished.contains(&parent) || !listed.contains(&parent));
                    }
                }
                // Complete: whatever is unfinished with every parent done is eligible.
                for shard in shards.iter().filter(|s| !finished.contains(&s.shard_id)) {
                    let waiting = parents(shard).any(|p| listed.contains(&p) && !finished.contains(&p));
                    prop_assert_eq!(ready.contains(&shard.shard_id), !waiting);
                }
                match ready.into_iter().next() {
                    Some(next) => finished.insert(next),
                    None => break,
                };
            }
            // Progress: every listed shard was read in the end.
            prop_assert!(listed.is_subset(&finished));
        }
    }

    #[test]
    fn a_thousand_members_and_ten_thousand_shards() {
        let subscriptions: Vec<BTreeSet<usize>> = (0..1000)
            .map(|i| (0..3).filter(|s| (i + s) % 4 != 0).collect())
            .collect();
        // Holders spread unevenly, some of them not members.
        let shards: Vec<(usize, Option<usize>)> = (0..10_000)
            .map(|i| (i % 3, (i % 5 != 0).then_some(i * 7 % 1100)))
            .collect();
        let input = input(&subscriptions, &shards);
        let plan = assign(&input);
        assert_balanced(&input, &plan);
    }
}
