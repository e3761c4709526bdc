//! `kinesumer consume`: joins a group as a member and writes each record to stdout.
//!
//! A record counts as processed once it is written and stdout is flushed: the member runs
//! without auto-commit and marks records only after the flush, so a crash loses nothing
//! that did not reach stdout. A closed stdout (`kinesumer consume … | head`) leaves the
//! group gracefully, as a signal does (`member.rs`). With `--exec`, records go to a
//! command instead (`exec.rs`).
//!
//! Stdout is written on a thread of its own, one batch at a time:
//!
//! ```text
//!  records ──▶ run loop ──batch──▶ stdout thread: write, flush
//!                 ▲                     │
//!                 └──── written ◀───────┘   then mark the batch
//! ```
//!
//! A downstream that stops reading blocks that thread only, never the runtime, so the
//! member keeps heartbeating and a signal still closes it (issue 14, defect 7).

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use kinesumer::{Kinesumer, Record};
use tokio::sync::oneshot;

use crate::aws::Aws;
use crate::cli::{ConsumeArgs, Format};
use crate::member::{self, Job};
use crate::wire::{self, Payload};

/// Records written per flush at most: what is buffered already goes out in one write.
const BATCH: usize = 500;

/// How long a close waits for a write in flight: one that lands meanwhile counts as
/// processed; one still blocked (a stalled pipe) is abandoned, its records unmarked and so
/// delivered again after the handoff.
const WRITE_GRACE: Duration = Duration::from_secs(2);

/// Runs `kinesumer consume`.
pub(crate) async fn run(aws: &Aws, args: ConsumeArgs) -> anyhow::Result<()> {
    match args.exec {
        Some(command) => {
            member::serve(aws, args.member, Some(&args.errors), Job::Exec(command)).await
        }
        None => member::serve(aws, args.member, None, Job::Stdout(args.format)).await,
    }
}

/// Writes the records to stdout until `stop` completes or stdout closes; marks each
/// batch once it is flushed.
pub(crate) async fn write_stdout(
    member: &Kinesumer,
    streams: Vec<String>,
    format: Format,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut records = member
        .consume(streams)
        .await
        .context("starting to consume")?;
    tokio::pin!(stop);
    let mut live =
        (std::io::stderr().is_terminal() && !crate::say::json()).then(LiveStatus::default);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stdout = StdoutThread::spawn(format).context("starting the stdout thread")?;
    // The batch being written; no record is taken from the member meanwhile, so the
    // member's own bounded queue is what holds back reading.
    let mut writing: Option<oneshot::Receiver<Written>> = None;

    let outcome = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = tick.tick(), if live.is_some() => {
                if let Some(live) = &mut live {
                    live.show(member.held_shards().len());
                }
            }
            first = records.next(), if writing.is_none() => {
                let Some(first) = first else {
                    break Err(anyhow::anyhow!(
                        "the member stopped consuming (another process took over its client id?)"
                    ));
                };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match records.next().now_or_never() {
                        Some(Some(record)) => batch.push(record),
                        _ => break,
                    }
                }
                writing = Some(stdout.write(batch));
            }
            // Lazy: the branch is disabled, and this never evaluated, while nothing is in
            // flight.
            written = async { writing.as_mut().expect("a write in flight").await },
                if writing.is_some() =>
            {
                writing = None;
                let Written { batch, result } = Written::from(written);
                match result {
                    Ok(()) => batch.iter().for_each(|r| member.mark(r)),
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
                    Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
                }
                if let Some(live) = &mut live {
                    live.count(&batch);
                }
            }
        }
    };
    if let Some(writing) = writing {
        if let Ok(Written {
            batch,
            result: Ok(()),
        }) = tokio::time::timeout(WRITE_GRACE, writing)
            .await
            .map(Written::from)
        {
            batch.iter().for_each(|r| member.mark(r));
        }
    }
    if live.is_some() {
        eprintln!();
    }
    outcome
}

/// A batch handed to the stdout thread, and how writing it ended.
struct Written {
    batch: Vec<Record>,
    result: std::io::Result<()>,
}

impl From<Result<Written, oneshot::error::RecvError>> for Written {
    /// The thread dropped the batch's answer only by ending: a panic in the writer.
    fn from(answer: Result<Written, oneshot::error::RecvError>) -> Self {
        answer.unwrap_or_else(|_| Written {
            batch: Vec::new(),
            result: Err(std::io::Error::other("the stdout thread stopped")),
        })
    }
}

/// The thread that owns stdout: it writes and flushes one batch at a time, and answers
/// each with the outcome. Blocking writes happen there, never on the runtime's workers.
///
/// The thread is not joined: one blocked on a stalled pipe cannot be interrupted, and
/// the process's exit ends it. (A `spawn_blocking` task would not do: dropping the
/// runtime waits for blocking tasks, so a stalled pipe would hang the exit.)
struct StdoutThread {
    batches: SyncSender<(Vec<Record>, oneshot::Sender<Written>)>,
}

impl StdoutThread {
    fn spawn(format: Format) -> std::io::Result<Self> {
        // One slot: the run loop hands over a batch only after the last one's answer.
        let (batches, queue) = sync_channel::<(Vec<Record>, oneshot::Sender<Written>)>(1);
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                for (batch, answer) in queue {
                    let result = write(&batch, format);
                    // The run loop may have stopped waiting (a close): nothing to tell.
                    let _ = answer.send(Written { batch, result });
                }
            })?;
        Ok(Self { batches })
    }

    /// Hands `batch` to the thread; the answer comes once it is written and flushed, or
    /// failed. Never blocks: the caller has at most one batch in flight, and the thread
    /// takes a batch off the queue before it answers, so the one slot is free.
    fn write(&self, batch: Vec<Record>) -> oneshot::Receiver<Written> {
        let (answer, written) = oneshot::channel();
        // Fails only when the thread has ended; the answer's sender, dropped with the
        // batch, then reads as that end.
        let _ = self.batches.try_send((batch, answer));
        written
    }
}

/// Writes the records and flushes stdout.
fn write(batch: &[Record], format: Format) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for record in batch {
        match format {
            Format::Jsonl => {
                serde_json::to_writer(&mut out, &JsonLine::of(record))?;
                out.write_all(b"\n")?;
            }
            Format::Raw => {
                out.write_all(&record.data)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()
}

/// One record as a JSON object: `data` is the payload as text when it is valid UTF-8,
/// else base64 with `"data_encoding": "base64"`. Fields in alphabetical order; written
/// straight from the record, borrowing its text.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    approximate_arrival: Option<String>,
    data: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_encoding: Option<&'static str>,
    partition_key: &'a str,
    sequence_number: &'a str,
    shard_id: &'a str,
    stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_sequence_number: Option<u64>,
}

impl<'a> JsonLine<'a> {
    fn of(r: &'a Record) -> Self {
        let payload = Payload::of(&r.data, true);
        JsonLine {
            approximate_arrival: wire::arrival(r),
            // Base64 is said; text is the default.
            data_encoding: matches!(payload, Payload::Base64(_)).then(|| payload.encoding()),
            data: payload.into_data(),
            partition_key: &r.partition_key,
            sequence_number: r.sequence_number.as_str(),
            shard_id: &r.shard_id,
            stream: &r.stream,
            sub_sequence_number: r.sub_sequence_number,
        }
    }
}

/// The one-line live status on a terminal's stderr: records per second, shards held,
/// and the age of the newest record at receipt (how far behind the member reads).
#[derive(Debug, Default)]
struct LiveStatus {
    total: u64,
    since_tick: u64,
    /// The largest (receipt − arrival) since the last tick, in milliseconds.
    behind_ms: Option<i64>,
}

impl LiveStatus {
    fn count(&mut self, batch: &[Record]) {
        let now = Utc::now();
        self.total += batch.len() as u64;
        self.since_tick += batch.len() as u64;
        let behind = batch
            .iter()
            .filter_map(|r| r.approximate_arrival)
            .map(|t| (now - t).num_milliseconds())
            .max();
        self.behind_ms = self.behind_ms.max(behind);
    }

    fn show(&mut self, shards: usize) {
        let behind = self
            .behind_ms
            .map(|ms| format!("{:.1}s behind", ms as f64 / 1000.0))
            .unwrap_or_else(|| "idle".into());
        eprint!(
            "\r\x1b[2K{} records/s · {shards} shards · {behind} · {} total",
            self.since_tick, self.total
        );
        self.since_tick = 0;
        self.behind_ms = None;
    }
}
