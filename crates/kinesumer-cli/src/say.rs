//! What the tool tells its operator on stderr: its own notes, warnings and errors, its
//! children's stderr lines, and the library's `tracing` events — as text lines (the
//! default), or with `--log-format json` as one JSON object a line for a log pipeline:
//! `timestamp`, `level`, `target`, `message` and the event's fields, whoever wrote it.
//!
//! The tool's own lines do not go through `tracing`, so `RUST_LOG` never hides them.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStderr;

use crate::member::AbortOnDrop;

/// The shape of what goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for a person: `kinesumer: warning: …`.
    Text,
    /// One JSON object a line.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// The target of the tool's own lines in JSON.
const TARGET: &str = "kinesumer_cli";

/// Installs the `tracing` subscriber for `format` (filtered by `RUST_LOG`, by default
/// warnings only) and sets how the tool's own lines look.
pub(crate) fn init(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    // `consume` prints the member's runtime errors itself (from `errors()`), so the
    // library's log line of each (target `kinesumer::errors`) would print it twice.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,kinesumer::errors=off".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether stderr takes JSON lines only (no live status line, no bare text).
pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A note for the operator: `kinesumer: MESSAGE`.
pub(crate) fn note(message: impl Display) {
    line("INFO", "", message, Map::new());
}

/// A warning: `kinesumer: warning: MESSAGE`.
pub(crate) fn warning(message: impl Display) {
    line("WARN", "warning: ", message, Map::new());
}

/// An error the tool ends with: `kinesumer: error: MESSAGE`.
pub(crate) fn error(message: impl Display) {
    line("ERROR", "error: ", message, Map::new());
}

/// Forwards a child process's stderr to the tool's until the child closes it, each line
/// said with the child's `label` (`[stream/shard]` or `[child]`): `LABEL LINE`, or with
/// `"child": LABEL` in JSON. Written through tokio, not from a worker thread: children
/// may write a lot.
pub(crate) fn forward(stderr: ChildStderr, label: String) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut out = tokio::io::stderr();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = out.write_all(child_line(&label, &line).as_bytes()).await;
        }
    }))
}

fn child_line(label: &str, text: &str) -> String {
    if json() {
        let mut fields = Map::new();
        fields.insert("child".into(), label.into());
        json_line("INFO", text, fields)
    } else {
        format!("{label} {text}\n")
    }
}

fn line(level: &str, prefix: &str, message: impl Display, fields: Map<String, Value>) {
    let line = if json() {
        json_line(level, message, fields)
    } else {
        format!("kinesumer: {prefix}{message}\n")
    };
    // One write of the whole line, so lines from several tasks never interleave; nothing
    // to do when stderr is gone (the exit status still tells).
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The JSON object of a line, as `tracing`'s JSON lines are shaped, and a newline.
fn json_line(level: &str, message: impl Display, fields: Map<String, Value>) -> String {
    let mut object = Map::new();
    object.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    object.insert("level".into(), level.into());
    object.insert("target".into(), TARGET.into());
    object.insert("message".into(), message.to_string().into());
    object.extend(fields);
    format!("{}\n", Value::Object(object))
}
