use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::checkpoint::track_tests::{pos, track};
use crate::dead_letter::DeadLetterError;
use crate::delivery::{deliver, Delivery, DeliveryEnd, Sink};
use crate::reader::feed::ReadItem;
use crate::reader::RawRecord;

fn record(n: u64) -> Record {
    let mut r = Record::for_test("s", "shard-0", n.to_string().parse().unwrap(), "x");
    r.partition_key = "k".into();
    r
}

/// A handler that fails record `n` the number of times `script[n]` says, then succeeds;
/// it panics instead of failing when `panics` is set. Counts every attempt.
#[derive(Default, Clone)]
struct Scripted {
    script: Arc<BTreeMap<u64, u32>>,
    panics: bool,
    attempts: Arc<Mutex<BTreeMap<u64, u32>>>,
    succeeded: Arc<Mutex<BTreeSet<u64>>>,
}

impl Handler for Scripted {
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        let n: u64 = record.sequence_number.as_str().parse().unwrap();
        let this = self.clone();
        Box::pin(async move {
            let mut attempts = this.attempts.lock().unwrap();
            let a = attempts.entry(n).or_default();
            *a += 1;
            if *a <= this.script.get(&n).copied().unwrap_or(0) {
                drop(attempts);
                if this.panics {
                    panic!("record {n} is poison");
                }
                return Err(format!("record {n} failed").into());
            }
            this.succeeded.lock().unwrap().insert(n);
            Ok(())
        })
    }
}

/// A sink that refuses its first `fail` letters (retryably unless `for_good`).
#[derive(Default, Clone)]
struct Letters {
    fail: Arc<Mutex<u32>>,
    for_good: bool,
    got: Arc<Mutex<Vec<DeadLetter>>>,
}

impl DeadLetterSink for Letters {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(DeadLetterError {
                    sink: "test".into(),
                    reason: "unavailable".into(),
                    retryable: !self.for_good,
                });
            }
            self.got.lock().unwrap().push(letter.clone());
            Ok(())
        })
    }
}

async fn handle_one(
    handler: &Scripted,
    policy: &ErrorPolicy,
    n: u64,
    signals: &Signals,
) -> Handled {
    let record = record(n);
    let mut work = OnRecord {
        handler,
        record: &record,
    };
    handle(
        &mut work,
        std::slice::from_ref(&record),
        policy,
        signals,
        || true,
    )
    .await
}

fn events(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn waits_double_up_to_the_cap_and_the_budget_ends_retries() {
    let p = ErrorPolicy::stop_after(10).backoff(Duration::from_millis(100), Duration::from_secs(1));
    let waits: Vec<u64> = (1..=6).map(|f| p.delay(f).as_millis() as u64).collect();
    assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    assert!(matches!(p.after_failure(9, Duration::ZERO), Step::Retry(_)));
    assert!(matches!(p.after_failure(10, Duration::ZERO), Step::Stop));
    let p = p.time_budget(Duration::from_secs(2));
    assert!(matches!(
        p.after_failure(1, Duration::from_millis(1900)),
        Step::Retry(_)
    ));
    assert!(
        matches!(p.after_failure(2, Duration::from_millis(1900)), Step::Stop),
        "the wait of 200 ms would end past the budget"
    );
    assert_eq!(ErrorPolicy::stop_after(0).max_attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_record_failing_three_times_is_handled_four_times_and_retries_are_events() {
    let signals = Signals::new("app", 64);
    let mut rx = signals.events.subscribe();
    let handler = Scripted {
        script: Arc::new(BTreeMap::from([(7, 3)])),
        ..Scripted::default()
    };
    let handled = handle_one(&handler, &ErrorPolicy::stop_after(4), 7, &signals).await;
    assert_eq!(handled, Handled::Done);
    assert_eq!(handler.attempts.lock().unwrap()[&7], 4);
    let retries: Vec<(u32, bool)> = events(&mut rx)
        .into_iter()
        .map(|e| match e {
            Event::RecordFailed {
                attempt,
                will_retry,
                error,
                sequence_number,
                ..
            } => {
                assert_eq!(error, "record 7 failed");
                assert_eq!(sequence_number, "7");
                (attempt, will_retry)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(retries, [(1, true), (2, true), (3, true)]);
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failure_and_exhausted_attempts_stop() {
    let signals = Signals::new("app", 64);
    let mut rx = signals.events.subscribe();
    let handler = Scripted {
        script: Arc::new(BTreeMap::from([(3, u32::MAX)])),
        panics: true,
        ..Scripted::default()
    };
    let handled = handle_one(&handler, &ErrorPolicy::stop_after(2), 3, &signals).await;
    let Handled::Stopped(reason) = handled else {
        panic!("expected a stop, got {handled:?}");
    };
    assert!(
        reason.contains("record 3 failed 2 times") && reason.contains("record 3 is poison"),
        "{reason}"
    );
    let last = events(&mut rx).pop().unwrap();
    assert!(
        matches!(
            last,
            Event::RecordFailed {
                attempt: 2,
                will_retry: false,
                ..
            }
        ),
        "{last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_carries_the_record_and_why_and_a_failing_sink_is_retried() {
    let signals = Signals::new("app", 64);
    let mut errors = signals.errors.subscribe();
    let mut rx = signals.events.subscribe();
    let sink = Letters {
        fail: Arc::new(Mutex::new(2)),
        ..Letters::default()
    };
    let handler = Scripted {
        script: Arc::new(BTreeMap::from([(9, u32::MAX)])),
        ..Scripted::default()
    };
    let policy = ErrorPolicy::dead_letter_after(3, sink.clone());
    assert_eq!(
        handle_one(&handler, &policy, 9, &signals).await,
        Handled::DeadLettered
    );
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let letter = &got[0];
    assert_eq!((letter.sequence_number.as_str(), letter.attempts), ("9", 3));
    assert_eq!(letter.error, "record 9 failed");
    assert_eq!(&letter.data[..], b"x");
    let json = letter.to_json();
    assert_eq!(json["data"], "eA==");
    assert_eq!(json["fencing_token"], 1);
    let sink_errors = std::iter::from_fn(|| errors.try_recv().ok()).count();
    assert_eq!(sink_errors, 2, "each failed dead-letter write is an error");
    assert!(matches!(
        events(&mut rx).pop(),
        Some(Event::RecordDeadLettered { attempts: 3, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_a_failure() {
    struct Hangs;
    impl Handler for Hangs {
        fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
            Box::pin(std::future::pending())
        }
    }
    let signals = Signals::new("app", 64);
    let policy = ErrorPolicy::stop_after(2).attempt_timeout(Duration::from_secs(1));
    let record = record(4);
    let mut work = OnRecord {
        handler: &Hangs,
        record: &record,
    };
    let handled = handle(
        &mut work,
        std::slice::from_ref(&record),
        &policy,
        &signals,
        || true,
    )
    .await;
    assert!(
        matches!(&handled, Handled::Stopped(r) if r.contains("did not finish within 1s")),
        "{handled:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_refuses_for_good_stops_the_shard() {
    let signals = Signals::new("app", 64);
    let sink = Letters {
        fail: Arc::new(Mutex::new(1)),
        for_good: true,
        ..Letters::default()
    };
    let handler = Scripted {
        script: Arc::new(BTreeMap::from([(1, 1)])),
        ..Scripted::default()
    };
    let policy = ErrorPolicy::dead_letter_after(1, sink.clone());
    let handled = handle_one(&handler, &policy, 1, &signals).await;
    assert!(
        matches!(&handled, Handled::Stopped(r) if r.contains("dead-letter sink refused")),
        "{handled:?}"
    );
    assert!(sink.got.lock().unwrap().is_empty());
}

fn item(n: u64) -> ReadItem {
    ReadItem {
        record: RawRecord {
            sequence_number: n.to_string().parse().unwrap(),
            partition_key: "k".into(),
            data: bytes::Bytes::from_static(b"x"),
            approximate_arrival: None,
        },
        sub_sequence: None,
        explicit_hash_key: None,
        position: pos(n),
        millis_behind: None,
    }
}

/// Delivers records 1 to `n` of the lease `t` follows to `sink`, auto-committing, until
/// the delivery ends.
async fn deliver_records(
    t: &Arc<crate::checkpoint::ShardTrack>,
    sink: Sink,
    n: u64,
) -> DeliveryEnd {
    let (tx, rx) = crate::reader::buffer::channel(16, usize::MAX);
    for i in 1..=n {
        tx.send(item(i)).await.unwrap();
    }
    drop(tx);
    let to = Delivery {
        sink,
        auto_commit: true,
        signals: Signals::new("app", 1024),
        start: crate::processor::Start::TrimHorizon,
        handoff_timeout: Duration::from_secs(5),
        flow: crate::flow::Flow::new(None),
    };
    deliver(rx, t.clone(), to).await
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For every policy and every pattern of failures: each record is processed, in the
    /// dead-letter sink, or after the mark (read again from the checkpoint) — never gone.
    #[test]
    fn no_record_is_ever_gone(
        failures in proptest::collection::vec(0u32..6, 1..12),
        max_attempts in 1u32..5,
        dead_letter in any::<bool>(),
        sink_failures in 0u32..3,
        sink_for_good in any::<bool>(),
        panics in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let n = failures.len() as u64;
        let handler = Scripted {
            script: Arc::new((1..=n).zip(failures.iter().copied()).collect()),
            panics,
            ..Scripted::default()
        };
        let sink = Letters {
            fail: Arc::new(Mutex::new(sink_failures)),
            for_good: sink_for_good,
            ..Letters::default()
        };
        let policy = if dead_letter {
            ErrorPolicy::dead_letter_after(max_attempts, sink.clone())
        } else {
            ErrorPolicy::stop_after(max_attempts)
        };
        let t = track();
        let sink_of_records = Sink::Handler(Arc::new(handler.clone()), policy);
        let end = runtime.block_on(deliver_records(&t, sink_of_records, n));
        let marked: u64 = t.marked().map_or(0, |p| p.sequence.as_str().parse().unwrap());
        let succeeded = handler.succeeded.lock().unwrap().clone();
        let lettered: BTreeSet<u64> = sink
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.sequence_number.as_str().parse().unwrap())
            .collect();
        for i in 1..=n {
            prop_assert!(
                i > marked || succeeded.contains(&i) || lettered.contains(&i),
                "record {} is behind the mark {} but neither processed nor dead-lettered",
                i,
                marked
            );
        }
        match end {
            DeliveryEnd::Drained => prop_assert_eq!(marked, n, "a drained delivery marks all"),
            DeliveryEnd::HandlerStopped(_) => {
                prop_assert!(marked < n);
                prop_assert!(t.all_processed(), "a stop leaves nothing in the application's hands");
            }
            other => prop_assert!(false, "unexpected end {:?}", other),
        }
    }
}

/// An application whose every call fails after its lease was lost (another member may
/// hold the shard now); counts its calls, and whether it heard the loss.
#[derive(Clone)]
struct LosesTheLease {
    track: Arc<crate::checkpoint::ShardTrack>,
    calls: Arc<Mutex<u32>>,
    heard_lost: Arc<Mutex<bool>>,
}

impl LosesTheLease {
    fn call(&self) -> Result<(), HandlerError> {
        *self.calls.lock().unwrap() += 1;
        self.track.leave(crate::checkpoint::Leaving::Lost);
        Err("failed while the lease was lost".into())
    }
}

impl Handler for LosesTheLease {
    fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        let result = self.call();
        Box::pin(async { result })
    }
}

#[async_trait::async_trait]
impl crate::processor::Processor for LosesTheLease {
    async fn process(&mut self, _: &crate::processor::Batch) -> Result<(), HandlerError> {
        self.call()
    }

    async fn lost(&mut self) {
        *self.heard_lost.lock().unwrap() = true;
    }
}

/// A record is not retried, nor dead-lettered, once its lease is lost: its next holder
/// reads it again, and a retry would hand it to this application beside that one's. By
/// handler and by processor, stopping or dead-lettering.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_ends_the_retries_of_its_record() {
    for (processor, dead_letter) in [(false, false), (false, true), (true, false), (true, true)] {
        let sink = Letters::default();
        let policy = if dead_letter {
            ErrorPolicy::dead_letter_after(3, sink.clone())
        } else {
            ErrorPolicy::stop_after(3)
        };
        let t = track();
        let app = LosesTheLease {
            track: t.clone(),
            calls: Arc::default(),
            heard_lost: Arc::default(),
        };
        let sink_of_records = if processor {
            let app = app.clone();
            let factory = move |_: &crate::store::ShardRef, _| app.clone();
            let batching = crate::processor::Batching::default();
            Sink::Processor(Arc::new(factory), policy, batching)
        } else {
            Sink::Handler(Arc::new(app.clone()), policy)
        };
        let end = deliver_records(&t, sink_of_records, 1).await;
        let case = format!("processor {processor}, dead letter {dead_letter}");
        assert_eq!(*app.calls.lock().unwrap(), 1, "{case}");
        assert!(
            sink.got.lock().unwrap().is_empty(),
            "{case}: no dead letter"
        );
        assert!(matches!(end, DeliveryEnd::NotAllowed), "{case}: {end:?}");
        assert_eq!(t.marked(), None, "{case}");
        assert_eq!(*app.heard_lost.lock().unwrap(), processor, "{case}");
    }
}

/// A handler whose first call fails as its lease is being handed off, and whose second
/// succeeds.
struct FailsAsTheLeaseIsRevoked {
    track: Arc<crate::checkpoint::ShardTrack>,
    calls: Arc<Mutex<u32>>,
}

impl Handler for FailsAsTheLeaseIsRevoked {
    fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        let result = if *calls == 1 {
            self.track.leave(crate::checkpoint::Leaving::Revoked);
            Err("failed as the handoff began".into())
        } else {
            Ok(())
        };
        Box::pin(async { result })
    }
}

/// A planned handoff waits for the records in the application's hands (the lease is
/// still this member's until it is released): a record failing as it begins is retried,
/// and once it succeeds it is marked, so the handoff need not wait out its timeout.
#[tokio::test(start_paused = true)]
async fn a_revoke_lets_the_retries_of_a_record_in_hand_finish() {
    let t = track();
    let calls = Arc::new(Mutex::new(0));
    let handler = FailsAsTheLeaseIsRevoked {
        track: t.clone(),
        calls: calls.clone(),
    };
    let sink = Sink::Handler(Arc::new(handler), ErrorPolicy::stop_after(3));
    deliver_records(&t, sink, 1).await;
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(t.marked(), Some(pos(1)));
    assert!(t.all_processed());
}
