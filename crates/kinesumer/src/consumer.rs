//! The public handle of a member: [`Kinesumer`].
//!
//! # Examples
//!
//! ```no_run
//! use futures::StreamExt;
//! use kinesumer::{Config, Kinesumer};
//!
//! # async fn run() -> kinesumer::Result<()> {
//! let config = Config::builder("myapp", "kinesumer-state-store")
//!     .kinesis_region("ap-northeast-2")
//!     .dynamodb_region("ap-northeast-2")
//!     .build()?;
//! let client = Kinesumer::new(config).await?;
//!
//! let mut errors = client.errors();
//! tokio::spawn(async move {
//!     while let Ok(error) = errors.recv().await {
//!         eprintln!("kinesumer: {error}");
//!     }
//! });
//!
//! let mut records = client.consume(["stream1", "stream2"]).await?;
//! while let Some(record) = records.next().await {
//!     println!("{} {} {}", record.stream, record.shard_id, record.sequence_number);
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ReadMode};
use crate::delivery::{Handler, PendingMark, Records, Sink};
use crate::error::{Error, Event, Result};
use crate::group::member::{Command, Coordinator, Status};
use crate::group::{Ctx, Signals};
use crate::reader::fanout::ConsumerArns;
use crate::reader::{KinesisApi, SdkKinesis};
use crate::record::Record;
use crate::store::{DynamoStore, RequestCounts, ShardRef, StateStore};

/// A member of a consumer group.
///
/// Create it with [`Kinesumer::new`] (AWS, from the configuration) or
/// [`Kinesumer::with_parts`] (any state store, Kinesis and clock — for tests and
/// simulations), then start consuming with [`consume`](Kinesumer::consume) (a stream
/// of records) or [`consume_with`](Kinesumer::consume_with) (a handler per shard).
/// Call [`close`](Kinesumer::close) to leave the group gracefully; dropping the
/// handle stops the member without committing (its shards move after the failover
/// timeout).
pub struct Kinesumer {
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    kinesis: Arc<dyn KinesisApi>,
    consumer_arns: ConsumerArns,
    clock: Arc<dyn Clock>,
    signals: Signals,
    status: Arc<Mutex<Status>>,
    pending: PendingMark,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    cmds: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Kinesumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kinesumer")
            .field("app", &self.config.app)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Kinesumer {
    /// Connects to AWS as the configuration says (the standard credential chain,
    /// regions, endpoints, role ARN) and checks that the state-store table exists.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] with [`StoreError::TableNotFound`](crate::store::StoreError::TableNotFound)
    /// (which says how to create the table), or another store error when DynamoDB cannot
    /// be reached.
    pub async fn new(config: Config) -> Result<Self> {
        let (kinesis, dynamodb) = crate::aws::sdk_clients(&config).await?;
        let store = DynamoStore::new(dynamodb, config.table.clone(), config.app.clone());
        store.check_table().await?;
        Ok(Self::with_parts(
            config,
            Arc::new(store),
            Arc::new(SdkKinesis::new(kinesis)),
            Arc::new(SystemClock),
        ))
    }

    /// A member over the given parts: a state store (such as
    /// [`MemoryStore`](crate::store::MemoryStore)), a Kinesis implementation and a clock.
    pub fn with_parts(
        config: Config,
        store: Arc<dyn StateStore>,
        kinesis: Arc<dyn KinesisApi>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let signals = Signals::new(&config.app, config.event_buffer);
        Self {
            config: Arc::new(config),
            store,
            kinesis,
            consumer_arns: ConsumerArns::default(),
            clock,
            signals,
            status: Arc::default(),
            pending: Arc::default(),
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// This member's client id.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Joins the group and returns the records of every shard this member is given, as
    /// one stream. Records of one shard come in order.
    ///
    /// # Errors
    ///
    /// [`Error::NoStreams`], [`Error::AlreadyConsuming`], a missing stream
    /// ([`KinesisError::StreamNotFound`](crate::reader::KinesisError::StreamNotFound)), or
    /// the registration's store error.
    pub async fn consume<I, S>(&self, streams: I) -> Result<Records>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (tx, rx) = mpsc::channel(self.config.stream_buffer);
        self.start(streams, Sink::Stream(tx)).await?;
        Ok(Records::new(
            rx,
            self.pending.clone(),
            self.config.auto_commit,
        ))
    }

    /// Joins the group and calls `handler` for each record: in order within a shard,
    /// concurrently across shards. With auto-commit, a record counts as processed when
    /// its handler returns.
    ///
    /// # Errors
    ///
    /// As [`consume`](Kinesumer::consume).
    pub async fn consume_with<I, S, H>(&self, streams: I, handler: H) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        H: Handler,
    {
        self.start(streams, Sink::Handler(Arc::new(handler))).await
    }

    async fn start<I, S>(&self, streams: I, sink: Sink) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let streams = self.check_streams(streams).await?;
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(Error::AlreadyConsuming);
        }
        let ctx = Arc::new(Ctx {
            cfg: self.config.clone(),
            store: self.store.clone(),
            kinesis: self.kinesis.clone(),
            consumer_arns: self.consumer_arns.clone(),
            clock: self.clock.clone(),
            signals: self.signals.clone(),
            sink,
        });
        let (cmds, cmd_rx) = mpsc::channel(16);
        let task = Coordinator::start(
            ctx,
            self.config.client_id.clone(),
            streams,
            cmd_rx,
            self.status.clone(),
            self.pending.clone(),
        )
        .await?;
        *running = Some(Running { cmds, task });
        Ok(())
    }

    /// Checks that every stream exists (a clear error now rather than an empty plan), and
    /// in fan-out mode registers the app's stream consumer on each (or finds it) and
    /// waits until it is ACTIVE.
    async fn check_streams<I, S>(&self, streams: I) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = streams.into_iter().map(Into::into).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::NoStreams);
        }
        for name in &names {
            self.kinesis.list_shards(name).await?;
            if self.config.read_mode == ReadMode::FanOut && self.consumer_arns.get(name).is_none() {
                let arn = self
                    .kinesis
                    .register_consumer(
                        name,
                        &self.config.fan_out_consumer_name(),
                        self.config.fan_out_register_timeout,
                    )
                    .await?;
                self.consumer_arns.insert(name, &arn);
            }
        }
        Ok(names)
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        let running = self.running.lock().await;
        let running = running.as_ref().ok_or(Error::Closed)?;
        running.cmds.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Changes the streams this member consumes. Leases of dropped streams are released
    /// before the member advertises the new set; shards of added streams are taken once
    /// the leader has seen the new set.
    ///
    /// # Errors
    ///
    /// [`Error::NoStreams`], a missing stream, or [`Error::Closed`].
    pub async fn refresh<I, S>(&self, streams: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let streams = self.check_streams(streams).await?;
        let (ack, answer) = oneshot::channel();
        self.send(Command::Refresh(streams, ack)).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Marks `record` and every record before it in its shard as processed. Its
    /// checkpoint is written at the next commit. Marks never move back.
    pub fn mark(&self, record: &Record) {
        record.track.mark(&record.position());
    }

    /// Commits every moved mark now.
    ///
    /// # Errors
    ///
    /// The first failed commit ([`Error::CommitFailed`], [`Error::LeaseLost`]), or
    /// [`Error::Closed`].
    pub async fn commit(&self) -> Result<()> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Commit(ack)).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Runtime errors: throttling, failed commits, lost leases. A receiver that falls
    /// behind loses the oldest (and learns how many); consumption never waits for it.
    pub fn errors(&self) -> broadcast::Receiver<Error> {
        self.signals.errors.subscribe()
    }

    /// Group events: leases taken, released, lost; leadership; fencing.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.signals.events.subscribe()
    }

    /// The shards this member holds now.
    pub fn held_shards(&self) -> Vec<ShardRef> {
        self.status_now().held.into_iter().collect()
    }

    /// Whether this member leads the group now.
    pub fn is_leader(&self) -> bool {
        self.status_now().leader_term.is_some()
    }

    /// Whether this member is consuming (not closed, not stopped for good).
    pub fn is_running(&self) -> bool {
        self.status_now().running
    }

    fn status_now(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Deregisters the app's enhanced fan-out stream consumer
    /// ([`Config::fan_out_consumer_name`]) from `stream`, for cleanup once no member of
    /// the app reads it by fan-out any more (a member still subscribed loses its
    /// subscriptions). Returns `false` when there was none, or it was being deleted already.
    /// Works in either read mode.
    ///
    /// # Errors
    ///
    /// A missing stream, or the Kinesis error.
    pub async fn deregister_fan_out_consumer(&self, stream: &str) -> Result<bool> {
        let name = self.config.fan_out_consumer_name();
        let existed = self.kinesis.deregister_consumer(stream, &name).await?;
        tracing::info!(stream, consumer = %name, existed, "deregistered the stream consumer");
        Ok(existed)
    }

    /// The state-store requests made so far, per operation.
    pub fn requests(&self) -> RequestCounts {
        self.store.requests()
    }

    /// Leaves the group gracefully: stops reading, waits for records handed out to be
    /// processed (up to `handoff_timeout`), commits, releases every lease and the leader
    /// lock, and deletes its member item. Takes as long as those requests take.
    ///
    /// With auto-commit, the last record the [`Records`] stream handed out counts as
    /// processed: close after you are done with it.
    pub async fn close(&self) {
        let running = self.running.lock().await.take();
        if let Some(mut running) = running {
            let (ack, answer) = oneshot::channel();
            if running.cmds.send(Command::Close(ack)).await.is_ok() {
                let _ = answer.await;
            }
            let _ = (&mut running.task).await;
        }
    }
}
