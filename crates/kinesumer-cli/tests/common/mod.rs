//! Shared helpers of the CLI's end-to-end tests: the real `kinesumer` binary pointed at
//! the local stack (`scripts/local-stack start`), random names, deadlines on every wait,
//! and member processes owned by a guard that kills them on drop and prints their logs
//! when the test fails.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

#[path = "../../../kinesumer/tests/common/logs.rs"]
mod logs;
#[path = "../../../kinesumer/tests/common/tls.rs"]
pub mod tls;
#[path = "../../../kinesumer/tests/common/wait.rs"]
mod wait;
pub use wait::*;

use logs::{member_log_filter, ProcessLog};

/// A name no other test uses.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The `kinesumer` binary with the local stack's endpoints, region and test credentials.
pub fn kinesumer() -> Command {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinesumer"));
    cmd.env(
        "AWS_ENDPOINT_URL_KINESIS",
        var("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4567"),
    )
    .env(
        "AWS_ENDPOINT_URL_DYNAMODB",
        var("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:4566"),
    )
    .env("AWS_ACCESS_KEY_ID", "local")
    .env("AWS_SECRET_ACCESS_KEY", "local")
    .env("AWS_REGION", "us-east-1")
    .kill_on_drop(true);
    cmd
}

/// Runs `kinesumer ARGS` to its end with `stdin`, within the deadline.
pub async fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = kinesumer()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kinesumer");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        input.write_all(&stdin).await.expect("write stdin");
    });
    let out = within(
        &format!("kinesumer {}", args.join(" ")),
        child.wait_with_output(),
    )
    .await
    .expect("wait for kinesumer");
    writer.await.expect("stdin writer");
    out
}

/// Runs `kinesumer ARGS` and asserts it succeeded; returns its stdout.
pub async fn ok(args: &[&str]) -> String {
    let out = run(args, b"").await;
    assert!(
        out.status.success(),
        "kinesumer {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A fresh table and a fresh stream of `shards` shards, made with the CLI.
pub async fn table_and_stream(shards: u32) -> (String, String) {
    let table = random_name("cli-table");
    let stream = random_name("cli-stream");
    ok(&["table", "create", "--table", &table]).await;
    ok(&[
        "stream",
        "create",
        "--stream",
        &stream,
        "--shards",
        &shards.to_string(),
    ])
    .await;
    (table, stream)
}

/// Writes `lines` (joined by `\n`) to `stream` with `kinesumer put`.
pub async fn put(stream: &str, lines: &[Vec<u8>], extra: &[&str]) {
    let input = lines.join(&b'\n');
    let mut args = vec!["put", "--stream", stream];
    args.extend(extra);
    let out = run(&args, &input).await;
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` payloads `PREFIX-0`, `PREFIX-1`, …
pub fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// `kinesumer status --json` as JSON.
pub async fn status(app: &str, table: &str, stream: &str) -> serde_json::Value {
    let out = ok(&[
        "status",
        "--app",
        app,
        "--table",
        table,
        "--stream",
        stream,
        "--json",
        "--observe-ms",
        "800",
    ])
    .await;
    serde_json::from_str(&out).expect("status JSON")
}

/// Owner client id per shard, from a status report.
pub fn owners(status: &serde_json::Value) -> BTreeMap<String, Option<String>> {
    status["streams"][0]["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            (
                s["shard_id"].as_str().expect("shard_id").to_owned(),
                s["owner_client_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// One record line `consume --format jsonl` wrote, its payload decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl Line {
    fn parse(text: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {text}"))
                .to_owned()
        };
        let data = match v["data_encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(field("data"))
                .expect("base64"),
            None => field("data").into_bytes(),
            Some(other) => panic!("unknown data_encoding {other}"),
        };
        Self {
            shard_id: field("shard_id"),
            sequence_number: field("sequence_number"),
            partition_key: field("partition_key"),
            data,
        }
    }
}

/// A `kinesumer consume` process; killed (SIGKILL) when dropped, its stderr printed
/// if the test fails.
pub struct Member {
    pub client_id: String,
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    log: ProcessLog,
}

impl Member {
    /// Starts a member of `app` consuming `stream` from TRIM_HORIZON, committing every
    /// 500 ms.
    pub fn start(app: &str, table: &str, stream: &str, client_id: &str) -> Self {
        Self::start_with(app, table, stream, client_id, &[])
    }

    /// As [`Member::start`], with more options of `consume`.
    pub fn start_with(
        app: &str,
        table: &str,
        stream: &str,
        client_id: &str,
        options: &[&str],
    ) -> Self {
        let mut member = Self::spawn(app, table, stream, client_id, options, Stdio::piped());
        let stdout = member.child.stdout.take().expect("stdout");
        let sink = member.lines.clone();
        member.reader = Some(tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(Line::parse(&line));
            }
        }));
        member
    }

    /// As [`Member::start_with`], but the process's stdout is a pipe nobody reads.
    pub fn start_stalled(
        app: &str,
        table: &str,
        stream: &str,
        client_id: &str,
        options: &[&str],
    ) -> (Self, StalledPipe) {
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("a pipe");
        let ours = write.try_clone().expect("dup the pipe's write end");
        let member = Self::spawn(app, table, stream, client_id, options, write.into());
        (
            member,
            StalledPipe {
                _read: read,
                write: ours,
            },
        )
    }

    fn spawn(
        app: &str,
        table: &str,
        stream: &str,
        client_id: &str,
        options: &[&str],
        stdout: Stdio,
    ) -> Self {
        let log = ProcessLog::create(client_id);
        let child = kinesumer()
            .args([
                "consume", "--app", app, "--table", table, "--stream", stream,
            ])
            .args(["--client-id", client_id, "--from", "trim-horizon"])
            .args(["--commit-interval-ms", "500"])
            .args(options)
            .env("RUST_LOG", member_log_filter())
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(log.stdio())
            .spawn()
            .expect("start kinesumer consume");
        Self {
            client_id: client_id.to_owned(),
            child,
            lines: Arc::new(Mutex::new(Vec::new())),
            reader: None,
            log,
        }
    }

    /// What this process wrote so far.
    pub fn received(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        wait::signal(&self.child, signal);
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.text()
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(&mut self) {
        within("kill", self.child.kill()).await.expect("kill");
    }

    /// Sends SIGTERM, waits for the exit and for its stdout to be read; returns the exit
    /// code.
    pub async fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child, self.reader.take()).await
    }
}

/// A member's stdout that nobody reads: once full, the member's next write blocks.
pub struct StalledPipe {
    /// Held open, so writes block rather than fail with a broken pipe.
    _read: OwnedFd,
    /// A copy of the member's end, to ask whether a write would block.
    write: OwnedFd,
}

impl StalledPipe {
    /// Whether the pipe is full: a write to it blocks until someone reads.
    pub fn is_full(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.write, PollFlags::OUT)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).expect("poll the pipe") == 0
    }
}

/// Waits until `members` together wrote every payload of `want`.
pub async fn received_all(members: &[&Member], want: &[Vec<u8>]) -> Vec<Line> {
    eventually("every record received", Duration::from_secs(40), || async {
        let lines: Vec<Line> = members.iter().flat_map(|m| m.received()).collect();
        let got: std::collections::BTreeSet<&Vec<u8>> = lines.iter().map(|l| &l.data).collect();
        want.iter()
            .all(|w| got.contains(w))
            .then_some(lines.clone())
    })
    .await
}

/// A `kinesumer run` process; killed (SIGKILL) when dropped, its stderr (its children's
/// too) printed if the test fails.
pub struct RunMember {
    child: Child,
    log: ProcessLog,
}

impl RunMember {
    /// Starts a member of `app` running `command` per shard of `stream` from
    /// TRIM_HORIZON, committing every 500 ms; `env` goes to it and to its children.
    pub fn start(
        app: &str,
        table: &str,
        stream: &str,
        client_id: &str,
        options: &[&str],
        env: &[(&str, &str)],
        command: &[&str],
    ) -> Self {
        let log = ProcessLog::create(client_id);
        let child = kinesumer()
            .args(["run", "--app", app, "--table", table, "--stream", stream])
            .args(["--client-id", client_id, "--from", "trim-horizon"])
            .args(["--commit-interval-ms", "500"])
            .args(options)
            .arg("--")
            .args(command)
            .envs(env.iter().copied())
            .env("RUST_LOG", member_log_filter())
            .stdout(Stdio::null())
            .stderr(log.stdio())
            .spawn()
            .expect("start kinesumer run");
        Self { child, log }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child, None).await
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.text()
    }
}
