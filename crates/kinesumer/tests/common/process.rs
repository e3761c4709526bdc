//! Member processes (`kinesumer-member`) owned by a guard that kills them on drop; their
//! stderr (group events and logs) is kept and printed if the test fails.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::logs::{member_log_filter, ProcessLog};
use super::{dynamodb_endpoint, kinesis_endpoint};

/// The `kinesumer-member` binary of the bench package, beside this test's own build
/// (`target/debug`): `cargo test --workspace` builds it, as `scripts/test` runs.
fn member_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug/deps");
    let binary = dir.join("kinesumer-member");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p kinesumer-bench --bin kinesumer-member` (scripts/test does)",
        binary.display()
    );
    binary
}

/// One record line a member wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub member: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub data: String,
}

/// A running `kinesumer-member` process; killed (SIGKILL) when dropped.
pub struct MemberProcess {
    pub client_id: String,
    child: Child,
    pub lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    log: ProcessLog,
}

impl MemberProcess {
    /// Starts a member of `app` on `table` consuming `stream` from TRIM_HORIZON.
    pub fn start(app: &str, table: &str, stream: &str, client_id: &str, extra: &[&str]) -> Self {
        let log = ProcessLog::create(client_id);
        let mut child = Command::new(member_binary())
            .args(["--app", app, "--table", table, "--stream", stream])
            .args(["--client-id", client_id, "--from", "trim-horizon"])
            .args(extra)
            .env("AWS_ENDPOINT_URL_KINESIS", kinesis_endpoint())
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint())
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", member_log_filter())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log.stdio())
            .kill_on_drop(true)
            .spawn()
            .expect("start kinesumer-member");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
                let field = |k: &str| v[k].as_str().expect(k).to_owned();
                sink.lock().unwrap().push(Line {
                    member: field("member"),
                    shard_id: field("shard_id"),
                    sequence_number: field("sequence_number"),
                    data: field("data"),
                });
            }
        });
        Self {
            client_id: client_id.to_owned(),
            child,
            lines,
            reader: Some(reader),
            log,
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// Sends SIGTERM and waits for a graceful exit; returns its exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        super::terminate(&mut self.child, self.reader.take()).await
    }

    /// What this process logged so far: its group events (`event …` lines) and logs.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// What this process received so far.
    pub fn received(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }
}
