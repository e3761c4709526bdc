//! The public handle's lifetime: `consume_with` runs until `close()` or a fatal error,
//! `close()` reports what did not finish, and a dropped `close()` future still closes.
//! On the in-memory store and Kinesis, under tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::clock::TestClock;
use crate::sim::{Fault, Rule, Sim, SimKinesis};
use crate::store::{MemoryStore, Operation, Registration, StateStore};
use crate::{Config, ConfigBuilder, Error, InitialPosition, Kinesumer, Record};

const STREAM: &str = "orders";

struct World {
    store: MemoryStore,
    kinesis: Arc<SimKinesis>,
}

impl World {
    fn new() -> Self {
        let kinesis = Arc::new(SimKinesis::new());
        kinesis.create_stream(STREAM, 2);
        Self {
            store: MemoryStore::new("app"),
            kinesis,
        }
    }

    fn member(&self) -> Kinesumer {
        self.member_with(|c| c)
    }

    fn member_with(&self, tune: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Kinesumer {
        let config = tune(
            Config::builder("app", "table")
                .client_id("a")
                .initial_position(InitialPosition::TrimHorizon),
        )
        .build()
        .unwrap();
        Kinesumer::with_parts(
            config,
            Arc::new(self.store.clone()),
            self.kinesis.clone(),
            Arc::new(TestClock::new(chrono::Utc::now())),
        )
    }

    /// Checkpoints written on the stream's leases, and leases still owned.
    async fn leases(&self) -> (usize, usize) {
        let leases = self.store.leases(STREAM).await.unwrap();
        let checkpointed = leases.iter().filter(|l| l.checkpoint.is_some()).count();
        let owned = leases.iter().filter(|l| l.owner.is_some()).count();
        (checkpointed, owned)
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "not reached: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn consume_with_runs_until_close_and_close_commits_and_leaves() {
    let w = World::new();
    let member = w.member();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let mut consuming = member
        .consume_with([STREAM], move |_: Record| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await
        .unwrap();
    for i in 0..10 {
        w.kinesis.put(STREAM, &format!("key-{i}"), b"x");
    }
    wait_until("every record handled", || {
        handled.load(Ordering::SeqCst) == 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        (&mut consuming).now_or_never().is_none(),
        "still running until closed"
    );

    member.close().await.expect("a clean close");
    tokio::time::timeout(Duration::from_secs(1), consuming)
        .await
        .expect("the handle completes at close")
        .expect("with the close's result");
    let (checkpointed, owned) = w.leases().await;
    assert!(checkpointed >= 1, "the handled records were committed");
    assert_eq!(owned, 0, "every lease released");
    assert!(
        w.store.members().await.unwrap().is_empty(),
        "left the group"
    );
    assert!(
        member.close().await.is_ok(),
        "a second close has the same outcome"
    );
    assert!(matches!(member.consume([STREAM]).await, Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn a_close_future_dropped_part_way_still_closes_and_a_later_close_waits_for_it() {
    let w = World::new();
    let member = w.member();
    let _records = member.consume([STREAM]).await.unwrap();
    wait_until("shards held", || member.held_shards().len() == 2).await;

    // Polled once (the close is sent), then dropped.
    assert!(member.close().now_or_never().is_none());
    member.close().await.expect("the same clean close");
    let (_, owned) = w.leases().await;
    assert_eq!(owned, 0, "released, not aborted");
    assert!(
        w.store.members().await.unwrap().is_empty(),
        "left the group"
    );
}

#[tokio::test(start_paused = true)]
async fn consuming_completes_with_the_fatal_error_when_superseded() {
    let w = World::new();
    let member = w.member();
    let consuming = member
        .consume_with([STREAM], |_: Record| async {})
        .await
        .unwrap();
    // Another process registers under the same client id.
    w.store
        .register(
            "a",
            "another-process",
            &[STREAM.to_owned()],
            &Registration::Start,
            None,
        )
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), consuming)
        .await
        .expect("the handle completes when the member stops for good");
    assert!(
        matches!(stopped, Err(Error::Superseded { .. })),
        "{stopped:?}"
    );
    assert!(matches!(
        member.close().await,
        Err(Error::Superseded { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn close_reports_what_did_not_finish() {
    let mut sim = Sim::new(1, &[(STREAM, 2)]);
    sim.start("a", &[STREAM]).await;
    let a = sim.member("a");
    wait_until("shards held", || a.consumer.held_shards().len() == 2).await;
    a.store.push(Rule::new(Operation::Leave, Fault::Fail));
    let Err(Error::CloseIncomplete { failures }) = a.consumer.close().await else {
        panic!("a failed leave is reported");
    };
    assert!(
        matches!(failures.as_slice(), [Error::Store(_)]),
        "only the leave failed: {failures:?}"
    );
}

/// A handler that counts what it handled per shard, and never returns for records whose
/// payload starts with "block".
fn counting(handled: &Arc<std::sync::Mutex<Vec<String>>>) -> impl crate::Handler {
    let handled = handled.clone();
    move |record: Record| {
        let handled = handled.clone();
        async move {
            if record.data.starts_with(b"block") {
                std::future::pending::<()>().await;
            }
            handled.lock().unwrap().push(record.shard_id.to_string());
        }
    }
}

/// Puts `n` records of `size` bytes each; their payloads start with `prefix`.
fn put(world: &World, n: usize, size: usize, prefix: &str) {
    for i in 0..n {
        let mut data = format!("{prefix}-{i}-").into_bytes();
        data.resize(size.max(data.len()), b'.');
        world.kinesis.put(STREAM, &format!("key-{i}"), &data);
    }
}

/// Lets the stalled member run on: GetRecords calls stop once its buffers are full, and
/// what it read stays under `most`.
async fn reading_stops(world: &World, most: u64) {
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = world.kinesis.reads();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = world.kinesis.reads();
    assert_eq!(
        before, after,
        "GetRecords went on while the application was stalled"
    );
    assert!(
        after.records <= most,
        "{} records read into memory, more than {most}",
        after.records
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_handler_stops_reading_and_memory_stays_flat() {
    let world = World::new();
    put(&world, 2, 10, "block");
    put(&world, 3000, 10, "r");
    let member = world.member_with(|c| c.shard_buffer(50).scan_limit(100));
    let handled = Arc::default();
    let _consuming = member
        .consume_with([STREAM], counting(&handled))
        .await
        .unwrap();
    // Per shard: the record in the handler, 50 buffered, and a page of 100 the reader
    // holds while it waits to send.
    reading_stops(&world, 2 * (1 + 50 + 100)).await;
    assert!(handled.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_shard_buffer_is_bounded_in_bytes_too() {
    let world = World::new();
    put(&world, 2, 1000, "block");
    put(&world, 3000, 1000, "r");
    let member = world.member_with(|c| {
        c.shard_buffer(10_000)
            .shard_buffer_bytes(10_000)
            .scan_limit(100)
    });
    let handled = Arc::default();
    let _consuming = member
        .consume_with([STREAM], counting(&handled))
        .await
        .unwrap();
    // Per shard: the record in the handler, 10 of 1,000 bytes, and a page of 100.
    reading_stops(&world, 2 * (1 + 10 + 100)).await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_shard_waits_while_the_others_go_on_until_it_is_resumed() {
    let world = World::new();
    let member = world.member();
    let handled: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let _consuming = member
        .consume_with([STREAM], counting(&handled))
        .await
        .unwrap();
    wait_until("both shards held", || member.held_shards().len() == 2).await;
    let paused = member.held_shards()[0].clone();
    member.pause(&paused);
    put(&world, 200, 10, "r");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let of_paused = |h: &[String]| h.iter().filter(|s| **s == paused.shard_id).count();
    let during = handled.lock().unwrap().clone();
    assert_eq!(of_paused(&during), 0, "the paused shard handed nothing out");
    assert!(!during.is_empty(), "the other shard went on");
    member.resume(&paused);
    wait_until("everything handled", || {
        handled.lock().unwrap().len() == 200
    })
    .await;
    member.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_record_rate_is_limited_across_shards() {
    let world = World::new();
    put(&world, 1000, 10, "r");
    let member = world.member_with(|c| c.max_records_per_second(100));
    let handled: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let _consuming = member
        .consume_with([STREAM], counting(&handled))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_three_seconds = handled.lock().unwrap().len();
    assert!(
        (100..=400).contains(&in_three_seconds),
        "a second's burst and 100 a second: {in_three_seconds} in 3 s"
    );
    wait_until("everything handled", || {
        handled.lock().unwrap().len() == 1000
    })
    .await;
    member.close().await.unwrap();
}

/// A member whose handler blocks its thread for `block` on the first record, closed
/// with the given handoff timeout once the handler started; the close's outcome, and
/// whether the handler had returned when the close did. On a multi-threaded runtime in
/// real time, since the handler holds a thread.
async fn close_during_a_blocking_handler(
    block: Duration,
    handoff: Duration,
) -> (Result<(), Error>, bool) {
    let world = World::new();
    put(&world, 1, 10, "r");
    let member = world.member_with(|c| c.handoff_timeout(handoff));
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = returned.clone();
    let _consuming = member
        .consume_with([STREAM], move |_: Record| {
            let started_tx = started_tx.lock().unwrap().take();
            let flag = flag.clone();
            async move {
                if let Some(tx) = started_tx {
                    let _ = tx.send(());
                    std::thread::sleep(block);
                    flag.store(true, Ordering::SeqCst);
                }
            }
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("the record reaches the handler")
        .unwrap();
    let closed = member.close().await;
    (closed, returned.load(Ordering::SeqCst))
}

/// A handler that blocks its thread cannot be aborted: `close()` waits for it to return
/// (up to a handoff timeout), so no application code of the member runs after the close
/// returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_after_a_handler_blocking_its_thread_has_returned() {
    let (_, returned) =
        close_during_a_blocking_handler(Duration::from_millis(1500), Duration::from_secs(1)).await;
    assert!(
        returned,
        "close() returned while the handler was still running"
    );
}

/// A handler blocking past what the close waits for is named in the close's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_a_handler_that_blocks_past_its_wait() {
    let (closed, returned) =
        close_during_a_blocking_handler(Duration::from_secs(3), Duration::from_millis(300)).await;
    assert!(!returned);
    let Err(Error::CloseIncomplete { failures }) = closed else {
        panic!("the close names what still runs: {closed:?}");
    };
    assert!(
        failures
            .iter()
            .any(|e| matches!(e, Error::StillRunning { tasks, .. } if *tasks >= 1)),
        "{failures:?}"
    );
}

/// A member's limits are in its item from its registration on, not only from its first
/// heartbeat: a leader planning in between must not give it more than it takes. Read
/// before the member's tasks first run (the heartbeat task has not beaten yet).
#[tokio::test(start_paused = true)]
async fn the_registration_carries_the_members_limits() {
    let w = World::new();
    let member = w.member_with(|c| c.max_shards(1));
    let _records = member.consume([STREAM]).await.unwrap();
    let members = w.store.members().await.unwrap();
    let item = members
        .iter()
        .find(|m| m.client_id == "a")
        .expect("registered");
    assert_eq!(item.heartbeat, 0, "read before the first heartbeat");
    assert_eq!(
        item.load.as_ref().and_then(|l| l.limits.max_shards),
        Some(1),
        "{item:?}"
    );
}
