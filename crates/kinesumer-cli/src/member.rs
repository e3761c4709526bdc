//! What `consume` and `run` share: a member configured from the command line, joined
//! with SIGINT and SIGTERM handled, doing its job until a signal, and leaving the group.
//!
//! SIGINT and SIGTERM close the member gracefully (commit, release, leave) and exit 0 —
//! also when the state store cannot be reached to do so, which is said on stderr, and
//! when the signal arrives while the member is still joining. SIGUSR1 pauses every shard
//! (no record is handed out; the leases, heartbeats and commits go on, and the reading
//! stops once the buffers are full) and SIGUSR2 resumes them. With `--metrics-addr`, the
//! member's metrics are served for Prometheus meanwhile.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use kinesumer::{Balancing, Config, ConfigBuilder, ErrorPolicy, Kinesumer, ReadMode};
use tokio::signal::unix::{signal, SignalKind};

use crate::aws::Aws;
use crate::cli::{Balance, ErrorArgs, Format, MemberArgs};
use crate::{consume, exec, prometheus, run, UsageError};

/// What the member does with its records.
pub(crate) enum Job {
    /// Writes them to stdout (`consume`).
    Stdout(Format),
    /// Runs a shell command per record (`consume --exec`).
    Exec(String),
    /// Runs a processor child per shard (`run`).
    Processors(run::Options),
}

/// Joins the group as `args` say, does `job` until a signal (or until the job ends), and
/// leaves. `errors` is the error policy of a job that runs commands.
pub(crate) async fn serve(
    aws: &Aws,
    args: MemberArgs,
    errors: Option<&ErrorArgs>,
    job: Job,
) -> anyhow::Result<()> {
    // Listening first: a bad address fails before the member joins the group.
    let _exporter = args
        .metrics_addr
        .map(|addr| prometheus::serve(addr).map(AbortOnDrop))
        .transpose()?;
    // Stdout and processors mark what they finished; a command per record is done
    // when it exits 0.
    let config = config(aws, &args, matches!(job, Job::Exec(_)))?;
    // Before joining: a dead-letter stream or file that cannot be used fails the start.
    let policy = match errors {
        Some(errors) => Some(error_policy(aws, errors).await?),
        None => None,
    };
    // Before the first request: a SIGTERM while the state store or Kinesis is slow to
    // answer ends the process with 0 rather than killing it.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // Before joining too: their default is to end the process. One that comes while
    // the member joins applies once it has.
    let mut pause = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let mut resume = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
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
            crate::say::warning(e);
        }
    }));
    let stop = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let streams = args.streams;
    let working = async {
        match &job {
            Job::Stdout(format) => consume::write_stdout(&member, streams, *format, stop).await,
            Job::Exec(command) => exec::run(&member, streams, command.clone(), stop).await,
            Job::Processors(options) => run::run(&member, streams, options, stop).await,
        }
    };
    let pausing = async {
        loop {
            tokio::select! {
                _ = pause.recv() => {
                    member.pause_all();
                    crate::say::note("paused every shard (SIGUSR1): no record is handed out, the leases are kept; SIGUSR2 resumes");
                }
                _ = resume.recv() => {
                    member.resume_all();
                    crate::say::note("resumed every shard (SIGUSR2)");
                }
            }
        }
    };
    let outcome = tokio::select! {
        outcome = working => outcome,
        never = pausing => never,
    };
    // A close that could not write everything — the store unreachable during a SIGTERM —
    // is said, not an exit failure: the process stopped as asked, and what it could not
    // commit or release is read again by the next owner (after the failover).
    let closed = match member.close().await {
        Err(e @ kinesumer::Error::CloseIncomplete { .. }) => {
            crate::say::warning(format!("leaving the group: {e}"));
            Ok(())
        }
        closed => closed.context("leaving the group"),
    };
    // The processors had their last word in the close: a shared child may go now.
    if let Job::Processors(options) = &job {
        options.close().await;
    }
    drop(warnings);
    outcome.and(closed)
}

/// The library's configuration from the command line and the AWS options.
fn config(aws: &Aws, args: &MemberArgs, auto_commit: bool) -> anyhow::Result<Config> {
    let mut builder = Config::builder(&args.group.app, &args.group.table)
        .initial_position(args.from)
        .auto_commit(auto_commit)
        .commit_interval(args.commit_interval_ms);
    if let Some(id) = &args.client_id {
        builder = builder.client_id(id);
    }
    type Set = fn(ConfigBuilder, Duration) -> ConfigBuilder;
    let timings: [(Option<Duration>, Set); 3] = [
        (args.sync_interval_ms, ConfigBuilder::sync_interval),
        (args.failover_timeout_ms, ConfigBuilder::failover_timeout),
        (args.request_timeout_ms, ConfigBuilder::request_timeout),
    ];
    for (value, set) in timings {
        if let Some(d) = value {
            builder = set(builder, d);
        }
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
    if let Some(n) = args.max_shards {
        builder = builder.max_shards(n);
    }
    if let Some(b) = args.max_bytes_per_second {
        if args.balance != Balance::Load {
            return Err(UsageError(
                "--max-bytes-per-second needs --balance load (balancing by count measures no load); or limit the shards with --max-shards".into(),
            )
            .into());
        }
        builder = builder.max_bytes_per_second(b);
    }
    if let Some(n) = args.max_records_per_second {
        builder = builder.max_records_per_second(n);
    }
    if let Some(region) = &args.consumer.consumer_region {
        builder = builder.region(region);
    }
    Ok(builder.build()?)
}

/// The error policy of `--on-error`, `--max-attempts` and `--attempt-timeout-ms`.
async fn error_policy(aws: &Aws, errors: &ErrorArgs) -> anyhow::Result<ErrorPolicy> {
    let policy = exec::error_policy(aws, &errors.on_error, errors.max_attempts).await?;
    Ok(match errors.attempt_timeout_ms {
        Some(limit) => policy.attempt_timeout(limit),
        None => policy,
    })
}

/// A task aborted when this is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
