//! The application's side on the local stack: handlers that fail, the error policy,
//! dead letters to a Kinesis stream, panics, and fencing tokens through a failover.

mod common;

#[path = "../examples/fenced_writes/downstream.rs"]
mod downstream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{FutureExt, StreamExt};
use kinesumer::dead_letter::KinesisSink;
use kinesumer::processor::{Batch, Batching, Checkpointer, Processor};
use kinesumer::store::ShardRef;
use kinesumer::store::StateStore;
use kinesumer::{Error, ErrorPolicy, Event, Kinesumer, Record};

/// Attempts per record (by payload), and the records handled with `Ok`, in order.
#[derive(Default, Clone)]
struct Log {
    attempts: Arc<Mutex<BTreeMap<String, u32>>>,
    done: Arc<Mutex<Vec<String>>>,
}

impl Log {
    /// Counts an attempt of `record`; returns its number.
    fn attempt(&self, record: &Record) -> u32 {
        let mut attempts = self.attempts.lock().unwrap();
        let n = attempts.entry(text(record)).or_default();
        *n += 1;
        *n
    }

    fn attempts(&self, data: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(data)
            .copied()
            .unwrap_or(0)
    }

    fn done(&self) -> Vec<String> {
        self.done.lock().unwrap().clone()
    }

    /// A handler that logs each attempt, then fails or panics as `outcome` says for the
    /// record's data and attempt number, and logs the records it handled.
    fn handler(&self, outcome: fn(&str, u32) -> Result<(), String>) -> impl kinesumer::Handler {
        let log = self.clone();
        move |record: Record| {
            let log = log.clone();
            async move {
                outcome(&text(&record), log.attempt(&record))?;
                log.done.lock().unwrap().push(text(&record));
                Ok::<(), String>(())
            }
        }
    }
}

fn text(record: &Record) -> String {
    String::from_utf8_lossy(&record.data).into_owned()
}

/// A member with short commit and retry intervals, under `policy`.
async fn member(f: &Fresh, id: &str, policy: ErrorPolicy) -> Kinesumer {
    let config = config(&f.app, &f.table, id)
        .commit_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    within("new", Kinesumer::new(config))
        .await
        .expect("new member")
        .with_error_policy(policy.backoff(Duration::from_millis(20), Duration::from_millis(100)))
}

/// Waits until the shard's stored checkpoint is `sequence`.
async fn checkpoint_reaches(f: &Fresh, sequence: &str) {
    let store = store(&f.table, &f.app).await;
    eventually("the checkpoint", Duration::from_secs(30), || async {
        let lease = store
            .lease(&f.stream, "shardId-000000000000")
            .await
            .ok()??;
        (lease.checkpoint?.sequence.as_str() == sequence).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_three_times_is_delivered_four_times_then_committed() {
    init_tracing();
    let f = fresh("fail3", 1).await;
    let m = member(&f, "a", ErrorPolicy::stop_after(4)).await;
    let mut events = m.events();
    let log = Log::default();
    let _consuming = m
        .consume_with(
            [f.stream.as_str()],
            log.handler(|data, attempt| match (data, attempt) {
                ("r-2", 1..=3) => Err("not ready".into()),
                _ => Ok(()),
            }),
        )
        .await
        .unwrap();
    let sequences = put_records(&f.kinesis, &f.stream, &numbered("r", 5, 1)).await;
    checkpoint_reaches(&f, &sequences[4]).await;
    assert_eq!(log.done(), ["r-0", "r-1", "r-2", "r-3", "r-4"]);
    assert_eq!(
        log.attempts("r-2"),
        4,
        "three failed attempts, the fourth succeeded"
    );
    let failures = std::iter::from_fn(|| events.next().now_or_never().flatten())
        .filter(|e| {
            matches!(
                e,
                Event::RecordFailed {
                    will_retry: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(failures, 3, "each failed attempt is an event");
    within("close", m.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_always_fails_goes_to_the_dead_letter_stream_with_why() {
    init_tracing();
    let f = fresh("dlq", 1).await;
    let dlq = random_name("dlq");
    create_stream(&f.kinesis, &dlq, 1).await;
    let policy = ErrorPolicy::dead_letter_after(2, KinesisSink::new(f.kinesis.clone(), &dlq));
    let m = member(&f, "a", policy).await;
    let log = Log::default();
    let _consuming = m
        .consume_with(
            [f.stream.as_str()],
            log.handler(|data, _| match data {
                "r-2" => Err("malformed order".into()),
                _ => Ok(()),
            }),
        )
        .await
        .unwrap();
    let sequences = put_records(&f.kinesis, &f.stream, &numbered("r", 5, 1)).await;
    checkpoint_reaches(&f, &sequences[4]).await;
    assert_eq!(
        log.done(),
        ["r-0", "r-1", "r-3", "r-4"],
        "the shard moved on"
    );
    assert_eq!(log.attempts("r-2"), 2);

    let letters = read_all(&f.kinesis, &dlq).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["stream"], f.stream.as_str());
    assert_eq!(letter["shard_id"], "shardId-000000000000");
    assert_eq!(letter["sequence_number"], sequences[2].as_str());
    assert_eq!(letter["error"], "malformed order");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["partition_key"], "key-0");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(letter["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, b"r-2");
    within("close", m.close()).await.expect("close");
}

/// Every record of `stream`'s first shard, as JSON.
async fn read_all(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<serde_json::Value> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let out = client
        .get_records()
        .shard_iterator(iterator.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    out.records()
        .iter()
        .map(|r| serde_json::from_slice(r.data().as_ref()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_stops_its_shard_with_an_error_and_the_record_is_read_again() {
    init_tracing();
    let f = fresh("panic", 1).await;
    let m = member(&f, "a", ErrorPolicy::stop_after(2)).await;
    let mut errors = m.errors();
    let mut events = m.events();
    let log = Log::default();
    let _consuming = m
        .consume_with(
            [f.stream.as_str()],
            log.handler(|data, _| {
                assert_ne!(data, "r-2", "a handler bug");
                Ok(())
            }),
        )
        .await
        .unwrap();
    let sequences = put_records(&f.kinesis, &f.stream, &numbered("r", 5, 1)).await;
    let stopped = within("the stop", async {
        loop {
            match errors.next().await {
                Some(Error::DeliveryStopped { reason, .. }) => break reason,
                Some(_) => continue,
                None => panic!("the errors stream ended"),
            }
        }
    })
    .await;
    assert!(
        stopped.contains(&sequences[2]) && stopped.contains("a handler bug"),
        "the error names the record and the panic: {stopped}"
    );
    // What came before the poison record is committed; nothing after it is skipped.
    checkpoint_reaches(&f, &sequences[1]).await;
    // No stall: the shard is taken again and the record read again.
    eventually("r-2 read again", Duration::from_secs(30), || async {
        (log.attempts("r-2") > 2).then_some(())
    })
    .await;
    assert_eq!(log.done(), ["r-0", "r-1"], "r-3 and r-4 wait behind r-2");
    let stops = std::iter::from_fn(|| events.next().now_or_never().flatten())
        .filter(|e| matches!(e, Event::DeliveryStopped { .. }))
        .count();
    assert!(stops >= 1, "the stop is an event");
    within("close", m.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_stale_holders_downstream_write_is_refused_by_its_token() {
    init_tracing();
    let f = fresh("fence", 1).await;
    let dynamodb = dynamodb().await;
    let downstream_table = random_name("downstream");
    dynamodb
        .create_table()
        .table_name(&downstream_table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("downstream table");

    // A member that writes every record downstream, fenced, and keeps the records it saw.
    let writer = |seen: Arc<Mutex<Vec<Record>>>| {
        let (dynamodb, table) = (dynamodb.clone(), downstream_table.clone());
        move |record: Record| {
            let (dynamodb, table, seen) = (dynamodb.clone(), table.clone(), seen.clone());
            async move {
                let written =
                    downstream::put_fenced(&dynamodb, &table, &record, &text(&record)).await?;
                assert!(written, "the current holder's write lands");
                seen.lock().unwrap().push(record);
                Ok::<(), aws_sdk_dynamodb::Error>(())
            }
        }
    };
    let failover = |id: &str| {
        config(&f.app, &f.table, id)
            .commit_interval(Duration::from_millis(200))
            .sync_interval(Duration::from_millis(300))
            .request_timeout(Duration::from_millis(500))
            .failover_timeout(Duration::from_secs(4))
            .build()
            .unwrap()
    };
    let old = within("new", Kinesumer::new(failover("old")))
        .await
        .unwrap();
    let old_seen: Arc<Mutex<Vec<Record>>> = Arc::default();
    let _old = old
        .consume_with([f.stream.as_str()], writer(old_seen.clone()))
        .await
        .unwrap();
    put_records(&f.kinesis, &f.stream, &numbered("old", 2, 1)).await;
    let stale = eventually("the old holder wrote", Duration::from_secs(30), || async {
        old_seen.lock().unwrap().last().cloned()
    })
    .await;

    // The old holder stops answering (dropped without leaving); a new member takes over.
    drop(old);
    let new = within("new", Kinesumer::new(failover("new")))
        .await
        .unwrap();
    let new_seen: Arc<Mutex<Vec<Record>>> = Arc::default();
    let _new = new
        .consume_with([f.stream.as_str()], writer(new_seen.clone()))
        .await
        .unwrap();
    put_records(&f.kinesis, &f.stream, &numbered("new", 1, 1)).await;
    let current = eventually("the new holder wrote", Duration::from_secs(30), || async {
        new_seen
            .lock()
            .unwrap()
            .iter()
            .find(|r| text(r) == "new-0")
            .cloned()
    })
    .await;
    assert!(
        current.fencing_token() > stale.fencing_token(),
        "a take raises the token: {} then {}",
        stale.fencing_token(),
        current.fencing_token()
    );

    // The old holder, waking up, writes with its old lease's token: refused.
    let refused = !downstream::put_fenced(&dynamodb, &downstream_table, &stale, "stale")
        .await
        .expect("the write is answered");
    assert!(refused, "the stale holder's write is refused");
    let item = dynamodb
        .get_item()
        .table_name(&downstream_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(downstream::key(&stale)),
        )
        .send()
        .await
        .unwrap();
    let value = item.item().and_then(|i| i.get("value")).cloned();
    assert_eq!(
        value,
        Some(aws_sdk_dynamodb::types::AttributeValue::S("new-0".into())),
        "the new holder's write stands"
    );
    within("close", new.close()).await.expect("close");
}

/// A processor that keeps what it is given and marks it only when its shard is revoked:
/// every record it heard, and each revoke, go to the shared log as `(member, what)`.
struct Buffering {
    member: &'static str,
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
    buffer: Vec<Record>,
    checkpointer: Checkpointer,
}

#[async_trait::async_trait]
impl Processor for Buffering {
    async fn process(&mut self, batch: &Batch) -> Result<(), kinesumer::HandlerError> {
        let mut log = self.log.lock().unwrap();
        log.extend(batch.records().iter().map(|r| (self.member, text(r))));
        self.buffer.extend_from_slice(batch.records());
        Ok(())
    }

    async fn revoking(&mut self, _deadline: tokio::time::Instant) {
        if let Some(last) = self.buffer.last() {
            self.checkpointer.mark(last);
        }
        self.log
            .lock()
            .unwrap()
            .push((self.member, "revoked".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_with_records_in_a_processors_buffer_duplicates_nothing_when_it_flushes() {
    init_tracing();
    let f = fresh("revoke", 2).await;
    let log: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let start = |id: &'static str| {
        let (f, log) = (&f, log.clone());
        async move {
            let config = config(&f.app, &f.table, id)
                .auto_commit(false)
                .build()
                .unwrap();
            let m = within("new", Kinesumer::new(config)).await.unwrap();
            let factory = move |_: &ShardRef, checkpointer| Buffering {
                member: id,
                log: log.clone(),
                buffer: Vec::new(),
                checkpointer,
            };
            let consuming = m
                .consume_processors([f.stream.as_str()], factory, Batching::default())
                .await
                .unwrap();
            (m, consuming)
        }
    };
    let heard = |log: &Arc<Mutex<Vec<(&'static str, String)>>>| -> Vec<String> {
        let log = log.lock().unwrap();
        log.iter()
            .filter(|(_, w)| w != "revoked")
            .map(|(_, w)| w.clone())
            .collect()
    };
    let (a, _a) = start("a").await;
    eventually("a holds both shards", Duration::from_secs(30), || async {
        (a.held_shards().len() == 2).then_some(())
    })
    .await;
    let first = numbered("first", 40, 8);
    put_records(&f.kinesis, &f.stream, &first).await;
    eventually("a heard every record", Duration::from_secs(30), || async {
        (heard(&log).len() == 40).then_some(())
    })
    .await;

    // Nothing is marked yet: the shard b is given is handed over mid-buffer.
    let (b, _b) = start("b").await;
    eventually("one shard each", Duration::from_secs(30), || async {
        (a.held_shards().len() == 1 && b.held_shards().len() == 1).then_some(())
    })
    .await;
    let second = numbered("second", 40, 8);
    put_records(&f.kinesis, &f.stream, &second).await;
    eventually("every record heard", Duration::from_secs(30), || async {
        let got: std::collections::BTreeSet<String> = heard(&log).into_iter().collect();
        (got.len() == 80).then_some(())
    })
    .await;
    within("close a", a.close()).await.expect("close a");
    within("close b", b.close()).await.expect("close b");

    let all = heard(&log);
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "a record was processed twice: {all:?}"
    );
    let revokes: Vec<(&str, String)> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, w)| w == "revoked")
        .cloned()
        .collect();
    assert_eq!(
        revokes.len(),
        3,
        "the handoff, then each close: {revokes:?}"
    );
    assert_eq!(
        revokes[0].0, "a",
        "a revoked the shard it handed to b first"
    );
}
