//! Configuration: a builder with documented defaults, checked when built.
//!
//! Required inputs go to [`Config::builder`]; everything else has a default, set in one
//! place (`ConfigBuilder::new`) and stated on each setter. [`ConfigBuilder::build`]
//! refuses an invalid configuration with a [`ConfigError`] that names the field.
//!
//! # Timing
//!
//! The defaults are chosen for a crash takeover of about 3 s and a graceful handoff
//! under 1 s, at about 5 state-store requests per second per member (see
//! `docs/configuration.md` for the reasoning and the measurements). They must satisfy the
//! timing rule of the group protocol, checked at build time:
//!
//! ```text
//! sync_interval × (1 + jitter) + 3 × request_timeout < fence_fraction × failover_timeout
//! ```
//!
//! so that a few slow or lost requests in a row cannot make a healthy member fence
//! itself.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use kinesumer::{Config, InitialPosition};
//!
//! let config = Config::builder("myapp", "kinesumer-state-store")
//!     .kinesis_region("ap-northeast-2")
//!     .dynamodb_region("ap-northeast-2")
//!     .scan_limit(1500)
//!     .initial_position(InitialPosition::TrimHorizon)
//!     .commit_interval(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.app(), "myapp");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

/// Where a shard with no checkpoint and no finished parent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialPosition {
    /// Records written after the shard is first taken (the Go client's only behaviour).
    /// It is pinned as a timestamp at the first take (`wall clock − latest_skew_margin`),
    /// so a crash before the first commit does not move it forward past unread records.
    #[default]
    Latest,
    /// The oldest record the stream still keeps.
    TrimHorizon,
    /// The first record written at or after this time. A time in the future is refused.
    AtTimestamp(DateTime<Utc>),
}

/// How records are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReadMode {
    /// GetRecords polling, one task per owned shard.
    #[default]
    Polling,
    /// Enhanced fan-out (SubscribeToShard; the Go client's `EFOMode`): one stream
    /// consumer per app and stream, named [`Config::fan_out_consumer_name`], registered
    /// (or found) when consuming starts, and one subscription per owned shard. The
    /// `scan_*` settings do not apply.
    FanOut,
}

/// What is done with records aggregated by the Kinesis Producer Library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Aggregation {
    /// Split each aggregated record into its user records, each with its sub-sequence
    /// number, partition key and explicit hash key; checkpoints can then fall inside an
    /// aggregated record. A record that does not decode is delivered as it is.
    #[default]
    Split,
    /// Deliver every Kinesis record as it is, aggregated or not (the Go client's
    /// behaviour). A checkpoint written inside an aggregated record while splitting
    /// resumes at that whole record, delivered again.
    Raw,
}

/// How the leader spreads shards over the members (docs/design.md, "Balancing by load").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balancing {
    /// By shard count: per stream, any two members' counts differ by at most one. No
    /// load is measured or reported.
    #[default]
    Count,
    /// By measured load, in proportion to each member's `capacity`, within
    /// `load_tolerance`, then by count; at most `load_max_moves` moves per tick. Members
    /// measure their shards' throughput and report it with their heartbeats.
    Load,
}

/// A configuration the builder refused: which field, and why.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The field (the setter's name).
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The configuration of a consumer-group member. Made with [`Config::builder`].
#[derive(Clone)]
pub struct Config {
    pub(crate) app: String,
    pub(crate) table: String,
    pub(crate) client_id: String,
    pub(crate) kinesis_region: Option<String>,
    pub(crate) kinesis_endpoint: Option<String>,
    pub(crate) role_arn: Option<String>,
    pub(crate) dynamodb_region: Option<String>,
    pub(crate) dynamodb_endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) read_mode: ReadMode,
    pub(crate) fan_out_register_timeout: Duration,
    pub(crate) ca_bundle: Option<PathBuf>,
    pub(crate) aggregation: Aggregation,
    pub(crate) scan_limit: i32,
    pub(crate) scan_timeout: Duration,
    pub(crate) scan_interval: Duration,
    pub(crate) auto_commit: bool,
    pub(crate) commit_interval: Duration,
    pub(crate) commit_records: u64,
    pub(crate) commit_timeout: Duration,
    pub(crate) initial_position: InitialPosition,
    pub(crate) sync_interval: Duration,
    pub(crate) jitter: f64,
    pub(crate) failover_timeout: Duration,
    pub(crate) fence_fraction: f64,
    pub(crate) request_timeout: Duration,
    pub(crate) handoff_timeout: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) prune_age: Duration,
    pub(crate) latest_skew_margin: Duration,
    pub(crate) shard_buffer: usize,
    pub(crate) shard_buffer_bytes: usize,
    pub(crate) stream_buffer: usize,
    pub(crate) event_buffer: usize,
    pub(crate) balance: Balancing,
    pub(crate) capacity: f64,
    pub(crate) load_tolerance: f64,
    pub(crate) load_max_moves: usize,
    pub(crate) load_window: Duration,
    pub(crate) max_shards: Option<usize>,
    pub(crate) max_bytes_per_second: Option<u64>,
    pub(crate) max_records_per_second: Option<u32>,
}

impl fmt::Debug for Config {
    // Written by hand so that nothing secret can ever be added to the output unnoticed:
    // the role ARN is an identifier, not a credential, and credentials never live here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("app", &self.app)
            .field("table", &self.table)
            .field("client_id", &self.client_id)
            .field("kinesis_region", &self.kinesis_region)
            .field("kinesis_endpoint", &self.kinesis_endpoint)
            .field("role_arn", &self.role_arn)
            .field("dynamodb_region", &self.dynamodb_region)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field("read_mode", &self.read_mode)
            .field("ca_bundle", &self.ca_bundle)
            .field("aggregation", &self.aggregation)
            .field("initial_position", &self.initial_position)
            .field("sync_interval", &self.sync_interval)
            .field("failover_timeout", &self.failover_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("balance", &self.balance)
            .field("capacity", &self.capacity)
            .field("max_shards", &self.max_shards)
            .field("max_bytes_per_second", &self.max_bytes_per_second)
            .finish_non_exhaustive()
    }
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl Config {
            $($(#[$doc])* pub fn $name(&self) -> $ty { self.$name })*
        }
    };
}

getters! {
    /// Records asked for per GetRecords call.
    scan_limit: i32,
    /// The timeout of one GetRecords call.
    scan_timeout: Duration,
    /// The wait between GetRecords calls when a shard is caught up.
    scan_interval: Duration,
    /// Whether records count as processed when the next is asked for.
    auto_commit: bool,
    /// How often moved marks are committed.
    commit_interval: Duration,
    /// Records handed out after which a shard's mark is committed sooner (at most once a
    /// second), while it catches up.
    commit_records: u64,
    /// How long one commit round may take.
    commit_timeout: Duration,
    /// Where new shards start.
    initial_position: InitialPosition,
    /// How records are read.
    read_mode: ReadMode,
    /// How long registering the fan-out stream consumer may take until it is ACTIVE.
    fan_out_register_timeout: Duration,
    /// What is done with records aggregated by the KPL.
    aggregation: Aggregation,
    /// The tick of the group protocol.
    sync_interval: Duration,
    /// The random spread of the tick, as a fraction of it.
    jitter: f64,
    /// How long a member's heartbeat may stand still before it is judged gone.
    failover_timeout: Duration,
    /// The share of `failover_timeout` after which a member that could not beat fences.
    fence_fraction: f64,
    /// The timeout of one state-store request.
    request_timeout: Duration,
    /// How long a planned handoff waits for handed-out records to be processed.
    handoff_timeout: Duration,
    /// How often the leader lists the streams' shards.
    shard_sync_interval: Duration,
    /// How long a dead member's item stays before the leader deletes it.
    prune_age: Duration,
    /// How far LATEST is pinned before the taker's wall clock.
    latest_skew_margin: Duration,
    /// Records buffered per shard.
    shard_buffer: usize,
    /// Payload bytes buffered per shard.
    shard_buffer_bytes: usize,
    /// Records buffered in the merged stream.
    stream_buffer: usize,
    /// Errors and events buffered before the oldest are dropped.
    event_buffer: usize,
    /// How the leader spreads shards over the members.
    balance: Balancing,
    /// This member's capacity (weight) under [`Balancing::Load`].
    capacity: f64,
    /// The band around each member's share of the load within which nothing moves.
    load_tolerance: f64,
    /// The most shards the leader moves for balance per tick under [`Balancing::Load`].
    load_max_moves: usize,
    /// The time constant of the load measurement, and how long a moved shard stays put.
    load_window: Duration,
    /// The most shards the leader plans onto this member; `None`: no limit.
    max_shards: Option<usize>,
    /// The most bytes per second of load the leader plans onto this member under
    /// [`Balancing::Load`]; `None`: no limit.
    max_bytes_per_second: Option<u64>,
    /// Records handed to the application per second at most, across the member's shards.
    max_records_per_second: Option<u32>,
}

impl Config {
    /// Starts a configuration for application `app`, keeping its state in DynamoDB
    /// table `table`.
    pub fn builder(app: impl Into<String>, table: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder::new(app.into(), table.into())
    }

    /// The application name: members of one app form one group.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The DynamoDB table of the state store.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// This member's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The Kinesis region, if set (otherwise the standard AWS chain decides).
    pub fn kinesis_region(&self) -> Option<&str> {
        self.kinesis_region.as_deref()
    }

    /// The Kinesis endpoint, if set.
    pub fn kinesis_endpoint(&self) -> Option<&str> {
        self.kinesis_endpoint.as_deref()
    }

    /// The IAM role assumed (through STS) to read the streams, if set.
    pub fn role_arn(&self) -> Option<&str> {
        self.role_arn.as_deref()
    }

    /// The DynamoDB region, if set.
    pub fn dynamodb_region(&self) -> Option<&str> {
        self.dynamodb_region.as_deref()
    }

    /// The DynamoDB endpoint, if set.
    pub fn dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint.as_deref()
    }

    /// The optional region suffix of the fan-out consumer name.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The name of the app's enhanced fan-out stream consumer: see
    /// [`fan_out_consumer_name`].
    pub fn fan_out_consumer_name(&self) -> String {
        fan_out_consumer_name(&self.app, self.region.as_deref())
    }

    /// The PEM file of extra certificate authorities the AWS clients trust, if set.
    pub fn ca_bundle(&self) -> Option<&Path> {
        self.ca_bundle.as_deref()
    }

    /// The age after which a member that could not heartbeat fences itself.
    pub fn fence_deadline(&self) -> Duration {
        self.failover_timeout.mul_f64(self.fence_fraction)
    }
}

/// The name of an app's enhanced fan-out stream consumer, as the Go client names it: the
/// app, or `<app>-<region>` with the optional [`region`](ConfigBuilder::region).
///
/// ```
/// assert_eq!(kinesumer::config::fan_out_consumer_name("orders", None), "orders");
/// assert_eq!(
///     kinesumer::config::fan_out_consumer_name("orders", Some("eu-west-1")),
///     "orders-eu-west-1"
/// );
/// ```
pub fn fan_out_consumer_name(app: &str, region: Option<&str>) -> String {
    match region {
        Some(region) => format!("{app}-{region}"),
        None => app.to_owned(),
    }
}

/// Builds a [`Config`]. Every setter states its default.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
    client_id_set: bool,
}

impl ConfigBuilder {
    /// Every default, in one place.
    fn new(app: String, table: String) -> Self {
        Self {
            config: Config {
                app,
                table,
                client_id: String::new(),
                kinesis_region: None,
                kinesis_endpoint: None,
                role_arn: None,
                dynamodb_region: None,
                dynamodb_endpoint: None,
                region: None,
                read_mode: ReadMode::Polling,
                fan_out_register_timeout: Duration::from_secs(120),
                ca_bundle: None,
                aggregation: Aggregation::Split,
                scan_limit: 2000,
                scan_timeout: Duration::from_secs(3),
                scan_interval: Duration::from_millis(500),
                auto_commit: true,
                commit_interval: Duration::from_secs(5),
                commit_records: 1000,
                commit_timeout: Duration::from_secs(2),
                initial_position: InitialPosition::Latest,
                sync_interval: Duration::from_millis(400),
                jitter: 0.1,
                failover_timeout: Duration::from_millis(2200),
                fence_fraction: 0.75,
                request_timeout: Duration::from_millis(250),
                handoff_timeout: Duration::from_secs(5),
                shard_sync_interval: Duration::from_secs(60),
                prune_age: Duration::from_secs(300),
                latest_skew_margin: Duration::from_secs(60),
                shard_buffer: 1000,
                shard_buffer_bytes: 16 * 1024 * 1024,
                stream_buffer: 1000,
                event_buffer: 1024,
                balance: Balancing::Count,
                capacity: 1.0,
                load_tolerance: 0.1,
                load_max_moves: 32,
                load_window: Duration::from_secs(30),
                max_shards: None,
                max_bytes_per_second: None,
                max_records_per_second: None,
            },
            client_id_set: false,
        }
    }

    /// This member's client id. Default: the host name plus a random suffix. Must be
    /// unique per running process; two live processes under one id make the older one
    /// stop for good.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self.client_id_set = true;
        self
    }

    /// The Kinesis region. Default: `None`, the standard AWS chain (`AWS_REGION`, profile).
    pub fn kinesis_region(mut self, region: impl Into<String>) -> Self {
        self.config.kinesis_region = Some(region.into());
        self
    }

    /// The Kinesis endpoint URL. Default: `None`, the standard one (or
    /// `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`).
    pub fn kinesis_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.kinesis_endpoint = Some(url.into());
        self
    }

    /// An IAM role to assume through STS to read streams of another account. Default:
    /// `None`, read with the process's own credentials.
    pub fn role_arn(mut self, arn: impl Into<String>) -> Self {
        self.config.role_arn = Some(arn.into());
        self
    }

    /// The DynamoDB region. Default: `None`, the standard AWS chain.
    pub fn dynamodb_region(mut self, region: impl Into<String>) -> Self {
        self.config.dynamodb_region = Some(region.into());
        self
    }

    /// The DynamoDB endpoint URL. Default: `None`, the standard one (or
    /// `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`).
    pub fn dynamodb_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.dynamodb_endpoint = Some(url.into());
        self
    }

    /// The region suffix of the enhanced fan-out consumer name (`<app>-<region>`), as the
    /// Go client's `Region`. Default: `None` (the name is the app).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }

    /// How records are read. Default: [`ReadMode::Polling`].
    pub fn read_mode(mut self, mode: ReadMode) -> Self {
        self.config.read_mode = mode;
        self
    }

    /// How long registering the enhanced fan-out stream consumer (or waiting for one
    /// being created, or one being deleted to go) may take before `consume` fails with
    /// [`KinesisError::FanOutConsumer`](crate::reader::KinesisError::FanOutConsumer).
    /// Default: 2 min (registration takes seconds; a consumer being deleted can take
    /// longer to go).
    pub fn fan_out_register_timeout(mut self, d: Duration) -> Self {
        self.config.fan_out_register_timeout = d;
        self
    }

    /// A PEM file of certificate authorities the AWS clients trust besides the
    /// system's, for endpoints behind a private CA (a TLS proxy, a local emulator).
    /// Default: `None`, or the file named by `AWS_CA_BUNDLE` when that is set.
    pub fn ca_bundle(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.ca_bundle = Some(path.into());
        self
    }

    /// What is done with records aggregated by the Kinesis Producer Library. Default:
    /// [`Aggregation::Split`] (each user record delivered on its own, checkpoints inside
    /// aggregated records); [`Aggregation::Raw`] delivers the records as Kinesis holds them.
    pub fn aggregation(mut self, a: Aggregation) -> Self {
        self.config.aggregation = a;
        self
    }

    /// Records asked for per GetRecords call, 1 to 10,000. Default: 2,000.
    pub fn scan_limit(mut self, limit: i32) -> Self {
        self.config.scan_limit = limit;
        self
    }

    /// The timeout of one GetRecords call. Default: 3 s.
    pub fn scan_timeout(mut self, d: Duration) -> Self {
        self.config.scan_timeout = d;
        self
    }

    /// The wait between GetRecords calls of a shard that is caught up; at least 200 ms
    /// (Kinesis allows 5 calls per second per shard, shared by every reader of the
    /// stream). Default: 500 ms. A shard that is behind is read again at once, within
    /// the limits.
    pub fn scan_interval(mut self, d: Duration) -> Self {
        self.config.scan_interval = d;
        self
    }

    /// Auto-commit: a record counts as processed once the application asks for the
    /// next one (or its handler returns). Default: `true`. When `false`, call
    /// [`Kinesumer::mark`](crate::Kinesumer::mark).
    pub fn auto_commit(mut self, on: bool) -> Self {
        self.config.auto_commit = on;
        self
    }

    /// How often moved marks are written as checkpoints. Default: 5 s (the Go client's).
    pub fn commit_interval(mut self, d: Duration) -> Self {
        self.config.commit_interval = d;
        self
    }

    /// How many records handed out of one shard make its mark committed before
    /// `commit_interval` is up: while a shard catches up on a backlog, a crash or a fence
    /// then repeats about a second of work, not a commit interval's worth. A shard
    /// commits at most once a second this way, so the write budget is at most one
    /// checkpoint write per second per shard while it catches up (and one per
    /// `commit_interval` once caught up). Default: 1,000; 0 commits by time only.
    pub fn commit_records(mut self, n: u64) -> Self {
        self.config.commit_records = n;
        self
    }

    /// How long one commit of every moved mark may take. Default: 2 s.
    pub fn commit_timeout(mut self, d: Duration) -> Self {
        self.config.commit_timeout = d;
        self
    }

    /// Where shards without a checkpoint and without parents start. Default:
    /// [`InitialPosition::Latest`] (the Go client's behaviour). Children of a split or
    /// merge always start at TRIM_HORIZON.
    pub fn initial_position(mut self, p: InitialPosition) -> Self {
        self.config.initial_position = p;
        self
    }

    /// The tick of the group protocol (heartbeat, plan read). Default: 400 ms.
    pub fn sync_interval(mut self, d: Duration) -> Self {
        self.config.sync_interval = d;
        self
    }

    /// The random spread of each tick, as a fraction of `sync_interval`, 0 to 1.
    /// Default: 0.1.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction;
        self
    }

    /// How long a member's heartbeat counter may stand still before the leader judges it
    /// gone and plans its shards elsewhere. Default: 2.2 s.
    pub fn failover_timeout(mut self, d: Duration) -> Self {
        self.config.failover_timeout = d;
        self
    }

    /// The share of `failover_timeout` after which a member whose heartbeats fail stops
    /// reading and rejoins, over 0 and at most 0.75. Default: 0.75.
    pub fn fence_fraction(mut self, fraction: f64) -> Self {
        self.config.fence_fraction = fraction;
        self
    }

    /// The timeout of one state-store request. Default: 250 ms.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// How long a planned handoff waits for the records already handed to the
    /// application to be processed before it releases anyway. Default: 5 s.
    pub fn handoff_timeout(mut self, d: Duration) -> Self {
        self.config.handoff_timeout = d;
        self
    }

    /// How often the leader lists the streams' shards. Default: 60 s. A shard that ends
    /// makes the leader list at once.
    pub fn shard_sync_interval(mut self, d: Duration) -> Self {
        self.config.shard_sync_interval = d;
        self
    }

    /// How long a member judged dead stays in the table before the leader deletes its
    /// item; at least `failover_timeout`. Default: 5 min.
    pub fn prune_age(mut self, d: Duration) -> Self {
        self.config.prune_age = d;
        self
    }

    /// How far before its wall clock a member pins LATEST. The one assumption on wall
    /// clocks: they are within this margin of true time. Default: 60 s.
    pub fn latest_skew_margin(mut self, d: Duration) -> Self {
        self.config.latest_skew_margin = d;
        self
    }

    /// Records buffered per shard before its reader waits. Default: 1,000.
    pub fn shard_buffer(mut self, n: usize) -> Self {
        self.config.shard_buffer = n;
        self
    }

    /// Payload bytes buffered per shard before its reader waits (one record larger than
    /// this still passes alone). Default: 16 MiB.
    pub fn shard_buffer_bytes(mut self, n: usize) -> Self {
        self.config.shard_buffer_bytes = n;
        self
    }

    /// Records handed to the application per second at most, across all the member's
    /// shards (a token bucket with a second's worth of burst). Shards over it wait, their
    /// buffers fill, and their readers stop reading. Default: no limit.
    pub fn max_records_per_second(mut self, n: u32) -> Self {
        self.config.max_records_per_second = Some(n);
        self
    }

    /// Records buffered in the merged stream. Default: 1,000.
    pub fn stream_buffer(mut self, n: usize) -> Self {
        self.config.stream_buffer = n;
        self
    }

    /// Errors and events buffered for the application before the oldest are dropped
    /// (a full errors stream never blocks consumption). Default: 1,024.
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.config.event_buffer = n;
        self
    }

    /// How the leader spreads shards over the members: by count (the default) or by
    /// measured load. The leader's setting decides; give every member the same one.
    pub fn balance(mut self, b: Balancing) -> Self {
        self.config.balance = b;
        self
    }

    /// This member's capacity under [`Balancing::Load`]: a weight, over 0 and at most
    /// 1,000; a member of capacity 2 is given twice the load of one of capacity 1.
    /// Default: 1.
    pub fn capacity(mut self, weight: f64) -> Self {
        self.config.capacity = weight;
        self
    }

    /// Under [`Balancing::Load`], the band around each member's share of the load within
    /// which no shard moves for load, as a fraction of the share, over 0 and under 1
    /// (it is widened to one shard's load where a shard is heavier). Default: 0.1 (±10 %).
    pub fn load_tolerance(mut self, fraction: f64) -> Self {
        self.config.load_tolerance = fraction;
        self
    }

    /// Under [`Balancing::Load`], the most held shards the leader moves per tick to
    /// balance (shards whose holder is gone are placed at once, not counted), at least 1.
    /// Default: 32.
    pub fn load_max_moves(mut self, n: usize) -> Self {
        self.config.load_max_moves = n;
        self
    }

    /// Under [`Balancing::Load`], the time constant over which each shard's throughput is
    /// smoothed, and how long a shard stays where it was moved before it may move again
    /// (its new holder measures it meanwhile). At least `sync_interval`. Default: 30 s.
    pub fn load_window(mut self, d: Duration) -> Self {
        self.config.load_window = d;
        self
    }

    /// The most shards the leader plans onto this member, across streams, at least 1 —
    /// under either [`balance`](Self::balance). A hard limit: shards no member can take
    /// stay unplanned (unread), the leader logs a warning and sets
    /// `kinesumer_unplanned_shards`. Under [`Balancing::Count`] the others' counts stay
    /// within one of each other. Default: `None`, no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use kinesumer::Config;
    ///
    /// let config = Config::builder("orders-app", "kinesumer-state").max_shards(8).build()?;
    /// assert_eq!(config.max_shards(), Some(8));
    /// assert!(Config::builder("orders-app", "kinesumer-state").max_shards(0).build().is_err());
    /// # Ok::<(), kinesumer::ConfigError>(())
    /// ```
    pub fn max_shards(mut self, n: usize) -> Self {
        self.config.max_shards = Some(n);
        self
    }

    /// The most bytes per second of measured load the leader plans onto this member, at
    /// least 1; needs [`Balancing::Load`] (nothing is measured by count). A hard limit
    /// as [`max_shards`](Self::max_shards) is. A shard's load counts as the larger of
    /// its bytes per second and its records' share of a shard's limits in bytes (a shard
    /// at 500 records/s counts at least 512 KiB/s), so the bytes read stay under the
    /// limit. Default: `None`, no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use kinesumer::{Balancing, Config};
    ///
    /// let config = Config::builder("orders-app", "kinesumer-state")
    ///     .balance(Balancing::Load)
    ///     .max_bytes_per_second(4 << 20)
    ///     .build()?;
    /// assert_eq!(config.max_bytes_per_second(), Some(4 << 20));
    /// // Balancing by count measures no load: refused, with the fix named.
    /// let err = Config::builder("orders-app", "kinesumer-state")
    ///     .max_bytes_per_second(4 << 20)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field, "max_bytes_per_second");
    /// # Ok::<(), kinesumer::ConfigError>(())
    /// ```
    pub fn max_bytes_per_second(mut self, bytes: u64) -> Self {
        self.config.max_bytes_per_second = Some(bytes);
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut c = self.config;
        if !self.client_id_set {
            c.client_id = default_client_id();
        }
        validate(&c)?;
        Ok(c)
    }
}

/// `<host>-<random>`. The host name comes from `uname`, which every Unix answers
/// (`HOSTNAME` is a shell variable, not exported to most services, and
/// `/etc/hostname` is missing on macOS and in many containers).
fn default_client_id() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = if host.is_empty() { "kinesumer" } else { &host };
    format!("{host}-{:08x}", rand::random::<u32>())
}

fn nonzero(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    let name_ok = |s: &str| !s.is_empty() && !s.contains('#');
    if !name_ok(&c.app) {
        return Err(ConfigError::new(
            "app",
            "must be non-empty and must not contain '#' (it is part of the table's keys)",
        ));
    }
    if c.table.len() < 3 || c.table.len() > 255 {
        return Err(ConfigError::new(
            "table",
            "a DynamoDB table name has 3 to 255 characters",
        ));
    }
    if !c
        .table
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(ConfigError::new(
            "table",
            "a DynamoDB table name has only letters, digits, '_', '-' and '.'",
        ));
    }
    if c.client_id.is_empty() {
        return Err(ConfigError::new("client_id", "must be non-empty"));
    }
    if c.read_mode == ReadMode::FanOut {
        // RegisterStreamConsumer's ConsumerName: 1 to 128 of [a-zA-Z0-9_.-].
        let name = c.fan_out_consumer_name();
        let valid = name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(ConfigError::new(
                "app",
                format!(
                    "the fan-out consumer name {name:?} (app, or app-region) must have at most \
                     128 letters, digits, '_', '.' and '-'"
                ),
            ));
        }
        nonzero("fan_out_register_timeout", c.fan_out_register_timeout)?;
    }
    if !(1..=10_000).contains(&c.scan_limit) {
        return Err(ConfigError::new(
            "scan_limit",
            "must be from 1 to 10,000 (the GetRecords limit)",
        ));
    }
    nonzero("scan_timeout", c.scan_timeout)?;
    if c.scan_interval < Duration::from_millis(200) {
        return Err(ConfigError::new(
            "scan_interval",
            "must be at least 200 ms: Kinesis allows 5 GetRecords calls per second per shard",
        ));
    }
    nonzero("commit_interval", c.commit_interval)?;
    nonzero("commit_timeout", c.commit_timeout)?;
    nonzero("sync_interval", c.sync_interval)?;
    nonzero("failover_timeout", c.failover_timeout)?;
    nonzero("request_timeout", c.request_timeout)?;
    nonzero("handoff_timeout", c.handoff_timeout)?;
    nonzero("shard_sync_interval", c.shard_sync_interval)?;
    if !(0.0..=1.0).contains(&c.jitter) {
        return Err(ConfigError::new("jitter", "must be from 0 to 1"));
    }
    if !(c.fence_fraction > 0.0 && c.fence_fraction <= 0.75) {
        return Err(ConfigError::new(
            "fence_fraction",
            "must be over 0 and at most 0.75, so a member fences before another can take its shards",
        ));
    }
    let budget = c.sync_interval.mul_f64(1.0 + c.jitter) + c.request_timeout * 3;
    if budget >= c.fence_deadline() {
        return Err(ConfigError::new(
            "failover_timeout",
            format!(
                "the timing rule sync_interval × (1 + jitter) + 3 × request_timeout < fence_fraction × failover_timeout \
                 does not hold ({budget:?} ≥ {:?}): raise failover_timeout or fence_fraction, or lower sync_interval or request_timeout",
                c.fence_deadline()
            ),
        ));
    }
    if c.prune_age < c.failover_timeout {
        return Err(ConfigError::new(
            "prune_age",
            "must be at least failover_timeout",
        ));
    }
    if let InitialPosition::AtTimestamp(t) = c.initial_position {
        if t > Utc::now() {
            return Err(ConfigError::new(
                "initial_position",
                format!(
                    "AT_TIMESTAMP {t} is in the future; Kinesis would return nothing until then"
                ),
            ));
        }
    }
    if !(c.capacity > 0.0 && c.capacity <= 1000.0) {
        return Err(ConfigError::new(
            "capacity",
            "must be over 0 and at most 1,000",
        ));
    }
    if c.max_shards == Some(0) {
        return Err(ConfigError::new(
            "max_shards",
            "must be at least 1 (leave it unset for no limit)",
        ));
    }
    match c.max_bytes_per_second {
        Some(0) => {
            return Err(ConfigError::new(
                "max_bytes_per_second",
                "must be at least 1 (leave it unset for no limit)",
            ))
        }
        Some(_) if c.balance != Balancing::Load => {
            return Err(ConfigError::new(
                "max_bytes_per_second",
                "needs balance = Load: balancing by count measures no load (set balance, or use max_shards)",
            ))
        }
        _ => {}
    }
    if !(c.load_tolerance > 0.0 && c.load_tolerance < 1.0) {
        return Err(ConfigError::new(
            "load_tolerance",
            "must be over 0 and under 1",
        ));
    }
    if c.load_window < c.sync_interval {
        return Err(ConfigError::new(
            "load_window",
            "must be at least sync_interval: a rate is sampled once a tick",
        ));
    }
    for (field, n) in [
        ("load_max_moves", c.load_max_moves),
        ("shard_buffer", c.shard_buffer),
        ("shard_buffer_bytes", c.shard_buffer_bytes),
        ("stream_buffer", c.stream_buffer),
        (
            "max_records_per_second",
            c.max_records_per_second.map_or(1, |n| n as usize),
        ),
        ("event_buffer", c.event_buffer),
    ] {
        if n == 0 {
            return Err(ConfigError::new(field, "must be at least 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ConfigBuilder {
        Config::builder("app", "table")
    }

    #[test]
    fn defaults_satisfy_the_timing_rule() {
        let c = builder().build().unwrap();
        assert!(!c.client_id().is_empty());
        assert_eq!(c.initial_position(), InitialPosition::Latest);
        assert!(
            c.sync_interval().mul_f64(1.0 + c.jitter()) + c.request_timeout() * 3
                < c.fence_deadline()
        );
    }

    #[test]
    fn the_fan_out_consumer_is_named_as_the_go_client_names_it() {
        let fan_out = |b: ConfigBuilder| b.read_mode(ReadMode::FanOut).build().unwrap();
        assert_eq!(fan_out(builder()).fan_out_consumer_name(), "app");
        let c = fan_out(builder().region("ap-northeast-2"));
        assert_eq!(c.fan_out_consumer_name(), "app-ap-northeast-2");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (Config::builder("", "table"), "app"),
            (Config::builder("a#b", "table"), "app"),
            (Config::builder("app", "t"), "table"),
            (Config::builder("app", "bad table"), "table"),
            (builder().client_id(""), "client_id"),
            (builder().scan_limit(0), "scan_limit"),
            (builder().scan_limit(10_001), "scan_limit"),
            (
                builder().scan_interval(Duration::from_millis(10)),
                "scan_interval",
            ),
            (builder().jitter(1.5), "jitter"),
            (builder().fence_fraction(0.9), "fence_fraction"),
            (builder().sync_interval(Duration::ZERO), "sync_interval"),
            (
                builder().request_timeout(Duration::from_secs(1)),
                "failover_timeout",
            ),
            (builder().prune_age(Duration::from_secs(1)), "prune_age"),
            (builder().shard_buffer(0), "shard_buffer"),
            (builder().capacity(0.0), "capacity"),
            (builder().capacity(f64::NAN), "capacity"),
            (builder().load_tolerance(1.0), "load_tolerance"),
            (builder().load_max_moves(0), "load_max_moves"),
            (builder().max_shards(0), "max_shards"),
            (
                builder().balance(Balancing::Load).max_bytes_per_second(0),
                "max_bytes_per_second",
            ),
            (
                builder().max_bytes_per_second(1 << 20),
                "max_bytes_per_second",
            ),
            (
                builder().load_window(Duration::from_millis(1)),
                "load_window",
            ),
            (
                Config::builder("my app", "table").read_mode(ReadMode::FanOut),
                "app",
            ),
            (
                builder()
                    .read_mode(ReadMode::FanOut)
                    .fan_out_register_timeout(Duration::ZERO),
                "fan_out_register_timeout",
            ),
            (
                builder().initial_position(InitialPosition::AtTimestamp(
                    Utc::now() + chrono::Duration::hours(1),
                )),
                "initial_position",
            ),
        ];
        for (b, field) in cases {
            let err = b.build().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }
}
