//! Member processes (`kinesumer-member`, this package's binary) owned by a guard that
//! kills them on drop; their stderr (group events and logs) is kept and printed if the
//! test fails.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::logs::{member_log_filter, ProcessLog};
use crate::common::{dynamodb_endpoint, kinesis_endpoint};

/// One record line a member wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) member: String,
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) data: String,
}

/// A running `kinesumer-member` process; killed (SIGKILL) when dropped.
pub(crate) struct MemberProcess {
    pub(crate) client_id: String,
    child: Child,
    pub(crate) lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    log: ProcessLog,
}

impl MemberProcess {
    /// Starts a member of `app` on `table` consuming `stream` from TRIM_HORIZON.
    pub(crate) fn start(
        app: &str,
        table: &str,
        stream: &str,
        client_id: &str,
        extra: &[&str],
    ) -> Self {
        let log = ProcessLog::create(client_id);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kinesumer-member"))
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
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// Sends SIGTERM and waits for a graceful exit; returns its exit code.
    pub(crate) async fn terminate(&mut self) -> Option<i32> {
        crate::common::terminate(&mut self.child, self.reader.take()).await
    }

    /// What this process logged so far: its group events (`event …` lines) and logs.
    pub(crate) fn log(&self) -> String {
        self.log.text()
    }

    /// What this process received so far.
    pub(crate) fn received(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }
}
