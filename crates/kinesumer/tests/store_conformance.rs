//! One conformance suite for every [`StateStore`]: each method's condition both ways
//! (met → written; not met → ConditionFailed and the item unchanged), the items returned,
//! heartbeat outcomes, queries and request counts. It runs against [`MemoryStore`] and
//! against [`DynamoStore`] on the local stack (`scripts/local-stack start`), each test on
//! a fresh random app of one table made with `create_table`. The DynamoDB-only tests at
//! the end check the item formats against raw items in the Go client's format, table
//! errors, and the splitting of large plans and shard caches.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeZone, Utc};
use kinesumer::store::LeaseDeletion::{Retire, Tombstone};
use kinesumer::store::{
    create_table, CheckpointWrite, DynamoStore, HeartbeatOutcome, LeaseSeen, Limits, LoadReport,
    LockItem, MemoryStore, Operation, Owner, PlanItem, PlanStart, PlannedShard, Registration,
    ShardCache, ShardInfo, ShardLoad, ShardRef, StateStore, StoreError, StoredStart, TableBilling,
};
use kinesumer::{Position, SequenceNumber};

use common::{dynamodb, random_name, within};

type Store = Arc<dyn StateStore>;

/// A store and a handle on another app over the same data.
struct Fixture {
    s: Store,
    other_app: Store,
}

fn memory() -> Fixture {
    let s = MemoryStore::new(random_name("app"));
    Fixture {
        other_app: Arc::new(s.for_app(random_name("app"))),
        s: Arc::new(s),
    }
}

/// The table every DynamoDB test of this binary shares (each test has its own app).
fn shared_table() -> &'static str {
    static TABLE: OnceLock<String> = OnceLock::new();
    TABLE.get_or_init(|| random_name("conformance"))
}

async fn dynamo() -> Fixture {
    let client = dynamodb().await;
    let table = shared_table();
    within(
        "create table",
        create_table(&client, table, TableBilling::OnDemand),
    )
    .await
    .expect("create table");
    Fixture {
        s: Arc::new(DynamoStore::new(client.clone(), table, random_name("app"))),
        other_app: Arc::new(DynamoStore::new(client, table, random_name("app"))),
    }
}

/// Declares each suite test twice: on the memory store and on DynamoDB.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::memory()).await
            })*
        }
        mod dynamo {
            $(#[tokio::test]
            async fn $name() {
                let f = super::dynamo().await;
                super::within(stringify!($name), super::$name(f)).await
            })*
        }
    };
}

conformance!(
    register_and_heartbeat,
    heartbeat_carries_the_load_report,
    rejoin_with_old_new_and_other_token,
    leave_only_own_incarnation,
    prune_only_at_seen_heartbeat,
    lock_take_renew_release,
    plan_term_fence,
    take_lease_conditions,
    release_lease_fence,
    checkpoint_never_goes_back,
    delete_lease_only_tombstones,
    retiring_deletes_a_held_lease_and_fences_its_holder,
    set_checkpoint_by_operator,
    queries_stay_in_their_app_and_stream,
    shard_cache_round_trip,
    requests_are_counted,
);

fn owner(client: &str, token: &str) -> Owner {
    Owner {
        client_id: client.into(),
        token: token.into(),
    }
}

fn pos(seq: &str, sub: Option<u64>) -> Position {
    Position {
        sequence: seq.parse::<SequenceNumber>().unwrap(),
        sub_sequence: sub,
    }
}

fn streams(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::ConditionFailed { .. }) => {}
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
}

const S: &str = "stream-a";

/// What a taker sees when the lease item does not exist.
const MISSING: LeaseSeen = LeaseSeen {
    exists: false,
    owner: None,
    lease_counter: None,
};

/// A write that finishes a shard without moving its checkpoint.
const END: CheckpointWrite = CheckpointWrite {
    position: None,
    shard_end: true,
    millis_behind: None,
};

/// Takes a lease whose item does not exist.
async fn take_new(s: &Store, stream: &str, shard: &str, me: &Owner) {
    s.take_lease(stream, shard, me, &MISSING, &StoredStart::TrimHorizon)
        .await
        .unwrap();
}
const SHARD: &str = "shardId-000000000001";

async fn register_and_heartbeat(f: Fixture) {
    let s = f.s;
    s.register("a", "t1", &streams(&["x", "y"]), &Registration::Start, None)
        .await
        .unwrap();
    let m = s.members().await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].client_id, "a");
    assert_eq!(m[0].incarnation.as_deref(), Some("t1"));
    assert_eq!(m[0].heartbeat, 0);
    assert_eq!(m[0].streams, streams(&["x", "y"]));
    let written = m[0].last_update.expect("last_update");
    assert!((Utc::now() - written).num_seconds().abs() < 60);

    let empty: Vec<String> = Vec::new();
    assert_eq!(
        s.heartbeat("a", "t1", &empty, None).await.unwrap(),
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        s.heartbeat("a", "t1", &empty, None).await.unwrap(),
        HeartbeatOutcome::Beat(2)
    );
    let m = s.members().await.unwrap();
    assert_eq!(
        m[0].streams, empty,
        "an empty stream list is a list, not a set"
    );

    assert_eq!(
        s.heartbeat("a", "t0", &empty, None).await.unwrap(),
        HeartbeatOutcome::Superseded(Some("t1".into()))
    );
    assert_eq!(s.members().await.unwrap()[0].heartbeat, 2, "unchanged");
    assert_eq!(
        s.heartbeat("b", "t1", &empty, None).await.unwrap(),
        HeartbeatOutcome::Missing
    );
    assert_eq!(
        s.members().await.unwrap().len(),
        1,
        "a heartbeat never creates the item"
    );

    // A start is unconditional: the latest registration wins.
    s.register("a", "t2", &empty, &Registration::Start, None)
        .await
        .unwrap();
    let m = s.members().await.unwrap();
    assert_eq!(
        (m[0].incarnation.as_deref(), m[0].heartbeat),
        (Some("t2"), 0)
    );
}

async fn heartbeat_carries_the_load_report(f: Fixture) {
    let s = f.s;
    s.register("a", "t1", &[], &Registration::Start, None)
        .await
        .unwrap();
    assert_eq!(
        s.members().await.unwrap()[0].load,
        None,
        "none until reported"
    );
    let mut report = LoadReport {
        capacity: 2.0,
        limits: Limits {
            max_shards: Some(3),
            max_bytes_per_sec: Some(1_500_000.0),
        },
        shards: BTreeMap::new(),
    };
    report.shards.entry("x".into()).or_default().insert(
        "shardId-000000000007".into(),
        ShardLoad {
            bytes_per_sec: 2048.0,
            records_per_sec: 12.5,
        },
    );
    s.heartbeat("a", "t1", &[], Some(&report)).await.unwrap();
    assert_eq!(s.members().await.unwrap()[0].load.as_ref(), Some(&report));
    // A heartbeat without a report keeps the last one.
    s.heartbeat("a", "t1", &[], None).await.unwrap();
    assert_eq!(s.members().await.unwrap()[0].load.as_ref(), Some(&report));
    // A report without limits drops the stored ones.
    report.limits = Limits::default();
    s.heartbeat("a", "t1", &[], Some(&report)).await.unwrap();
    assert_eq!(s.members().await.unwrap()[0].load.as_ref(), Some(&report));
    // A rejoin keeps the report: the same process, so the same capacity and limits.
    report.limits.max_shards = Some(1);
    s.heartbeat("a", "t1", &[], Some(&report)).await.unwrap();
    let rejoin = Registration::Rejoin {
        old_token: "t1".into(),
    };
    s.register("a", "t2", &[], &rejoin, None).await.unwrap();
    assert_eq!(s.members().await.unwrap()[0].load.as_ref(), Some(&report));
    // A start drops it: another process, whose limits (by count: none unless declared,
    // and then no report at all) its own heartbeats say.
    s.register("a", "t3", &[], &Registration::Start, None)
        .await
        .unwrap();
    assert_eq!(
        s.members().await.unwrap()[0].load,
        None,
        "a start keeps no report of the process before"
    );
    // A start with its own report (capacity and limits, no shard loads yet) writes it:
    // the leader knows the limits before the first heartbeat.
    let own = LoadReport {
        shards: Default::default(),
        ..report
    };
    s.register("a", "t4", &[], &Registration::Start, Some(&own))
        .await
        .unwrap();
    assert_eq!(s.members().await.unwrap()[0].load.as_ref(), Some(&own));
}

async fn rejoin_with_old_new_and_other_token(f: Fixture) {
    let s = f.s;
    let none: Vec<String> = Vec::new();
    let rejoin = |old: &str| Registration::Rejoin {
        old_token: old.into(),
    };
    // No item: allowed.
    s.register("a", "t1", &none, &rejoin("t0"), None)
        .await
        .unwrap();
    assert_eq!(s.members().await.unwrap()[0].heartbeat, 1);
    s.heartbeat("a", "t1", &none, None).await.unwrap();
    // The old token: allowed, and the counter moves on.
    s.register("a", "t2", &none, &rejoin("t1"), None)
        .await
        .unwrap();
    let m = &s.members().await.unwrap()[0];
    assert_eq!((m.incarnation.as_deref(), m.heartbeat), (Some("t2"), 3));
    // The new token (a retry after a lost response): allowed.
    s.register("a", "t2", &none, &rejoin("t1"), None)
        .await
        .unwrap();
    // Another token: a newer process runs under this id.
    s.register("a", "t9", &none, &Registration::Start, None)
        .await
        .unwrap();
    refused(s.register("a", "t3", &none, &rejoin("t2"), None).await);
    let m = &s.members().await.unwrap()[0];
    assert_eq!((m.incarnation.as_deref(), m.heartbeat), (Some("t9"), 0));
}

async fn leave_only_own_incarnation(f: Fixture) {
    let s = f.s;
    s.register("a", "t1", &[], &Registration::Start, None)
        .await
        .unwrap();
    refused(s.leave("a", "t2").await);
    assert_eq!(s.members().await.unwrap().len(), 1);
    s.leave("a", "t1").await.unwrap();
    assert!(s.members().await.unwrap().is_empty());
    s.leave("a", "t1").await.unwrap();
}

async fn prune_only_at_seen_heartbeat(f: Fixture) {
    let s = f.s;
    s.register("a", "t1", &[], &Registration::Start, None)
        .await
        .unwrap();
    s.heartbeat("a", "t1", &[], None).await.unwrap();
    refused(s.prune("a", 0, Some("t1")).await);
    assert_eq!(s.members().await.unwrap().len(), 1);
    s.prune("a", 1, Some("t1")).await.unwrap();
    assert!(s.members().await.unwrap().is_empty());
    s.prune("a", 1, Some("t1")).await.unwrap();
    // A new process under the same client id starts at heartbeat 0 again: a prune of the
    // old incarnation seen at 0 must not delete it.
    s.register("a", "t1", &[], &Registration::Start, None)
        .await
        .unwrap();
    s.register("a", "t2", &[], &Registration::Start, None)
        .await
        .unwrap();
    refused(s.prune("a", 0, Some("t1")).await);
    assert_eq!(s.members().await.unwrap().len(), 1);
    s.prune("a", 0, Some("t2")).await.unwrap();
    assert!(s.members().await.unwrap().is_empty());
}

async fn lock_take_renew_release(f: Fixture) {
    let s = f.s;
    let (a, b) = (owner("a", "1"), owner("b", "1"));
    assert_eq!(s.read_lock().await.unwrap(), None);
    let l1 = s.take_lock(&a, None).await.unwrap();
    assert_eq!(
        l1,
        LockItem {
            owner: Some(a.clone()),
            term: 1,
            renewals: 1
        }
    );
    assert_eq!(s.read_lock().await.unwrap(), Some(l1.clone()));
    refused(s.take_lock(&b, None).await);

    s.renew_lock(&a, 1).await.unwrap();
    refused(s.renew_lock(&b, 1).await);
    refused(s.renew_lock(&a, 2).await);
    let l2 = s.read_lock().await.unwrap().unwrap();
    assert_eq!((l2.term, l2.renewals), (1, 2));

    // A take with a stale triple is refused; with the current one it lands.
    refused(s.take_lock(&b, Some(&l1)).await);
    let l3 = s.take_lock(&b, Some(&l2)).await.unwrap();
    assert_eq!(
        l3,
        LockItem {
            owner: Some(b.clone()),
            term: 2,
            renewals: 3
        }
    );
    assert_eq!(s.read_lock().await.unwrap(), Some(l3.clone()));

    refused(s.release_lock(&a, 2).await);
    refused(s.release_lock(&b, 1).await);
    s.release_lock(&b, 2).await.unwrap();
    let l4 = s.read_lock().await.unwrap().unwrap();
    assert_eq!(
        l4,
        LockItem {
            owner: None,
            term: 3,
            renewals: 3
        }
    );
    refused(s.renew_lock(&b, 3).await);

    // A released lock is taken on its triple with no owner.
    refused(s.take_lock(&a, Some(&l3)).await);
    let l5 = s.take_lock(&a, Some(&l4)).await.unwrap();
    assert_eq!((l5.term, l5.renewals), (4, 4));
    let (lock, plan) = s.read_lock_and_plan("a").await.unwrap();
    assert_eq!((lock, plan), (Some(l5), None));
}

fn plan(client: &str, term: u64, shards: usize, version: u64) -> PlanItem {
    let planned = (0..shards)
        .map(|i| PlannedShard {
            shard_id: format!("shardId-{i:012}"),
            owner: (i % 2 == 0).then(|| owner("other-client", "7f3a9c")),
            lease_counter: (i % 2 == 0).then_some(i as u64),
            owner_gone: i % 3 == 0,
            start: match i % 3 {
                0 => PlanStart::TrimHorizon,
                1 => PlanStart::Latest,
                _ => PlanStart::AtTimestamp(Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap()),
            },
        })
        .collect();
    PlanItem {
        client_id: client.into(),
        term,
        version,
        token: "tok".into(),
        streams: BTreeMap::from([(S.to_string(), planned), ("empty".to_string(), Vec::new())]),
        release: vec![ShardRef {
            stream: S.into(),
            shard_id: "shardId-999".into(),
        }],
    }
}

async fn plan_term_fence(f: Fixture) {
    let s = f.s;
    let p2 = plan("a", 2, 3, 1);
    s.write_plan(&p2).await.unwrap();
    assert_eq!(
        s.read_lock_and_plan("a").await.unwrap(),
        (None, Some(p2.clone()))
    );
    // A deposed leader's late write is refused.
    refused(s.write_plan(&plan("a", 1, 1, 9)).await);
    assert_eq!(s.read_lock_and_plan("a").await.unwrap().1, Some(p2));
    // The same term rewrites with a higher version; a newer term at any version.
    let p2b = plan("a", 2, 1, 2);
    s.write_plan(&p2b).await.unwrap();
    // A write of the same term that landed late (a lower version) is refused.
    refused(s.write_plan(&plan("a", 2, 3, 1)).await);
    assert_eq!(s.read_lock_and_plan("a").await.unwrap().1, Some(p2b));
    let p3 = plan("a", 3, 2, 1);
    s.write_plan(&p3).await.unwrap();
    assert_eq!(s.read_lock_and_plan("a").await.unwrap().1, Some(p3));
    assert_eq!(s.read_lock_and_plan("b").await.unwrap().1, None);

    refused(s.delete_plan("a", 2, 5).await);
    // A delete of this term sent before the plan stored (a lower version) is refused.
    refused(s.delete_plan("a", 3, 1).await);
    assert!(s.read_lock_and_plan("a").await.unwrap().1.is_some());
    s.delete_plan("a", 3, 2).await.unwrap();
    assert_eq!(s.read_lock_and_plan("a").await.unwrap().1, None);
    s.delete_plan("a", 3, 3).await.unwrap();
}

async fn take_lease_conditions(f: Fixture) {
    let s = f.s;
    let (a, b) = (owner("a", "1"), owner("b", "1"));
    let th = StoredStart::TrimHorizon;
    let at = StoredStart::AtTimestamp(Utc.timestamp_opt(1_700_000_000, 5).unwrap());
    assert_eq!(s.lease(S, SHARD).await.unwrap(), None);
    let l = s.take_lease(S, SHARD, &a, &MISSING, &at).await.unwrap();
    assert_eq!((l.stream.as_str(), l.shard_id.as_str()), (S, SHARD));
    assert_eq!((l.owner.as_ref(), l.lease_counter), (Some(&a), Some(1)));
    assert_eq!(
        (l.start.as_ref(), l.checkpoint.as_ref(), l.shard_end),
        (Some(&at), None, false)
    );
    assert_eq!(s.lease(S, SHARD).await.unwrap(), Some(l.clone()));
    refused(s.take_lease(S, SHARD, &b, &MISSING, &th).await);

    // Wrong owner or counter seen: refused, unchanged.
    let wrong = [
        LeaseSeen {
            exists: true,
            owner: Some(a.clone()),
            lease_counter: Some(2),
        },
        LeaseSeen {
            exists: true,
            owner: Some(b.clone()),
            lease_counter: Some(1),
        },
        LeaseSeen {
            exists: true,
            owner: None,
            lease_counter: Some(1),
        },
        LeaseSeen {
            exists: true,
            owner: Some(a.clone()),
            lease_counter: None,
        },
    ];
    for seen in &wrong {
        refused(s.take_lease(S, SHARD, &b, seen, &th).await);
    }
    assert_eq!(s.lease(S, SHARD).await.unwrap(), Some(l));

    // The owner and counter as seen: taken; the stored start stays.
    let seen = LeaseSeen {
        exists: true,
        owner: Some(a.clone()),
        lease_counter: Some(1),
    };
    let l = s.take_lease(S, SHARD, &b, &seen, &th).await.unwrap();
    assert_eq!(
        (l.owner.as_ref(), l.lease_counter, l.start.as_ref()),
        (Some(&b), Some(2), Some(&at))
    );

    // The item is gone while the taker believes it exists: refused, not re-created.
    let ghost = LeaseSeen {
        exists: true,
        owner: None,
        lease_counter: None,
    };
    refused(s.take_lease(S, "shardId-ghost", &a, &ghost, &th).await);
    assert_eq!(s.lease(S, "shardId-ghost").await.unwrap(), None);

    // An item as the Go client leaves it (a checkpoint, no owner, no counter): the take
    // returns the checkpoint to start from.
    let cp = pos(
        "49590338271490256608559692538361571095921575989136588898",
        None,
    );
    s.set_checkpoint(S, "shardId-go", Some(&cp), None, false, false)
        .await
        .unwrap();
    let l = s
        .take_lease(S, "shardId-go", &a, &ghost, &th)
        .await
        .unwrap();
    assert_eq!(
        (l.checkpoint.clone(), l.lease_counter, l.start.clone()),
        (Some(cp), Some(1), Some(th.clone()))
    );

    // A finished shard is never taken.
    let seen = LeaseSeen {
        exists: true,
        owner: Some(a.clone()),
        lease_counter: Some(1),
    };
    s.checkpoint(
        S,
        "shardId-go",
        &a,
        1,
        l.checkpoint.as_ref(),
        &CheckpointWrite {
            position: None,
            shard_end: true,
            millis_behind: None,
        },
    )
    .await
    .unwrap();
    s.release_lease(S, "shardId-go", &a, 1).await.unwrap();
    let free = LeaseSeen {
        exists: true,
        owner: None,
        lease_counter: Some(2),
    };
    refused(s.take_lease(S, "shardId-go", &b, &free, &th).await);
    refused(s.take_lease(S, "shardId-go", &b, &seen, &th).await);
}

async fn release_lease_fence(f: Fixture) {
    let s = f.s;
    let (a, b) = (owner("a", "1"), owner("b", "1"));
    take_new(&s, S, SHARD, &a).await;
    refused(s.release_lease(S, SHARD, &a, 2).await);
    refused(s.release_lease(S, SHARD, &b, 1).await);
    refused(s.release_lease(S, "shardId-none", &a, 1).await);
    assert_eq!(
        s.lease(S, SHARD).await.unwrap().unwrap().owner,
        Some(a.clone())
    );
    s.release_lease(S, SHARD, &a, 1).await.unwrap();
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!((l.owner, l.lease_counter), (None, Some(2)));
    refused(s.release_lease(S, SHARD, &a, 1).await);
}

async fn checkpoint_never_goes_back(f: Fixture) {
    let s = f.s;
    let (a, b) = (owner("a", "1"), owner("b", "1"));
    take_new(&s, S, SHARD, &a).await;
    let write = |p: Option<Position>| CheckpointWrite {
        position: p,
        shard_end: false,
        millis_behind: Some(42),
    };
    let (p1, p2) = (pos("100", None), pos("200", Some(3)));

    s.checkpoint(S, SHARD, &a, 1, None, &write(Some(p1.clone())))
        .await
        .unwrap();
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!(
        (l.checkpoint.as_ref(), l.millis_behind),
        (Some(&p1), Some(42))
    );
    // A stale previous (a late, older write) is refused: the checkpoint stays.
    refused(
        s.checkpoint(S, SHARD, &a, 1, None, &write(Some(pos("50", None))))
            .await,
    );
    s.checkpoint(S, SHARD, &a, 1, Some(&p1), &write(Some(p2.clone())))
        .await
        .unwrap();
    refused(
        s.checkpoint(S, SHARD, &a, 1, Some(&p1), &write(Some(pos("150", None))))
            .await,
    );
    assert_eq!(
        s.lease(S, SHARD).await.unwrap().unwrap().checkpoint,
        Some(p2.clone())
    );

    // The sub-sequence is part of the previous position.
    refused(
        s.checkpoint(S, SHARD, &a, 1, Some(&pos("200", None)), &write(None))
            .await,
    );
    refused(
        s.checkpoint(S, SHARD, &a, 1, Some(&pos("200", Some(2))), &write(None))
            .await,
    );
    let p3 = pos("300", None);
    s.checkpoint(S, SHARD, &a, 1, Some(&p2), &write(Some(p3.clone())))
        .await
        .unwrap();
    assert_eq!(
        s.lease(S, SHARD).await.unwrap().unwrap().checkpoint,
        Some(p3.clone())
    );

    // A deposed owner never moves it.
    refused(
        s.checkpoint(S, SHARD, &a, 2, Some(&p3), &write(Some(pos("400", None))))
            .await,
    );
    refused(
        s.checkpoint(S, SHARD, &b, 1, Some(&p3), &write(Some(pos("400", None))))
            .await,
    );

    // No position: the checkpoint stays; shard_end is set.
    s.checkpoint(S, SHARD, &a, 1, Some(&p3), &END)
        .await
        .unwrap();
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!(
        (l.checkpoint, l.shard_end, l.millis_behind),
        (Some(p3), true, Some(42))
    );
}

async fn delete_lease_only_tombstones(f: Fixture) {
    let s = f.s;
    let a = owner("a", "1");
    take_new(&s, S, SHARD, &a).await;
    refused(s.delete_lease(S, SHARD, Tombstone).await);
    assert!(s.lease(S, SHARD).await.unwrap().is_some());
    s.checkpoint(S, SHARD, &a, 1, None, &END).await.unwrap();
    s.delete_lease(S, SHARD, Tombstone).await.unwrap();
    assert_eq!(s.lease(S, SHARD).await.unwrap(), None);
    s.delete_lease(S, SHARD, Tombstone).await.unwrap();
}

async fn retiring_deletes_a_held_lease_and_fences_its_holder(f: Fixture) {
    let s = f.s;
    let a = owner("a", "1");
    take_new(&s, S, SHARD, &a).await;
    s.delete_lease(S, SHARD, Retire).await.unwrap();
    assert_eq!(s.lease(S, SHARD).await.unwrap(), None);
    refused(s.checkpoint(S, SHARD, &a, 1, None, &END).await);
    assert_eq!(s.lease(S, SHARD).await.unwrap(), None, "nothing recreated");
    s.delete_lease(S, SHARD, Retire).await.unwrap();
}

async fn set_checkpoint_by_operator(f: Fixture) {
    let s = f.s;
    let a = owner("a", "1");
    let at = StoredStart::AtTimestamp(Utc.timestamp_opt(1_600_000_000, 0).unwrap());
    // A missing item is created, with no owner.
    s.set_checkpoint(S, SHARD, Some(&pos("7", Some(1))), Some(&at), false, false)
        .await
        .unwrap();
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!(
        (l.checkpoint, l.start, l.owner),
        (Some(pos("7", Some(1))), Some(at), None)
    );

    let seen = LeaseSeen {
        exists: true,
        owner: None,
        lease_counter: None,
    };
    s.take_lease(S, SHARD, &a, &seen, &StoredStart::TrimHorizon)
        .await
        .unwrap();
    let end_behind = CheckpointWrite {
        millis_behind: Some(1234),
        ..END
    };
    s.checkpoint(S, SHARD, &a, 1, Some(&pos("7", Some(1))), &end_behind)
        .await
        .unwrap();
    refused(s.set_checkpoint(S, SHARD, None, None, false, false).await);
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!(
        (l.shard_end, l.millis_behind),
        (true, Some(1234)),
        "unchanged"
    );

    // Forced: the position and start are removed, shard_end cleared, and the lag of the
    // old position forgotten; the lease stays.
    s.set_checkpoint(S, SHARD, None, None, false, true)
        .await
        .unwrap();
    let l = s.lease(S, SHARD).await.unwrap().unwrap();
    assert_eq!(
        (l.checkpoint, l.start, l.shard_end, l.millis_behind),
        (None, None, false, None)
    );
    assert_eq!((l.owner, l.lease_counter), (Some(a), Some(1)));

    // A shard finished elsewhere (imported from the KCL): written finished.
    s.set_checkpoint(S, "shardId-done", None, None, true, false)
        .await
        .unwrap();
    let l = s.lease(S, "shardId-done").await.unwrap().unwrap();
    assert_eq!((l.shard_end, l.owner), (true, None));
}

async fn queries_stay_in_their_app_and_stream(f: Fixture) {
    let (s, other) = (f.s, f.other_app);
    for c in ["a", "b", "c"] {
        s.register(c, "t", &[], &Registration::Start, None)
            .await
            .unwrap();
    }
    other
        .register("z", "t", &[], &Registration::Start, None)
        .await
        .unwrap();
    let ids: Vec<String> = s
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.client_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(other.members().await.unwrap().len(), 1);

    let a = owner("a", "t");
    for (stream, shard) in [(S, "s1"), (S, "s2"), ("stream-b", "s1")] {
        take_new(&s, stream, shard, &a).await;
    }
    let shards: Vec<String> = s
        .leases(S)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.shard_id)
        .collect();
    assert_eq!(shards, ["s1", "s2"]);
    assert_eq!(s.leases("stream-b").await.unwrap().len(), 1);
    assert!(s.leases("stream-c").await.unwrap().is_empty());
    assert!(other.leases(S).await.unwrap().is_empty());
    assert_eq!(other.lease(S, "s1").await.unwrap(), None);
    assert_eq!(other.read_lock().await.unwrap(), None);
}

fn shard_info(i: usize) -> ShardInfo {
    ShardInfo {
        shard_id: format!("shardId-{i:012}"),
        parent: (i > 0).then(|| format!("shardId-{:012}", i / 2)),
        adjacent_parent: (i.is_multiple_of(5) && i > 0).then(|| format!("shardId-{:012}", i - 1)),
        closed: i.is_multiple_of(2),
        hash_range: Some(("0".into(), "340282366920938463463374607431768211455".into())),
        ending_sequence: i
            .is_multiple_of(2)
            .then(|| "49590338271490256608559692538361571095921575989136588898".into()),
    }
}

async fn shard_cache_round_trip(f: Fixture) {
    let s = f.s;
    assert_eq!(s.shard_cache(S).await.unwrap(), None);
    let mut cache = ShardCache {
        stream: S.into(),
        shards: (0..4).map(shard_info).collect(),
        stream_created: Some(Utc.timestamp_opt(1_650_000_000, 1).unwrap()),
    };
    cache.shards[1].hash_range = None;
    s.put_shard_cache(&cache).await.unwrap();
    assert_eq!(s.shard_cache(S).await.unwrap(), Some(cache.clone()));
    cache.shards.truncate(1);
    cache.stream_created = None;
    s.put_shard_cache(&cache).await.unwrap();
    assert_eq!(s.shard_cache(S).await.unwrap(), Some(cache));
    assert_eq!(f.other_app.shard_cache(S).await.unwrap(), None);
}

async fn requests_are_counted(f: Fixture) {
    let s = f.s;
    assert_eq!(s.requests().total(), 0);
    s.register("a", "t", &[], &Registration::Start, None)
        .await
        .unwrap();
    s.heartbeat("a", "t", &[], None).await.unwrap();
    s.heartbeat("a", "x", &[], None).await.unwrap();
    refused(s.renew_lock(&owner("a", "t"), 1).await);
    let before = s.requests();
    s.read_lock_and_plan("a").await.unwrap();
    s.members().await.unwrap();
    let after = s.requests();
    assert_eq!(before.get(Operation::Register), 1);
    assert_eq!(before.get(Operation::Heartbeat), 2);
    assert_eq!(
        before.get(Operation::RenewLock),
        1,
        "a refused request counts"
    );
    assert_eq!(before.total(), 4);
    let since = after.since(&before);
    assert_eq!(
        (
            since.get(Operation::ReadLockAndPlan),
            since.get(Operation::Members)
        ),
        (1, 1)
    );
    assert_eq!(
        f.other_app.requests().total(),
        0,
        "another app counts its own"
    );
}

// ---- DynamoDB only: item formats, table errors, split bodies ----

fn sv(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Writes a raw item into the shared table.
async fn put_raw(
    client: &aws_sdk_dynamodb::Client,
    pk: String,
    sk: &str,
    attrs: Vec<(&str, AttributeValue)>,
) {
    let mut item = HashMap::from([("pk".to_owned(), sv(&pk)), ("sk".to_owned(), sv(sk))]);
    item.extend(attrs.into_iter().map(|(k, v)| (k.to_owned(), v)));
    within(
        "put raw item",
        client
            .put_item()
            .table_name(shared_table())
            .set_item(Some(item))
            .send(),
    )
    .await
    .expect("put raw item");
}

async fn get_raw(
    client: &aws_sdk_dynamodb::Client,
    pk: String,
    sk: &str,
) -> HashMap<String, AttributeValue> {
    let out = within(
        "get raw item",
        client
            .get_item()
            .table_name(shared_table())
            .key("pk", sv(&pk))
            .key("sk", sv(sk))
            .consistent_read(true)
            .send(),
    )
    .await
    .expect("get raw item");
    out.item.unwrap_or_default()
}

#[tokio::test]
async fn dynamo_reads_go_client_items() {
    let f = dynamo().await;
    let (s, app) = (&f.s, f.s.app().to_owned());
    let client = dynamodb().await;
    // A checkpoint as the Go client writes it: local offset, trailing zeros trimmed.
    put_raw(
        &client,
        format!("check_point#{app}#{S}"),
        SHARD,
        vec![
            (
                "sequence_number",
                sv("49590338271490256608559692538361571095921575989136588898"),
            ),
            ("last_update", sv("2024-01-02T03:04:05.5+09:00")),
        ],
    )
    .await;
    put_raw(
        &client,
        format!("check_point#{app}#{S}"),
        "shardId-empty",
        vec![
            ("sequence_number", sv("")),
            ("last_update", sv("2024-01-02T03:04:05Z")),
        ],
    )
    .await;
    let l = within("lease", s.lease(S, SHARD)).await.unwrap().unwrap();
    assert_eq!(
        l.checkpoint,
        Some(pos(
            "49590338271490256608559692538361571095921575989136588898",
            None
        ))
    );
    assert_eq!(
        (l.owner.as_ref(), l.lease_counter, l.shard_end),
        (None, None, false)
    );
    assert_eq!(
        l.last_update,
        Some(
            Utc.with_ymd_and_hms(2024, 1, 1, 18, 4, 5).unwrap()
                + chrono::Duration::milliseconds(500)
        )
    );
    let empty = within("lease", s.lease(S, "shardId-empty"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        empty.checkpoint, None,
        "an empty sequence_number is no checkpoint"
    );

    // The take of a Go item returns its checkpoint.
    let seen = LeaseSeen {
        exists: true,
        owner: None,
        lease_counter: None,
    };
    let taken = within(
        "take",
        s.take_lease(S, SHARD, &owner("a", "1"), &seen, &StoredStart::TrimHorizon),
    )
    .await
    .unwrap();
    assert_eq!(taken.checkpoint, l.checkpoint);

    // A shard cache with only ID and Closed.
    let shard = |id: &str, closed: bool| {
        AttributeValue::M(HashMap::from([
            ("ID".into(), sv(id)),
            ("Closed".into(), AttributeValue::Bool(closed)),
        ]))
    };
    put_raw(
        &client,
        format!("shard_cache#{app}"),
        S,
        vec![(
            "shards",
            AttributeValue::L(vec![shard("shardId-0", true), shard("shardId-1", false)]),
        )],
    )
    .await;
    let cache = within("shard cache", s.shard_cache(S))
        .await
        .unwrap()
        .unwrap();
    let got: Vec<(String, bool, Option<String>)> = cache
        .shards
        .into_iter()
        .map(|s| (s.shard_id, s.closed, s.parent))
        .collect();
    assert_eq!(
        got,
        [
            ("shardId-0".into(), true, None),
            ("shardId-1".into(), false, None)
        ]
    );

    // A member with only last_update.
    put_raw(
        &client,
        format!("client#{app}"),
        "go-client",
        vec![("last_update", sv("2024-01-02T03:04:05.123+09:00"))],
    )
    .await;
    let m = within("members", s.members()).await.unwrap();
    assert_eq!((m[0].incarnation.as_ref(), m[0].heartbeat), (None, 0));
    assert_eq!(
        within("hb", s.heartbeat("go-client", "t", &[], None))
            .await
            .unwrap(),
        HeartbeatOutcome::Superseded(None)
    );
    within("prune", s.prune("go-client", 0, None))
        .await
        .unwrap();
    assert!(within("members", s.members()).await.unwrap().is_empty());
}

#[tokio::test]
async fn dynamo_writes_the_documented_formats() {
    let f = dynamo().await;
    let (s, app) = (&f.s, f.s.app().to_owned());
    let client = dynamodb().await;
    within(
        "register",
        s.register("a", "tok", &streams(&["x"]), &Registration::Start, None),
    )
    .await
    .unwrap();
    let m = get_raw(&client, format!("client#{app}"), "a").await;
    let lu = m["last_update"].as_s().unwrap();
    assert!(
        lu.ends_with('Z') && lu.split('.').nth(1).unwrap().len() == 10,
        "nine digits and Z: {lu}"
    );
    assert_eq!(m["streams"], AttributeValue::L(vec![sv("x")]));
    assert_eq!(m["incarnation"], sv("tok"));
    assert_eq!(m["heartbeat"], AttributeValue::N("0".into()));
    assert_eq!(m["version"], sv(env!("CARGO_PKG_VERSION")));

    let a = owner("a", "tok");
    within(
        "take",
        s.take_lease(S, SHARD, &a, &MISSING, &StoredStart::TrimHorizon),
    )
    .await
    .unwrap();
    let w = CheckpointWrite {
        position: Some(pos("0012", Some(4))),
        shard_end: false,
        millis_behind: Some(9),
    };
    within("checkpoint", s.checkpoint(S, SHARD, &a, 1, None, &w))
        .await
        .unwrap();
    let l = get_raw(&client, format!("check_point#{app}#{S}"), SHARD).await;
    assert_eq!(l["sequence_number"], sv("0012"), "the exact digits");
    assert_eq!(l["sub_sequence_number"], AttributeValue::N("4".into()));
    assert_eq!(l["owner"], sv("a#tok"));
    assert_eq!(l["lease_counter"], AttributeValue::N("1".into()));
    assert_eq!(l["start"], sv("TRIM_HORIZON"));
    assert_eq!(l["millis_behind"], AttributeValue::N("9".into()));
    // The previous position matches the stored digits exactly.
    let w2 = CheckpointWrite {
        position: Some(pos("13", None)),
        shard_end: false,
        millis_behind: None,
    };
    within(
        "checkpoint",
        s.checkpoint(S, SHARD, &a, 1, Some(&pos("0012", Some(4))), &w2),
    )
    .await
    .unwrap();
    let l = get_raw(&client, format!("check_point#{app}#{S}"), SHARD).await;
    assert!(
        !l.contains_key("sub_sequence_number"),
        "removed for a whole record"
    );

    within("lock", s.take_lock(&a, None)).await.unwrap();
    let lock = get_raw(&client, format!("leader#{app}"), "leader").await;
    assert_eq!(
        (lock["owner"].clone(), lock["term"].clone()),
        (sv("a#tok"), AttributeValue::N("1".into()))
    );

    within(
        "cache",
        s.put_shard_cache(&ShardCache {
            stream: S.into(),
            shards: vec![shard_info(2)],
            stream_created: None,
        }),
    )
    .await
    .unwrap();
    let c = get_raw(&client, format!("shard_cache#{app}"), S).await;
    let first = c["shards"].as_l().unwrap()[0].as_m().unwrap();
    assert_eq!(first["ID"], sv("shardId-000000000002"));
    assert_eq!(first["Closed"], AttributeValue::Bool(true));
    assert_eq!(first["Parent"], sv("shardId-000000000001"));
}

#[tokio::test]
async fn dynamo_malformed_items_name_the_attribute() {
    let f = dynamo().await;
    let app = f.s.app().to_owned();
    let client = dynamodb().await;
    put_raw(
        &client,
        format!("check_point#{app}#{S}"),
        SHARD,
        vec![("sequence_number", sv("12ab"))],
    )
    .await;
    match within("lease", f.s.lease(S, SHARD)).await {
        Err(StoreError::Malformed { item, reason }) => {
            assert!(item.contains(SHARD), "{item}");
            assert!(reason.contains("sequence_number"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    put_raw(
        &client,
        format!("leader#{app}"),
        "leader",
        vec![("term", sv("one"))],
    )
    .await;
    assert!(matches!(
        within("lock", f.s.read_lock()).await,
        Err(StoreError::Malformed { .. })
    ));
}

#[tokio::test]
async fn dynamo_missing_table_says_how_to_create_it() {
    let table = random_name("missing");
    let s = DynamoStore::new(dynamodb().await, &table, "app");
    let err = within("check", s.check_table()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::TableNotFound { table: t } if *t == table),
        "{err:?}"
    );
    assert!(err.to_string().contains("create"), "{err}");
    let err = within("lease", s.lease(S, SHARD)).await.unwrap_err();
    assert!(matches!(err, StoreError::TableNotFound { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn dynamo_create_table_is_idempotent_and_checked() {
    let client = dynamodb().await;
    let table = random_name("create");
    within(
        "create",
        create_table(
            &client,
            &table,
            TableBilling::Provisioned { read: 5, write: 5 },
        ),
    )
    .await
    .unwrap();
    within(
        "create again",
        create_table(&client, &table, TableBilling::OnDemand),
    )
    .await
    .unwrap();
    let store = DynamoStore::new(client.clone(), &table, "app");
    within("check", store.check_table()).await.unwrap();
    let desc = within(
        "describe",
        client.describe_table().table_name(&table).send(),
    )
    .await
    .unwrap();
    let lsi = &desc.table.unwrap().local_secondary_indexes.unwrap()[0];
    assert_eq!(lsi.index_name(), Some(kinesumer::store::LSI_NAME));
    assert_eq!(lsi.key_schema()[1].attribute_name(), "last_update");

    // A table with another key is refused, and the message says what is wrong.
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let wrong = random_name("wrong");
    within(
        "create wrong",
        client
            .create_table()
            .table_name(&wrong)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .await
    .unwrap();
    let err = within(
        "check wrong",
        DynamoStore::new(client, &wrong, "app").check_table(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::TableSchema { .. }), "{err:?}");
    assert!(err.to_string().contains("id HASH"), "{err}");
}

#[tokio::test]
async fn dynamo_splits_a_large_plan_and_shard_cache() {
    let f = dynamo().await;
    let (s, app) = (&f.s, f.s.app().to_owned());
    let client = dynamodb().await;
    let big = plan("a", 5, 6_000, 1);
    within("write big plan", s.write_plan(&big)).await.unwrap();
    assert!(
        !get_raw(&client, format!("plan#{app}"), "a#1")
            .await
            .is_empty(),
        "split into parts"
    );
    assert_eq!(
        within("read", s.read_lock_and_plan("a")).await.unwrap().1,
        Some(big)
    );
    refused(within("stale", s.write_plan(&plan("a", 4, 6_000, 1))).await);
    // Shrinking: the first item alone says the plan is whole again.
    let small = plan("a", 6, 2, 1);
    within("write small", s.write_plan(&small)).await.unwrap();
    assert_eq!(
        within("read", s.read_lock_and_plan("a")).await.unwrap().1,
        Some(small)
    );
    within("write big", s.write_plan(&plan("a", 7, 6_000, 1)))
        .await
        .unwrap();
    within("delete", s.delete_plan("a", 7, 2)).await.unwrap();
    assert!(
        get_raw(&client, format!("plan#{app}"), "a#1")
            .await
            .is_empty(),
        "parts deleted"
    );
    assert_eq!(
        within("read", s.read_lock_and_plan("a")).await.unwrap().1,
        None
    );

    let cache = ShardCache {
        stream: S.into(),
        shards: (0..5_000).map(shard_info).collect(),
        stream_created: None,
    };
    within("put cache", s.put_shard_cache(&cache))
        .await
        .unwrap();
    assert!(
        !get_raw(&client, format!("shard_cache#{app}"), &format!("{S}#1"))
            .await
            .is_empty()
    );
    assert_eq!(
        within("cache", s.shard_cache(S)).await.unwrap(),
        Some(cache)
    );
}

#[tokio::test]
async fn dynamo_unreachable_endpoint_is_unavailable() {
    let conf = aws_sdk_dynamodb::config::Builder::from(&common::sdk_config().await)
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let s = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), "t", "app");
    let err = within("lease", s.lease(S, SHARD)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                op: Operation::Lease,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(s.requests().get(Operation::Lease), 1);
}

#[tokio::test]
async fn dynamo_queries_read_every_page() {
    let f = dynamo().await;
    let app = f.s.app().to_owned();
    let client = dynamodb().await;
    // Items of ~300 KB each: a Query page holds at most 1 MB.
    for i in 0..8 {
        put_raw(
            &client,
            format!("check_point#{app}#{S}"),
            &format!("shardId-{i}"),
            vec![("padding", sv(&"x".repeat(300_000)))],
        )
        .await;
    }
    let leases = within("leases", f.s.leases(S)).await.unwrap();
    assert_eq!(leases.len(), 8);
    assert!(
        f.s.requests().get(Operation::Leases) > 1,
        "each page is a request"
    );
}
