//! The processor's lifecycle on the simulator: shard_ended before the children, and a
//! revoking flush whose marks are committed.

use std::sync::{Arc, Mutex};

use super::*;
use crate::clock::TestClock;
use crate::config::InitialPosition;
use crate::sim::SimKinesis;
use crate::store::{MemoryStore, StateStore};
use crate::{Config, Kinesumer};

const S: &str = "orders";
const LONG: Duration = Duration::from_secs(60);

/// What every processor of a member heard, in order: `(shard, what)`.
type Heard = Arc<Mutex<Vec<(String, String)>>>;

/// Records every call; buffers records and marks them only when revoked or ended.
struct Recorder {
    shard: String,
    heard: Heard,
    buffer: Vec<Record>,
    checkpointer: Checkpointer,
}

impl Recorder {
    fn hear(&self, what: String) {
        self.heard.lock().unwrap().push((self.shard.clone(), what));
    }

    fn flush(&mut self) {
        if let Some(last) = self.buffer.last() {
            self.checkpointer.mark(last);
        }
        self.buffer.clear();
    }
}

#[async_trait]
impl Processor for Recorder {
    async fn assigned(&mut self, assigned: &Assigned) {
        self.hear(format!("assigned {:?}", assigned.start));
    }

    async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError> {
        for r in batch.records() {
            self.hear(format!("record {}", String::from_utf8_lossy(&r.data)));
        }
        self.buffer.extend_from_slice(batch.records());
        Ok(())
    }

    async fn revoking(&mut self, _deadline: Instant) {
        self.hear("revoking".into());
        self.flush();
    }

    async fn lost(&mut self) {
        self.hear("lost".into());
    }

    async fn shard_ended(&mut self) {
        self.hear("ended".into());
        self.flush();
    }
}

/// A member of one 1-shard stream, consuming with [`Recorder`]s.
async fn start() -> (Arc<SimKinesis>, MemoryStore, Kinesumer, Heard) {
    let kinesis = Arc::new(SimKinesis::new());
    kinesis.create_stream(S, 1);
    let store = MemoryStore::new("sim");
    let m = member(&kinesis, &store);
    let heard = Heard::default();
    consume(&m, &heard).await;
    (kinesis, store, m, heard)
}

fn member(kinesis: &Arc<SimKinesis>, store: &MemoryStore) -> Kinesumer {
    member_with(kinesis, store, false)
}

fn member_with(kinesis: &Arc<SimKinesis>, store: &MemoryStore, auto_commit: bool) -> Kinesumer {
    let config = Config::builder("app", "table")
        .client_id("a")
        .initial_position(InitialPosition::TrimHorizon)
        .auto_commit(auto_commit)
        .build()
        .unwrap();
    Kinesumer::with_parts(
        config,
        Arc::new(store.clone()),
        kinesis.clone(),
        Arc::new(TestClock::new(chrono::Utc::now())),
    )
}

async fn consume(member: &Kinesumer, heard: &Heard) {
    let heard = heard.clone();
    let _consuming = member
        .consume_processors(
            [S],
            move |shard: &ShardRef, checkpointer| Recorder {
                shard: shard.shard_id.clone(),
                heard: heard.clone(),
                buffer: Vec::new(),
                checkpointer,
            },
            Batching::default(),
        )
        .await
        .unwrap();
}

async fn until(what: &str, heard: &Heard, done: impl Fn(&[(String, String)]) -> bool) {
    let wait = async {
        while !done(&heard.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(LONG, wait).await.is_err() {
        panic!("{what} not within {LONG:?}: {:?}", heard.lock().unwrap());
    }
}

fn position_of(heard: &[(String, String)], shard: &str, what: &str) -> Option<usize> {
    heard.iter().position(|(s, w)| s == shard && w == what)
}

#[tokio::test(start_paused = true)]
async fn a_closed_shards_processor_hears_it_ended_before_its_children_are_assigned() {
    let (kinesis, store, m, heard) = start().await;
    let parent = "shardId-000000000000";
    kinesis.put(S, "k", b"p-1");
    kinesis.put(S, "k", b"p-2");
    until("the parent's records", &heard, |h| {
        position_of(h, parent, "record p-2").is_some()
    })
    .await;
    kinesis.split(S, parent);
    kinesis.put(S, "k", b"c-1");
    until("a child's record", &heard, |h| {
        h.iter().any(|(_, w)| w == "record c-1")
    })
    .await;
    let h = heard.lock().unwrap().clone();
    let ended = position_of(&h, parent, "ended").expect("the parent ended");
    assert_eq!(
        h[..=ended],
        [
            (parent.to_owned(), "assigned TrimHorizon".to_owned()),
            (parent.to_owned(), "record p-1".to_owned()),
            (parent.to_owned(), "record p-2".to_owned()),
            (parent.to_owned(), "ended".to_owned()),
        ]
    );
    let children: Vec<&(String, String)> = h
        .iter()
        .filter(|(_, w)| w.starts_with("assigned"))
        .skip(1)
        .collect();
    assert_eq!(children.len(), 2, "{h:?}");
    assert!(
        h.iter().position(|e| e == children[0]).unwrap() > ended,
        "children only after the parent's end: {h:?}"
    );
    let lease = store.lease(S, parent).await.unwrap().unwrap();
    assert!(
        lease.shard_end,
        "the parent is finished, its buffer marked at its end"
    );
    m.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_revoked_processors_flush_is_committed_at_the_handoff() {
    let (kinesis, store, m, heard) = start().await;
    let shard = "shardId-000000000000";
    let mut last = String::new();
    for n in 1..=5 {
        last = kinesis.put(S, "k", format!("r-{n}").as_bytes()).1;
    }
    until("every record", &heard, |h| {
        position_of(h, shard, "record r-5").is_some()
    })
    .await;
    let stored = store.lease(S, shard).await.unwrap().unwrap();
    assert_eq!(stored.checkpoint, None, "buffered records are not marked");
    m.close().await.unwrap();
    let h = heard.lock().unwrap().clone();
    assert_eq!(h.last().unwrap().1, "revoking", "{h:?}");
    let stored = store.lease(S, shard).await.unwrap().unwrap();
    assert_eq!(
        stored.checkpoint.map(|p| p.sequence.to_string()),
        Some(last),
        "what revoking marked was committed"
    );
}

/// Buffers every batch without marking it, and fails the batches that hold `bad`.
struct FailsOn(&'static [u8]);

#[async_trait]
impl Processor for FailsOn {
    async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError> {
        match batch.records().iter().any(|r| r.data == self.0) {
            true => Err("cannot write".into()),
            false => Ok(()),
        }
    }
}

/// A sink that keeps what it is given.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<String>>>);

impl crate::dead_letter::DeadLetterSink for Kept {
    fn send<'a>(
        &'a self,
        letter: &'a crate::dead_letter::DeadLetter,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::dead_letter::DeadLetterError>> {
        let data = String::from_utf8_lossy(&letter.data).into_owned();
        self.0.lock().unwrap().push(data);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_covers_what_a_buffering_processor_had_not_marked() {
    let kinesis = Arc::new(SimKinesis::new());
    kinesis.create_stream(S, 1);
    let mut last = String::new();
    for n in 1..=4 {
        last = kinesis.put(S, "k", format!("r-{n}").as_bytes()).1;
    }
    let store = MemoryStore::new("sim");
    let kept = Kept::default();
    let m = member(&kinesis, &store)
        .with_error_policy(crate::ErrorPolicy::dead_letter_after(1, kept.clone()));
    let batching = Batching {
        max_records: 2,
        ..Batching::default()
    };
    let _consuming = m
        .consume_processors([S], |_: &ShardRef, _| FailsOn(b"r-3"), batching)
        .await
        .unwrap();
    let wait = async {
        while kept.0.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(LONG, wait)
        .await
        .expect("dead letters");
    assert_eq!(
        *kept.0.lock().unwrap(),
        ["r-1", "r-2", "r-3", "r-4"],
        "the first batch was never marked: the mark past the failed one covers it too"
    );
    m.close().await.unwrap();
    let stored = store
        .lease(S, "shardId-000000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.checkpoint.map(|p| p.sequence.to_string()),
        Some(last)
    );
}

#[tokio::test(start_paused = true)]
async fn a_processor_hears_its_lease_was_lost_when_another_owner_took_it() {
    let kinesis = Arc::new(SimKinesis::new());
    kinesis.create_stream(S, 1);
    let store = MemoryStore::new("sim");
    let m = member_with(&kinesis, &store, true);
    let heard = Heard::default();
    consume(&m, &heard).await;
    let shard = "shardId-000000000000";
    kinesis.put(S, "k", b"r-1");
    until("r-1", &heard, |h| {
        position_of(h, shard, "record r-1").is_some()
    })
    .await;
    // Another owner takes the lease (as after this member went silent): the holder's
    // next commit is refused.
    let lease = store.lease(S, shard).await.unwrap().unwrap();
    let seen = crate::store::LeaseSeen {
        exists: true,
        owner: lease.owner.clone(),
        lease_counter: lease.lease_counter,
    };
    let thief = crate::store::Owner {
        client_id: "b".into(),
        token: "t".into(),
    };
    store
        .take_lease(
            S,
            shard,
            &thief,
            &seen,
            &crate::store::StoredStart::TrimHorizon,
        )
        .await
        .unwrap();
    until("lost", &heard, |h| position_of(h, shard, "lost").is_some()).await;
    let h = heard.lock().unwrap().clone();
    assert!(
        position_of(&h, shard, "record r-1") < position_of(&h, shard, "lost"),
        "{h:?}"
    );
    assert!(
        position_of(&h, shard, "revoking").is_none(),
        "a loss is not a revoke: {h:?}"
    );
}
