//! The state store: the one DynamoDB table that holds a group's members, leader lock,
//! plans, shard cache, and the checkpoint and lease of every shard.
//!
//! [`StateStore`] names every request the group protocol makes, each with the condition
//! that makes it safe (DESIGN §2–§3). Two implementations keep the same conditional
//! semantics:
//!
//! - [`DynamoStore`], on the Go client's table schema (keys `pk`/`sk`, the LSI
//!   `index-client-key-last-update`), plus the attributes this client adds;
//! - `MemoryStore` (feature `test-util`), in memory, for unit tests and simulations.
//!
//! A store handle is bound to one application (`app`); one table serves many.
//!
//! Every implementation counts its requests per [`Operation`] ([`StateStore::requests`]),
//! and reports them through the `metrics` facade as [`crate::metrics::STORE_REQUESTS`].

mod dynamo;
#[cfg(any(test, feature = "test-util"))]
mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::seq::Position;

pub use crate::load::{Limits, LoadReport, ShardLoad};
pub use crate::shards::{ShardInfo, StoredStart};

pub use dynamo::{create_table, AppItems, DynamoStore, TableBilling, LSI_NAME};
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use memory::MemoryStore;

/// A lease owner: one incarnation of one client id, written `<client id>#<token>`.
///
/// A restarted process is a new incarnation, so it holds nothing from its previous life.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// The member's client id.
    pub client_id: String,
    /// The random token of this incarnation.
    pub token: String,
}

impl Owner {
    /// Parses `<client id>#<token>`; the token is what follows the last `#`.
    pub fn parse(s: &str) -> Option<Self> {
        let (client_id, token) = s.rsplit_once('#')?;
        if client_id.is_empty() || token.is_empty() {
            return None;
        }
        Some(Self {
            client_id: client_id.to_owned(),
            token: token.to_owned(),
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.client_id, self.token)
    }
}

/// A member item (`pk = client#<app>`, `sk = client id`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberItem {
    /// The client id.
    pub client_id: String,
    /// The incarnation token; `None` for an item written by the Go client.
    pub incarnation: Option<String>,
    /// The heartbeat counter, +1 at every beat.
    pub heartbeat: u64,
    /// The streams the member consumes.
    pub streams: Vec<String>,
    /// The writer's wall clock at its last write (informational only).
    pub last_update: Option<DateTime<Utc>>,
    /// Its capacity and its shards' recent load, as its last heartbeat reported them
    /// (attributes `capacity` and `load`); `None` from a member that does not balance by
    /// load.
    pub load: Option<LoadReport>,
}

/// The leader lock (`pk = leader#<app>`, `sk = leader`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockItem {
    /// The holder; `None` when released.
    pub owner: Option<Owner>,
    /// +1 whenever the owner changes.
    pub term: u64,
    /// +1 at every renewal.
    pub renewals: u64,
}

/// Where the leader plans a shard without a checkpoint to start (DESIGN §4). The first
/// take stores it in the lease as a [`StoredStart`], LATEST pinned as a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanStart {
    /// TRIM_HORIZON (children of a split or merge, or the configured position).
    TrimHorizon,
    /// AT_TIMESTAMP.
    AtTimestamp(DateTime<Utc>),
    /// LATEST, pinned by the taker as `wall clock − latest_skew_margin`.
    Latest,
}

impl PlanStart {
    /// The start to store at the first take, given the taker's wall clock and margin.
    pub fn pin(&self, wall: DateTime<Utc>, skew_margin: std::time::Duration) -> StoredStart {
        match self {
            PlanStart::TrimHorizon => StoredStart::TrimHorizon,
            PlanStart::AtTimestamp(t) => StoredStart::AtTimestamp(*t),
            PlanStart::Latest => StoredStart::AtTimestamp(
                wall - chrono::Duration::from_std(skew_margin).unwrap_or(chrono::Duration::MAX),
            ),
        }
    }
}

/// The checkpoint and lease item of one shard (`pk = check_point#<app>#<stream>`,
/// `sk = shard id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseItem {
    /// The stream name.
    pub stream: String,
    /// The shard id.
    pub shard_id: String,
    /// The committed position; `None` when `sequence_number` is absent or empty.
    pub checkpoint: Option<Position>,
    /// The lease holder; `None` means free (as every item the Go client wrote).
    pub owner: Option<Owner>,
    /// +1 at every take and release; `None` when never leased.
    pub lease_counter: Option<u64>,
    /// The start for an owner without a checkpoint.
    pub start: Option<StoredStart>,
    /// The shard was read to its end and every record of it processed.
    pub shard_end: bool,
    /// Milliseconds behind the tip of the stream at the last checkpoint that knew it
    /// (`MillisBehindLatest` of the page its last record came in); `None` before the
    /// first, and after an operator moved the checkpoint.
    pub millis_behind: Option<i64>,
    /// The writer's wall clock at its last write.
    pub last_update: Option<DateTime<Utc>>,
}

/// What a take expects to find in a lease item: exactly what was read (DESIGN §3 step 4),
/// never the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSeen {
    /// `false` when the item did not exist (the take then creates it).
    pub exists: bool,
    /// The owner read, or `None` for no owner.
    pub owner: Option<Owner>,
    /// The counter read, or `None` for no counter.
    pub lease_counter: Option<u64>,
}

/// A fenced write to a lease item by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointWrite {
    /// The new position; `None` keeps the checkpoint as it is (a `shard_end` write of a
    /// shard that had no records).
    pub position: Option<Position>,
    /// Marks the shard finished.
    pub shard_end: bool,
    /// The lag to store beside the checkpoint (`kinesumer status` shows it); `None`
    /// keeps the stored one.
    pub millis_behind: Option<i64>,
}

/// The shard cache of one stream (`pk = shard_cache#<app>`, `sk = stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCache {
    /// The stream name.
    pub stream: String,
    /// Every shard ListShards returned.
    pub shards: Vec<ShardInfo>,
    /// The stream's creation time, to notice a stream deleted and re-created.
    pub stream_created: Option<DateTime<Utc>>,
}

/// One shard in a member's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedShard {
    /// The shard id.
    pub shard_id: String,
    /// The lease owner the leader saw.
    pub owner: Option<Owner>,
    /// The lease counter the leader saw.
    pub lease_counter: Option<u64>,
    /// The leader judged that owner gone: the member may take the lease from it.
    pub owner_gone: bool,
    /// Where to start if the lease has no checkpoint and no stored start.
    pub start: PlanStart,
}

/// A shard named in a plan's release list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardRef {
    /// The stream name.
    pub stream: String,
    /// The shard id.
    pub shard_id: String,
}

/// The plan of one member (`pk = plan#<app>`, `sk = client id`), written by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanItem {
    /// The client id it is for.
    pub client_id: String,
    /// The term of the leader that wrote it.
    pub term: u64,
    /// The leader's write sequence within its term: a plan is never replaced by one of
    /// the same term with a lower version, so a write that timed out and lands late
    /// cannot undo a newer plan.
    pub version: u64,
    /// The incarnation it was written for: a member follows only a plan for its token.
    pub token: String,
    /// Per stream, the shards the member should hold.
    pub streams: BTreeMap<String, Vec<PlannedShard>>,
    /// Shards whose lease names this member but that are planned elsewhere.
    pub release: Vec<ShardRef>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The beat landed; the new counter.
    Beat(u64),
    /// Another process now runs under this client id (its token is given): stop for good.
    Superseded(Option<String>),
    /// The member item is gone (pruned): stop readers and register again.
    Missing,
}

/// How a member registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A process start: an unconditional put, the latest registration wins.
    Start,
    /// A re-registration after fencing, allowed when there is no item, or the item holds
    /// the old token or the new one (a retry after a lost response).
    Rejoin {
        /// The token of the incarnation that fenced itself.
        old_token: String,
    },
}

/// Which lease [`StateStore::delete_lease`] may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDeletion {
    /// A finished shard's tombstone, once the stream no longer lists the shard:
    /// conditional on `shard_end`, so a lease still in use is never deleted.
    Tombstone,
    /// Any lease of a stream that was deleted and re-created under the same name: its
    /// shard ids now name other shards, so its checkpoints and tombstones no longer
    /// apply. Unconditional; a holder's next fenced write is refused.
    Retire,
}

/// The requests a state store makes, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Operation {
    Register,
    Heartbeat,
    Leave,
    ReadLockAndPlan,
    ReadLock,
    TakeLock,
    RenewLock,
    ReleaseLock,
    Members,
    Leases,
    Lease,
    TakeLease,
    ReleaseLease,
    Checkpoint,
    DeleteLease,
    SetCheckpoint,
    WritePlan,
    DeletePlan,
    Prune,
    ShardCache,
    PutShardCache,
    DescribeTable,
    CreateTable,
    /// The operator's listing of a table's apps (`kinesumer groups`).
    ScanApps,
    /// The operator's removal of a retired app's items (`kinesumer group delete`).
    DeleteApp,
}

impl Operation {
    /// Every operation, in a fixed order.
    pub const ALL: [Operation; 25] = [
        Operation::Register,
        Operation::Heartbeat,
        Operation::Leave,
        Operation::ReadLockAndPlan,
        Operation::ReadLock,
        Operation::TakeLock,
        Operation::RenewLock,
        Operation::ReleaseLock,
        Operation::Members,
        Operation::Leases,
        Operation::Lease,
        Operation::TakeLease,
        Operation::ReleaseLease,
        Operation::Checkpoint,
        Operation::DeleteLease,
        Operation::SetCheckpoint,
        Operation::WritePlan,
        Operation::DeletePlan,
        Operation::Prune,
        Operation::ShardCache,
        Operation::PutShardCache,
        Operation::DescribeTable,
        Operation::CreateTable,
        Operation::ScanApps,
        Operation::DeleteApp,
    ];

    /// Whether the request writes the table (reads and table management do not).
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            Operation::ReadLockAndPlan
                | Operation::ReadLock
                | Operation::Members
                | Operation::Leases
                | Operation::Lease
                | Operation::ShardCache
                | Operation::DescribeTable
                | Operation::CreateTable
                | Operation::ScanApps
        )
    }

    /// A short snake-case name, used as the `op` metric label.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Register => "register",
            Operation::Heartbeat => "heartbeat",
            Operation::Leave => "leave",
            Operation::ReadLockAndPlan => "read_lock_and_plan",
            Operation::ReadLock => "read_lock",
            Operation::TakeLock => "take_lock",
            Operation::RenewLock => "renew_lock",
            Operation::ReleaseLock => "release_lock",
            Operation::Members => "members",
            Operation::Leases => "leases",
            Operation::Lease => "lease",
            Operation::TakeLease => "take_lease",
            Operation::ReleaseLease => "release_lease",
            Operation::Checkpoint => "checkpoint",
            Operation::DeleteLease => "delete_lease",
            Operation::SetCheckpoint => "set_checkpoint",
            Operation::WritePlan => "write_plan",
            Operation::DeletePlan => "delete_plan",
            Operation::Prune => "prune",
            Operation::ShardCache => "shard_cache",
            Operation::PutShardCache => "put_shard_cache",
            Operation::DescribeTable => "describe_table",
            Operation::CreateTable => "create_table",
            Operation::ScanApps => "scan_apps",
            Operation::DeleteApp => "delete_app",
        }
    }
}

/// Runs one request of `op` within `timeout`. A request that times out may still land:
/// callers treat it as "outcome unknown", like any transient error.
pub(crate) async fn timed<T>(
    op: Operation,
    timeout: std::time::Duration,
    request: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result = match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable {
            op,
            message: format!("timed out after {timeout:?}"),
        }),
    };
    if let Err(e) = &result {
        count_failure(op, e);
    }
    result
}

/// Counts a request of the group protocol that failed: throttled, or failed in transit
/// or on the service side. Refused conditions are answers, not failures.
fn count_failure(op: Operation, error: &StoreError) {
    match error {
        StoreError::Throttled { .. } => crate::metrics::store_throttled(op.name()),
        StoreError::Unavailable { .. } => crate::metrics::store_error(op.name()),
        _ => {}
    }
}

/// Request counters per [`Operation`], kept by every store.
#[derive(Debug, Default)]
pub struct RequestCounter {
    counts: [AtomicU64; Operation::ALL.len()],
}

impl RequestCounter {
    /// Counts one request (and reports it to the `metrics` facade).
    pub fn count(&self, op: Operation) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
        crate::metrics::store_request(op.name());
    }

    /// A snapshot of the counts.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts(
            Operation::ALL
                .iter()
                .map(|&op| (op, self.counts[op as usize].load(Ordering::Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        )
    }
}

/// A snapshot of request counts per operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts(pub BTreeMap<Operation, u64>);

impl RequestCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Requests of one operation.
    pub fn get(&self, op: Operation) -> u64 {
        self.0.get(&op).copied().unwrap_or(0)
    }

    /// The requests made since `earlier`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(&op, &n)| (op, n - earlier.get(op)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        )
    }
}

/// A state-store failure.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A conditional write found the item not as expected (the lease, lock, plan or
    /// member moved on): not retryable.
    #[error("condition failed on {item}")]
    ConditionFailed {
        /// Which item, e.g. `lease stream/shardId-000000000001`.
        item: String,
    },
    /// The table does not exist.
    #[error("state-store table {table:?} not found; create it with `kinesumer table create --table {table}` or `kinesumer::store::create_table`")]
    TableNotFound {
        /// The table name.
        table: String,
    },
    /// DynamoDB throttled the request.
    #[error("state store throttled {op:?}")]
    Throttled {
        /// The operation.
        op: Operation,
    },
    /// The request failed in transit or on the service side; it may or may not have
    /// landed.
    #[error("state-store request {op:?} failed: {message}")]
    Unavailable {
        /// The operation.
        op: Operation,
        /// What the SDK said (no credentials, no payloads).
        message: String,
    },
    /// The table exists but its key schema is not the one the store needs.
    #[error("state-store table {table:?} has the wrong schema: {problem}; it needs key pk (S, HASH) and sk (S, RANGE)")]
    TableSchema {
        /// The table name.
        table: String,
        /// What is wrong.
        problem: String,
    },
    /// A body (a plan, a shard cache) too large even when split over several items.
    #[error("state-store item {item} too large: {bytes} bytes")]
    TooLarge {
        /// Which item.
        item: String,
        /// Its size.
        bytes: usize,
    },
    /// An item could not be read as the schema says.
    #[error("malformed state-store item {item}: {reason}")]
    Malformed {
        /// Which item.
        item: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether the request may be retried (the outcome of the first is unknown or it was
    /// refused for load).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// The requests of the group protocol, each with the condition that makes it safe.
///
/// Every conditional write that finds the item otherwise returns
/// [`StoreError::ConditionFailed`]. Reads are strongly consistent. Implementations count
/// each request in a [`RequestCounter`].
///
/// Sealed: call it on [`DynamoStore`] (or `MemoryStore`, feature `test-util`), but it
/// cannot be implemented outside this crate. Its conditions are the group's fencing;
/// an implementation that gets one wrong loses records without an error, and the
/// trait changes with the protocol. To reach DynamoDB differently, pass your own
/// client ([`Kinesumer::from_clients`](crate::Kinesumer::from_clients)).
///
/// # Cancel safety
///
/// Every method is one request (a split plan or shard cache: one transaction). Dropping
/// its future is safe but leaves the outcome of a write unknown — it may land later, as
/// a request that timed out may — which is what every condition above is for: the group
/// treats a dropped or timed-out write like a lost response and reads before it relies
/// on the outcome. Reads have no effect to leave unknown.
#[async_trait]
pub trait StateStore: crate::sealed::Sealed + Send + Sync + fmt::Debug + 'static {
    /// The application this handle serves.
    fn app(&self) -> &str;

    /// The request counts so far.
    fn requests(&self) -> RequestCounts;

    /// Writes the member item with a new incarnation token, the streams and
    /// `last_update`. See [`Registration`] for the condition. `heartbeat` is 0 at a start;
    /// a rejoin sets it to the old counter + 1 (1 when there was no item), so the counter
    /// never repeats under one client id and a prune aimed at the fenced incarnation
    /// (conditional on the counter the leader saw) misses the rejoined one. With a
    /// `load` report (capacity and limits; a start has no shard loads yet) it is written
    /// as a heartbeat writes it, so the leader knows a member's limits from its first
    /// sight; without one a start removes the last process's report and a rejoin keeps it
    /// (the same process).
    async fn register(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        how: &Registration,
        load: Option<&LoadReport>,
    ) -> Result<(), StoreError>;

    /// `heartbeat + 1`, `last_update`, `streams` and, with a `load` report, `capacity`
    /// and `load`, conditional on the token; never creates the item.
    async fn heartbeat(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        load: Option<&LoadReport>,
    ) -> Result<HeartbeatOutcome, StoreError>;

    /// Deletes the member item if it still holds `token` (graceful leave). An item
    /// already gone is not an error.
    async fn leave(&self, client_id: &str, token: &str) -> Result<(), StoreError>;

    /// Reads the leader lock and this member's plan in one strongly consistent batch.
    async fn read_lock_and_plan(
        &self,
        client_id: &str,
    ) -> Result<(Option<LockItem>, Option<PlanItem>), StoreError>;

    /// Reads the leader lock.
    async fn read_lock(&self) -> Result<Option<LockItem>, StoreError>;

    /// Takes the lock: `owner = me`, `term + 1`, `renewals + 1`, conditional on the
    /// triple `seen` (or on there being no lock item when `seen` is `None`). Returns
    /// the new lock.
    async fn take_lock(&self, me: &Owner, seen: Option<&LockItem>) -> Result<LockItem, StoreError>;

    /// `renewals + 1`, conditional on `owner = me` and `term`.
    async fn renew_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError>;

    /// Releases the lock (REMOVE `owner`, `term + 1`), conditional on `owner = me` and `term`.
    async fn release_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError>;

    /// Every member item of the app (a paged Query).
    async fn members(&self) -> Result<Vec<MemberItem>, StoreError>;

    /// Every lease item of one stream (a paged Query).
    async fn leases(&self, stream: &str) -> Result<Vec<LeaseItem>, StoreError>;

    /// One lease item.
    async fn lease(&self, stream: &str, shard_id: &str) -> Result<Option<LeaseItem>, StoreError>;

    /// Takes a lease: `owner = me`, `lease_counter = if_not_exists(lease_counter, 0) + 1`,
    /// `start = if_not_exists(start, :start)`, conditional on `seen` and on `shard_end`
    /// not set. Returns the item as written (ALL_NEW): its checkpoint is where to read from.
    async fn take_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        seen: &LeaseSeen,
        start: &StoredStart,
    ) -> Result<LeaseItem, StoreError>;

    /// Releases a lease: REMOVE `owner`, `lease_counter + 1`, conditional on `owner = me`
    /// and `lease_counter = counter`.
    async fn release_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
    ) -> Result<(), StoreError>;

    /// A fenced checkpoint write: conditional on `owner = me`, `lease_counter = counter`
    /// and on the checkpoint being `previous` (absent when `None`), so a deposed owner
    /// never moves it and a late older write never overwrites a newer one.
    async fn checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
        previous: Option<&Position>,
        write: &CheckpointWrite,
    ) -> Result<(), StoreError>;

    /// Deletes a lease: a finished shard's tombstone (conditional on `shard_end`), or any
    /// lease of a re-created stream ([`LeaseDeletion`]). An item already gone is not an
    /// error.
    async fn delete_lease(
        &self,
        stream: &str,
        shard_id: &str,
        which: LeaseDeletion,
    ) -> Result<(), StoreError>;

    /// An operator's move of a checkpoint (`kinesumer reset`, `kinesumer migrate`): sets
    /// or removes the position and the stored start, sets `shard_end` to `finished` (a
    /// shard read to its end elsewhere, as a KCL `SHARD_END`) and removes
    /// `millis_behind` (the lag of the old position says nothing of the new one);
    /// conditional on the lease having no owner unless `force`.
    async fn set_checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        position: Option<&Position>,
        start: Option<&StoredStart>,
        finished: bool,
        force: bool,
    ) -> Result<(), StoreError>;

    /// Writes a plan, conditional on `attribute_not_exists(sk) OR (term, version) <
    /// (plan.term, plan.version)` (a stored plan without a version counts as version 0);
    /// refused means the writer has been deposed (or, for a write that landed late, that
    /// a newer plan of its own term is stored).
    async fn write_plan(&self, plan: &PlanItem) -> Result<(), StoreError>;

    /// Deletes a member's plan, conditional on `(term, version) < (term, version)` as
    /// for [`StateStore::write_plan`]. An item already gone is not an error.
    async fn delete_plan(&self, client_id: &str, term: u64, version: u64)
        -> Result<(), StoreError>;

    /// Deletes a member item conditional on the `heartbeat` and `incarnation` the leader
    /// saw (a Go-client item, with no counter and no incarnation, counts as 0 and `None`),
    /// so a process that registered meanwhile under the same client id — at heartbeat 0
    /// again — is never pruned. An item already gone is not an error.
    async fn prune(
        &self,
        client_id: &str,
        heartbeat: u64,
        incarnation: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Reads the shard cache of a stream.
    async fn shard_cache(&self, stream: &str) -> Result<Option<ShardCache>, StoreError>;

    /// Writes the shard cache of a stream (only the leader does).
    async fn put_shard_cache(&self, cache: &ShardCache) -> Result<(), StoreError>;
}

/// Formats a time as DESIGN §2 requires: RFC 3339, UTC, nine fractional digits, `Z`, so
/// the LSI on `last_update` sorts it.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses a time in any RFC 3339 form (the Go client writes its local offset and trims
/// trailing zeros).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::metrics::tests::{id, values};
    use crate::metrics::{STORE_ERRORS, STORE_THROTTLES};

    #[test]
    fn owner_round_trips_and_splits_at_the_last_hash() {
        let o = Owner::parse("host#1#abc").unwrap();
        assert_eq!(o.client_id, "host#1");
        assert_eq!(o.token, "abc");
        assert_eq!(o.to_string(), "host#1#abc");
        assert!(Owner::parse("nohash").is_none());
        assert!(Owner::parse("#t").is_none());
    }

    #[test]
    fn times_have_nine_digits_and_read_the_go_form() {
        let t = parse_time("2024-01-02T03:04:05.5+09:00").unwrap();
        assert_eq!(format_time(t), "2024-01-01T18:04:05.500000000Z");
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn store_failures_count_throttles_and_errors_but_not_refused_conditions() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let op = Operation::Checkpoint;
        ::metrics::with_local_recorder(&recorder, || {
            count_failure(op, &StoreError::Throttled { op });
            count_failure(op, &StoreError::Throttled { op });
            let message = "timed out".to_owned();
            count_failure(op, &StoreError::Unavailable { op, message });
            let item = "lease".to_owned();
            count_failure(op, &StoreError::ConditionFailed { item });
        });
        let labels = [("op", "checkpoint")];
        assert_eq!(
            values(&snapshotter),
            BTreeMap::from([
                (id(STORE_THROTTLES, labels), DebugValue::Counter(2)),
                (id(STORE_ERRORS, labels), DebugValue::Counter(1)),
            ])
        );
    }
}
