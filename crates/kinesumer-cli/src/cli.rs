//! The command line, as `clap` derives it: every subcommand, option and help text.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kinesumer::seq::SequenceNumber;

use crate::say::LogFormat;

/// Operate Kinesis consumer groups kept in one DynamoDB table: create the state-store
/// table, watch a group, consume a stream as a member, move checkpoints, write records.
///
/// Credentials, region and endpoints come from the standard AWS chain (environment
/// variables such as AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_KINESIS,
/// AWS_ENDPOINT_URL_DYNAMODB; shared config and credential files; instance roles). The
/// global options below win over the environment.
///
/// Exit codes: 0 ok, 1 runtime error, 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "kinesumer", version, propagate_version = true)]
pub(crate) struct Cli {
    /// How stderr is written: `text` lines for a person, or `json`, one object a line
    /// (timestamp, level, target, message and fields) for a log pipeline.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT", env = "KINESUMER_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(flatten)]
    pub(crate) aws: AwsOptions,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where and as whom to talk to AWS. Each option is applied as the standard AWS
/// environment variable it names, so it behaves exactly as that variable does.
#[derive(Debug, Args)]
#[command(next_help_heading = "AWS options")]
pub(crate) struct AwsOptions {
    /// The AWS region of both services (sets AWS_REGION).
    #[arg(long, global = true, value_name = "REGION")]
    pub(crate) region: Option<String>,
    /// One endpoint URL for Kinesis and DynamoDB, e.g. a local emulator (sets
    /// AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,
    /// The Kinesis endpoint URL; wins over --endpoint-url.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) kinesis_endpoint: Option<String>,
    /// The DynamoDB endpoint URL; wins over --endpoint-url.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) dynamodb_endpoint: Option<String>,
    /// An IAM role to assume (STS) for Kinesis, to reach a stream in another account.
    /// The state-store table is always reached with the caller's own credentials.
    #[arg(long, global = true, value_name = "ARN")]
    pub(crate) role_arn: Option<String>,
    /// The profile of the shared AWS config and credentials files (sets AWS_PROFILE).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// A PEM file of certificate authorities to trust besides the system's, for
    /// endpoints behind a private CA (sets AWS_CA_BUNDLE).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) ca_bundle: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or describe the state-store table.
    #[command(subcommand)]
    Table(TableCommand),
    /// Create a stream (for demos and tests).
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Show a group: its members (alive, leader, last heartbeat, shards held), then per
    /// stream and shard the owner, checkpoint, lineage and lag.
    Status(StatusArgs),
    /// Join a group as a member and write every record it is given to stdout.
    Consume(ConsumeArgs),
    /// Join a group as a member and process the shards it is given with a child process
    /// (one for all of them, or one each with --child-per-shard) speaking the
    /// record-processor protocol (docs/processor-protocol.md):
    /// `kinesumer run --app A --table T --stream S -- python3 handler.py`.
    Run(RunArgs),
    /// Move the checkpoints of a stream's shards: prints, per shard, the checkpoint now
    /// and after; --execute writes. Refuses while members of the group are alive, unless
    /// --force.
    Reset(ResetArgs),
    /// Write a group's checkpoints of a stream as JSON, which `reset --from-file` takes
    /// back.
    Export(ExportArgs),
    /// List the apps (groups) that keep items in a state-store table: members alive and
    /// known, and the streams they keep checkpoints of. Scans the table's keys.
    Groups(GroupsArgs),
    /// Manage one group.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Write the lines of stdin as records (PutRecords, 500 per batch, failed entries
    /// retried).
    Put(PutArgs),
    /// Deregister the app's enhanced fan-out stream consumer from streams, for cleanup
    /// once no member of the app reads them with --efo any more.
    DeregisterConsumer(DeregisterConsumerArgs),
    /// Move a consumer over to this group without reprocessing.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Print the least-privilege IAM policy (JSON) of a member of this group: every
    /// Kinesis, DynamoDB and STS action the code calls, on the exact streams and table.
    /// The region comes from --region (or AWS_REGION); with --role-arn, sts:AssumeRole
    /// on that role.
    IamPolicy(IamPolicyArgs),
}

/// `kinesumer iam-policy`
#[derive(Debug, Args)]
pub(crate) struct IamPolicyArgs {
    /// The state-store table.
    #[arg(long)]
    pub(crate) table: String,
    /// A stream the member reads: a name, or a stream ARN (another account's stream).
    #[arg(long = "stream", value_name = "STREAM", required = true)]
    pub(crate) streams: Vec<String>,
    /// The account of the table and of streams given by name (12 digits).
    #[arg(long, value_parser = parse_account)]
    pub(crate) account: String,
    /// Members read with enhanced fan-out (`consume --efo`).
    #[arg(long)]
    pub(crate) efo: bool,
    /// Also what the tool's other commands need: table create, stream create, put, and
    /// (with --efo) deregister-consumer.
    #[arg(long)]
    pub(crate) tools: bool,
    /// Also reading this KCL lease table (`migrate from-kcl`).
    #[arg(long, value_name = "TABLE")]
    pub(crate) kcl_table: Option<String>,
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("an AWS account id is 12 digits".to_owned())
    }
}

/// `kinesumer migrate …`
#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Import the checkpoints of a KCL 2.x/3.x (or vmware-go-kcl) lease table as this
    /// group's checkpoints of a stream. Prints, per shard, the KCL checkpoint and what is
    /// written; writes only with --execute, and then refuses while KCL workers or
    /// members of the group are alive (unless --force) and when the group already has
    /// checkpoints of the shards (unless --overwrite). docs/migrating-from-kcl.md.
    FromKcl(FromKclArgs),
}

/// `kinesumer migrate from-kcl`
#[derive(Debug, Args)]
pub(crate) struct FromKclArgs {
    /// The KCL application's lease table (the KCL names it after the application).
    #[arg(long, value_name = "TABLE")]
    pub(crate) kcl_table: String,
    #[command(flatten)]
    pub(crate) group: Group,
    /// The stream.
    #[arg(long)]
    pub(crate) stream: String,
    /// Write the checkpoints (without it: a dry run).
    #[arg(long)]
    pub(crate) execute: bool,
    /// Write even while KCL workers or members of the group seem alive.
    #[arg(long)]
    pub(crate) force: bool,
    /// Replace checkpoints the group already has of these shards.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// The KCL workers' AT_TIMESTAMP initial position (RFC 3339), needed when a lease
    /// still starts there: the KCL keeps that time in its configuration, not the table.
    #[arg(long, value_name = "TIME")]
    pub(crate) at_timestamp: Option<DateTime<Utc>>,
    /// How long to watch the KCL leases before writing: a worker is alive when a lease
    /// counter (vmware-go-kcl: a lease timeout) changes meanwhile. Keep it above the KCL's
    /// lease renewal period (a third of its failover time: 3.3 s by default).
    #[arg(long, default_value = "12000", value_name = "MS", value_parser = parse_millis)]
    pub(crate) kcl_observe_ms: Duration,
    #[command(flatten)]
    pub(crate) observe: Observe,
}

/// `kinesumer table …`
#[derive(Debug, Subcommand)]
pub(crate) enum TableCommand {
    /// Create the table with the Go client's schema (key pk/sk, LSI
    /// index-client-key-last-update) and wait until it is ACTIVE. An existing table with
    /// that schema is fine.
    Create {
        /// The table name.
        #[arg(long)]
        table: String,
        /// The billing mode.
        #[arg(long, value_enum, default_value_t = Billing::OnDemand)]
        billing: Billing,
        /// Read capacity units, with --billing provisioned.
        #[arg(long, default_value_t = 5, value_name = "UNITS")]
        read_capacity: i64,
        /// Write capacity units, with --billing provisioned.
        #[arg(long, default_value_t = 5, value_name = "UNITS")]
        write_capacity: i64,
        #[command(flatten)]
        protection: TableProtection,
    },
    /// Show the table's status, key schema, index and billing, and whether a kinesumer
    /// group can use it.
    Describe {
        /// The table name.
        #[arg(long)]
        table: String,
    },
}

/// What `table create` turns on for a production table, new or existing.
#[derive(Debug, Args)]
pub(crate) struct TableProtection {
    /// Refuse DeleteTable until it is turned off again.
    #[arg(long)]
    pub(crate) deletion_protection: bool,
    /// Point-in-time recovery: restore the table to any second of the last 35 days.
    #[arg(long)]
    pub(crate) pitr: bool,
    /// Encrypt with this KMS key (ARN, id or alias) instead of the AWS-owned key.
    #[arg(long, value_name = "KEY")]
    pub(crate) kms_key: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// `kinesumer stream …`
#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Create a stream and wait until it is ACTIVE.
    Create {
        /// The stream name.
        #[arg(long)]
        stream: String,
        /// The number of shards.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        shards: i32,
    },
}

/// The table's billing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Billing {
    /// Pay per request.
    OnDemand,
    /// Provisioned capacity (see --read-capacity, --write-capacity).
    Provisioned,
}

/// The group: application and table.
#[derive(Debug, Args)]
pub(crate) struct Group {
    /// The application (the group's name).
    #[arg(long)]
    pub(crate) app: String,
    /// The state-store table.
    #[arg(long)]
    pub(crate) table: String,
}

/// How members are judged alive.
#[derive(Debug, Args)]
pub(crate) struct Observe {
    /// How long to watch the member items: a member is alive when its heartbeat counter
    /// (or, for a Go client, its last_update) changes within this time. Keep it above the
    /// members' sync interval (500 ms by default).
    #[arg(long, default_value = "1200", value_name = "MS", value_parser = parse_millis)]
    pub(crate) observe_ms: Duration,
}

/// `kinesumer status`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) group: Group,
    /// Only these streams (repeatable). Default: every stream a member consumes.
    #[arg(long = "stream", value_name = "STREAM")]
    pub(crate) streams: Vec<String>,
    /// Print JSON (the shape is documented in docs/cli.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// Ask Kinesis how far each checkpoint is behind the stream's tip now (two calls per
    /// shard: GetShardIterator after the checkpoint, GetRecords of one record), for at
    /// most N shards; otherwise the lag shown is the one stored with the last checkpoint.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "100")]
    pub(crate) live_lag: Option<usize>,
    /// Redraw every SECONDS until interrupted (in place on a terminal).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) watch: Option<u64>,
    #[command(flatten)]
    pub(crate) observe: Observe,
}

/// `kinesumer consume`
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    pub(crate) member: MemberArgs,
    /// The output format: jsonl (one JSON object per record) or raw (the payload bytes
    /// followed by a newline).
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub(crate) format: Format,
    /// Run this shell command (`sh -c`) for each record instead of writing it to stdout:
    /// the payload on its stdin; KINESUMER_STREAM, KINESUMER_SHARD_ID,
    /// KINESUMER_SEQUENCE_NUMBER, KINESUMER_PARTITION_KEY and KINESUMER_FENCING_TOKEN in
    /// its environment; its stdout and stderr are the member's. Exit status 0 counts the
    /// record processed, any other is a failure for --on-error. In order within a shard,
    /// shards in parallel.
    #[arg(long, value_name = "COMMAND")]
    pub(crate) exec: Option<String>,
    #[command(flatten)]
    pub(crate) errors: ErrorArgs,
}

/// `kinesumer run`
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) member: MemberArgs,
    #[command(flatten)]
    pub(crate) errors: ErrorArgs,
    /// Records delivered to a child and not checkpointed by it, at most: past this, the
    /// shard waits for the child's checkpoints (and its reading stops).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub(crate) max_in_flight: u64,
    /// Records per `records` message, at most.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub(crate) batch_max_records: u64,
    /// How long a batch waits for more records after its first (default: none, what was
    /// read already goes).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub(crate) batch_max_wait_ms: Option<Duration>,
    /// Send each payload that is valid UTF-8 as text (`"data_encoding": "text"`), others
    /// as base64 (`"data_encoding": "base64"`); without it every payload is base64.
    #[arg(long)]
    pub(crate) text: bool,
    /// Start a child for each shard rather than one for all of the member's shards:
    /// shards are then processed in parallel, each in a process of its own.
    #[arg(long)]
    pub(crate) child_per_shard: bool,
    /// The processor: a program and its arguments (not run through a shell), started once
    /// for all the member's shards (or once per shard) and spoken to with the
    /// record-processor protocol (docs/processor-protocol.md) on its stdin and stdout.
    // Named "exec" so that the error options, which need a command, are satisfied here.
    #[arg(id = "exec", last = true, required = true, num_args = 1.., value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

/// What every member the CLI runs is configured with.
#[derive(Debug, Args)]
pub(crate) struct MemberArgs {
    #[command(flatten)]
    pub(crate) group: Group,
    /// A stream to consume (repeatable).
    #[arg(long = "stream", value_name = "STREAM", required = true)]
    pub(crate) streams: Vec<String>,
    /// This member's client id, unique per running process. Default: host name plus a
    /// random suffix.
    #[arg(long)]
    pub(crate) client_id: Option<String>,
    /// Where shards without a checkpoint start: latest, trim-horizon, or an RFC 3339
    /// time.
    #[arg(long, default_value = "latest", value_parser = parse_from, value_name = "WHERE")]
    pub(crate) from: kinesumer::InitialPosition,
    /// How often processed records are checkpointed.
    #[arg(long, default_value = "5000", value_name = "MS", value_parser = parse_millis)]
    pub(crate) commit_interval_ms: Duration,
    /// The group's tick: heartbeat, plan and lease reads (library default: 400).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub(crate) sync_interval_ms: Option<Duration>,
    /// How long a silent member keeps its shards before the leader moves them (library
    /// default: 2200). Raise it on a loaded machine, with the sync interval.
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub(crate) failover_timeout_ms: Option<Duration>,
    /// How long one state-store request may take (library default: 250).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub(crate) request_timeout_ms: Option<Duration>,
    /// Read with enhanced fan-out (SubscribeToShard) instead of polling. The app's
    /// stream consumer is registered on each stream (or found) and must become ACTIVE.
    #[arg(long)]
    pub(crate) efo: bool,
    /// How the leader spreads shards over the members: count (even shard counts per
    /// stream) or load (measured throughput in proportion to each member's capacity;
    /// docs/design.md). Give every member the same: the leader's decides.
    #[arg(long, value_enum, default_value_t = Balance::Count)]
    pub(crate) balance: Balance,
    /// This member's capacity under --balance load: a weight over 0, at most 1000; a
    /// member of capacity 2 is given twice the load of one of capacity 1.
    #[arg(long, default_value = "1", value_name = "WEIGHT")]
    pub(crate) capacity: f64,
    /// Under --balance load, the time constant of the load measurement and how long a
    /// moved shard stays put (library default: 30000).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub(crate) load_window_ms: Option<Duration>,
    /// The most shards the leader plans onto this member, across streams (either
    /// --balance): a hard limit; shards no member has room for are not read, and the
    /// leader warns. At least 1.
    #[arg(long, value_name = "N")]
    pub(crate) max_shards: Option<usize>,
    /// Under --balance load, the most bytes per second of measured load the leader plans
    /// onto this member (a shard counts at least its records' share of 1 MiB/s per 1,000
    /// records/s): a hard limit, as --max-shards. At least 1.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_bytes_per_second: Option<u64>,
    /// Serve the member's metrics in the Prometheus text format on this address, at
    /// http://HOST:PORT/metrics (docs/operations.md lists them). An address that does not
    /// resolve or cannot be listened on is a usage error.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    pub(crate) metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub(crate) consumer: FanOutConsumer,
    /// Records handed out per second at most, across this member's shards (a downstream
    /// that must not be flooded after a backlog); shards over it wait and stop reading.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_records_per_second: Option<u32>,
}

/// The error policy of a member that runs commands.
#[derive(Debug, Args)]
pub(crate) struct ErrorArgs {
    /// What a record whose command failed --max-attempts times leads to: `stop`
    /// (the shard stops at the record, is released and read again from it),
    /// `dead-letter=kinesis:STREAM` or `dead-letter=file:PATH` (the record is written
    /// there with why, and the shard moves on).
    #[arg(long, requires = "exec", default_value = "stop", value_parser = parse_on_error, value_name = "POLICY")]
    pub(crate) on_error: OnError,
    /// Attempts per record (or batch) before --on-error applies (waits of 100 ms doubling
    /// up to 10 s between them).
    #[arg(long, requires = "exec", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub(crate) max_attempts: u32,
    /// An attempt still running after this long is abandoned (the command killed) and
    /// counts as failed. Default: none.
    #[arg(long, requires = "exec", value_name = "MS", value_parser = parse_millis)]
    pub(crate) attempt_timeout_ms: Option<Duration>,
}

/// What a record that keeps failing leads to (`--on-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Stop the shard at the record.
    Stop,
    /// Put the record on this Kinesis stream.
    DeadLetterKinesis(String),
    /// Append the record to this JSON-lines file.
    DeadLetterFile(std::path::PathBuf),
}

fn parse_on_error(s: &str) -> Result<OnError, String> {
    const EXPECTED: &str = "expected stop, dead-letter=kinesis:STREAM or dead-letter=file:PATH";
    if s == "stop" {
        return Ok(OnError::Stop);
    }
    let target = s
        .strip_prefix("dead-letter=")
        .ok_or_else(|| format!("{s:?}: {EXPECTED}"))?;
    match target.split_once(':') {
        Some(("kinesis", stream)) if !stream.is_empty() => {
            Ok(OnError::DeadLetterKinesis(stream.to_owned()))
        }
        Some(("file", path)) if !path.is_empty() => Ok(OnError::DeadLetterFile(path.into())),
        _ => Err(format!("{s:?}: {EXPECTED}")),
    }
}

/// The name of the app's enhanced fan-out stream consumer.
#[derive(Debug, Args)]
pub(crate) struct FanOutConsumer {
    /// The Go client's `Region`: with it the fan-out consumer is named <app>-<REGION>
    /// rather than <app>. Not the AWS region (see --region).
    #[arg(long, value_name = "REGION")]
    pub(crate) consumer_region: Option<String>,
}

/// `kinesumer deregister-consumer`
#[derive(Debug, Args)]
pub(crate) struct DeregisterConsumerArgs {
    /// The application whose consumer goes.
    #[arg(long)]
    pub(crate) app: String,
    /// A stream to deregister it from (repeatable).
    #[arg(long = "stream", value_name = "STREAM", required = true)]
    pub(crate) streams: Vec<String>,
    #[command(flatten)]
    pub(crate) consumer: FanOutConsumer,
}

/// How `consume --balance` spreads shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Balance {
    /// Even shard counts per stream.
    Count,
    /// Measured load per capacity, then counts.
    Load,
}

/// The record format of `consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line: stream, shard_id, sequence_number, sub_sequence_number,
    /// partition_key, data (text, or base64 with data_encoding), approximate_arrival.
    Jsonl,
    /// The payload bytes as they are, each followed by a newline.
    Raw,
}

/// `kinesumer reset`
#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    pub(crate) group: Group,
    /// The stream.
    #[arg(long)]
    pub(crate) stream: String,
    #[command(flatten)]
    pub(crate) to: ResetTarget,
    /// Only these shards (repeatable). Default: every shard the group knows of the stream.
    #[arg(long = "shard", value_name = "SHARD_ID")]
    pub(crate) shards: Vec<String>,
    /// Move checkpoints even while members are alive (their next commit of a moved shard
    /// is refused and they lose the lease).
    #[arg(long)]
    pub(crate) force: bool,
    /// Write (without it: print the plan and write nothing).
    #[arg(long)]
    pub(crate) execute: bool,
    #[command(flatten)]
    pub(crate) observe: Observe,
}

/// Where `reset` moves the checkpoints: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ResetTarget {
    /// The oldest record each shard keeps (TRIM_HORIZON).
    #[arg(long)]
    pub(crate) to_earliest: bool,
    /// Records written from now on.
    #[arg(long)]
    pub(crate) to_latest: bool,
    /// Records written at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub(crate) to_datetime: Option<DateTime<Utc>>,
    /// Records written in the last DURATION (e.g. 90s, 15m, 2h, 1d): back from now.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) by_duration: Option<Duration>,
    /// After this sequence number; only with --shard (a sequence number names a
    /// position in one shard).
    #[arg(long, value_name = "SEQUENCE", requires = "shards")]
    pub(crate) to_sequence: Option<SequenceNumber>,
    /// The checkpoints of a file `kinesumer export` wrote.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_file: Option<std::path::PathBuf>,
}

/// `kinesumer groups`
#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    /// The state-store table.
    #[arg(long)]
    pub(crate) table: String,
    #[command(flatten)]
    pub(crate) observe: Observe,
}

/// `kinesumer group …`
#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Delete every item of a retired app: members, lock, plans, shard caches, leases
    /// and checkpoints. Refused while any member of it is alive.
    Delete {
        #[command(flatten)]
        group: Group,
        #[command(flatten)]
        observe: Observe,
    },
}

/// `kinesumer export`
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) group: Group,
    /// The stream.
    #[arg(long)]
    pub(crate) stream: String,
}

/// `kinesumer put`
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The stream.
    #[arg(long)]
    pub(crate) stream: String,
    /// The partition key of every record. Default: a random key per record.
    #[arg(long, conflicts_with = "key_field", value_name = "KEY")]
    pub(crate) partition_key: Option<String>,
    /// Use the line's N-th whitespace-separated field (from 1) as its partition key.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) key_field: Option<u16>,
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{e}: expected milliseconds, e.g. 1500"))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("{e}: expected HOST:PORT, e.g. 127.0.0.1:9464"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s} resolves to no address: expected HOST:PORT"))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_from(s: &str) -> Result<kinesumer::InitialPosition, String> {
    match s {
        "latest" => Ok(kinesumer::InitialPosition::Latest),
        "trim-horizon" => Ok(kinesumer::InitialPosition::TrimHorizon),
        _ => parse_time(s)
            .map(kinesumer::InitialPosition::AtTimestamp)
            .ok_or_else(|| {
                "expected latest, trim-horizon or an RFC 3339 time such as 2024-05-01T12:00:00Z"
                    .to_owned()
            }),
    }
}

fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s).ok_or_else(|| "expected an RFC 3339 time such as 2024-05-01T12:00:00Z".to_owned())
}

/// A duration as a whole number and a unit: `s`, `m`, `h` or `d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit());
    let n: u64 = s[..s.len() - unit.len()]
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 15m"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d (e.g. 15m)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn positions_and_durations_parse() {
        assert!(parse_rfc3339("2024-05-01T12:00:00+02:00").is_ok());
        assert!(parse_rfc3339("yesterday").is_err());
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("15 minutes").is_err());
        assert!(parse_from("soon").is_err());
        assert_eq!(
            parse_from("trim-horizon"),
            Ok(kinesumer::InitialPosition::TrimHorizon)
        );
    }
}
