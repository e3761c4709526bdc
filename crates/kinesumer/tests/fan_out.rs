//! Enhanced fan-out on the local stack (kinesis-local's SubscribeToShard, through the
//! official SDK): a group sharing a stream, a member leaving, a broken subscription, a
//! restart from the checkpoint, the end of a split shard, and TLS with HTTP/2.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::Proxy;
use common::tls::{kinesis_tls_endpoint, local_ca_bundle};
use common::*;
use futures::StreamExt;
use kinesumer::store::StateStore;
use kinesumer::{ConfigBuilder, Kinesumer, ReadMode};

/// Every record a member received: (member, shard, sequence number).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct Fleet {
    /// The app, table, stream and Kinesis client.
    on: Fresh,
    seen: Seen,
    members: Vec<(String, Arc<Kinesumer>)>,
}

/// A fan-out member's configuration on the local stack.
fn fan_out(fleet: &Fleet, id: &str) -> ConfigBuilder {
    config(&fleet.on.app, &fleet.on.table, id)
        .read_mode(ReadMode::FanOut)
        .commit_interval(Duration::from_millis(300))
}

impl Fleet {
    async fn new(shards: i32) -> Self {
        init_tracing();
        Self {
            on: fresh("efo", shards).await,
            seen: Arc::default(),
            members: Vec::new(),
        }
    }

    /// Starts a member consuming the stream; every record it receives is logged.
    async fn join(&mut self, id: &str, config: ConfigBuilder) {
        let member = Arc::new(
            within("new", Kinesumer::new(config.build().unwrap()))
                .await
                .expect("new member"),
        );
        let mut records = within("consume", member.consume([self.on.stream.as_str()]))
            .await
            .expect("consume");
        let seen = self.seen.clone();
        let who = id.to_owned();
        tokio::spawn(async move {
            while let Some(r) = records.next().await {
                seen.lock().unwrap().push((
                    who.clone(),
                    r.shard_id.to_string(),
                    r.sequence_number.to_string(),
                ));
            }
        });
        self.members.push((id.to_owned(), member));
    }

    async fn put(&self, prefix: &str, n: usize) -> Vec<String> {
        put_records(&self.on.kinesis, &self.on.stream, &numbered(prefix, n, 24)).await
    }

    fn received(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until every one of `want` was received; returns how many records were
    /// received in all (more than distinct ones means some came twice).
    async fn wait_for(&self, want: &[String]) -> usize {
        let want: BTreeSet<&String> = want.iter().collect();
        eventually("every record received", Duration::from_secs(60), || async {
            let got = self.received();
            let sequences: BTreeSet<&String> = got.iter().map(|(_, _, s)| s).collect();
            want.is_subset(&sequences).then_some(got.len())
        })
        .await
    }

    /// Waits until the stream's `shards` shards are held evenly by `members` members.
    async fn wait_balanced(&self, shards: usize, members: usize) {
        let store = store(&self.on.table, &self.on.app).await;
        eventually("balanced", Duration::from_secs(60), || async {
            let counts = share(&owners(&store, &self.on.stream).await, shards)?;
            is_balanced(&counts, members).then_some(())
        })
        .await
    }

    async fn close_all(&self) {
        for (_, m) in &self.members {
            m.close().await.expect("close");
        }
    }
}

fn exactly_once(got: &[(String, String, String)]) {
    let distinct: BTreeSet<&String> = got.iter().map(|(_, _, s)| s).collect();
    assert_eq!(distinct.len(), got.len(), "some record came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_receive_every_record_once_and_a_leaver_loses_nothing() {
    let mut fleet = Fleet::new(6).await;
    for id in ["a", "b", "c"] {
        let config = fan_out(&fleet, id);
        fleet.join(id, config).await;
    }
    fleet.wait_balanced(6, 3).await;
    let first = fleet.put("first", 300).await;
    assert_eq!(
        fleet.wait_for(&first).await,
        300,
        "every record exactly once"
    );
    let by: BTreeSet<String> = fleet.received().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(by.len(), 3, "every member read its share: {by:?}");

    // c leaves; its shards continue at a and b from its checkpoints.
    let (_, leaver) = fleet.members.pop().unwrap();
    leaver.close().await.expect("close");
    fleet.wait_balanced(6, 2).await;
    let second = fleet.put("second", 150).await;
    fleet.wait_for(&second).await;
    let got = fleet.received();
    let after: Vec<_> = got.iter().filter(|(_, _, s)| second.contains(s)).collect();
    assert!(
        after.iter().all(|(m, _, _)| m != "c"),
        "the leaver read nothing more"
    );
    fleet.close_all().await;
}

/// Cutting every connection breaks the subscriptions; they resume from each event's
/// continuation, not from the (lagging) checkpoint: nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_subscription_resumes_from_the_continuation() {
    let mut fleet = Fleet::new(2).await;
    let target = kinesis_endpoint().replace("http://", "");
    let proxy = Proxy::start(&target).await;
    let config = fan_out(&fleet, "a")
        .kinesis_endpoint(proxy.url())
        // The checkpoint lags far behind: resuming from it would repeat records.
        .commit_interval(Duration::from_secs(600));
    fleet.join("a", config).await;
    fleet.wait_balanced(2, 1).await;
    let before = fleet.put("before", 40).await;
    fleet.wait_for(&before).await;
    proxy.cut();
    let after = fleet.put("after", 40).await;
    fleet.wait_for(&after).await;
    exactly_once(&fleet.received());
    fleet.close_all().await;
}

/// A member that restarts (a new process, here a new member of the app) subscribes from
/// the checkpoint (AFTER_SEQUENCE_NUMBER); the app's stream consumer is then
/// deregistered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint() {
    let mut fleet = Fleet::new(1).await;
    let config = fan_out(&fleet, "first");
    fleet.join("first", config).await;
    let before = fleet.put("before", 30).await;
    fleet.wait_for(&before).await;
    fleet.close_all().await;
    fleet.members.clear();

    let after = fleet.put("after", 30).await;
    let config = fan_out(&fleet, "second");
    fleet.join("second", config).await;
    fleet.wait_for(&after).await;
    let got = fleet.received();
    exactly_once(&got);
    let second: Vec<&String> = got
        .iter()
        .filter(|(m, _, _)| m == "second")
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(
        second,
        after.iter().collect::<Vec<_>>(),
        "only the new records, in order"
    );
    let (_, member) = &fleet.members[0];
    member.close().await.expect("close");
    assert!(member
        .deregister_fan_out_consumer(&fleet.on.stream)
        .await
        .unwrap());
    assert!(!member
        .deregister_fan_out_consumer(&fleet.on.stream)
        .await
        .unwrap());
}

/// kinesis-local never sends ChildShards over fan-out: the end of the split parent is
/// found through ListShards and GetRecords, the parent finished and its children read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_split_shard_is_detected_and_its_children_read() {
    let mut fleet = Fleet::new(1).await;
    let config = fan_out(&fleet, "a").shard_sync_interval(Duration::from_secs(1));
    fleet.join("a", config).await;
    let parent = "shardId-000000000000";
    let before = fleet.put("before", 20).await;
    fleet.wait_for(&before).await;
    split_shard(&fleet.on.kinesis, &fleet.on.stream, parent).await;
    let after = fleet.put("after", 40).await;
    fleet.wait_for(&after).await;
    let got = fleet.received();
    exactly_once(&got);
    assert!(
        got.iter()
            .filter(|(_, _, s)| after.contains(s))
            .all(|(_, shard, _)| shard != parent),
        "the records after the split come from the children"
    );
    let store = store(&fleet.on.table, &fleet.on.app).await;
    let lease = eventually("parent finished", Duration::from_secs(30), || async {
        store
            .lease(&fleet.on.stream, parent)
            .await
            .ok()?
            .filter(|l| l.shard_end)
    })
    .await;
    assert!(lease.shard_end);
    fleet.close_all().await;
}

/// Fan-out through kinesis-local's TLS port (HTTP/2), trusting the local stack's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_tls_and_http2() {
    let (endpoint, ca) = (kinesis_tls_endpoint(), local_ca_bundle());
    let mut fleet = Fleet::new(2).await;
    let config = fan_out(&fleet, "a")
        .kinesis_endpoint(endpoint)
        .ca_bundle(ca);
    fleet.join("a", config).await;
    let records = fleet.put("tls", 50).await;
    assert_eq!(fleet.wait_for(&records).await, 50);
    fleet.close_all().await;
}
