//! The applications a simulated member runs: records taken from the stream, or a handler
//! that fails.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{Gate, Monitor};
use crate::dead_letter::{DeadLetter, DeadLetterError, DeadLetterSink};
use crate::delivery::Records;
use crate::handler::{ErrorPolicy, Handler, HandlerError};
use crate::record::Record;

/// What a simulated member's application does with its records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum App {
    /// Takes them from the stream ([`Kinesumer::consume`](crate::Kinesumer::consume)),
    /// auto-commit marking each when the next is asked for.
    #[default]
    Stream,
    /// A handler ([`Kinesumer::consume_with`](crate::Kinesumer::consume_with)) whose
    /// calls fail with probability `failures` (drawn from the seed, the record and the
    /// attempt, so a seed replays), three attempts each, then a dead letter
    /// (`dead_letter`) or a stop of the shard.
    Failing {
        /// The share of calls that fail.
        failures: f64,
        /// Whether a record failing every attempt goes to a dead-letter sink (else its
        /// shard stops and is read again).
        dead_letter: bool,
    },
}

/// Takes records from `records` while `gate` is open; each taken is handed out, then
/// processed for the member's processing time.
pub(super) async fn stream(
    name: String,
    mut records: Records,
    gate: Gate,
    processing: Arc<Mutex<Duration>>,
    monitor: Arc<Monitor>,
) {
    loop {
        gate.opened().await;
        let next = tokio::select! {
            biased;
            _ = gate.closed() => continue,
            next = records.next() => next,
        };
        let Some(record) = next else { return };
        monitor.handout(&name, &record);
        let d = *processing.lock().unwrap_or_else(|e| e.into_inner());
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// The failing handler of [`App::Failing`], and its dead-letter sink.
#[derive(Debug)]
pub(super) struct Failing {
    name: String,
    monitor: Arc<Monitor>,
    gate: Gate,
    seed: u64,
    failures: f64,
    /// Calls so far, by sequence number.
    calls: Mutex<HashMap<String, u32>>,
    /// The record of each call that failed, for the sink: a record counts as handed out
    /// once its handler succeeded or its dead letter was written, not before.
    failed: Mutex<HashMap<String, Record>>,
}

impl Failing {
    pub(super) fn new(
        name: &str,
        monitor: Arc<Monitor>,
        gate: Gate,
        seed: u64,
        failures: f64,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            monitor,
            gate,
            seed,
            failures,
            calls: Mutex::default(),
            failed: Mutex::default(),
        })
    }

    /// The member's error policy: three attempts, short waits, then a dead letter to
    /// this application or a stop.
    pub(super) fn policy(self: &Arc<Self>, dead_letter: bool) -> ErrorPolicy {
        let policy = if dead_letter {
            ErrorPolicy::dead_letter_after(3, Letters(self.clone()))
        } else {
            ErrorPolicy::stop_after(3)
        };
        policy.backoff(Duration::from_millis(50), Duration::from_millis(400))
    }

    /// Whether this call for `record` fails.
    fn fails(&self, record: &Record) -> bool {
        let seq = record.sequence_number.to_string();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let call = calls.entry(seq.clone()).or_default();
        *call += 1;
        let mut h = DefaultHasher::new();
        (self.seed, &seq, *call).hash(&mut h);
        (h.finish() as f64 / u64::MAX as f64) < self.failures
    }
}

/// The handler side of [`Failing`].
pub(super) struct Calls(pub(super) Arc<Failing>);

impl Handler for Calls {
    /// A call is a hand-out (when it succeeds): the library handed the record over, and
    /// a paused member's application finishes it once it runs again.
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        let app = self.0.clone();
        let fails = app.fails(&record);
        if fails {
            let seq = record.sequence_number.to_string();
            let mut failed = app.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.insert(seq, record);
        } else {
            app.monitor.handout(&app.name, &record);
        }
        async move {
            app.gate.opened().await;
            match fails {
                true => Err("a simulated failure".into()),
                false => Ok(()),
            }
        }
        .boxed()
    }
}

/// The dead-letter side of [`Failing`]: a letter written hands its record out.
struct Letters(Arc<Failing>);

impl DeadLetterSink for Letters {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        let seq = letter.sequence_number.to_string();
        let failed = self.0.failed.lock().unwrap_or_else(|e| e.into_inner());
        let record = failed.get(&seq).expect("a letter of a record that failed");
        self.0.monitor.handout(&self.0.name, record);
        futures::future::ready(Ok(())).boxed()
    }
}
