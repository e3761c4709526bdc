//! `kinesumer consume`: joins a group as a member and writes each record to stdout.
//!
//! A record counts as processed once it is written and stdout is flushed: the member runs
//! without auto-commit and marks records only after the flush, so a crash loses nothing
//! that did not reach stdout. SIGINT and SIGTERM close the member gracefully (commit,
//! release, leave) and exit 0; so does a closed stdout (`kinesumer consume … | head`).
//! With `--metrics-addr`, the member's metrics are served for Prometheus meanwhile.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use futures::{FutureExt, StreamExt};
use kinesumer::{Config, Kinesumer, ReadMode, Record};
use tokio::signal::unix::{signal, SignalKind};

use crate::aws::Aws;
use crate::cli::{ConsumeArgs, Format};
use crate::prometheus;

/// Records written per flush at most: what is buffered already goes out in one write.
const BATCH: usize = 500;

/// Runs `kinesumer consume`.
pub(crate) async fn run(aws: &Aws, args: ConsumeArgs) -> anyhow::Result<()> {
    // Listening first: a bad address fails before the member joins the group.
    let _exporter = args
        .metrics_addr
        .map(|addr| prometheus::serve(addr).map(AbortOnDrop))
        .transpose()?;
    let mut builder = Config::builder(args.group.app, args.group.table)
        .initial_position(args.from)
        .auto_commit(false)
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
    if let Some(region) = args.consumer.consumer_region {
        builder = builder.region(region);
    }
    let config = builder.build()?;
    // Before the first request: a SIGTERM while the state store or Kinesis is slow to
    // answer ends the process with 0 rather than killing it.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let member = tokio::select! {
        member = Kinesumer::from_sdk_config(config, aws.sdk()) => member.context("joining the group")?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let mut errors = member.errors();
    let warnings = AbortOnDrop(tokio::spawn(async move {
        // Runtime errors carry no payload and no credential: safe to print.
        while let Some(e) = errors.next().await {
            eprintln!("kinesumer: warning: {e}");
        }
    }));
    let mut records = member
        .consume(args.streams)
        .await
        .context("starting to consume")?;
    let mut live = std::io::stderr().is_terminal().then(LiveStatus::default);
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = tick.tick(), if live.is_some() => {
                if let Some(live) = &mut live {
                    live.show(member.held_shards().len());
                }
            }
            first = records.next() => {
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
                match write(&batch, args.format) {
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
    if live.is_some() {
        eprintln!();
    }
    let closed = member.close().await.context("leaving the group");
    drop(warnings);
    outcome.and(closed)
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
