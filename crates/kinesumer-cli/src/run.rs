//! `kinesumer run -- COMMAND`: a member whose shards are processed by a child process
//! speaking the record-processor protocol (docs/processor-protocol.md) — one child for
//! all of them ([`shared`]), or one per shard (`--child-per-shard`).
//!
//! ```text
//!  shard's batches ──▶ Child (a Processor) ──stdin: initialize, records, revoking…──▶ COMMAND
//!                           ▲                                                          │
//!                           └──── marks ◀── stdout: checkpoint, ok, error ─────────────┘
//!                                          stderr ──▶ "[stream/shard] …" on the member's stderr
//! ```
//!
//! A record counts as processed when the child checkpoints it. The child gets the shard's
//! next batch after `ok`, and no more than `--max-in-flight` records of a shard are
//! delivered and not checkpointed. A failure — `error`, an exit, a line that is not the
//! protocol, an attempt past its timeout — goes to the error policy; the next attempt
//! sends again everything not checkpointed, to a new child unless the old one answered
//! `error`.

mod shared;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::SecondsFormat;
use kinesumer::processor::{Assigned, Batch, Batching, Checkpointer, Processor, Start};
use kinesumer::store::ShardRef;
use kinesumer::{HandlerError, Kinesumer, Position, Record};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::time::Instant;

use crate::exec::KillOnDrop;
use crate::member::AbortOnDrop;
use crate::wire::{self, Payload};
use shared::{Seat, Shared};

/// The protocol version this member speaks.
const PROTOCOL: u64 = 1;

/// How long a child may take to exit once its stdin is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Runs `kinesumer run`.
pub(crate) async fn serve(aws: &crate::aws::Aws, args: crate::cli::RunArgs) -> anyhow::Result<()> {
    startable(&args.command[0])?;
    let command: Arc<[String]> = args.command.into();
    let job = crate::member::Job::Processors(Options {
        shared: (!args.child_per_shard).then(|| Shared::new(command.clone())),
        command,
        batching: Batching {
            max_records: usize::try_from(args.batch_max_records).unwrap_or(usize::MAX),
            max_wait: args.batch_max_wait_ms.unwrap_or_default(),
            ..Batching::default()
        },
        max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(usize::MAX),
        text: args.text,
    });
    crate::member::serve(aws, args.member, Some(&args.errors), job).await
}

/// Refuses a program that cannot be started, before the member joins: every shard's
/// attempts would fail, and the shard be released and taken again, for ever.
fn startable(program: &str) -> Result<(), crate::UsageError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let why = if program.contains('/') {
        let path = std::path::Path::new(program);
        if executable(path) {
            return Ok(());
        }
        if path.is_file() {
            "not executable (chmod +x it, or name its interpreter first: -- python3 FILE)"
        } else {
            "no such file"
        }
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
            return Ok(());
        }
        "not found in any directory of PATH"
    };
    Err(crate::UsageError(format!(
        "cannot start {program}: {why}; the processor's program and its arguments go after --"
    )))
}

/// What `run` does with its shards.
pub(crate) struct Options {
    /// The processor's program and arguments.
    pub(crate) command: Arc<[String]>,
    /// The one child of all the shards; `None`: a child per shard.
    pub(crate) shared: Option<Arc<Shared>>,
    pub(crate) batching: Batching,
    /// Records delivered to a child and not checkpointed, at most.
    pub(crate) max_in_flight: usize,
    /// Payloads that are valid UTF-8 go as text.
    pub(crate) text: bool,
}

impl Options {
    /// Once the member has left: closes the shared child's stdin and lets it exit.
    pub(crate) async fn close(&self) {
        if let Some(shared) = &self.shared {
            shared.close(EXIT_GRACE).await;
        }
    }
}

/// Consumes `streams` with the child or children `options` say, until `stop` completes
/// or the member stops for good.
pub(crate) async fn run(
    member: &Kinesumer,
    streams: Vec<String>,
    options: &Options,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (command, shared) = (options.command.clone(), options.shared.clone());
    let (text, max_in_flight) = (options.text, options.max_in_flight);
    let factory = move |shard: &ShardRef, checkpointer| Child {
        link: match &shared {
            Some(shared) => Link::Shared(Seat::new(shared.clone(), shard)),
            None => Link::Own(None),
        },
        command: command.clone(),
        text,
        label: format!("[{}/{}]", shard.stream, shard.shard_id),
        shard: shard.clone(),
        checkpointer,
        max_in_flight,
        start: None,
        token: 0,
        busy: false,
        delivered: VecDeque::new(),
        sent: None,
        checkpointed: None,
        resend: false,
    };
    let consuming = member
        .consume_processors(streams, factory, options.batching)
        .await
        .context("starting to consume")?;
    tokio::select! {
        stopped = consuming => stopped.context("the member stopped"),
        () = stop => Ok(()),
    }
}

/// One shard's processor: its conversation with a child process — its own or the shared
/// one — replaced when it fails.
struct Child {
    link: Link,
    command: Arc<[String]>,
    /// Payloads that are valid UTF-8 go as text.
    text: bool,
    /// `[stream/shard]`: the prefix of its stderr lines and its name in errors.
    label: String,
    shard: ShardRef,
    checkpointer: Checkpointer,
    max_in_flight: usize,
    /// Where the shard's reading started, and the lease's fencing token.
    start: Option<Start>,
    token: u64,
    /// A message is being written or answered: an attempt abandoned meanwhile (its
    /// timeout) leaves the conversation out of step, and the child is replaced.
    busy: bool,
    /// Delivered to a child and not checkpointed, oldest first.
    delivered: VecDeque<Record>,
    /// The last record ever sent.
    sent: Option<Position>,
    /// The last record checkpointed.
    checkpointed: Option<Position>,
    /// The last attempt failed: send everything not checkpointed again.
    resend: bool,
}

/// How a shard reaches its child.
enum Link {
    /// A child of its own (`--child-per-shard`), while one runs.
    Own(Option<Box<Own>>),
    /// Its seat in the member's one child.
    Shared(Seat),
}

/// A shard's own child.
struct Own {
    running: Running,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// A started child process.
struct Running {
    stdin: ChildStdin,
    process: tokio::process::Child,
    /// Kills it with everything it started, unless it exited by itself.
    group: KillOnDrop,
    _stderr: AbortOnDrop,
}

impl Running {
    /// Closes the child's stdin and waits up to `grace` for it to exit: its status, or
    /// `None` when it did not (it is then killed, with everything it started).
    async fn exit(self, grace: Duration) -> Option<std::process::ExitStatus> {
        let Running {
            stdin,
            mut process,
            mut group,
            ..
        } = self;
        drop(stdin);
        let status = tokio::time::timeout(grace, process.wait())
            .await
            .ok()?
            .ok()?;
        group.disarm();
        Some(status)
    }
}

/// Starts `command` (not through a shell) in a process group of its own, its stderr
/// forwarded to the member's with each line prefixed by `label`.
fn spawn(
    command: &[String],
    label: String,
) -> Result<(Running, Lines<BufReader<ChildStdout>>), String> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut process = tokio::process::Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let group = KillOnDrop::group_of(&process);
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        process.stdin.take(),
        process.stdout.take(),
        process.stderr.take(),
    ) else {
        unreachable!("all three are piped")
    };
    let running = Running {
        stdin,
        process,
        group,
        _stderr: crate::say::forward(stderr, label),
    };
    Ok((running, BufReader::new(stdout).lines()))
}

/// How a child answered a message.
enum Answer {
    Ok,
    Error(String),
}

impl Child {
    /// Whether a child is running that this shard was initialized in.
    fn connected(&self) -> bool {
        match &self.link {
            Link::Own(own) => own.is_some(),
            Link::Shared(seat) => seat.joined(),
        }
    }

    /// Starts a child (or takes a seat in the shared one) and initializes it to read
    /// after the last checkpoint.
    async fn connect(&mut self) -> Result<(), String> {
        self.busy = false;
        match &mut self.link {
            Link::Own(own) => {
                let (running, stdout) = spawn(&self.command, self.label.clone())?;
                *own = Some(Box::new(Own { running, stdout }));
            }
            Link::Shared(seat) => seat.join().await?,
        }
        let start = match (&self.checkpointed, &self.start) {
            (Some(p), _) => start_json(&Start::After(p.clone())),
            (None, Some(start)) => start_json(start),
            (None, None) => unreachable!("assigned comes first"),
        };
        let init = self.message(
            "initialize",
            json!({
                "protocol": PROTOCOL,
                "shared": matches!(self.link, Link::Shared(_)),
                "fencing_token": self.token,
                "start": start,
            }),
        );
        match self.exchange(init).await? {
            Answer::Ok => Ok(()),
            Answer::Error(e) => Err(format!("initialize refused: {e}")),
        }
    }

    /// The conversation is out of step: its child is replaced before the next message.
    async fn replace(&mut self) {
        self.busy = false;
        match &mut self.link {
            Link::Own(own) => *own = None,
            Link::Shared(seat) => {
                let why = format!("{} stopped answering in step", self.label);
                seat.replace(&why).await;
            }
        }
    }

    /// Writes one message, a line.
    async fn write(&mut self, line: &str) -> Result<(), String> {
        let written = match &mut self.link {
            Link::Own(Some(own)) => own.running.stdin.write_all(line.as_bytes()).await,
            Link::Own(None) => return Err(format!("{} stopped", self.label)),
            Link::Shared(seat) => return seat.write(line).await,
        };
        match written {
            Ok(()) => Ok(()),
            Err(e) => Err(self.died(&format!("writing to it failed: {e}")).await),
        }
    }

    /// Sends `message` and reads until the child answers it, applying checkpoints.
    async fn exchange(&mut self, message: impl std::fmt::Display) -> Result<Answer, String> {
        self.busy = true;
        self.write(&format!("{message}\n")).await?;
        loop {
            match self.next_message().await? {
                Reply::Checkpoint(at) => self.checkpoint(at)?,
                Reply::Ok => break Ok(self.idle(Answer::Ok)),
                Reply::Error(e) => break Ok(self.idle(Answer::Error(e))),
            }
        }
    }

    fn idle(&mut self, answer: Answer) -> Answer {
        self.busy = false;
        answer
    }

    /// The child's next message to this shard.
    async fn next_message(&mut self) -> Result<Reply, String> {
        let own = match &mut self.link {
            Link::Own(Some(own)) => own,
            Link::Own(None) => return Err(format!("{} stopped", self.label)),
            Link::Shared(seat) => return seat.next().await,
        };
        match next_reply(&mut own.stdout).await {
            Ok((_, reply)) => Ok(reply),
            Err(Broken::Stopped(what)) => Err(self.died(&what).await),
            Err(Broken::NotTheProtocol(line)) => {
                // Out of step for good: a new child gets everything again.
                self.link = Link::Own(None);
                Err(not_the_protocol(&self.label, &line))
            }
        }
    }

    /// The shard's own child is gone or unusable: says how it ended.
    async fn died(&mut self, what: &str) -> String {
        let own = match &mut self.link {
            Link::Own(own) => own.take(),
            Link::Shared(_) => None,
        };
        let status = match own {
            Some(own) => own.running.exit(EXIT_SEEN).await,
            None => None,
        };
        stopped(&self.label, what, status)
    }

    /// Applies a checkpoint: everything delivered (`None`), or up to a position.
    fn checkpoint(&mut self, at: Option<Position>) -> Result<(), String> {
        let through = match at {
            None => self.delivered.len(),
            Some(at) => match self.delivered.iter().position(|r| r.position() == at) {
                Some(i) => i + 1,
                // Already checkpointed: nothing moves.
                None if self.checkpointed.as_ref().is_some_and(|c| at <= *c) => 0,
                None => {
                    return Err(format!(
                        "{} checkpointed {}, a record it was not given",
                        self.label, at.sequence
                    ))
                }
            },
        };
        if let Some(last) = self.delivered.drain(..through).last() {
            self.checkpointer.mark(&last);
            self.checkpointed = Some(last.position());
        }
        Ok(())
    }

    /// A message about this shard: its `type` and fields, with the shard named.
    fn message(&self, kind: &str, fields: Value) -> Value {
        let mut message = json!({
            "type": kind,
            "stream": self.shard.stream,
            "shard_id": self.shard.shard_id,
        });
        if let (Some(message), Value::Object(fields)) = (message.as_object_mut(), fields) {
            message.extend(fields);
        }
        message
    }

    /// One attempt at a batch.
    async fn attempt(&mut self, batch: &Batch) -> Result<(), String> {
        if self.busy {
            // The last attempt was abandoned mid-message: replace the child.
            self.replace().await;
            self.resend = true;
        }
        if !self.connected() {
            self.resend = true;
            self.connect().await?;
        }
        let fresh: Vec<Record> = batch
            .records()
            .iter()
            .filter(|r| self.sent.as_ref().is_none_or(|s| r.position() > *s))
            .cloned()
            .collect();
        let mut records: Vec<&Record> = Vec::new();
        if self.resend {
            records.extend(self.delivered.iter());
        }
        records.extend(fresh.iter());
        if !records.is_empty() {
            let message = RecordsMessage {
                fencing_token: self.token,
                millis_behind_latest: batch.millis_behind_latest(),
                records: records
                    .iter()
                    .map(|r| RecordLine::of(r, self.text))
                    .collect(),
                shard_id: &self.shard.shard_id,
                stream: &self.shard.stream,
                kind: "records",
            };
            // Written out now: the message borrows the records kept below.
            let message = serde_json::to_string(&message).map_err(|e| e.to_string())?;
            if let Some(last) = fresh.last() {
                self.sent = Some(last.position());
            }
            self.delivered.extend(fresh);
            if let Answer::Error(e) = self.exchange(message).await? {
                return Err(format!("{} failed: {e}", self.label));
            }
        }
        // Back-pressure: no more until the child checkpointed enough.
        while self.delivered.len() > self.max_in_flight {
            self.busy = true;
            match self.next_message().await? {
                Reply::Checkpoint(at) => self.checkpoint(at)?,
                Reply::Ok | Reply::Error(_) => {
                    return Err(format!("{} answered a message it was not sent", self.label))
                }
            }
            self.idle(Answer::Ok);
        }
        self.resend = false;
        Ok(())
    }

    /// Sends a last message (revoking, shard_ended) and waits for its answer until
    /// `deadline`; then lets the child go.
    async fn last_word(&mut self, message: Value, deadline: Instant) -> bool {
        let answered = self.connected()
            && !self.busy
            && matches!(
                tokio::time::timeout_at(deadline, self.exchange(&message)).await,
                Ok(Ok(Answer::Ok))
            );
        self.shut_down().await;
        answered
    }

    /// Done with the child: its own is sent away (stdin closed, killed past the grace);
    /// the shared one is left, or replaced if an answer to this shard is still due.
    async fn shut_down(&mut self) {
        if self.busy {
            self.replace().await;
        }
        match &mut self.link {
            Link::Own(own) => {
                if let Some(own) = own.take() {
                    own.running.exit(EXIT_GRACE).await;
                }
            }
            Link::Shared(seat) => seat.leave(),
        }
    }
}

#[async_trait]
impl Processor for Child {
    async fn assigned(&mut self, assigned: &Assigned) {
        self.start = Some(assigned.start.clone());
        self.token = assigned.fencing_token;
        if let Start::After(p) = &assigned.start {
            self.checkpointed = Some(p.clone());
            self.sent = Some(p.clone());
        }
    }

    async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError> {
        let result = self.attempt(batch).await;
        if result.is_err() {
            self.resend = true;
        }
        result.map_err(Into::into)
    }

    async fn revoking(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = self.message("revoking", json!({"deadline_ms": left.as_millis() as u64}));
        self.last_word(message, deadline).await;
    }

    async fn lost(&mut self) {
        if self.connected() && !self.busy {
            let line = format!("{}\n", self.message("lost", json!({})));
            let _ = self.write(&line).await;
        }
        self.shut_down().await;
    }

    async fn shard_ended(&mut self) {
        // The answer stands for a checkpoint of everything delivered.
        let deadline = Instant::now() + Duration::from_secs(60);
        let message = self.message("shard_ended", json!({}));
        if self.last_word(message, deadline).await {
            let _ = self.checkpoint(None);
        }
    }
}

/// How long a child that stopped answering is given to show its exit status.
const EXIT_SEEN: Duration = Duration::from_secs(1);

/// Why a child's next line did not come.
enum Broken {
    /// It is gone: what was seen.
    Stopped(String),
    /// It wrote this line, which is not the protocol.
    NotTheProtocol(String),
}

/// The next message a child wrote on `stdout`, and the shard it names, if it names one.
async fn next_reply(
    stdout: &mut Lines<BufReader<ChildStdout>>,
) -> Result<(Option<(String, String)>, Reply), Broken> {
    let line = match stdout.next_line().await {
        Ok(Some(line)) => line,
        Ok(None) => return Err(Broken::Stopped("it closed its stdout".to_owned())),
        Err(e) => return Err(Broken::Stopped(format!("reading its stdout failed: {e}"))),
    };
    Reply::parse(&line).ok_or(Broken::NotTheProtocol(line))
}

/// What is said of child `who` that ended: what was seen, and its exit status if known.
fn stopped(who: &str, what: &str, status: Option<std::process::ExitStatus>) -> String {
    let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
    format!("{who} stopped: {what}{status}")
}

/// What is said of child `who` that wrote `line`, which is not the protocol.
fn not_the_protocol(who: &str, line: &str) -> String {
    let shown: String = line.chars().take(200).collect();
    format!(
        "{who} wrote a line that is not the protocol (stdout is the protocol's; log to stderr): {shown:?}"
    )
}

/// A line the child wrote.
enum Reply {
    Ok,
    Error(String),
    Checkpoint(Option<Position>),
}

impl Reply {
    /// The message on `line`, and the shard it names (`stream` and `shard_id`), if it
    /// names one; `None` if the line is not the protocol.
    fn parse(line: &str) -> Option<(Option<(String, String)>, Self)> {
        let v: Value = serde_json::from_str(line).ok()?;
        let field = |name| v.get(name).and_then(Value::as_str).map(str::to_owned);
        let shard = field("stream").zip(field("shard_id"));
        let reply = match v.get("type")?.as_str()? {
            "ok" => Some(Reply::Ok),
            "error" => Some(Reply::Error(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no error text)")
                    .to_owned(),
            )),
            "checkpoint" => match v.get("sequence_number") {
                None | Some(Value::Null) => Some(Reply::Checkpoint(None)),
                Some(seq) => Some(Reply::Checkpoint(Some(Position {
                    sequence: seq.as_str()?.parse().ok()?,
                    sub_sequence: v.get("sub_sequence_number").and_then(Value::as_u64),
                }))),
            },
            _ => None,
        }?;
        Some((shard, reply))
    }
}

fn start_json(start: &Start) -> Value {
    match start {
        Start::After(p) => json!({
            "kind": "after",
            "sequence_number": p.sequence.as_str(),
            "sub_sequence_number": p.sub_sequence,
        }),
        Start::TrimHorizon => json!({"kind": "trim_horizon"}),
        Start::AtTimestamp(t) => json!({
            "kind": "at_timestamp",
            "timestamp": t.to_rfc3339_opts(SecondsFormat::Millis, true),
        }),
        _ => json!({"kind": "unknown"}),
    }
}

/// A `records` message, written straight from the records (no JSON value built per
/// record); fields in alphabetical order.
#[derive(serde::Serialize)]
struct RecordsMessage<'a> {
    fencing_token: u64,
    millis_behind_latest: Option<i64>,
    records: Vec<RecordLine<'a>>,
    shard_id: &'a str,
    stream: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// One record of a `records` message.
#[derive(serde::Serialize)]
struct RecordLine<'a> {
    approximate_arrival: Option<String>,
    data: std::borrow::Cow<'a, str>,
    /// With `--text` only: `text` or `base64`; without it, every payload is base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_encoding: Option<&'static str>,
    partition_key: &'a str,
    sequence_number: &'a str,
    sub_sequence_number: Option<u64>,
}

impl<'a> RecordLine<'a> {
    fn of(r: &'a Record, text: bool) -> Self {
        let payload = Payload::of(&r.data, text);
        RecordLine {
            approximate_arrival: wire::arrival(r),
            data_encoding: text.then(|| payload.encoding()),
            data: payload.into_data(),
            partition_key: &r.partition_key,
            sequence_number: r.sequence_number.as_str(),
            sub_sequence_number: r.sub_sequence_number,
        }
    }
}
