//! `kinesumer consume --exec COMMAND`: runs a shell command per record, and applies the
//! error policy (`--on-error`, `--max-attempts`) to the records whose command fails.
//!
//! ```text
//!  record ──▶ sh -c COMMAND (payload on stdin, metadata in KINESUMER_*) ──exit 0──▶ processed
//!                                                                    └──other──▶ retry, then stop or dead letter
//! ```
//!
//! A command still running when its shard moves (a handoff, a close past the handoff
//! timeout) is killed; its record was not processed and is delivered again.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context as _;
use kinesumer::dead_letter::{FileSink, KinesisSink};
use kinesumer::reader::{KinesisApi, SdkKinesis};
use kinesumer::{ErrorPolicy, Kinesumer, Record};
use tokio::io::AsyncWriteExt;

use crate::aws::Aws;
use crate::cli::OnError;

/// The error policy of `--on-error` and `--max-attempts`, its sink checked: a
/// dead-letter file that cannot be opened or a stream that does not exist fails here,
/// before the member joins.
pub(crate) async fn error_policy(
    aws: &Aws,
    on_error: &OnError,
    max_attempts: u32,
) -> anyhow::Result<ErrorPolicy> {
    Ok(match on_error {
        OnError::Stop => ErrorPolicy::stop_after(max_attempts),
        OnError::DeadLetterFile(path) => {
            let sink = FileSink::open(path)
                .await
                .with_context(|| format!("opening the dead-letter file {}", path.display()))?;
            ErrorPolicy::dead_letter_after(max_attempts, sink)
        }
        OnError::DeadLetterKinesis(stream) => {
            let client = aws.kinesis().await;
            // The library's listing names a missing stream and how to create it.
            SdkKinesis::new(client.clone())
                .list_shards(stream)
                .await
                .with_context(|| format!("checking the dead-letter stream {stream}"))?;
            ErrorPolicy::dead_letter_after(max_attempts, KinesisSink::new(client, stream))
        }
    })
}

/// Consumes `streams`, running `command` per record, until `stop` completes or the
/// member stops for good.
pub(crate) async fn run(
    member: &Kinesumer,
    streams: Vec<String>,
    command: String,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let command: Arc<str> = command.into();
    let consuming = member
        .consume_with(streams, move |record: Record| {
            run_command(command.clone(), record)
        })
        .await
        .context("starting to consume")?;
    tokio::select! {
        stopped = consuming => stopped.context("the member stopped"),
        () = stop => Ok(()),
    }
}

/// Runs `command` on one record; `Err` says how it failed.
async fn run_command(command: Arc<str>, record: Record) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        // Its own process group, so that everything it started can be killed with it.
        .process_group(0)
        .arg("-c")
        .arg(&*command)
        .env("KINESUMER_STREAM", &*record.stream)
        .env("KINESUMER_SHARD_ID", &*record.shard_id)
        .env("KINESUMER_SEQUENCE_NUMBER", record.sequence_number.as_str())
        .env("KINESUMER_PARTITION_KEY", &record.partition_key)
        .env(
            "KINESUMER_FENCING_TOKEN",
            record.fencing_token().to_string(),
        )
        .stdin(Stdio::piped())
        // JSON logs: its stderr lines are said as JSON too, else they go straight through.
        .stderr(if crate::say::json() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut group = KillOnDrop::group_of(&child);
    let label = format!("[{}/{}]", record.stream, record.shard_id);
    let forwarding = child.stderr.take().map(|e| crate::say::forward(e, label));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed = async move {
        // A command that does not read its input is not a failure: a closed pipe is
        // ignored, and its exit status decides.
        let _ = stdin.write_all(&record.data).await;
    };
    let (_, status) = tokio::join!(feed, child.wait());
    group.disarm();
    if let Some(mut forwarding) = forwarding {
        // Its last lines, unless something it started holds its stderr open.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut forwarding.0).await;
    }
    let status = status.map_err(|e| format!("waiting for the command: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the command exited with {status}"))
    }
}

/// Kills a command's process group unless disarmed: a command whose attempt timed out or
/// whose shard moved away is stopped with everything it started (a pipeline, a `sleep`),
/// none of which may keep the member's stdout open.
pub(crate) struct KillOnDrop(Option<rustix::process::Pid>);

impl KillOnDrop {
    /// Kills the process group of `child` (started with `process_group(0)`) when dropped.
    pub(crate) fn group_of(child: &tokio::process::Child) -> Self {
        Self(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        )
    }

    /// The command was waited for: its group is left alone (its id may be reused).
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // Already gone is fine: there is nothing left to stop.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}
