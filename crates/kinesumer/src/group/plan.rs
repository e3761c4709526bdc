//! The leader's planning (DESIGN §3 steps 8–9) as pure functions: from what the leader
//! observed — the members and what it has seen of them, each stream's listing and
//! leases, the instant of the members read — to every member's plan, and a separate
//! diff against the plans written in this term.
//!
//! ```text
//!  Observed ──judge owners──▶ candidates (eligible shards, holder, start) ──assign──▶
//!     assignment ──release lists──▶ Plans ──changed(written)──▶ the plans to write
//! ```
//!
//! The leader ([`super::leader`]) does the I/O: it reads, lists, and writes what
//! [`Plans::changed`] returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::assign::load::{self, Balance, LoadInput, LoadMember, LoadShard, MoveKind};
use super::assign::{self, AssignInput, Assignment};
use crate::config::InitialPosition;
use crate::event::MoveReason;
use crate::shards::ShardInfo;
use crate::store::{LeaseItem, Limits, Owner, PlanItem, PlanStart, PlannedShard, ShardRef};

/// What the leader has observed of one member.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) incarnation: Option<String>,
    pub(super) heartbeat: u64,
    /// When (fencing clock) the (incarnation, heartbeat) pair last changed, as seen.
    pub(super) changed_at: Duration,
    /// When the current incarnation was first seen.
    pub(super) token_since: Duration,
    pub(super) streams: BTreeSet<String>,
    /// Streams this member stopped consuming, and when that was first seen.
    pub(super) dropped: BTreeMap<String, Duration>,
    /// Its capacity, as its last load report said (1 without one).
    pub(super) capacity: f64,
    /// The most it takes, as its last load report said (none without one).
    pub(super) limits: Limits,
}

/// Whether member `client_id` is alive: its counter moved within the failover. The
/// incarnation that held the lock before this term (`deposed`) is not, whatever was seen
/// of it: its lock went unrenewed for the failover, so it has fenced itself (DESIGN "a
/// successor knows the old leader") — judging it afresh would leave the shards planned
/// to it unread for another failover.
pub(super) fn alive(
    deposed: Option<&Owner>,
    client_id: &str,
    m: &Seen,
    now: Duration,
    failover: Duration,
) -> bool {
    let deposed = deposed.is_some_and(|d| {
        d.client_id == client_id && m.incarnation.as_deref() == Some(d.token.as_str())
    });
    !deposed && m.incarnation.is_some() && now.saturating_sub(m.changed_at) < failover
}

/// How the leader judges a lease owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Judged {
    /// A live member's current incarnation that consumes the stream: it holds the shard.
    Holder(String),
    /// Gone: the shard may be taken from it.
    Gone,
    /// Not a live holder, but not judged gone yet: the shard is planned elsewhere and
    /// the taker waits.
    Pending,
}

/// Everything one tick's plans are made from.
#[derive(Debug)]
pub(super) struct Observed<'a> {
    /// The leader's term.
    pub(super) term: u64,
    /// When (fencing clock) this term began.
    pub(super) since: Duration,
    /// The incarnation that held the lock before this term: gone at once.
    pub(super) deposed: Option<&'a Owner>,
    pub(super) members: &'a BTreeMap<String, Seen>,
    /// Each stream's shards, in stream order.
    pub(super) listings: Vec<(&'a str, &'a [ShardInfo])>,
    /// Stream → shard id → lease.
    pub(super) leases: &'a BTreeMap<String, BTreeMap<String, LeaseItem>>,
    /// When (fencing clock) the members were read: liveness is judged at that instant.
    pub(super) now: Duration,
    pub(super) failover: Duration,
    pub(super) initial: InitialPosition,
    /// Balancing by load: the shards' loads; `None` balances by count.
    pub(super) load: Option<LoadView<'a>>,
}

/// What balancing by load plans from, besides the members' capacities.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadView<'a> {
    pub(super) balance: Balance,
    /// Stream → shard id → load in shard units, as last reported by a holder.
    pub(super) loads: &'a BTreeMap<String, BTreeMap<String, f64>>,
    /// Stream → the shards moved recently, which stay where they are.
    pub(super) cooling: &'a BTreeMap<String, BTreeSet<String>>,
}

impl Observed<'_> {
    /// DESIGN §3 step 8, "gone".
    pub(super) fn judge(&self, owner: &Owner, stream: &str) -> Judged {
        if self.deposed == Some(owner) {
            return Judged::Gone;
        }
        let waited = |since: Duration| self.now.saturating_sub(since) >= self.failover;
        let Some(m) = self.members.get(&owner.client_id) else {
            return if waited(self.since) {
                Judged::Gone
            } else {
                Judged::Pending
            };
        };
        if m.incarnation.as_deref() != Some(owner.token.as_str()) {
            return if waited(m.token_since) {
                Judged::Gone
            } else {
                Judged::Pending
            };
        }
        if !alive(self.deposed, &owner.client_id, m, self.now, self.failover) {
            return Judged::Gone;
        }
        if !m.streams.contains(stream) {
            return match m.dropped.get(stream) {
                Some(&since) if !waited(since) => Judged::Pending,
                _ => Judged::Gone,
            };
        }
        Judged::Holder(owner.client_id.clone())
    }

    /// The live members and the streams each consumes.
    fn alive(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.members
            .iter()
            .filter(|(id, m)| alive(self.deposed, id, m, self.now, self.failover))
            .map(|(id, m)| (id.clone(), m.streams.clone()))
            .collect()
    }
}

/// Where a shard without a checkpoint starts (DESIGN §4): a child whose parent is listed
/// or still leased starts at TRIM_HORIZON, or the records its parents' readers never
/// reached would be skipped; any other shard at the configured position.
fn start(
    info: &ShardInfo,
    listed: &HashSet<&str>,
    leases: &BTreeMap<String, LeaseItem>,
    initial: InitialPosition,
) -> PlanStart {
    let has_parent = [&info.parent, &info.adjacent_parent]
        .into_iter()
        .flatten()
        .any(|p| listed.contains(p.as_str()) || leases.contains_key(p));
    if has_parent {
        return PlanStart::TrimHorizon;
    }
    match initial {
        InitialPosition::Latest => PlanStart::Latest,
        InitialPosition::TrimHorizon => PlanStart::TrimHorizon,
        InitialPosition::AtTimestamp(t) => PlanStart::AtTimestamp(t),
    }
}

/// The shards to assign, judged: the input of [`assign::assign`], each eligible shard's
/// plan entry, and the live holders.
struct Candidates<'a> {
    input: AssignInput,
    /// Keys borrow from the listings: at 10,000 shards a tick must not allocate per
    /// lookup (the scale benchmark measures the planning).
    entries: HashMap<(&'a str, &'a str), PlannedShard>,
    /// (stream, shard, client id) of each shard a live member holds.
    holders: Vec<(&'a str, &'a str, String)>,
    /// Why each shard would move if planned away from its preferred holder.
    priors: HashMap<(&'a str, &'a str), Prior>,
}

/// What a shard was before this plan, for the reason of a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prior {
    /// A live member holds it.
    Held,
    /// Its owner was judged gone.
    Gone,
    /// Its owner is not a live holder but not gone yet (it left the stream, restarted).
    Pending,
    /// Leased before, no owner now: released.
    Released,
    /// Never leased: a child of a split or merge, or not.
    Unleased { child: bool },
}

impl Prior {
    /// The reason of a move away from what the shard was; `kind`, for a held shard
    /// moved by the load balancing or off a member over its limit.
    fn reason(self, kind: Option<MoveKind>) -> MoveReason {
        match self {
            Prior::Held => match kind {
                Some(MoveKind::Load | MoveKind::Alone) => MoveReason::Load,
                Some(MoveKind::Limit) => MoveReason::Limit,
                Some(MoveKind::Count) | None => MoveReason::Join,
            },
            Prior::Gone => MoveReason::Crash,
            Prior::Pending | Prior::Released => MoveReason::Leave,
            Prior::Unleased { child: true } => MoveReason::Reshard,
            Prior::Unleased { child: false } => MoveReason::New,
        }
    }
}

fn candidates<'a>(obs: &Observed<'a>) -> Candidates<'a> {
    let alive = obs.alive();
    let mut input = AssignInput {
        members: alive.clone(),
        shards: BTreeMap::new(),
    };
    let mut entries = HashMap::new();
    let mut holders = Vec::new();
    let mut priors = HashMap::new();
    let no_leases = BTreeMap::new();
    for &(stream, listing) in &obs.listings {
        let stream_leases = obs.leases.get(stream).unwrap_or(&no_leases);
        let finished: BTreeSet<String> = stream_leases
            .values()
            .filter(|l| l.shard_end)
            .map(|l| l.shard_id.clone())
            .collect();
        let listed: HashSet<&str> = listing.iter().map(|s| s.shard_id.as_str()).collect();
        let by_id: HashMap<&str, &ShardInfo> =
            listing.iter().map(|s| (s.shard_id.as_str(), s)).collect();
        let shards = input.shards.entry(stream.to_owned()).or_default();
        // An owner is judged once per stream: the judgement depends on whether it still
        // consumes this stream.
        let mut judged_owners: HashMap<&Owner, Judged> = HashMap::new();
        for eligible in assign::eligible(listing, &finished) {
            let info = by_id[eligible.as_str()];
            let shard_id = info.shard_id.as_str();
            let lease = stream_leases.get(shard_id);
            let owner = lease.and_then(|l| l.owner.as_ref());
            let judged = owner.map(|o| {
                judged_owners
                    .entry(o)
                    .or_insert_with(|| obs.judge(o, stream))
                    .clone()
            });
            let holder = match &judged {
                Some(Judged::Holder(id)) => Some(id.clone()),
                _ => None,
            };
            if let Some(id) = &holder {
                holders.push((stream, shard_id, id.clone()));
            }
            let prior = match (&judged, lease) {
                (Some(Judged::Holder(_)), _) => Prior::Held,
                (Some(Judged::Gone), _) => Prior::Gone,
                (Some(Judged::Pending), _) => Prior::Pending,
                (None, Some(l)) if l.lease_counter.is_some() => Prior::Released,
                (None, _) => Prior::Unleased {
                    child: info.parent.is_some() || info.adjacent_parent.is_some(),
                },
            };
            priors.insert((stream, shard_id), prior);
            // A member that fenced and rejoined keeps the shards its previous incarnation
            // held (it takes them back at once): sticky across a rejoin.
            let preferred = holder.or_else(|| {
                owner
                    .filter(|o| alive.get(&o.client_id).is_some_and(|s| s.contains(stream)))
                    .map(|o| o.client_id.clone())
            });
            entries.insert(
                (stream, shard_id),
                PlannedShard {
                    shard_id: shard_id.to_owned(),
                    owner: owner.cloned(),
                    lease_counter: lease.and_then(|l| l.lease_counter),
                    owner_gone: judged == Some(Judged::Gone),
                    start: start(info, &listed, stream_leases, obs.initial),
                },
            );
            shards.insert(eligible, preferred);
        }
    }
    Candidates {
        input,
        entries,
        holders,
        priors,
    }
}

/// The count assignment's input with each member's capacity and each shard's load.
fn load_input(input: &AssignInput, obs: &Observed<'_>, view: &LoadView<'_>) -> LoadInput {
    let members = input
        .members
        .iter()
        .map(|(id, streams)| {
            let seen = obs.members.get(id);
            let capacity = seen.map_or(1.0, |m| m.capacity);
            let limits = seen.map(|m| m.limits).unwrap_or_default();
            let streams = streams.clone();
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
    let shards = input
        .shards
        .iter()
        .map(|(stream, shards)| {
            let loads = view.loads.get(stream);
            let cooling = view.cooling.get(stream);
            let shards = shards
                .iter()
                .map(|(id, holder)| {
                    let shard = LoadShard {
                        holder: holder.clone(),
                        load: loads.and_then(|l| l.get(id)).copied().unwrap_or(0.0),
                        cooling: cooling.is_some_and(|c| c.contains(id)),
                    };
                    (id.clone(), shard)
                })
                .collect();
            (stream.clone(), shards)
        })
        .collect();
    LoadInput { members, shards }
}

/// A shard planned onto another member than its preferred holder, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlannedMove {
    pub(super) stream: String,
    pub(super) shard_id: String,
    /// The client id of its lease's owner, if any.
    pub(super) from: Option<String>,
    pub(super) to: String,
    pub(super) reason: MoveReason,
}

/// Every shard `assignment` gives to a member other than its preferred holder.
fn planned_moves(
    candidates: &Candidates<'_>,
    assignment: &Assignment,
    kinds: &BTreeMap<(String, String), MoveKind>,
) -> Vec<PlannedMove> {
    let mut moves = Vec::new();
    for (to, streams) in assignment {
        for (stream, shards) in streams {
            for shard_id in shards {
                let preferred = candidates.input.shards[stream][shard_id].as_ref();
                if preferred == Some(to) {
                    continue;
                }
                let key = (stream.as_str(), shard_id.as_str());
                let kind = kinds.get(&(stream.clone(), shard_id.clone())).copied();
                let from = candidates.entries[&key].owner.as_ref();
                moves.push(PlannedMove {
                    stream: stream.clone(),
                    shard_id: shard_id.clone(),
                    from: from.map(|o| o.client_id.clone()),
                    to: to.clone(),
                    reason: candidates.priors[&key].reason(kind),
                });
            }
        }
    }
    moves
}

/// A live holder whose shard is planned elsewhere (or no longer planned) is told to
/// release it, even if it does not know it holds it (scenario 22).
fn releases(
    holders: &[(&str, &str, String)],
    assignment: &Assignment,
) -> HashMap<String, Vec<ShardRef>> {
    let mut releases: HashMap<String, Vec<ShardRef>> = HashMap::new();
    for (stream, shard_id, holder) in holders {
        let kept = assignment
            .get(holder)
            .and_then(|s| s.get(*stream))
            .is_some_and(|s| s.contains(*shard_id));
        if !kept {
            releases.entry(holder.clone()).or_default().push(ShardRef {
                stream: (*stream).to_owned(),
                shard_id: (*shard_id).to_owned(),
            });
        }
    }
    releases
}

/// Every member's plan of one tick, borrowing from what was observed.
#[derive(Debug)]
pub(super) struct Plans<'a> {
    term: u64,
    members: &'a BTreeMap<String, Seen>,
    entries: HashMap<(&'a str, &'a str), PlannedShard>,
    assignment: Assignment,
    releases: HashMap<String, Vec<ShardRef>>,
    /// The shards planned onto another member than their preferred holder, and why.
    pub(super) moves: Vec<PlannedMove>,
    /// The shards of consumed streams planned to no one: every consumer is at a limit.
    pub(super) unplanned: usize,
}

/// Plans from what was observed: judges the owners, chooses the starts, assigns, and
/// lists the releases.
pub(super) fn plan<'a>(obs: &Observed<'a>) -> Plans<'a> {
    let candidates = candidates(obs);
    let (assignment, kinds) = match &obs.load {
        None => {
            let max_shards = obs
                .members
                .iter()
                .filter_map(|(id, m)| Some((id.clone(), m.limits.max_shards?)))
                .collect();
            let planned = assign::limits::assign_within(&candidates.input, &max_shards);
            (planned, over_limit(&candidates.input, &max_shards))
        }
        Some(view) => {
            let planned =
                load::assign_by_load(&load_input(&candidates.input, obs, view), &view.balance);
            (planned.assignment, planned.moved)
        }
    };
    let moves = planned_moves(&candidates, &assignment, &kinds);
    let releases = releases(&candidates.holders, &assignment);
    let unplanned = unplanned(&candidates.input, &assignment);
    Plans {
        term: obs.term,
        members: obs.members,
        entries: candidates.entries,
        assignment,
        releases,
        moves,
        unplanned,
    }
}

/// By count, the shards of each holder holding more than its `max_shards`: any of them
/// planned elsewhere moves for the limit, not for a join.
fn over_limit(
    input: &AssignInput,
    max_shards: &BTreeMap<String, usize>,
) -> BTreeMap<(String, String), MoveKind> {
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for holder in input.shards.values().flat_map(BTreeMap::values).flatten() {
        *held.entry(holder).or_default() += 1;
    }
    let over = |holder: &String| {
        max_shards
            .get(holder)
            .is_some_and(|&max| held[holder.as_str()] > max)
    };
    let mut kinds = BTreeMap::new();
    for (stream, shards) in &input.shards {
        for (shard_id, holder) in shards {
            if holder.as_ref().is_some_and(over) {
                kinds.insert((stream.clone(), shard_id.clone()), MoveKind::Limit);
            }
        }
    }
    kinds
}

/// How many shards of streams some member consumes `assignment` gives to no one.
fn unplanned(input: &AssignInput, assignment: &Assignment) -> usize {
    let consumed = input
        .shards
        .iter()
        .filter(|(stream, _)| input.members.values().any(|s| s.contains(*stream)))
        .map(|(_, shards)| shards.len());
    let planned = assignment
        .values()
        .flat_map(BTreeMap::values)
        .map(BTreeSet::len);
    consumed.sum::<usize>() - planned.sum::<usize>()
}

impl Plans<'_> {
    /// The plans that differ from `written`, this term's last write of each member's plan
    /// (every plan, when nothing was written). At 10,000 shards building every plan anew
    /// each tick is most of the leader's work: a plan item is built only when it differs.
    pub(super) fn changed(
        &self,
        written: &BTreeMap<String, PlanItem>,
    ) -> BTreeMap<String, PlanItem> {
        let mut plans = BTreeMap::new();
        for (client_id, streams) in &self.assignment {
            let token = self.members[client_id]
                .incarnation
                .as_deref()
                .unwrap_or_default();
            let release = self.releases.get(client_id).map_or(&[][..], Vec::as_slice);
            let streams: Vec<(&String, Vec<&PlannedShard>)> = streams
                .iter()
                .map(|(stream, shards)| {
                    let planned: Vec<&PlannedShard> = shards
                        .iter()
                        .map(|shard| &self.entries[&(stream.as_str(), shard.as_str())])
                        .collect();
                    (stream, planned)
                })
                .filter(|(_, shards)| !shards.is_empty())
                .collect();
            let unchanged = written.get(client_id).is_some_and(|w| {
                w.term == self.term
                    && w.token == token
                    && w.release == release
                    && w.streams.len() == streams.len()
                    && streams.iter().all(|(stream, shards)| {
                        w.streams
                            .get(*stream)
                            .is_some_and(|old| old.iter().eq(shards.iter().copied()))
                    })
            });
            if unchanged {
                continue;
            }
            plans.insert(
                client_id.clone(),
                PlanItem {
                    client_id: client_id.clone(),
                    term: self.term,
                    // Set when written.
                    version: 0,
                    token: token.to_owned(),
                    streams: streams
                        .into_iter()
                        .map(|(stream, shards)| {
                            (stream.clone(), shards.into_iter().cloned().collect())
                        })
                        .collect(),
                    release: release.to_vec(),
                },
            );
        }
        plans
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const STREAMS: [&str; 2] = ["s", "t"];
    const NOW: Duration = Duration::from_secs(10);
    const FAILOVER: Duration = Duration::from_secs(2);

    /// A member: its token (0 or 1), whether it is alive, the streams it consumes.
    type MemberCase = Option<(u8, bool, [bool; 2])>;
    /// A shard: its parent (an earlier shard of its stream), and its lease, if any:
    /// the owner (member index and token; index 3 is no member), counter, `shard_end`.
    type ShardCase = (Option<usize>, Option<(Option<(usize, u8)>, u64, bool)>);

    #[derive(Debug)]
    struct Case {
        members: BTreeMap<String, Seen>,
        listings: BTreeMap<String, Vec<ShardInfo>>,
        leases: BTreeMap<String, BTreeMap<String, LeaseItem>>,
    }

    impl Case {
        fn observed(&self) -> Observed<'_> {
            Observed {
                term: 3,
                since: Duration::ZERO,
                deposed: None,
                members: &self.members,
                listings: self
                    .listings
                    .iter()
                    .map(|(s, l)| (s.as_str(), l.as_slice()))
                    .collect(),
                leases: &self.leases,
                now: NOW,
                failover: FAILOVER,
                initial: InitialPosition::Latest,
                load: None,
            }
        }
    }

    fn case(members: &[MemberCase], shards: &[Vec<ShardCase>]) -> Case {
        let mut seen = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            let Some((token, alive, streams)) = m else {
                continue;
            };
            let streams = STREAMS
                .iter()
                .zip(streams)
                .filter(|(_, on)| **on)
                .map(|(s, _)| s.to_string())
                .collect();
            seen.insert(
                format!("m{i}"),
                Seen {
                    incarnation: Some(format!("t{token}")),
                    heartbeat: 1,
                    changed_at: if *alive { NOW } else { Duration::ZERO },
                    token_since: Duration::ZERO,
                    streams,
                    dropped: BTreeMap::new(),
                    capacity: 1.0,
                    limits: Limits::default(),
                },
            );
        }
        let mut listings = BTreeMap::new();
        let mut leases = BTreeMap::new();
        for (stream, shards) in STREAMS.iter().zip(shards) {
            let mut listed = Vec::new();
            let mut held = BTreeMap::new();
            for (k, (parent, lease)) in shards.iter().enumerate() {
                let id = format!("shard-{k}");
                listed.push(ShardInfo {
                    shard_id: id.clone(),
                    parent: parent.filter(|&p| p < k).map(|p| format!("shard-{p}")),
                    adjacent_parent: None,
                    closed: false,
                    hash_range: None,
                    ending_sequence: None,
                });
                if let Some((owner, counter, shard_end)) = lease {
                    let owner = owner.map(|(i, token)| Owner {
                        client_id: format!("m{i}"),
                        token: format!("t{token}"),
                    });
                    held.insert(
                        id.clone(),
                        LeaseItem {
                            stream: stream.to_string(),
                            shard_id: id,
                            checkpoint: None,
                            owner,
                            lease_counter: Some(*counter),
                            start: None,
                            shard_end: *shard_end,
                            millis_behind: None,
                            last_update: None,
                        },
                    );
                }
            }
            listings.insert(stream.to_string(), listed);
            leases.insert(stream.to_string(), held);
        }
        Case {
            members: seen,
            listings,
            leases,
        }
    }

    fn cases() -> impl Strategy<Value = Case> {
        let member = proptest::option::of((0..2u8, any::<bool>(), any::<[bool; 2]>()));
        let lease = proptest::option::of((
            proptest::option::of((0..4usize, 0..2u8)),
            1..4u64,
            proptest::bool::weighted(0.2),
        ));
        let shard = (proptest::option::of(0..6usize), lease);
        (vec(member, 0..=3), vec(vec(shard, 0..6), 2..=2))
            .prop_map(|(members, shards)| case(&members, &shards))
    }

    proptest! {
        #[test]
        fn a_release_is_never_planned_back_to_its_holder(c in cases()) {
            let plans = plan(&c.observed()).changed(&BTreeMap::new());
            for p in plans.values() {
                for r in &p.release {
                    let kept = p.streams.get(&r.stream).into_iter().flatten()
                        .any(|s| s.shard_id == r.shard_id);
                    prop_assert!(!kept, "{r:?} released and kept by {}", p.client_id);
                }
            }
        }

        #[test]
        fn a_child_of_a_listed_or_leased_parent_starts_at_trim_horizon(c in cases()) {
            let plans = plan(&c.observed()).changed(&BTreeMap::new());
            for p in plans.values() {
                for (stream, shards) in &p.streams {
                    for planned in shards {
                        let info = c.listings[stream].iter()
                            .find(|s| s.shard_id == planned.shard_id).unwrap();
                        let parent_known = info.parent.as_ref().is_some_and(|parent| {
                            c.listings[stream].iter().any(|s| &s.shard_id == parent)
                                || c.leases[stream].contains_key(parent)
                        });
                        prop_assert_eq!(
                            &planned.start,
                            if parent_known { &PlanStart::TrimHorizon } else { &PlanStart::Latest }
                        );
                    }
                }
            }
        }

        #[test]
        fn an_unchanged_input_rewrites_no_plan(c in cases()) {
            let written = plan(&c.observed()).changed(&BTreeMap::new());
            prop_assert!(plan(&c.observed()).changed(&written).is_empty());
        }

        #[test]
        fn every_listed_eligible_shard_is_planned_exactly_once(c in cases()) {
            let obs = c.observed();
            let plans = plan(&obs).changed(&BTreeMap::new());
            let alive = obs.alive();
            for (stream, listing) in &c.listings {
                let finished = c.leases[stream].values()
                    .filter(|l| l.shard_end).map(|l| l.shard_id.clone()).collect();
                let consumed = alive.values().any(|s| s.contains(stream));
                for eligible in assign::eligible(listing, &finished) {
                    let times = plans.values()
                        .flat_map(|p| p.streams.get(stream).into_iter().flatten())
                        .filter(|p| p.shard_id == eligible)
                        .count();
                    prop_assert_eq!(times, usize::from(consumed), "{}/{}", stream, eligible);
                }
            }
        }
    }
}
