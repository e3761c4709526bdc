//! What a member logs, captured with a `tracing` subscriber. The only test of its binary:
//! `tracing` caches per call site whether anyone listens, globally, so a subscriber set
//! for one thread races with other tests' threads touching the same call sites (they
//! would cache "nobody listens" and this test would miss lines).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kinesumer::sim::SimKinesis;
use kinesumer::store::{MemoryStore, StateStore};
use kinesumer::{Config, InitialPosition, Kinesumer, TestClock};

/// What a member logs names its app, member, stream and shard through its spans — and
/// never a record's payload or partition key, even at debug level.
#[test]
fn logs_name_app_member_stream_and_shard_but_no_payload() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || Log(sink.clone()))
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    // Every task runs on this thread, so the thread's default subscriber sees them all.
    tracing::subscriber::with_default(subscriber, || runtime.block_on(consume_one()));
    let log = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let member = "member{app=app member=a}";
    let shard = "shard{stream=orders shard=shardId-000000000000}";
    let line = |says: &str| {
        log.lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no {says:?} in\n{log}"))
    };
    assert!(line("joined the group").contains(member));
    assert!(line("became the leader").contains(member));
    for says in ["lease taken", "read records="] {
        let l = line(says);
        assert!(l.contains(member) && l.contains(shard), "{l}");
    }
    assert!(line("lease taken").contains(" INFO "));
    assert!(line("read records=").contains("DEBUG"));
    assert!(!log.contains("payload-secret"), "a payload was logged");
    assert!(
        !log.contains("partition-key-7"),
        "a partition key was logged"
    );
}

/// One member on an in-memory stream and store receives one record, then closes.
async fn consume_one() {
    let kinesis = Arc::new(SimKinesis::new());
    kinesis.create_stream("orders", 1);
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new("app"));
    let config = Config::builder("app", "table")
        .client_id("a")
        .initial_position(InitialPosition::TrimHorizon)
        .build()
        .unwrap();
    let clock = Arc::new(TestClock::new(chrono::Utc::now()));
    let member = Kinesumer::with_parts(config, store, kinesis.clone(), clock);
    let mut records = member.consume(["orders"]).await.unwrap();
    kinesis.put("orders", "partition-key-7", b"payload-secret-42");
    let got = tokio::time::timeout(Duration::from_secs(20), records.next())
        .await
        .expect("a record within 20 s");
    assert!(got.is_some());
    drop(records);
    member.close().await.expect("close");
}

/// A `tracing` writer into a shared buffer.
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
