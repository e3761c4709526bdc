//! The in-memory state store, for unit tests and simulations.
//!
//! [`MemoryStore`] keeps every item of every application in one map behind a mutex and
//! applies exactly the conditions [`DynamoStore`](super::DynamoStore) sends to DynamoDB,
//! so a protocol that is safe against one is safe against the other. It is cheap: every
//! request touches only the items it names, and [`StateStore::leases`] reads one stream's
//! map, never the others.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use kinesumer::store::{MemoryStore, Registration, StateStore};
//!
//! let store = MemoryStore::new("app");
//! store.register("a", "t1", &[], &Registration::Start, None).await.unwrap();
//! let other = store.for_app("other-app"); // same data, another app
//! assert!(other.members().await.unwrap().is_empty());
//! assert_eq!(store.members().await.unwrap().len(), 1);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;

use super::{
    CheckpointWrite, HeartbeatOutcome, LeaseDeletion, LeaseItem, LeaseSeen, LoadReport, LockItem,
    MemberItem, Operation, Owner, PlanItem, Registration, RequestCounter, RequestCounts,
    ShardCache, StateStore, StoreError, StoredStart,
};
use crate::seq::Position;

/// The items of one application.
#[derive(Debug, Default)]
struct AppData {
    members: BTreeMap<String, MemberItem>,
    lock: Option<LockItem>,
    plans: BTreeMap<String, PlanItem>,
    shard_caches: HashMap<String, ShardCache>,
    /// Per stream, per shard: one stream's leases are read without touching the others.
    leases: HashMap<String, BTreeMap<String, LeaseItem>>,
}

/// An in-memory [`StateStore`] with the conditional semantics of the DynamoDB one.
///
/// `Clone` shares the data and the request counts; [`MemoryStore::for_app`] gives a
/// handle on another application over the same data, with its own counts.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    app: String,
    data: Arc<Mutex<HashMap<String, AppData>>>,
    counter: Arc<RequestCounter>,
}

impl MemoryStore {
    /// An empty store, with a handle on `app`.
    pub fn new(app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            data: Arc::default(),
            counter: Arc::default(),
        }
    }

    /// A handle on another application over the same data (its own request counts).
    pub fn for_app(&self, app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            data: Arc::clone(&self.data),
            counter: Arc::default(),
        }
    }

    /// Counts the request and runs `f` on this app's items under the lock.
    fn with<T>(&self, op: Operation, f: impl FnOnce(&mut AppData) -> T) -> T {
        self.counter.count(op);
        let mut all = lock(&self.data);
        f(all.entry(self.app.clone()).or_default())
    }
}

/// Locks the data, recovering from a panic in another holder (the maps stay consistent:
/// every write is a single assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Refuses with [`StoreError::ConditionFailed`] on `item` unless `ok`.
fn check(ok: bool, item: impl FnOnce() -> String) -> Result<(), StoreError> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::ConditionFailed { item: item() })
    }
}

fn member_name(client_id: &str) -> String {
    format!("member {client_id}")
}

fn lease_name(stream: &str, shard_id: &str) -> String {
    format!("lease {stream}/{shard_id}")
}

const LOCK_NAME: &str = "leader lock";

impl crate::sealed::Sealed for MemoryStore {}

#[async_trait]
impl StateStore for MemoryStore {
    fn app(&self) -> &str {
        &self.app
    }

    fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    async fn register(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        how: &Registration,
        load: Option<&LoadReport>,
    ) -> Result<(), StoreError> {
        self.with(Operation::Register, |d| {
            let old = d.members.get(client_id);
            // A rejoin is the same process: its load report (capacity, limits) stays.
            let (heartbeat, load_kept) = match how {
                Registration::Start => (0, None),
                Registration::Rejoin { old_token } => {
                    let inc = old.and_then(|m| m.incarnation.as_deref());
                    check(
                        old.is_none() || inc == Some(old_token) || inc == Some(token),
                        || member_name(client_id),
                    )?;
                    let old = old.map_or((0, None), |m| (m.heartbeat, m.load.clone()));
                    (old.0 + 1, old.1)
                }
            };
            let load = load.cloned().or(load_kept);
            d.members.insert(
                client_id.to_owned(),
                MemberItem {
                    client_id: client_id.to_owned(),
                    incarnation: Some(token.to_owned()),
                    heartbeat,
                    streams: streams.to_vec(),
                    last_update: Some(Utc::now()),
                    load,
                },
            );
            Ok(())
        })
    }

    async fn heartbeat(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        load: Option<&LoadReport>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.with(Operation::Heartbeat, |d| {
            Ok(match d.members.get_mut(client_id) {
                None => HeartbeatOutcome::Missing,
                Some(m) if m.incarnation.as_deref() != Some(token) => {
                    HeartbeatOutcome::Superseded(m.incarnation.clone())
                }
                Some(m) => {
                    m.heartbeat += 1;
                    m.streams = streams.to_vec();
                    m.last_update = Some(Utc::now());
                    if let Some(load) = load {
                        m.load = Some(load.clone());
                    }
                    HeartbeatOutcome::Beat(m.heartbeat)
                }
            })
        })
    }

    async fn leave(&self, client_id: &str, token: &str) -> Result<(), StoreError> {
        self.with(Operation::Leave, |d| {
            if let Some(m) = d.members.get(client_id) {
                check(m.incarnation.as_deref() == Some(token), || {
                    member_name(client_id)
                })?;
                d.members.remove(client_id);
            }
            Ok(())
        })
    }

    async fn read_lock_and_plan(
        &self,
        client_id: &str,
    ) -> Result<(Option<LockItem>, Option<PlanItem>), StoreError> {
        self.with(Operation::ReadLockAndPlan, |d| {
            Ok((d.lock.clone(), d.plans.get(client_id).cloned()))
        })
    }

    async fn read_lock(&self) -> Result<Option<LockItem>, StoreError> {
        self.with(Operation::ReadLock, |d| Ok(d.lock.clone()))
    }

    async fn take_lock(&self, me: &Owner, seen: Option<&LockItem>) -> Result<LockItem, StoreError> {
        self.with(Operation::TakeLock, |d| {
            check(d.lock.as_ref() == seen, || LOCK_NAME.to_owned())?;
            let seen = seen.cloned().unwrap_or_default();
            let new = LockItem {
                owner: Some(me.clone()),
                term: seen.term + 1,
                renewals: seen.renewals + 1,
            };
            d.lock = Some(new.clone());
            Ok(new)
        })
    }

    async fn renew_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        self.with(Operation::RenewLock, |d| {
            held_lock(d, me, term)?.renewals += 1;
            Ok(())
        })
    }

    async fn release_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        self.with(Operation::ReleaseLock, |d| {
            let lock = held_lock(d, me, term)?;
            lock.owner = None;
            lock.term += 1;
            Ok(())
        })
    }

    async fn members(&self) -> Result<Vec<MemberItem>, StoreError> {
        self.with(Operation::Members, |d| {
            Ok(d.members.values().cloned().collect())
        })
    }

    async fn leases(&self, stream: &str) -> Result<Vec<LeaseItem>, StoreError> {
        self.with(Operation::Leases, |d| {
            Ok(d.leases
                .get(stream)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default())
        })
    }

    async fn lease(&self, stream: &str, shard_id: &str) -> Result<Option<LeaseItem>, StoreError> {
        self.with(Operation::Lease, |d| {
            Ok(d.leases.get(stream).and_then(|m| m.get(shard_id)).cloned())
        })
    }

    async fn take_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        seen: &LeaseSeen,
        start: &StoredStart,
    ) -> Result<LeaseItem, StoreError> {
        self.with(Operation::TakeLease, |d| {
            let shards = d.leases.entry(stream.to_owned()).or_default();
            let ok = match shards.get(shard_id) {
                None => !seen.exists,
                Some(l) => {
                    seen.exists
                        && l.owner == seen.owner
                        && l.lease_counter == seen.lease_counter
                        && !l.shard_end
                }
            };
            check(ok, || lease_name(stream, shard_id))?;
            let l = shards
                .entry(shard_id.to_owned())
                .or_insert_with(|| empty_lease(stream, shard_id));
            l.owner = Some(me.clone());
            l.lease_counter = Some(l.lease_counter.unwrap_or(0) + 1);
            l.start.get_or_insert_with(|| start.clone());
            l.last_update = Some(Utc::now());
            Ok(l.clone())
        })
    }

    async fn release_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
    ) -> Result<(), StoreError> {
        self.with(Operation::ReleaseLease, |d| {
            let l = held_lease(d, stream, shard_id, me, counter)?;
            l.owner = None;
            l.lease_counter = Some(counter + 1);
            l.last_update = Some(Utc::now());
            Ok(())
        })
    }

    async fn checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
        previous: Option<&Position>,
        write: &CheckpointWrite,
    ) -> Result<(), StoreError> {
        self.with(Operation::Checkpoint, |d| {
            let l = held_lease(d, stream, shard_id, me, counter)?;
            check(l.checkpoint.as_ref() == previous, || {
                lease_name(stream, shard_id)
            })?;
            if let Some(p) = &write.position {
                l.checkpoint = Some(p.clone());
            }
            if write.millis_behind.is_some() {
                l.millis_behind = write.millis_behind;
            }
            l.shard_end |= write.shard_end;
            l.last_update = Some(Utc::now());
            Ok(())
        })
    }

    async fn delete_lease(
        &self,
        stream: &str,
        shard_id: &str,
        which: LeaseDeletion,
    ) -> Result<(), StoreError> {
        self.with(Operation::DeleteLease, |d| {
            let Some(shards) = d.leases.get_mut(stream) else {
                return Ok(());
            };
            if let Some(l) = shards.get(shard_id) {
                let allowed = which == LeaseDeletion::Retire || l.shard_end;
                check(allowed, || lease_name(stream, shard_id))?;
                shards.remove(shard_id);
            }
            Ok(())
        })
    }

    async fn set_checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        position: Option<&Position>,
        start: Option<&StoredStart>,
        finished: bool,
        force: bool,
    ) -> Result<(), StoreError> {
        self.with(Operation::SetCheckpoint, |d| {
            let shards = d.leases.entry(stream.to_owned()).or_default();
            let owned = shards.get(shard_id).is_some_and(|l| l.owner.is_some());
            check(force || !owned, || lease_name(stream, shard_id))?;
            let l = shards
                .entry(shard_id.to_owned())
                .or_insert_with(|| empty_lease(stream, shard_id));
            l.checkpoint = position.cloned();
            l.start = start.cloned();
            l.shard_end = finished;
            l.millis_behind = None;
            l.last_update = Some(Utc::now());
            Ok(())
        })
    }

    async fn write_plan(&self, plan: &PlanItem) -> Result<(), StoreError> {
        self.with(Operation::WritePlan, |d| {
            let newer = d
                .plans
                .get(&plan.client_id)
                .is_some_and(|p| (p.term, p.version) >= (plan.term, plan.version));
            check(!newer, || format!("plan {}", plan.client_id))?;
            d.plans.insert(plan.client_id.clone(), plan.clone());
            Ok(())
        })
    }

    async fn delete_plan(
        &self,
        client_id: &str,
        term: u64,
        version: u64,
    ) -> Result<(), StoreError> {
        self.with(Operation::DeletePlan, |d| {
            if let Some(p) = d.plans.get(client_id) {
                check((p.term, p.version) < (term, version), || {
                    format!("plan {client_id}")
                })?;
                d.plans.remove(client_id);
            }
            Ok(())
        })
    }

    async fn prune(
        &self,
        client_id: &str,
        heartbeat: u64,
        incarnation: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(Operation::Prune, |d| {
            if let Some(m) = d.members.get(client_id) {
                check(
                    m.heartbeat == heartbeat && m.incarnation.as_deref() == incarnation,
                    || member_name(client_id),
                )?;
                d.members.remove(client_id);
            }
            Ok(())
        })
    }

    async fn shard_cache(&self, stream: &str) -> Result<Option<ShardCache>, StoreError> {
        self.with(Operation::ShardCache, |d| {
            Ok(d.shard_caches.get(stream).cloned())
        })
    }

    async fn put_shard_cache(&self, cache: &ShardCache) -> Result<(), StoreError> {
        self.with(Operation::PutShardCache, |d| {
            d.shard_caches.insert(cache.stream.clone(), cache.clone());
            Ok(())
        })
    }
}

/// A lease item as an UpdateItem on a missing key creates it: only its key.
fn empty_lease(stream: &str, shard_id: &str) -> LeaseItem {
    LeaseItem {
        stream: stream.to_owned(),
        shard_id: shard_id.to_owned(),
        checkpoint: None,
        owner: None,
        lease_counter: None,
        start: None,
        shard_end: false,
        millis_behind: None,
        last_update: None,
    }
}

/// The lock `me` holds in `term`, or ConditionFailed.
fn held_lock<'a>(
    d: &'a mut AppData,
    me: &Owner,
    term: u64,
) -> Result<&'a mut LockItem, StoreError> {
    d.lock
        .as_mut()
        .filter(|l| l.owner.as_ref() == Some(me) && l.term == term)
        .ok_or_else(|| StoreError::ConditionFailed {
            item: LOCK_NAME.to_owned(),
        })
}

/// The lease `me` holds under `counter` (the fence of every owner's write), or
/// ConditionFailed.
fn held_lease<'a>(
    d: &'a mut AppData,
    stream: &str,
    shard_id: &str,
    me: &Owner,
    counter: u64,
) -> Result<&'a mut LeaseItem, StoreError> {
    d.leases
        .get_mut(stream)
        .and_then(|m| m.get_mut(shard_id))
        .filter(|l| l.owner.as_ref() == Some(me) && l.lease_counter == Some(counter))
        .ok_or_else(|| StoreError::ConditionFailed {
            item: lease_name(stream, shard_id),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_data_and_counts_and_apps_are_apart() {
        let a = MemoryStore::new("a");
        let clone = a.clone();
        let b = a.for_app("b");
        a.register("m", "t", &[], &Registration::Start, None)
            .await
            .unwrap();
        assert_eq!(clone.members().await.unwrap().len(), 1);
        assert_eq!(
            a.requests().total(),
            2,
            "a clone counts into the same counter"
        );
        assert!(b.members().await.unwrap().is_empty());
        assert_eq!(b.requests().get(Operation::Members), 1);
        assert_eq!(b.app(), "b");
    }
}
