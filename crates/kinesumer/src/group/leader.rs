//! The leader's work, every tick (DESIGN §3 steps 7–10): read the group, judge who is
//! alive by heartbeat counters observed against the local fencing clock, list shards,
//! plan with the pure [`assign`](super::assign::assign), write the plans that changed,
//! and prune members long dead.
//!
//! The planning itself is the pure [`plan`](super::plan) of what the leader has
//! observed; this file holds what the leader observes and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::assign::load::Balance;
use super::plan::{self, LoadView, Observed, PlannedMove, Planner, Seen};
use super::Ctx;
use crate::backoff::Backoff;
use crate::config::{Balancing, Config, InitialPosition};
use crate::error::Error;
use crate::event::{Event, MoveReason};
use crate::fence::Fence;
use crate::reader::{within, KinesisError, StreamShards};
use crate::store::{
    LeaseDeletion, LeaseItem, Limits, MemberItem, Operation, Owner, PlanItem, ShardCache,
    ShardInfo, StoreError,
};

/// One stream's shard list and when it was taken.
#[derive(Debug, Clone)]
struct Listing {
    shards: Vec<ShardInfo>,
    /// The stream's creation time: a new one means the stream was re-created.
    created: Option<DateTime<Utc>>,
    /// `None`: taken from the stored shard cache after a failed listing; listed again as
    /// soon as the retry backoff allows.
    listed_at: Option<Duration>,
}

/// A stream whose last listing failed: when to try again, and how the waits grow.
#[derive(Debug, Clone)]
struct Retry {
    at: Duration,
    backoff: Backoff,
}

/// The leader's own failure of a tick.
#[derive(Debug)]
pub(crate) enum TickError {
    /// A plan write was refused: a newer term exists.
    Deposed,
    /// A read failed; nothing was planned this tick.
    Store(StoreError),
    /// The member's fence tripped before a write: the heartbeat task reports it.
    Fenced,
}

impl From<StoreError> for TickError {
    fn from(e: StoreError) -> Self {
        TickError::Store(e)
    }
}

/// The state of one leadership term.
#[derive(Debug)]
pub(crate) struct Leader {
    pub(crate) term: u64,
    since: Duration,
    /// The incarnation that held the lock before this term: gone at once.
    deposed: Option<Owner>,
    members: BTreeMap<String, Seen>,
    listings: BTreeMap<String, Listing>,
    retries: BTreeMap<String, Retry>,
    finished: BTreeMap<String, BTreeSet<String>>,
    written: BTreeMap<String, PlanItem>,
    /// The version of this term's last plan write or delete.
    version: u64,
    /// Stream → shard id → load in shard units, as its holder last reported it
    /// (`balance = load`); kept across a move until the new holder reports.
    loads: BTreeMap<String, BTreeMap<String, f64>>,
    /// Stream → shard id → when this term last planned it onto another member.
    moved_at: BTreeMap<String, BTreeMap<String, Duration>>,
    /// Stream → the shards moved within the load window: they stay where they are.
    cooling: BTreeMap<String, BTreeSet<String>>,
    /// (stream, shard id) → the member its pending move was announced to: each move is
    /// logged and sent as an event once, not at every tick until the take.
    announced: BTreeMap<(String, String), String>,
    /// The shards the last plan gave to no one (every consumer at a limit): warned of
    /// when the number changes, not every tick.
    unplanned: usize,
    /// Stream → shard id → lease, as last read: refilled in place each tick.
    leases: BTreeMap<String, BTreeMap<String, LeaseItem>>,
    /// What planning keeps from one tick to the next.
    planner: Planner,
}

impl Leader {
    pub(crate) fn new(term: u64, now: Duration, deposed: Option<Owner>) -> Self {
        Self {
            term,
            since: now,
            deposed,
            members: BTreeMap::new(),
            listings: BTreeMap::new(),
            retries: BTreeMap::new(),
            finished: BTreeMap::new(),
            written: BTreeMap::new(),
            version: 0,
            loads: BTreeMap::new(),
            moved_at: BTreeMap::new(),
            cooling: BTreeMap::new(),
            announced: BTreeMap::new(),
            unplanned: 0,
            leases: BTreeMap::new(),
            planner: Planner::default(),
        }
    }

    /// One leader tick. Returns the plans of this term (every member's, as written).
    pub(crate) async fn tick(
        &mut self,
        ctx: &Ctx,
        fence: &Fence,
    ) -> Result<&BTreeMap<String, PlanItem>, TickError> {
        let started = std::time::Instant::now();
        // Liveness is judged at the instant the members were read, never later: the
        // lease reads and listings below may take seconds, and a member whose heartbeat
        // lands meanwhile is not seen. The read's send time bounds that instant from
        // below (a judgement of "gone" is then never early); a change seen counts from
        // when the answer came (never late).
        let now = ctx.clock.fencing_now();
        let members = ctx.timed(Operation::Members, ctx.store.members()).await?;
        let left = self.observe_members(&members, ctx.clock.fencing_now());
        self.know_self(&ctx.cfg.client_id, ctx.cfg.capacity, ctx.limits());
        let failover = ctx.cfg.failover_timeout;

        let streams: BTreeSet<String> = self
            .members
            .iter()
            .filter(|(id, m)| plan::alive(self.deposed.as_ref(), id, m, now, failover))
            .flat_map(|(_, m)| m.streams.iter().cloned())
            .collect();
        // Last tick's maps, refilled: a failed read drops them, and the next tick builds
        // them anew.
        let mut leases = std::mem::take(&mut self.leases);
        leases.retain(|stream, _| streams.contains(stream));
        for stream in &streams {
            let items = ctx
                .timed(Operation::Leases, ctx.store.leases(stream))
                .await?;
            refill(leases.entry(stream.clone()).or_default(), items);
        }
        // A stream whose shards are not known at all (its listing failed, and no shard
        // cache is stored) would be missing from every plan, and its holders would release
        // every shard of it: no plan is written until it is known.
        if self.refresh_listings(ctx, &streams, &mut leases, now).await {
            let balance = balance(&ctx.cfg);
            if balance.is_some() {
                self.learn_loads(&members, &leases);
                self.cool(now, ctx.cfg.load_window);
            }
            // Taken out for the plan, which borrows the rest of what the leader observed.
            let mut planner = std::mem::take(&mut self.planner);
            let observed = self.observed(now, failover, ctx.cfg.initial_position, &leases);
            let observed = Observed {
                load: balance.map(|balance| LoadView {
                    balance,
                    loads: &self.loads,
                    cooling: &self.cooling,
                }),
                ..observed
            };
            let planned = planner.plan(&observed);
            let plans = planned.changed(&self.written);
            let moved = planned.moved;
            self.short_of_capacity(ctx, planned.unplanned);
            // A tick that fails here plans from scratch next time.
            self.write_plans(ctx, fence, plans).await?;
            // Moves not derived anew are the last tick's, every one announced already.
            if moved {
                self.announce(ctx, planner.moves(), now, balance.is_some());
            }
            self.planner = planner;
        } else {
            debug!("a stream's shards are unknown; no plan is written this tick");
        }
        self.leases = leases;
        for client_id in left {
            self.delete_plan(ctx, fence, &client_id).await?;
        }
        self.prune(ctx, fence, now).await?;
        crate::metrics::leader_tick(&ctx.cfg.app, started.elapsed());
        Ok(&self.written)
    }

    /// Keeps the load each holder reported of the shards it holds (its current
    /// incarnation, by the lease), and forgets shards no longer leased.
    fn learn_loads(
        &mut self,
        members: &[MemberItem],
        leases: &BTreeMap<String, BTreeMap<String, LeaseItem>>,
    ) {
        for member in members {
            let Some(report) = &member.load else { continue };
            for (stream, shards) in &report.shards {
                let Some(stream_leases) = leases.get(stream) else {
                    continue;
                };
                for (shard_id, load) in shards {
                    let holds = stream_leases
                        .get(shard_id)
                        .and_then(|l| l.owner.as_ref())
                        .is_some_and(|o| {
                            o.client_id == member.client_id
                                && member.incarnation.as_deref() == Some(o.token.as_str())
                        });
                    if holds {
                        let loads = self.loads.entry(stream.clone()).or_default();
                        loads.insert(shard_id.clone(), load.units());
                    }
                }
            }
        }
        self.loads.retain(|stream, shards| {
            let leased = leases.get(stream);
            shards.retain(|id, _| leased.is_some_and(|l| l.contains_key(id)));
            !shards.is_empty()
        });
    }

    /// The shards moved within `window` cool: they stay where they were moved.
    fn cool(&mut self, now: Duration, window: Duration) {
        self.moved_at.retain(|_, shards| {
            shards.retain(|_, &mut at| now.saturating_sub(at) < window);
            !shards.is_empty()
        });
        self.cooling = self
            .moved_at
            .iter()
            .map(|(stream, shards)| (stream.clone(), shards.keys().cloned().collect()))
            .collect();
    }

    /// Warns and sends an event when the shards planned to no one change in number
    /// (every member that consumes their stream is at a limit), and sets the gauge.
    fn short_of_capacity(&mut self, ctx: &Ctx, unplanned: usize) {
        if unplanned != self.unplanned {
            if unplanned > 0 {
                warn!(unplanned, "the group lacks capacity: shards planned to no one are not read; raise a member's max_shards or max_bytes_per_second, or add members");
            } else {
                info!("every shard is planned again");
            }
            self.unplanned = unplanned;
            ctx.signals
                .event(Event::UnplannedShards { count: unplanned });
        }
        crate::metrics::unplanned_shards(&ctx.cfg.app, unplanned);
    }

    /// Logs and sends an event for each move not announced yet, and starts its cooling
    /// when the group balances by load (`cools`).
    fn announce(&mut self, ctx: &Ctx, moves: &[PlannedMove], now: Duration, cools: bool) {
        let pending: BTreeSet<(&str, &str)> = moves
            .iter()
            .map(|m| (m.stream.as_str(), m.shard_id.as_str()))
            .collect();
        self.announced
            .retain(|(stream, shard), _| pending.contains(&(stream.as_str(), shard.as_str())));
        for m in moves {
            let key = (m.stream.clone(), m.shard_id.clone());
            if self.announced.get(&key) == Some(&m.to) {
                continue;
            }
            let from = m.from.as_deref().unwrap_or("-");
            // A shard never leased is placed, not moved: a group's first start places
            // every shard, which would flood the log at INFO.
            if m.reason == MoveReason::New {
                debug!(stream = %m.stream, shard = %m.shard_id, from, to = %m.to, reason = %m.reason, "shard moved");
            } else {
                info!(stream = %m.stream, shard = %m.shard_id, from, to = %m.to, reason = %m.reason, "shard moved");
            }
            if cools {
                let moved = self.moved_at.entry(m.stream.clone()).or_default();
                moved.insert(m.shard_id.clone(), now);
            }
            self.announced.insert(key, m.to.clone());
            ctx.signals.event(Event::ShardMoved {
                stream: m.stream.clone(),
                shard_id: m.shard_id.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                reason: m.reason,
            });
        }
    }

    /// Takes the leader's own capacity and limits from its configuration, not its item:
    /// a start registers without them, so until its first heartbeat the item says none,
    /// and the group's first plan (made by its first member) would ignore them.
    fn know_self(&mut self, client_id: &str, capacity: f64, limits: Limits) {
        if let Some(me) = self.members.get_mut(client_id) {
            me.capacity = capacity;
            me.limits = limits;
        }
    }

    /// Updates what was seen of the members; returns the client ids whose items vanished.
    fn observe_members(&mut self, items: &[MemberItem], now: Duration) -> Vec<String> {
        let present: BTreeSet<&str> = items.iter().map(|m| m.client_id.as_str()).collect();
        let left: Vec<String> = self
            .members
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        for id in &left {
            self.members.remove(id);
        }
        for item in items {
            let streams: BTreeSet<String> = item.streams.iter().cloned().collect();
            let seen = self
                .members
                .entry(item.client_id.clone())
                .or_insert_with(|| Seen {
                    incarnation: item.incarnation.clone(),
                    heartbeat: item.heartbeat,
                    changed_at: now,
                    token_since: now,
                    streams: streams.clone(),
                    dropped: BTreeMap::new(),
                    capacity: 1.0,
                    limits: Limits::default(),
                });
            if seen.incarnation != item.incarnation {
                seen.incarnation = item.incarnation.clone();
                seen.token_since = now;
                seen.changed_at = now;
                seen.dropped.clear();
            } else if seen.heartbeat != item.heartbeat {
                seen.changed_at = now;
            }
            seen.heartbeat = item.heartbeat;
            seen.capacity = item.load.as_ref().map_or(1.0, |l| l.capacity);
            seen.limits = item.load.as_ref().map(|l| l.limits).unwrap_or_default();
            for gone in seen.streams.difference(&streams) {
                seen.dropped.entry(gone.clone()).or_insert(now);
            }
            seen.dropped.retain(|s, _| !streams.contains(s));
            seen.streams = streams;
        }
        left
    }

    /// Lists the shards of streams whose list is stale, new, or has a newly finished shard
    /// (so children are planned within a tick, DESIGN §4), and stores the shard cache. A
    /// stream re-created since the last listing has its old leases retired and is left
    /// out of this tick's plans, so their holders let go before its shards are planned
    /// afresh.
    ///
    /// A listing that fails (a throttled DescribeStreamSummary is enough) is retried with
    /// backoff from the next tick on, and the stream keeps its last known shards: this
    /// term's listing, or else the stored shard cache. Returns false when a stream's
    /// shards are not known at all.
    async fn refresh_listings(
        &mut self,
        ctx: &Ctx,
        streams: &BTreeSet<String>,
        leases: &mut BTreeMap<String, BTreeMap<String, LeaseItem>>,
        now: Duration,
    ) -> bool {
        self.listings.retain(|s, _| streams.contains(s));
        self.retries.retain(|s, _| streams.contains(s));
        let mut known = true;
        for stream in streams {
            let finished: BTreeSet<String> = leases[stream]
                .values()
                .filter(|l| l.shard_end)
                .map(|l| l.shard_id.clone())
                .collect();
            let newly_finished = self
                .finished
                .get(stream)
                .is_none_or(|old| !finished.is_subset(old));
            let stale = self.listings.get(stream).is_none_or(|l| {
                l.listed_at
                    .is_none_or(|at| now.saturating_sub(at) >= ctx.cfg.shard_sync_interval)
            });
            let due = self.retries.get(stream).is_none_or(|r| now >= r.at);
            if !(stale || newly_finished) || !due {
                known &= self.listings.contains_key(stream);
                continue;
            }
            let (listed, created) = match list(ctx, stream).await {
                Ok(listing) => listing,
                Err(e) => {
                    warn!(stream = %stream, error = %e, "listing shards failed; retrying with backoff");
                    let retry = self.retries.entry(stream.clone()).or_insert_with(|| Retry {
                        at: now,
                        backoff: Backoff::new(ctx.cfg.sync_interval, ctx.cfg.shard_sync_interval),
                    });
                    retry.at = now + retry.backoff.next_delay();
                    let gone = matches!(e, KinesisError::StreamNotFound { .. });
                    ctx.signals.error(Error::Kinesis(e));
                    if !gone && !self.listings.contains_key(stream) {
                        match stored_cache(ctx, stream).await {
                            Some(cache) => {
                                self.listings.insert(
                                    stream.clone(),
                                    Listing {
                                        shards: cache.shards,
                                        created: cache.stream_created,
                                        listed_at: None,
                                    },
                                );
                            }
                            None => known = false,
                        }
                    }
                    continue;
                }
            };
            self.retries.remove(stream);
            let previous = match self.listings.get(stream) {
                Some(l) => l.created,
                None => stored_cache(ctx, stream)
                    .await
                    .and_then(|c| c.stream_created),
            };
            let recreated = match (previous, created) {
                (Some(before), Some(now)) if before != now => Some((before, now)),
                _ => None,
            };
            let cache = ShardCache {
                stream: stream.clone(),
                shards: listed.shards.clone(),
                stream_created: created,
            };
            if let Some((previous, created)) = recreated {
                let old = leases.insert(stream.clone(), BTreeMap::new());
                // The new creation time is stored only once every old lease is gone, so
                // a failed retirement is found again and retried on the next tick.
                if retire(ctx, stream, old.unwrap_or_default(), previous, created).await {
                    put_shard_cache(ctx, &cache).await;
                }
                self.listings.remove(stream);
                self.finished.remove(stream);
                continue;
            }
            if self.listings.get(stream).is_none_or(|l| {
                l.listed_at.is_none() || l.shards != listed.shards || l.created != created
            }) {
                put_shard_cache(ctx, &cache).await;
            }
            self.delete_tombstones(ctx, stream, &listed.shards, &leases[stream])
                .await;
            // Recorded only once listed: a failed listing is retried, or the children of
            // a newly finished shard would wait for the next scheduled listing.
            self.finished.insert(stream.clone(), finished);
            self.listings.insert(
                stream.clone(),
                Listing {
                    shards: listed.shards,
                    created,
                    listed_at: Some(now),
                },
            );
        }
        known
    }

    /// Deletes the leases of finished shards the stream no longer lists (DESIGN §3 cost
    /// budget). A finished shard still listed keeps its tombstone, or its children would
    /// see an unfinished parent (scenario 15); so does one with a listed child never taken,
    /// whose start (TRIM_HORIZON, because it has a parent) is stored only by its first
    /// take: without the tombstone it would be planned at the initial position.
    async fn delete_tombstones(
        &self,
        ctx: &Ctx,
        stream: &str,
        listed: &[ShardInfo],
        leases: &BTreeMap<String, LeaseItem>,
    ) {
        let untaken_child_of = |parent: &str| {
            listed.iter().any(|child| {
                !leases.contains_key(&child.shard_id)
                    && [&child.parent, &child.adjacent_parent]
                        .into_iter()
                        .flatten()
                        .any(|p| p == parent)
            })
        };
        let listed_ids: BTreeSet<&str> = listed.iter().map(|s| s.shard_id.as_str()).collect();
        for lease in leases.values() {
            if lease.shard_end
                && !listed_ids.contains(lease.shard_id.as_str())
                && !untaken_child_of(&lease.shard_id)
            {
                let delete =
                    ctx.store
                        .delete_lease(stream, &lease.shard_id, LeaseDeletion::Tombstone);
                if let Err(e) = ctx.timed(Operation::DeleteLease, delete).await {
                    debug!(error = %e, "tombstone delete failed");
                }
            }
        }
    }

    /// What this term has observed, with the leases read this tick, for the planner.
    fn observed<'a>(
        &'a self,
        now: Duration,
        failover: Duration,
        initial: InitialPosition,
        leases: &'a BTreeMap<String, BTreeMap<String, LeaseItem>>,
    ) -> Observed<'a> {
        Observed {
            term: self.term,
            since: self.since,
            deposed: self.deposed.as_ref(),
            members: &self.members,
            listings: self
                .listings
                .iter()
                .map(|(stream, l)| (stream.as_str(), l.shards.as_slice()))
                .collect(),
            leases,
            now,
            failover,
            initial,
            load: None,
        }
    }

    /// Writes the plans [`Plans::changed`](super::plan::Plans::changed) returned, each conditional on no newer term
    /// having written it.
    async fn write_plans(
        &mut self,
        ctx: &Ctx,
        fence: &Fence,
        plans: BTreeMap<String, PlanItem>,
    ) -> Result<(), TickError> {
        for (client_id, mut plan) in plans {
            may_write(fence)?;
            plan.version = self.next_version();
            match ctx
                .timed(Operation::WritePlan, ctx.store.write_plan(&plan))
                .await
            {
                Ok(()) => {
                    debug!(member = %client_id, shards = plan.streams.values().map(Vec::len).sum::<usize>(), "plan written");
                    crate::metrics::plan_written(&ctx.cfg.app);
                    self.written.insert(client_id, plan);
                }
                Err(StoreError::ConditionFailed { .. }) => return Err(TickError::Deposed),
                Err(e) => {
                    debug!(member = %client_id, error = %e, "plan write failed; retried next tick");
                    self.written.remove(&client_id);
                }
            }
        }
        Ok(())
    }

    /// The version of the next plan write or delete: later requests of one term carry
    /// higher versions, so one that lands late is refused.
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    async fn delete_plan(
        &mut self,
        ctx: &Ctx,
        fence: &Fence,
        client_id: &str,
    ) -> Result<(), TickError> {
        may_write(fence)?;
        self.written.remove(client_id);
        match ctx
            .timed(
                Operation::DeletePlan,
                ctx.store
                    .delete_plan(client_id, self.term, self.next_version()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => Err(TickError::Deposed),
            Err(e) => {
                debug!(member = %client_id, error = %e, "plan delete failed");
                Ok(())
            }
        }
    }

    /// Deletes members judged dead for `prune_age`, conditional on the heartbeat seen —
    /// never by comparing `last_update` with this machine's wall clock (scenario 10).
    async fn prune(&mut self, ctx: &Ctx, fence: &Fence, now: Duration) -> Result<(), TickError> {
        let dead: Vec<(String, u64, Option<String>)> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_sub(m.changed_at) >= ctx.cfg.prune_age)
            .map(|(id, m)| (id.clone(), m.heartbeat, m.incarnation.clone()))
            .collect();
        for (client_id, heartbeat, incarnation) in dead {
            may_write(fence)?;
            let prune = ctx
                .store
                .prune(&client_id, heartbeat, incarnation.as_deref());
            match ctx.timed(Operation::Prune, prune).await {
                Ok(()) => {
                    info!(member = %client_id, "pruned a dead member");
                    self.members.remove(&client_id);
                    self.delete_plan(ctx, fence, &client_id).await?;
                }
                Err(e) => debug!(member = %client_id, error = %e, "prune refused or failed"),
            }
        }
        Ok(())
    }
}

/// Makes `leases` the stream's leases as just read (`items`). The store reads them in
/// shard id order, so when the same shards are leased as last tick every item replaces
/// the last one in place: no key is cloned and no map is built at each tick.
fn refill(leases: &mut BTreeMap<String, LeaseItem>, items: Vec<LeaseItem>) {
    let same =
        leases.len() == items.len() && leases.keys().zip(&items).all(|(id, l)| *id == l.shard_id);
    if same {
        for (lease, item) in leases.values_mut().zip(items) {
            *lease = item;
        }
    } else {
        *leases = items.into_iter().map(|l| (l.shard_id.clone(), l)).collect();
    }
}

/// The knobs of the load balancing, when the group balances by load.
fn balance(cfg: &Config) -> Option<Balance> {
    (cfg.balance == Balancing::Load).then(|| Balance {
        tolerance: cfg.load_tolerance,
        max_moves: cfg.load_max_moves,
        ..Balance::default()
    })
}

/// A member paused (or suspended) past its fence deadline writes no plan and prunes no
/// member when it wakes (scenario 5): the fence is checked right before each such write.
fn may_write(fence: &Fence) -> Result<(), TickError> {
    if fence.check() {
        Ok(())
    } else {
        Err(TickError::Fenced)
    }
}

/// The stream's creation time and its shards, asked in that order: a re-creation between
/// the two calls shows as a new time on the next listing, never as new shards under the
/// old time.
///
/// Each call is bounded: a listing that hangs would stop the leader planning for good.
async fn list(
    ctx: &Ctx,
    stream: &str,
) -> Result<(StreamShards, Option<DateTime<Utc>>), KinesisError> {
    let created = ctx.kinesis.stream_created(stream);
    let created = within(LIST_TIMEOUT, "DescribeStreamSummary", stream, created).await?;
    let listed = ctx.kinesis.list_shards(stream);
    let listed = within(LIST_TIMEOUT, "ListShards", stream, listed).await?;
    Ok((listed, created))
}

/// The longest one listing call may take: ListShards pages through up to 10,000 shards
/// 1,000 at a time, each page well under a second.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The stream's shard cache as stored: its shards for a leader whose listing failed, and
/// its creation time for a leader that has not listed the stream in this term. `None`
/// on a failed read, as when there is none.
async fn stored_cache(ctx: &Ctx, stream: &str) -> Option<ShardCache> {
    match ctx
        .timed(Operation::ShardCache, ctx.store.shard_cache(stream))
        .await
    {
        Ok(cache) => cache,
        Err(e) => {
            debug!(stream = %stream, error = %e, "shard cache read failed");
            None
        }
    }
}

async fn put_shard_cache(ctx: &Ctx, cache: &ShardCache) {
    let put = ctx.store.put_shard_cache(cache);
    if let Err(e) = ctx.timed(Operation::PutShardCache, put).await {
        debug!(stream = %cache.stream, error = %e, "shard cache write failed");
    }
}

/// DESIGN §4: the stream was deleted and re-created under the same name. Its old leases
/// name shards that no longer exist (the new shard ids repeat the old ones), so their
/// checkpoints and tombstones would skip or block the new shards: every one is deleted,
/// and the application is told. Returns whether every one was.
async fn retire(
    ctx: &Ctx,
    stream: &str,
    old: BTreeMap<String, LeaseItem>,
    previous: DateTime<Utc>,
    created: DateTime<Utc>,
) -> bool {
    let mut retired = 0;
    for shard_id in old.keys() {
        let delete = ctx
            .store
            .delete_lease(stream, shard_id, LeaseDeletion::Retire);
        match ctx.timed(Operation::DeleteLease, delete).await {
            Ok(()) => retired += 1,
            Err(e) => {
                warn!(stream = %stream, shard_id = %shard_id, error = %e, "retiring a lease failed")
            }
        }
    }
    let e = Error::StreamRecreated {
        stream: stream.to_owned(),
        previous,
        created,
        retired,
    };
    warn!("{e}");
    ctx.signals.error(e);
    retired == old.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::plan::Judged;
    use crate::store::{LoadReport, PlanStart, ShardLoad};

    const FAILOVER: Duration = Duration::from_secs(2);

    fn member(id: &str, token: &str, hb: u64, streams: &[&str]) -> MemberItem {
        MemberItem {
            client_id: id.into(),
            incarnation: Some(token.into()),
            heartbeat: hb,
            streams: streams.iter().map(|s| s.to_string()).collect(),
            last_update: None,
            load: None,
        }
    }

    fn owner(id: &str, token: &str) -> Owner {
        Owner {
            client_id: id.into(),
            token: token.into(),
        }
    }

    fn shard(id: &str) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent: None,
            adjacent_parent: None,
            closed: false,
            hash_range: None,
            ending_sequence: None,
        }
    }

    fn lease(shard: &str, owner: Option<Owner>, counter: u64) -> LeaseItem {
        LeaseItem {
            stream: "s".into(),
            shard_id: shard.into(),
            checkpoint: None,
            owner,
            lease_counter: Some(counter),
            start: None,
            shard_end: false,
            millis_behind: None,
            last_update: None,
        }
    }

    fn leader_with(shards: &[&str]) -> Leader {
        let mut l = Leader::new(7, Duration::ZERO, None);
        l.listings.insert(
            "s".into(),
            Listing {
                shards: shards.iter().map(|s| shard(s)).collect(),
                created: None,
                listed_at: Some(Duration::ZERO),
            },
        );
        l
    }

    fn leases(items: Vec<LeaseItem>) -> BTreeMap<String, BTreeMap<String, LeaseItem>> {
        let mut m = BTreeMap::new();
        m.insert(
            "s".to_string(),
            items.into_iter().map(|l| (l.shard_id.clone(), l)).collect(),
        );
        m
    }

    fn judge(l: &Leader, owner: &Owner, stream: &str, now: Duration, failover: Duration) -> Judged {
        let no_leases = BTreeMap::new();
        l.observed(now, failover, InitialPosition::Latest, &no_leases)
            .judge(owner, stream)
    }

    fn plan(
        l: &Leader,
        now: Duration,
        failover: Duration,
        initial: InitialPosition,
        leases: &BTreeMap<String, BTreeMap<String, LeaseItem>>,
    ) -> BTreeMap<String, PlanItem> {
        Planner::default()
            .plan(&l.observed(now, failover, initial, leases))
            .changed(&l.written)
    }

    #[test]
    fn liveness_is_judged_by_counters_seen_against_the_local_clock() {
        let mut l = leader_with(&[]);
        l.observe_members(&[member("a", "t1", 5, &["s"])], Duration::ZERO);
        // The counter does not move for the failover timeout: gone.
        l.observe_members(&[member("a", "t1", 5, &["s"])], Duration::from_secs(1));
        assert_eq!(
            judge(&l, &owner("a", "t1"), "s", Duration::from_secs(1), FAILOVER),
            Judged::Holder("a".into())
        );
        assert_eq!(
            judge(&l, &owner("a", "t1"), "s", FAILOVER, FAILOVER),
            Judged::Gone
        );
        // It moves: alive again from when it was seen.
        l.observe_members(&[member("a", "t1", 6, &["s"])], Duration::from_secs(3));
        assert_eq!(
            judge(&l, &owner("a", "t1"), "s", Duration::from_secs(4), FAILOVER),
            Judged::Holder("a".into())
        );
    }

    #[test]
    fn an_old_incarnation_is_gone_only_after_the_new_one_was_seen_for_the_failover() {
        let mut l = leader_with(&[]);
        l.observe_members(&[member("a", "t1", 5, &["s"])], Duration::ZERO);
        l.observe_members(&[member("a", "t2", 0, &["s"])], Duration::from_secs(1));
        let old = owner("a", "t1");
        assert_eq!(
            judge(&l, &old, "s", Duration::from_secs(2), FAILOVER),
            Judged::Pending
        );
        assert_eq!(
            judge(&l, &old, "s", Duration::from_secs(3), FAILOVER),
            Judged::Gone
        );
    }

    #[test]
    fn an_owner_without_a_member_item_is_gone_once_the_leader_has_led_for_the_failover() {
        let l = leader_with(&[]);
        let o = owner("ghost", "t");
        assert_eq!(
            judge(&l, &o, "s", Duration::from_secs(1), FAILOVER),
            Judged::Pending
        );
        assert_eq!(judge(&l, &o, "s", FAILOVER, FAILOVER), Judged::Gone);
    }

    #[test]
    fn the_deposed_lock_holder_is_gone_at_once_only_in_its_incarnation() {
        let mut l = Leader::new(2, Duration::ZERO, Some(owner("a", "t1")));
        l.observe_members(&[member("a", "t1", 1, &["s"])], Duration::ZERO);
        assert_eq!(
            judge(&l, &owner("a", "t1"), "s", Duration::ZERO, FAILOVER),
            Judged::Gone
        );
        l.observe_members(&[member("a", "t2", 0, &["s"])], Duration::from_secs(1));
        assert_eq!(
            judge(&l, &owner("a", "t2"), "s", Duration::from_secs(1), FAILOVER),
            Judged::Holder("a".into())
        );
    }

    #[test]
    fn a_dropped_stream_is_gone_after_the_failover() {
        let mut l = leader_with(&[]);
        l.observe_members(&[member("a", "t1", 1, &["s"])], Duration::ZERO);
        l.observe_members(&[member("a", "t1", 2, &[])], Duration::from_secs(1));
        let o = owner("a", "t1");
        assert_eq!(
            judge(&l, &o, "s", Duration::from_secs(2), FAILOVER),
            Judged::Pending
        );
        assert_eq!(
            judge(&l, &o, "s", Duration::from_secs(3), FAILOVER),
            Judged::Gone
        );
    }

    #[test]
    fn an_owner_is_judged_per_stream() {
        let mut l = leader_with(&["x0"]);
        l.listings.insert(
            "t".into(),
            Listing {
                shards: vec![shard("y0")],
                created: None,
                listed_at: Some(Duration::ZERO),
            },
        );
        // a consumes only s (t was never seen in its streams: gone there at once).
        l.observe_members(
            &[
                member("a", "ta", 1, &["s"]),
                member("b", "tb", 1, &["s", "t"]),
            ],
            Duration::ZERO,
        );
        let a = owner("a", "ta");
        let mut held = leases(vec![lease("x0", Some(a.clone()), 1)]);
        held.insert(
            "t".into(),
            BTreeMap::from([("y0".to_string(), lease("y0", Some(a), 1))]),
        );
        let plans = plan(&l, Duration::ZERO, FAILOVER, InitialPosition::Latest, &held);
        let entry = |stream: &str, id: &str| {
            plans
                .values()
                .flat_map(|p| p.streams.get(stream).into_iter().flatten())
                .find(|p| p.shard_id == id)
                .cloned()
                .unwrap()
        };
        assert!(!entry("s", "x0").owner_gone, "a holds x0 of s");
        assert!(entry("t", "y0").owner_gone, "a does not consume t");
    }

    #[test]
    fn plans_are_sticky_and_name_what_the_leader_saw() {
        let mut l = leader_with(&["s0", "s1", "s2", "s3"]);
        l.observe_members(
            &[member("a", "ta", 1, &["s"]), member("b", "tb", 1, &["s"])],
            Duration::ZERO,
        );
        let a = owner("a", "ta");
        let held = leases(vec![
            lease("s0", Some(a.clone()), 1),
            lease("s1", Some(a.clone()), 1),
            lease("s2", Some(a.clone()), 1),
        ]);
        let plans = plan(&l, Duration::ZERO, FAILOVER, InitialPosition::Latest, &held);
        let shards = |id: &str| -> Vec<String> {
            plans[id]
                .streams
                .get("s")
                .map(|v| v.iter().map(|p| p.shard_id.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(shards("a").len(), 2);
        assert_eq!(shards("b").len(), 2);
        assert!(
            shards("b").contains(&"s3".to_string()),
            "the free shard goes to b"
        );
        // One of a's shards moves to b: it is in a's release list, and b's entry names a
        // as a live owner (b waits for the handoff).
        assert_eq!(plans["a"].release.len(), 1);
        let moved = &plans["a"].release[0].shard_id;
        let entry = plans["b"].streams["s"]
            .iter()
            .find(|p| &p.shard_id == moved)
            .unwrap();
        assert_eq!(entry.owner, Some(a));
        assert!(!entry.owner_gone);
        assert_eq!(plans["a"].term, 7);
        assert_eq!(plans["a"].token, "ta");
    }

    /// A start registers without the member's capacity and limits: the group's first
    /// member, its leader, planned by its item before its first heartbeat would take
    /// both shards though limited to one (issue 21).
    #[test]
    fn the_leader_plans_itself_by_its_own_limits_before_its_first_heartbeat() {
        let mut l = leader_with(&["s0", "s1"]);
        let planned = |l: &Leader| -> usize {
            let plans = plan(
                l,
                Duration::ZERO,
                FAILOVER,
                InitialPosition::Latest,
                &leases(vec![]),
            );
            plans
                .values()
                .flat_map(|p| p.streams.values())
                .map(Vec::len)
                .sum()
        };
        l.observe_members(&[member("a", "ta", 0, &["s"])], Duration::ZERO);
        assert_eq!(planned(&l), 2, "registered, no limit said yet");
        let limits = Limits {
            max_shards: Some(1),
            max_bytes_per_sec: None,
        };
        l.know_self("a", 1.0, limits);
        assert_eq!(planned(&l), 1, "its own configuration says its limit");
    }

    #[test]
    fn every_move_names_its_reason() {
        let mut parent = shard("p");
        parent.closed = true;
        let mut child = shard("c");
        child.parent = Some("p".into());
        let mut l = leader_with(&["gone", "free", "new"]);
        l.listings
            .get_mut("s")
            .unwrap()
            .shards
            .extend([parent, child]);
        l.observe_members(
            &[
                member("a", "ta", 1, &["s"]),
                member("dead", "td", 1, &["s"]),
            ],
            Duration::ZERO,
        );
        // "dead" stops beating: gone after the failover.
        l.observe_members(
            &[
                member("a", "ta", 3, &["s"]),
                member("dead", "td", 1, &["s"]),
            ],
            FAILOVER,
        );
        let mut done = lease("p", None, 2);
        done.shard_end = true;
        let held = leases(vec![
            lease("gone", Some(owner("dead", "td")), 1),
            lease("free", None, 4),
            done,
        ]);
        let observed = l.observed(FAILOVER, FAILOVER, InitialPosition::Latest, &held);
        let mut planner = Planner::default();
        planner.plan(&observed);
        let reasons: BTreeMap<String, (Option<String>, MoveReason)> = planner
            .moves()
            .iter()
            .map(|m| (m.shard_id.clone(), (m.from.clone(), m.reason)))
            .collect();
        let expected = BTreeMap::from([
            (
                "gone".to_string(),
                (Some("dead".to_string()), MoveReason::Crash),
            ),
            ("free".to_string(), (None, MoveReason::Leave)),
            ("new".to_string(), (None, MoveReason::New)),
            ("c".to_string(), (None, MoveReason::Reshard)),
        ]);
        assert_eq!(reasons, expected);
    }

    /// By count, the shards moved off a member over its `max_shards` (restarted with a
    /// lower limit) name the limit: no member joined.
    #[test]
    fn a_move_off_a_member_over_its_limit_names_the_limit() {
        let mut l = leader_with(&["s0", "s1", "s2"]);
        let mut limited = member("a", "ta", 1, &["s"]);
        limited.load = Some(LoadReport {
            capacity: 1.0,
            limits: Limits {
                max_shards: Some(1),
                max_bytes_per_sec: None,
            },
            shards: BTreeMap::new(),
        });
        l.observe_members(&[limited, member("b", "tb", 1, &["s"])], Duration::ZERO);
        let a = owner("a", "ta");
        let held = leases(
            ["s0", "s1", "s2"]
                .map(|id| lease(id, Some(a.clone()), 1))
                .into(),
        );
        let observed = l.observed(Duration::ZERO, FAILOVER, InitialPosition::Latest, &held);
        let mut planner = Planner::default();
        planner.plan(&observed);
        let moves: Vec<(Option<String>, String, MoveReason)> = planner
            .moves()
            .iter()
            .map(|m| (m.from.clone(), m.to.clone(), m.reason))
            .collect();
        let off_a = (Some("a".to_string()), "b".to_string(), MoveReason::Limit);
        assert_eq!(moves, vec![off_a.clone(), off_a]);
    }

    #[test]
    fn a_shards_load_is_learned_from_its_holder_only() {
        let mut l = leader_with(&["x"]);
        let report = |bytes_per_sec| {
            let mut r = LoadReport {
                capacity: 1.0,
                limits: Limits::default(),
                shards: BTreeMap::new(),
            };
            let load = ShardLoad {
                bytes_per_sec,
                records_per_sec: 0.0,
            };
            r.shards
                .entry("s".into())
                .or_default()
                .insert("x".into(), load);
            Some(r)
        };
        let mut holder = member("a", "ta", 1, &["s"]);
        holder.load = report(1_048_576.0);
        // "b" still reports the shard it handed over, and a stale incarnation of "a".
        let mut previous = member("b", "tb", 1, &["s"]);
        previous.load = report(4.0 * 1_048_576.0);
        let held = leases(vec![lease("x", Some(owner("a", "ta")), 3)]);
        l.learn_loads(&[previous, holder.clone()], &held);
        assert_eq!(l.loads["s"]["x"], 1.0);
        holder.incarnation = Some("old".into());
        holder.load = report(0.0);
        l.learn_loads(&[holder], &held);
        assert_eq!(l.loads["s"]["x"], 1.0, "kept until its holder reports");
        l.learn_loads(&[], &leases(vec![]));
        assert!(l.loads.is_empty(), "forgotten once not leased");
    }

    #[test]
    fn children_of_a_listed_parent_start_at_trim_horizon() {
        let mut parent = shard("p");
        parent.closed = true;
        let mut child = shard("c");
        child.parent = Some("p".into());
        let mut l = leader_with(&[]);
        l.listings.get_mut("s").unwrap().shards = vec![parent, child];
        l.observe_members(&[member("a", "ta", 1, &["s"])], Duration::ZERO);
        let mut done = lease("p", None, 2);
        done.shard_end = true;
        let plans = plan(
            &l,
            Duration::ZERO,
            FAILOVER,
            InitialPosition::Latest,
            &leases(vec![done]),
        );
        let planned = &plans["a"].streams["s"];
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].shard_id, "c");
        assert_eq!(planned[0].start, PlanStart::TrimHorizon);
    }
}
