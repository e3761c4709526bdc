//! A minimal group member process, for the demo and the process-level tests: joins the
//! group and writes one JSON line per record to stdout (flushed before the record counts
//! as processed), group events to stderr. SIGTERM or SIGINT closes it gracefully.
//!
//! ```text
//! kinesumer-member --app APP --table TABLE --stream S [--stream S2] [--client-id ID]
//!                  [--from latest|trim-horizon] [--commit-interval-ms N] [--efo]
//! ```
//!
//! Endpoints, region and credentials come from the standard AWS environment
//! (`AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_REGION`, ...).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use kinesumer::{Config, InitialPosition, Kinesumer, ReadMode};
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    app: String,
    table: String,
    streams: Vec<String>,
    client_id: Option<String>,
    from: InitialPosition,
    commit_interval: Option<Duration>,
    /// Read with enhanced fan-out.
    efo: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        app: String::new(),
        table: String::new(),
        streams: Vec::new(),
        client_id: None,
        from: InitialPosition::Latest,
        commit_interval: None,
        efo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--app" => args.app = value()?,
            "--table" => args.table = value()?,
            "--stream" => args.streams.push(value()?),
            "--client-id" => args.client_id = Some(value()?),
            "--from" => {
                args.from = match value()?.as_str() {
                    "latest" => InitialPosition::Latest,
                    "trim-horizon" => InitialPosition::TrimHorizon,
                    other => return Err(format!("--from {other}: use latest or trim-horizon")),
                }
            }
            "--commit-interval-ms" => {
                let ms = value()?
                    .parse()
                    .map_err(|e| format!("--commit-interval-ms: {e}"))?;
                args.commit_interval = Some(Duration::from_millis(ms));
            }
            "--efo" => args.efo = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.app.is_empty() || args.table.is_empty() || args.streams.is_empty() {
        return Err("--app, --table and at least one --stream are required".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("kinesumer-member: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinesumer-member: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> kinesumer::Result<()> {
    let mut builder = Config::builder(args.app, args.table)
        .initial_position(args.from)
        .auto_commit(false);
    if let Some(id) = args.client_id {
        builder = builder.client_id(id);
    }
    if let Some(d) = args.commit_interval {
        builder = builder.commit_interval(d);
    }
    if args.efo {
        builder = builder.read_mode(ReadMode::FanOut);
    }
    let member = Kinesumer::new(builder.build()?).await?;
    let mut events = member.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            eprintln!("event {event:?}");
        }
    });
    let mut records = member.consume(args.streams).await?;
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let stdout = std::io::stdout();
    let client_id = member.client_id().to_owned();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            record = records.next() => {
                let Some(record) = record else { break };
                let line = serde_json::json!({
                    "member": client_id,
                    "stream": &*record.stream,
                    "shard_id": &*record.shard_id,
                    "sequence_number": record.sequence_number.as_str(),
                    "partition_key": record.partition_key,
                    "data": String::from_utf8_lossy(&record.data),
                });
                let mut out = stdout.lock();
                writeln!(out, "{line}").and_then(|()| out.flush()).expect("stdout");
                member.mark(&record);
            }
        }
    }
    member.close().await?;
    Ok(())
}
