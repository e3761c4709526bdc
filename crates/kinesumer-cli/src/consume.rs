//! `kinesumer consume`: joins a group as a member and writes each record to stdout.
//!
//! A record counts as processed once it is written and stdout is flushed: the member runs
//! without auto-commit and marks records only after the flush, so a crash loses nothing
//! that did not reach stdout. SIGINT and SIGTERM close the member gracefully (commit,
//! release, leave) and exit 0 — also when the state store cannot be reached to do so,
//! which is said on stderr; so does a closed stdout (`kinesumer consume … | head`).
//! With `--metrics-addr`, the member's metrics are served for Prometheus meanwhile.
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
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use futures::{FutureExt, StreamExt};
use kinesumer::{Balancing, Config, Kinesumer, ReadMode, Record};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::aws::Aws;
use crate::cli::{Balance, ConsumeArgs, Format};
use crate::exec;
use crate::prometheus;

/// Records written per flush at most: what is buffered already goes out in one write.
const BATCH: usize = 500;

/// How long a close waits for a write in flight: one that lands meanwhile counts as
/// processed; one still blocked (a stalled pipe) is abandoned, its records unmarked and so
/// delivered again after the handoff.
const WRITE_GRACE: Duration = Duration::from_secs(2);

/// Runs `kinesumer consume`.
pub(crate) async fn run(aws: &Aws, args: ConsumeArgs) -> anyhow::Result<()> {
    // Listening first: a bad address fails before the member joins the group.
    let _exporter = args
        .metrics_addr
        .map(|addr| prometheus::serve(addr).map(AbortOnDrop))
        .transpose()?;
    let mut builder = Config::builder(args.group.app, args.group.table)
        .initial_position(args.from)
        // Stdout marks after each flush; --exec marks when the command succeeded.
        .auto_commit(args.exec.is_some())
        .commit_interval(args.commit_interval_ms);
    if let Some(id) = args.client_id {
        builder = builder.client_id(id);
    }
    if let Some(d) = args.sync_interval_ms {
        builder = builder.sync_interval(d);
    }
    if let Some(d) = args.failover_timeout_ms {
        builder = builder.failover_timeout(d);
    }
    if let Some(d) = args.request_timeout_ms {
        builder = builder.request_timeout(d);
    }
    if let Some(arn) = &aws.role_arn {
        builder = builder.role_arn(arn);
    }
    if let Some(url) = &aws.kinesis_endpoint {
        builder = builder.kinesis_endpoint(url);
    }
    if let Some(url) = &aws.dynamodb_endpoint {
        builder = builder.dynamodb_endpoint(url);
    }
    if args.efo {
        builder = builder.read_mode(ReadMode::FanOut);
    }
    if args.balance == Balance::Load {
        builder = builder.balance(Balancing::Load);
    }
    builder = builder.capacity(args.capacity);
    if let Some(d) = args.load_window_ms {
        builder = builder.load_window(d);
    }
    if let Some(region) = args.consumer.consumer_region {
        builder = builder.region(region);
    }
    let config = builder.build()?;
    // Before joining: a dead-letter stream or file that cannot be used fails the start.
    let policy = match &args.exec {
        Some(_) => {
            let policy = exec::error_policy(aws, &args.on_error, args.max_attempts).await?;
            Some(match args.attempt_timeout_ms {
                Some(limit) => policy.attempt_timeout(limit),
                None => policy,
            })
        }
        None => None,
    };
    // Before the first request: a SIGTERM while the state store or Kinesis is slow to
    // answer ends the process with 0 rather than killing it.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut member = tokio::select! {
        member = Kinesumer::from_sdk_config(config, aws.sdk()) => member.context("joining the group")?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    if let Some(policy) = policy {
        member = member.with_error_policy(policy);
    }
    let mut errors = member.errors();
    let warnings = AbortOnDrop(tokio::spawn(async move {
        // Runtime errors carry no payload and no credential: safe to print.
        while let Some(e) = errors.next().await {
            eprintln!("kinesumer: warning: {e}");
        }
    }));
    let stop = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let outcome = match args.exec {
        Some(command) => exec::run(&member, args.streams, command, stop).await,
        None => write_stdout(&member, args.streams, args.format, stop).await,
    };
    // A close that could not write everything — the store unreachable during a SIGTERM —
    // is said, not an exit failure: the process stopped as asked, and what it could not
    // commit or release is read again by the next owner (after the failover).
    let closed = match member.close().await {
        Err(e @ kinesumer::Error::CloseIncomplete { .. }) => {
            eprintln!("kinesumer: warning: leaving the group: {e}");
            Ok(())
        }
        closed => closed.context("leaving the group"),
    };
    drop(warnings);
    outcome.and(closed)
}

/// Writes the records to stdout until `stop` completes or stdout closes; marks each
/// batch once it is flushed.
async fn write_stdout(
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
    let mut live = std::io::stderr().is_terminal().then(LiveStatus::default);
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

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            Format::Jsonl => writeln!(out, "{}", json_line(record))?,
            Format::Raw => {
                out.write_all(&record.data)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()
}

/// One record as a JSON object: `data` is the payload as text when it is valid UTF-8,
/// else base64 with `"data_encoding": "base64"`.
fn json_line(r: &Record) -> serde_json::Value {
    let mut v = serde_json::json!({
        "stream": &*r.stream,
        "shard_id": &*r.shard_id,
        "sequence_number": r.sequence_number.as_str(),
        "partition_key": r.partition_key,
        "approximate_arrival": r
            .approximate_arrival
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
    });
    if let Some(sub) = r.sub_sequence_number {
        v["sub_sequence_number"] = sub.into();
    }
    match std::str::from_utf8(&r.data) {
        Ok(text) => v["data"] = text.into(),
        Err(_) => {
            v["data"] = base64::engine::general_purpose::STANDARD
                .encode(&r.data)
                .into();
            v["data_encoding"] = "base64".into();
        }
    }
    v
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
