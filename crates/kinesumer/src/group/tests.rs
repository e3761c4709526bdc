//! Whole-member tests of the group protocol in one process: several members on the
//! in-memory state store and the in-memory Kinesis, with tokio's paused clock (time
//! advances only when every task waits, so these run fast and do not depend on load).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::clock::TestClock;
use crate::sim::SimKinesis;
use crate::store::{MemoryStore, StateStore};
use crate::{Config, InitialPosition, Kinesumer};

const STREAM: &str = "orders";

struct Group {
    store: MemoryStore,
    kinesis: Arc<SimKinesis>,
    clock: Arc<TestClock>,
    initial: InitialPosition,
    /// (member, shard, sequence) for every record received.
    received: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Group {
    fn new(shards: usize) -> Self {
        Self::starting_at(shards, InitialPosition::TrimHorizon)
    }

    /// A group whose members start shards without a checkpoint at `initial`.
    fn starting_at(shards: usize, initial: InitialPosition) -> Self {
        let kinesis = Arc::new(SimKinesis::new());
        kinesis.create_stream(STREAM, shards);
        Self {
            store: MemoryStore::new("app"),
            kinesis,
            clock: Arc::new(TestClock::new(chrono::Utc::now())),
            initial,
            received: Arc::default(),
        }
    }

    fn config(&self, id: &str) -> Config {
        Config::builder("app", "table")
            .client_id(id)
            .initial_position(self.initial)
            .commit_interval(Duration::from_secs(1))
            .build()
            .unwrap()
    }

    /// Starts a member that collects every record it receives.
    async fn member(&self, id: &str) -> Arc<Kinesumer> {
        let store: Arc<dyn StateStore> = Arc::new(self.store.clone());
        let member = Arc::new(Kinesumer::with_parts(
            self.config(id),
            store,
            self.kinesis.clone(),
            self.clock.clone(),
        ));
        let mut records = member.consume([STREAM]).await.unwrap();
        let received = self.received.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            while let Some(r) = records.next().await {
                received.lock().unwrap().push((
                    id.clone(),
                    r.shard_id.to_string(),
                    r.sequence_number.to_string(),
                ));
            }
        });
        member
    }

    fn put(&self, n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|i| self.kinesis.put(STREAM, &format!("key-{i}"), b"x").1)
            .collect()
    }

    fn received_sequences(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, s)| s.clone())
            .collect()
    }
}

fn held(members: &[&Arc<Kinesumer>]) -> BTreeMap<String, usize> {
    members
        .iter()
        .map(|m| (m.client_id().to_owned(), m.held_shards().len()))
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "not reached within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `members` hold all `shards` shards, their counts differing by at most one.
async fn wait_balanced(members: &[&Arc<Kinesumer>], shards: usize) {
    wait_for("a balanced plan held", Duration::from_secs(20), || {
        balanced(&held(members), shards)
    })
    .await;
}

fn balanced(counts: &BTreeMap<String, usize>, total: usize) -> bool {
    let sum: usize = counts.values().sum();
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    sum == total && max - min <= 1
}

#[tokio::test(start_paused = true)]
async fn three_members_share_five_shards_and_receive_each_record_once() {
    let g = Group::new(5);
    let a = g.member("a").await;
    let b = g.member("b").await;
    let c = g.member("c").await;
    wait_balanced(&[&a, &b, &c], 5).await;
    let put = g.put(50);
    wait_for("all received", Duration::from_secs(20), || {
        g.received_sequences().len() >= put.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = g.received_sequences();
    assert_eq!(got.len(), put.len(), "no record twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), put);
    for m in [&a, &b, &c] {
        m.close().await.expect("close");
    }
}

#[tokio::test(start_paused = true)]
async fn a_joining_member_takes_only_its_share() {
    let g = Group::new(6);
    let a = g.member("a").await;
    let b = g.member("b").await;
    wait_balanced(&[&a, &b], 6).await;
    let before: BTreeSet<_> = a.held_shards().into_iter().chain(b.held_shards()).collect();
    let a_before: BTreeSet<_> = a.held_shards().into_iter().collect();
    let b_before: BTreeSet<_> = b.held_shards().into_iter().collect();
    let c = g.member("c").await;
    wait_balanced(&[&a, &b, &c], 6).await;
    assert_eq!(before.len(), 6);
    let a_after: BTreeSet<_> = a.held_shards().into_iter().collect();
    let b_after: BTreeSet<_> = b.held_shards().into_iter().collect();
    assert!(
        a_after.is_subset(&a_before) && b_after.is_subset(&b_before),
        "nobody but c gained"
    );
    assert_eq!(c.held_shards().len(), 2, "only c's share moved");
    for m in [&a, &b, &c] {
        m.close().await.expect("close");
    }
}

#[tokio::test(start_paused = true)]
async fn a_closing_member_hands_off_without_loss_or_duplicates() {
    let g = Group::new(4);
    let a = g.member("a").await;
    let b = g.member("b").await;
    wait_balanced(&[&a, &b], 4).await;
    let mut put = g.put(40);
    wait_for("first batch", Duration::from_secs(20), || {
        g.received_sequences().len() >= 40
    })
    .await;
    a.close().await.expect("close");
    put.extend(g.put(40));
    wait_for("b holds all", Duration::from_secs(20), || {
        b.held_shards().len() == 4
    })
    .await;
    wait_for("all received", Duration::from_secs(20), || {
        g.received_sequences().len() >= 80
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = g.received_sequences();
    assert_eq!(
        got.len(),
        80,
        "nothing delivered twice across a graceful handoff"
    );
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), put);
    b.close().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_member_s_shards_are_taken_after_the_failover_timeout() {
    let g = Group::new(4);
    let a = g.member("a").await;
    let b = g.member("b").await;
    wait_balanced(&[&a, &b], 4).await;
    let put = g.put(20);
    wait_for("received", Duration::from_secs(20), || {
        g.received_sequences().len() >= 20
    })
    .await;
    // Let a commit, then crash it: no close, no release.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(a);
    let crashed = tokio::time::Instant::now();
    wait_for("b holds all", Duration::from_secs(20), || {
        b.held_shards().len() == 4
    })
    .await;
    let takeover = crashed.elapsed();
    assert!(
        takeover >= g.config("x").failover_timeout().mul_f64(0.5),
        "taken only after the crashed member's fence deadline: {takeover:?}"
    );
    let more = g.put(20);
    wait_for("all received", Duration::from_secs(20), || {
        g.received_sequences().len() >= 40
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got: BTreeSet<_> = g.received_sequences().into_iter().collect();
    assert!(put.is_subset(&got) && more.is_subset(&got), "nothing lost");
    assert_eq!(
        g.received_sequences().len(),
        40,
        "a committed before the crash: nothing again"
    );
    b.close().await.expect("close");
}

/// Scenario 12: a parent expires past retention before it is finished → its children are
/// planned and start at TRIM_HORIZON (the group starts new shards at LATEST, so a wrong
/// start would skip the children's first records), and the reader of the vanished parent
/// ends (the parent is written finished) instead of spinning.
#[tokio::test(start_paused = true)]
async fn children_of_an_expired_parent_start_at_trim_horizon() {
    let g = Group::starting_at(1, InitialPosition::Latest);
    let a = g.member("a").await;
    wait_for("holds the shard", Duration::from_secs(20), || {
        a.held_shards().len() == 1
    })
    .await;
    let mut put = g.put(10);
    wait_for("received", Duration::from_secs(20), || {
        g.received_sequences().len() >= 10
    })
    .await;
    // Records the parent holds when it expires, before they are read: gone with it.
    let undrained = g.put(5);
    g.kinesis.split(STREAM, "shardId-000000000000");
    g.kinesis.expire(STREAM, "shardId-000000000000");
    wait_for("both children held", Duration::from_secs(20), || {
        let held: BTreeSet<String> = a.held_shards().into_iter().map(|s| s.shard_id).collect();
        held == BTreeSet::from([
            "shardId-000000000001".to_string(),
            "shardId-000000000002".to_string(),
        ])
    })
    .await;
    put.extend(g.put(20));
    wait_for("children read", Duration::from_secs(20), || {
        g.received_sequences().len() >= 30
    })
    .await;
    let store: &dyn StateStore = &g.store;
    for child in ["shardId-000000000001", "shardId-000000000002"] {
        let lease = store.lease(STREAM, child).await.unwrap().unwrap();
        assert_eq!(
            lease.start,
            Some(crate::shards::StoredStart::TrimHorizon),
            "{child}"
        );
    }
    let parent = store.lease(STREAM, "shardId-000000000000").await.unwrap();
    assert!(
        parent.is_none_or(|p| p.shard_end),
        "the vanished parent is finished (or its tombstone deleted)"
    );
    let got: BTreeSet<String> = g.received_sequences().into_iter().collect();
    assert!(
        put.is_subset(&got),
        "every record of a listed shard was read"
    );
    assert!(got.difference(&put).all(|s| undrained.contains(s)));
    a.close().await.expect("close");
}

/// Puts 10 records on the one shard, waits until they are read, splits the shard, puts
/// 20 more and waits until they are read too (from the children); returns what it put.
async fn read_a_split(g: &Group) -> BTreeSet<String> {
    let mut put = g.put(10);
    wait_for("parent read", Duration::from_secs(20), || {
        g.received_sequences().len() >= 10
    })
    .await;
    g.kinesis.split(STREAM, "shardId-000000000000");
    put.extend(g.put(20));
    wait_for("children read", Duration::from_secs(30), || {
        g.received_sequences().len() >= 30
    })
    .await;
    put
}

/// Scenario 15: a finished parent whose children have checkpoints, while the stream still
/// lists it, is never read again — not even by a group that restarts from scratch.
#[tokio::test(start_paused = true)]
async fn a_finished_parent_still_listed_is_never_read_again() {
    let g = Group::new(1);
    let a = g.member("a").await;
    let b = g.member("b").await;
    let mut put = read_a_split(&g).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.close().await.expect("close");
    b.close().await.expect("close");
    let store: &dyn StateStore = &g.store;
    let parent = store
        .lease(STREAM, "shardId-000000000000")
        .await
        .unwrap()
        .unwrap();
    assert!(parent.shard_end, "the parent is a finished tombstone");
    let c = g.member("c").await;
    wait_for("the children held again", Duration::from_secs(20), || {
        c.held_shards().len() == 2
    })
    .await;
    put.extend(g.put(10));
    wait_for("new records read", Duration::from_secs(20), || {
        g.received_sequences().len() >= 40
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = g.received_sequences();
    assert_eq!(
        got.len(),
        put.len(),
        "nothing of the parent (or the children) read twice"
    );
    assert!(
        !c.held_shards()
            .iter()
            .any(|s| s.shard_id == "shardId-000000000000"),
        "the parent is never taken again"
    );
    c.close().await.expect("close");
}

/// A member's metrics follow what happens to it: the takes of its join and one rebalance,
/// a lease taken from under it (a loss, then a take once the thief is judged gone), the
/// releases of its close; shards held and leadership; state-store requests as the store
/// counted them.
#[test]
fn a_member_s_metrics_follow_its_leases() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use crate::metrics::tests::{id, values};
    use crate::metrics::*;
    use crate::store::{LeaseSeen, Owner, StoredStart};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let app = [("app", "app")];
    let app_stream = [("app", "app"), ("stream", STREAM)];
    // Every task runs on this thread, so the local recorder sees all they record.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let g = Group::new(4);
            let a = g.member("a").await;
            wait_balanced(&[&a], 4).await;
            let requests = g.store.requests();
            let joined = values(&snapshotter);
            assert_eq!(joined[&id(LEASE_TAKES, app_stream)], DebugValue::Counter(4));
            assert_eq!(joined[&id(SHARDS_HELD, app)], DebugValue::Gauge(4.0.into()));
            assert_eq!(joined[&id(LEADER, app)], DebugValue::Gauge(1.0.into()));
            assert!(
                matches!(&joined[&id(REBALANCE_DURATION, app)], DebugValue::Histogram(h) if h.len() == 1),
                "one rebalance: the join"
            );
            for (op, n) in requests.0 {
                assert_eq!(
                    joined[&id(STORE_REQUESTS, [("op", op.name())])],
                    DebugValue::Counter(n),
                    "{op:?}"
                );
            }

            // Another owner takes a lease: the leader's plan shows the newer lease, the
            // member stops the shard, and takes it again once the thief is judged gone.
            let shard = "shardId-000000000000";
            let lease = g.store.lease(STREAM, shard).await.unwrap().unwrap();
            let seen = LeaseSeen {
                exists: true,
                owner: lease.owner,
                lease_counter: lease.lease_counter,
            };
            let thief = Owner {
                client_id: "thief".into(),
                token: "1".into(),
            };
            let start = StoredStart::TrimHorizon;
            g.store
                .take_lease(STREAM, shard, &thief, &seen, &start)
                .await
                .unwrap();
            wait_for("the stolen shard stopped", Duration::from_secs(10), || {
                a.held_shards().len() == 3
            })
            .await;
            wait_balanced(&[&a], 4).await;
            a.close().await.expect("close");
        })
    });
    let after = values(&snapshotter);
    assert_eq!(after[&id(LEASE_LOSSES, app_stream)], DebugValue::Counter(1));
    assert_eq!(after[&id(LEASE_TAKES, app_stream)], DebugValue::Counter(1));
    assert_eq!(
        after[&id(LEASE_RELEASES, app_stream)],
        DebugValue::Counter(4)
    );
    assert!(
        matches!(&after[&id(REBALANCE_DURATION, app)], DebugValue::Histogram(h) if h.len() == 1),
        "one rebalance: the lost shard taken again"
    );
    assert!(!after.contains_key(&id(FENCINGS, app)), "never fenced");
}

/// Each checkpoint a member writes carries the shard's lag, so `kinesumer status` shows
/// it without reading the stream: here the in-memory Kinesis reports 0 at the tip.
#[tokio::test(start_paused = true)]
async fn checkpoints_carry_the_shard_s_lag() {
    let g = Group::new(2);
    let a = g.member("a").await;
    g.put(20);
    let store: &dyn StateStore = &g.store;
    let mut leases = Vec::new();
    for _ in 0..200 {
        leases = store.leases(STREAM).await.unwrap();
        if leases.len() == 2 && leases.iter().all(|l| l.checkpoint.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leases.len(), 2, "{leases:?}");
    for lease in &leases {
        assert!(lease.checkpoint.is_some(), "committed: {lease:?}");
        assert_eq!(lease.millis_behind, Some(0), "{lease:?}");
    }
    a.close().await.expect("close");
}

/// DESIGN §4: a stream deleted and re-created under the same name. The old stream's
/// finished parent left a tombstone on `shardId-000000000000`, the id the new stream's
/// only shard gets: without retiring it, the new shard would count as finished and never
/// be read. The leader sees the new creation time, retires every old lease, says so on
/// `errors()`, and the new shard is read from the configured position.
#[tokio::test(start_paused = true)]
async fn a_re_created_stream_retires_the_old_leases_and_reads_the_new_shards() {
    let g = Group::new(1);
    let a = g.member("a").await;
    let mut errors = a.errors();
    let mut put = read_a_split(&g).await;
    let store: &dyn StateStore = &g.store;
    let parent = store.lease(STREAM, "shardId-000000000000").await.unwrap();
    assert!(
        parent.is_some_and(|p| p.shard_end),
        "the parent's tombstone"
    );

    g.kinesis.create_stream(STREAM, 1);
    put.extend(g.put(5));
    let recreated = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(e @ crate::Error::StreamRecreated { .. }) = errors.next().await {
                return e;
            }
        }
    })
    .await
    .expect("a StreamRecreated error within two minutes");
    assert!(
        matches!(recreated, crate::Error::StreamRecreated { retired: 3, .. }),
        "the parent and both children retired: {recreated}"
    );
    wait_for("the new shard read", Duration::from_secs(30), || {
        g.received_sequences().len() >= 35
    })
    .await;
    let leases = store.leases(STREAM).await.unwrap();
    let ids: Vec<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
    assert_eq!(ids, ["shardId-000000000000"], "only the new shard's lease");
    assert_eq!(
        leases[0].start,
        Some(crate::shards::StoredStart::TrimHorizon),
        "the configured initial position"
    );
    assert!(!leases[0].shard_end);
    let got = g.received_sequences();
    assert_eq!(got.len(), put.len(), "nothing read twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), put);
    a.close().await.expect("close");
}
