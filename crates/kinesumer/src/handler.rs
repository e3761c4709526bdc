//! Handlers that can fail, and what happens to a record whose handler keeps failing: the
//! [`ErrorPolicy`].
//!
//! ```text
//!  record ──▶ handler ──Ok──────────────────────────────▶ marked (committed later)
//!               │ Err or panic
//!               ▼
//!        policy: attempts left and within the time budget? ──yes──▶ wait (backoff), again
//!               │ no
//!               ├─ stop ────────▶ not marked; the shard is released and read again
//!               └─ dead letter ─▶ written to the sink (retried until it lands) ─▶ marked
//! ```
//!
//! Retries and dead letters happen only while the lease is held — through a planned
//! handoff, which waits for the records in the application's hands: once the lease is
//! lost (or the member fenced), the record is left for the shard's next holder, which
//! reads it again. A record is never skipped without a dead-letter write that succeeded, and never
//! retried in silence: every failure is an [`Event::RecordFailed`](crate::Event), every
//! dead letter an [`Event::RecordDeadLettered`](crate::Event), every stop an
//! [`Error::DeliveryStopped`](crate::Error::DeliveryStopped).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::event::Event;
use crate::record::Record;
use crate::signals::Signals;

/// The error a [`Handler`] returns: any error type, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A per-shard record handler: called for each record of a shard in order, for many
/// shards at once. See [`Kinesumer::consume_with`](crate::Kinesumer::consume_with).
///
/// Closures `Fn(Record) -> impl Future` implement it when their future's output is `()`
/// (a handler that cannot fail) or `Result<(), E>` for any `E` that converts into a
/// [`HandlerError`] (`std::io::Error`, `anyhow::Error`, `String`, …). A failure, or a
/// panic, goes to the member's [`ErrorPolicy`].
///
/// # Examples
///
/// ```
/// async fn store(_data: &[u8]) -> std::io::Result<()> { Ok(()) }
///
/// let handler = |record: kinesumer::Record| async move { store(&record.data).await };
/// # fn is_handler(_: impl kinesumer::Handler) {}
/// # is_handler(handler);
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. With auto-commit, the record counts as processed when the
    /// returned future completes with `Ok`.
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>>;
}

/// What a handler closure's future may return: `()` or `Result<(), E>`.
pub trait HandlerOutput: crate::sealed::Sealed + Send + 'static {
    /// As a result.
    fn into_result(self) -> Result<(), HandlerError>;
}

impl crate::sealed::Sealed for () {}
impl HandlerOutput for () {
    fn into_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> crate::sealed::Sealed for Result<(), E> {}
impl<E: Into<HandlerError> + Send + 'static> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Record) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        let done = self(record);
        Box::pin(async move { done.await.into_result() })
    }
}

/// What to do with a record whose handler failed (returned `Err` or panicked): retry it
/// with exponential backoff up to a number of attempts (and, optionally, within a time
/// budget), then either stop the shard or hand the record to a dead-letter sink and go
/// on.
///
/// - **Stop** ([`ErrorPolicy::stop_after`], the default with 3 attempts): the record is
///   not marked; the member reports [`Error::DeliveryStopped`](crate::Error::DeliveryStopped),
///   commits what was processed before it and releases the shard, which is read again
///   from there by whoever holds it next (this member too, when the plan gives it back).
///   Nothing is skipped; a record that can never succeed keeps its shard from moving on
///   — loudly, with an error each time.
/// - **Dead letter** ([`ErrorPolicy::dead_letter_after`]): the record goes to the sink
///   with why it failed; once the sink accepted it, it counts as processed and the shard
///   moves on. A sink that fails is retried (with the same backoff) until it accepts; a
///   sink that refuses the record for good stops the shard as above.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use kinesumer::dead_letter::FileSink;
/// use kinesumer::ErrorPolicy;
///
/// # async fn run(member: kinesumer::Kinesumer) -> Result<(), Box<dyn std::error::Error>> {
/// let sink = FileSink::open("failed-records.jsonl").await?;
/// let policy = ErrorPolicy::dead_letter_after(5, sink)
///     .backoff(Duration::from_millis(200), Duration::from_secs(10))
///     .time_budget(Duration::from_secs(60));
/// let member = member.with_error_policy(policy);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ErrorPolicy {
    max_attempts: u32,
    time_budget: Option<Duration>,
    attempt_timeout: Option<Duration>,
    backoff_initial: Duration,
    backoff_max: Duration,
    exhausted: Exhausted,
}

#[derive(Clone)]
enum Exhausted {
    Stop,
    DeadLetter(Arc<dyn DeadLetterSink>),
}

impl Default for ErrorPolicy {
    /// Three attempts, then stop the shard.
    fn default() -> Self {
        Self::stop_after(3)
    }
}

impl fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("time_budget", &self.time_budget)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field(
                "then",
                &match &self.exhausted {
                    Exhausted::Stop => "stop",
                    Exhausted::DeadLetter(_) => "dead letter",
                },
            )
            .finish()
    }
}

impl ErrorPolicy {
    /// Up to `max_attempts` attempts (at least 1), then stop the shard.
    pub fn stop_after(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            time_budget: None,
            attempt_timeout: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            exhausted: Exhausted::Stop,
        }
    }

    /// Up to `max_attempts` attempts (at least 1), then write the record to `sink` and
    /// go on.
    pub fn dead_letter_after(max_attempts: u32, sink: impl DeadLetterSink) -> Self {
        Self {
            exhausted: Exhausted::DeadLetter(Arc::new(sink)),
            ..Self::stop_after(max_attempts)
        }
    }

    /// The wait before the second attempt, doubled before each next one up to `max`
    /// (defaults: 100 ms, 10 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Gives up on a record (stop or dead letter) once its next attempt would start more
    /// than `budget` after its first, even with attempts left. Default: none.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }

    /// Counts an attempt that has not finished after `timeout` as failed (it is dropped,
    /// and retried or given up on like any failure): a handler that hangs does not hold
    /// its shard for ever. Default: none — a handler may take as long as it needs.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The attempts a record gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait after the `failures`-th failure (counting from 1).
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// The decision after the `failures`-th failed attempt of a record whose first
    /// attempt started `elapsed` ago.
    fn after_failure(&self, failures: u32, elapsed: Duration) -> Step {
        let delay = self.delay(failures);
        let in_budget = self.time_budget.is_none_or(|b| elapsed + delay <= b);
        if failures < self.max_attempts && in_budget {
            return Step::Retry(delay);
        }
        match &self.exhausted {
            Exhausted::Stop => Step::Stop,
            Exhausted::DeadLetter(sink) => Step::DeadLetter(sink.clone()),
        }
    }
}

/// What follows a failed attempt.
enum Step {
    Retry(Duration),
    Stop,
    DeadLetter(Arc<dyn DeadLetterSink>),
}

/// How handling one record ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Processed: mark it.
    Done,
    /// Given up on and written to the dead-letter sink: processed as far as the shard
    /// goes, mark it.
    DeadLettered,
    /// The policy stopped the shard: the record stays unprocessed.
    Stopped(String),
    /// The lease was lost before a retry or a dead letter: the record stays unprocessed,
    /// for the shard's next holder to read again.
    LeaseLost,
}

/// One more try at what failed: a record's handler, or a batch's processor.
pub(crate) trait Attempt {
    /// Runs once; a panic is caught and comes back as an error.
    fn attempt(&mut self) -> impl Future<Output = Result<(), String>> + Send + '_;
}

/// A handler on one record.
pub(crate) struct OnRecord<'a> {
    pub(crate) handler: &'a dyn Handler,
    pub(crate) record: &'a Record,
}

impl Attempt for OnRecord<'_> {
    fn attempt(&mut self) -> impl Future<Output = Result<(), String>> + Send + '_ {
        caught(|| self.handler.handle(self.record.clone()))
    }
}

/// Runs `start()` and its future, a panic in either caught as an error.
pub(crate) async fn caught<F>(start: impl FnOnce() -> F) -> Result<(), String>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(start)) {
        Ok(running) => AssertUnwindSafe(running).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match outcome {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => Err(format!("the handler panicked: {}", panic_message(&*panic))),
    }
}

/// Runs `work` on `records` (one record, or a batch in order) under `policy`: attempts,
/// backoff, dead letters — each retry and dead letter only while `may_retry` (the lease
/// was not lost and the fence allows it): once another member may hold the shard, a
/// retry would hand the records to this application beside that one's.
pub(crate) async fn handle(
    work: &mut impl Attempt,
    records: &[Record],
    policy: &ErrorPolicy,
    signals: &Signals,
    may_retry: impl Fn() -> bool,
) -> Handled {
    let Some(first) = records.first() else {
        return Handled::Done;
    };
    let what = match records.len() {
        1 => format!("record {}", first.sequence_number),
        n => format!("the batch of {n} records from {}", first.sequence_number),
    };
    let started = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        let outcome = match policy.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, work.attempt())
                .await
                .unwrap_or_else(|_| Err(format!("the attempt did not finish within {limit:?}"))),
            None => work.attempt().await,
        };
        let error = match outcome {
            Ok(()) => return Handled::Done,
            Err(e) => e,
        };
        failures += 1;
        let step = policy.after_failure(failures, started.elapsed());
        signals.event(Event::RecordFailed {
            stream: first.stream.to_string(),
            shard_id: first.shard_id.to_string(),
            sequence_number: first.sequence_number.to_string(),
            attempt: failures,
            error: error.clone(),
            will_retry: matches!(step, Step::Retry(_)),
        });
        match step {
            Step::Retry(delay) => {
                tokio::time::sleep(delay).await;
                if !may_retry() {
                    return Handled::LeaseLost;
                }
            }
            Step::Stop => {
                return Handled::Stopped(format!(
                    "{what} failed {failures} times, the last time with: {error}"
                ))
            }
            Step::DeadLetter(_) if !may_retry() => return Handled::LeaseLost,
            Step::DeadLetter(sink) => {
                for record in records {
                    let letter = dead_letter_of(record, error.clone(), failures);
                    if let Err(why) = dead_letter(&*sink, policy, &letter, signals).await {
                        return Handled::Stopped(why);
                    }
                }
                return Handled::DeadLettered;
            }
        }
    }
}

/// The dead letter of `record`, given up after `attempts` attempts with `error`.
fn dead_letter_of(record: &Record, error: String, attempts: u32) -> DeadLetter {
    DeadLetter {
        stream: record.stream.to_string(),
        shard_id: record.shard_id.to_string(),
        sequence_number: record.sequence_number.clone(),
        sub_sequence_number: record.sub_sequence_number,
        partition_key: record.partition_key.clone(),
        data: record.data.clone(),
        approximate_arrival: record.approximate_arrival,
        error,
        attempts,
        fencing_token: record.fencing_token(),
        failed_at: chrono::Utc::now(),
    }
}

/// Writes `letter` to `sink` until it lands; a refusal for good stops the shard (the
/// error says why).
async fn dead_letter(
    sink: &dyn DeadLetterSink,
    policy: &ErrorPolicy,
    letter: &DeadLetter,
    signals: &Signals,
) -> Result<(), String> {
    let mut failures = 0u32;
    loop {
        match sink.send(letter).await {
            Ok(()) => {
                signals.event(Event::RecordDeadLettered {
                    stream: letter.stream.clone(),
                    shard_id: letter.shard_id.clone(),
                    sequence_number: letter.sequence_number.to_string(),
                    attempts: letter.attempts,
                });
                return Ok(());
            }
            Err(e) if !e.retryable => {
                return Err(format!(
                    "record {} failed {} times and the dead-letter sink refused it: {e}",
                    letter.sequence_number, letter.attempts
                ))
            }
            Err(e) => {
                failures += 1;
                signals.error(crate::Error::DeadLetter(e));
                tokio::time::sleep(policy.delay(failures)).await;
            }
        }
    }
}

/// The text of a panic's payload, if it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests;
