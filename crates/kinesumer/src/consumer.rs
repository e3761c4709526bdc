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
//!     // Never ends while the member lives: a listener that falls behind gets
//!     // `Error::Missed` and goes on.
//!     while let Some(error) = errors.next().await {
//!         eprintln!("kinesumer: {error}");
//!     }
//! });
//!
//! let mut records = client.consume(["stream1", "stream2"]).await?;
//! while let Some(record) = records.next().await {
//!     println!("{} {} {}", record.stream, record.shard_id, record.sequence_number);
//! }
//! client.close().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_config::SdkConfig;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::checkpoint::PendingMark;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ReadMode};
use crate::delivery::{Records, Sink};
use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::group::member::{Command, Coordinator, Status};
use crate::group::Ctx;
use crate::handler::{ErrorPolicy, Handler};
use crate::processor::{Batching, ProcessorFactory};
use crate::reader::fanout::ConsumerArns;
use crate::reader::{KinesisApi, SdkKinesis};
use crate::record::Record;
use crate::signals::{Errors, Events, Signals};
use crate::store::{DynamoStore, RequestCounts, ShardRef, StateStore};

/// A member of a consumer group.
///
/// Create it with [`Kinesumer::new`] (the standard AWS chain),
/// [`Kinesumer::from_sdk_config`] (the application's [`SdkConfig`]) or
/// [`Kinesumer::from_clients`] (ready SDK clients), then start consuming with
/// [`consume`](Kinesumer::consume) (a stream of records) or
/// [`consume_with`](Kinesumer::consume_with) (a handler per shard). Call
/// [`close`](Kinesumer::close) to leave the group gracefully; dropping the handle stops
/// the member without committing (its shards move after the failover timeout).
pub struct Kinesumer {
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    kinesis: Arc<dyn KinesisApi>,
    consumer_arns: ConsumerArns,
    clock: Arc<dyn Clock>,
    signals: Signals,
    /// What the coordinator publishes after each step.
    status: Arc<watch::Sender<Status>>,
    pending: PendingMark,
    error_policy: ErrorPolicy,
    flow: Flow,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// The coordinator's outcome: `None` while it runs; then the close's result, or why it
/// stopped for good.
type Outcome = Option<Result<()>>;

struct Running {
    cmds: mpsc::Sender<Command>,
    /// The coordinator, aborted when the member is dropped.
    _task: AbortOnDropHandle<()>,
    outcome: watch::Receiver<Outcome>,
    /// Whether a close was sent; later `close()` calls wait for the same outcome.
    closing: bool,
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
    /// Connects to AWS as the configuration says, on the standard AWS chain
    /// (`aws_config::defaults(BehaviorVersion::latest())`: environment, profile, IMDS),
    /// and checks that the state-store table exists. The [`Config`]'s regions,
    /// endpoints and role ARN win over the chain for their service.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no region is known; [`Error::Store`] with
    /// [`StoreError::TableNotFound`](crate::StoreError::TableNotFound) (which says how to
    /// create the table), or another store error when DynamoDB cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads (the environment, and DescribeTable).
    pub async fn new(config: Config) -> Result<Self> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::from_sdk_config(config, &sdk).await
    }

    /// As [`new`](Kinesumer::new), on the application's own [`SdkConfig`]: its
    /// credentials, retry and timeout settings, HTTP client, endpoints and interceptors.
    /// The [`Config`]'s regions, endpoints, CA bundle and role ARN still apply on top.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> kinesumer::Result<()> {
    /// let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
    ///     .region("eu-west-1")
    ///     .load()
    ///     .await;
    /// let config = kinesumer::Config::builder("myapp", "kinesumer-state").build()?;
    /// let member = kinesumer::Kinesumer::from_sdk_config(config, &sdk).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Kinesumer::new), and [`Error::Config`] when the CA bundle cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`new`](Kinesumer::new).
    pub async fn from_sdk_config(config: Config, sdk: &SdkConfig) -> Result<Self> {
        let (kinesis, dynamodb) = crate::aws::sdk_clients_from(&config, sdk).await?;
        Self::from_clients(config, kinesis, dynamodb).await
    }

    /// A member over ready SDK clients, used as they are: the [`Config`]'s regions,
    /// endpoints, CA bundle and role ARN do not apply (they are the clients' own
    /// business). Checks that the state-store table exists.
    ///
    /// Polling turns the SDK's retry off for GetRecords itself; the clients'
    /// timeouts should allow a GetRecords call of `scan_timeout`.
    ///
    /// # Errors
    ///
    /// As [`new`](Kinesumer::new).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`new`](Kinesumer::new).
    pub async fn from_clients(
        config: Config,
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
    ) -> Result<Self> {
        let store = DynamoStore::new(dynamodb, config.table.clone(), config.app.clone());
        store.check_table().await?;
        Ok(Self::from_parts(
            config,
            Arc::new(store),
            Arc::new(SdkKinesis::new(kinesis)),
            Arc::new(SystemClock),
        ))
    }

    /// A member over the given parts: a state store (such as
    /// [`MemoryStore`](crate::store::MemoryStore)), a Kinesis implementation (such as
    /// [`SimKinesis`](crate::sim::SimKinesis)) and a clock (such as
    /// [`TestClock`](crate::TestClock)).
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn with_parts(
        config: Config,
        store: Arc<dyn StateStore>,
        kinesis: Arc<dyn KinesisApi>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::from_parts(config, store, kinesis, clock)
    }

    fn from_parts(
        config: Config,
        store: Arc<dyn StateStore>,
        kinesis: Arc<dyn KinesisApi>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let signals = Signals::new(&config.app, config.event_buffer);
        let flow = Flow::new(config.max_records_per_second);
        Self {
            config: Arc::new(config),
            store,
            kinesis,
            consumer_arns: ConsumerArns::default(),
            clock,
            signals,
            status: Arc::new(watch::Sender::new(Status::default())),
            pending: Arc::default(),
            error_policy: ErrorPolicy::default(),
            flow,
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// What a handler's failures lead to ([`consume_with`](Kinesumer::consume_with)):
    /// retries, then a stop or a dead letter. Default: [`ErrorPolicy::default`] (3
    /// attempts, then stop the shard).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(member: kinesumer::Kinesumer) -> kinesumer::Result<()> {
    /// let member = member.with_error_policy(kinesumer::ErrorPolicy::stop_after(5));
    /// let consuming = member
    ///     .consume_with(["orders"], |record: kinesumer::Record| async move {
    ///         std::str::from_utf8(&record.data).map(drop)
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
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
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the registration, the member may have joined
    /// without a coordinator to run it; its registration expires after the failover
    /// timeout. Drop the member and build a new one.
    pub async fn consume<I, S>(&self, streams: I) -> Result<Records>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (sink, records) = Sink::stream(
            self.config.stream_buffer,
            self.pending.clone(),
            self.config.auto_commit,
        );
        self.start(streams, sink).await?;
        Ok(records)
    }

    /// Joins the group and calls `handler` for each record: in order within a shard,
    /// concurrently across shards. With auto-commit, a record counts as processed when
    /// its handler returns `Ok` (or `()`). A failure or a panic goes to the member's
    /// [`ErrorPolicy`] ([`with_error_policy`](Kinesumer::with_error_policy)).
    ///
    /// Returns once the member has joined, with a [`Consuming`] handle: a future that
    /// completes when the member stops — with the result of [`close`](Kinesumer::close),
    /// or a fatal error ([`Error::Superseded`]). Dropping the handle does not stop the
    /// member; dropping the member does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(member: kinesumer::Kinesumer) -> kinesumer::Result<()> {
    /// let consuming = member
    ///     .consume_with(["orders"], |record: kinesumer::Record| async move {
    ///         println!("{} {}", record.shard_id, record.sequence_number);
    ///     })
    ///     .await?;
    /// tokio::select! {
    ///     stopped = consuming => stopped?,
    ///     _ = tokio::signal::ctrl_c() => member.close().await?,
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`consume`](Kinesumer::consume).
    ///
    /// # Cancel safety
    ///
    /// As [`consume`](Kinesumer::consume).
    pub async fn consume_with<I, S, H>(&self, streams: I, handler: H) -> Result<Consuming>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        H: Handler,
    {
        let outcome = self
            .start(
                streams,
                Sink::Handler(Arc::new(handler), self.error_policy.clone()),
            )
            .await?;
        Ok(Consuming::new(outcome))
    }

    /// Joins the group and runs a [`Processor`](crate::processor::Processor) per shard it
    /// is given, made by `factory` when the lease is taken: told where reading starts,
    /// handed the shard's records in batches (`batching`), and told when the shard is
    /// revoked (flush now), lost, or ended. In order within a shard, concurrently across
    /// shards. With auto-commit, a batch counts as processed when `process` returns `Ok`;
    /// a failure or a panic goes to the member's [`ErrorPolicy`].
    ///
    /// Returns once the member has joined, with a [`Consuming`] handle, as
    /// [`consume_with`](Kinesumer::consume_with).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use kinesumer::processor::{Batch, Batching, Checkpointer, Processor};
    /// use kinesumer::store::ShardRef;
    /// use kinesumer::HandlerError;
    ///
    /// struct Count(usize);
    ///
    /// #[async_trait::async_trait]
    /// impl Processor for Count {
    ///     async fn process(&mut self, batch: &Batch) -> Result<(), HandlerError> {
    ///         self.0 += batch.len();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # async fn run(member: kinesumer::Kinesumer) -> kinesumer::Result<()> {
    /// let consuming = member
    ///     .consume_processors(["orders"], |_: &ShardRef, _: Checkpointer| Count(0), Batching::default())
    ///     .await?;
    /// consuming.await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`consume`](Kinesumer::consume).
    ///
    /// # Cancel safety
    ///
    /// As [`consume`](Kinesumer::consume).
    pub async fn consume_processors<I, S, F>(
        &self,
        streams: I,
        factory: F,
        batching: Batching,
    ) -> Result<Consuming>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        F: ProcessorFactory,
    {
        let sink = Sink::Processor(Arc::new(factory), self.error_policy.clone(), batching);
        let outcome = self.start(streams, sink).await?;
        Ok(Consuming::new(outcome))
    }

    /// Starts the coordinator; returns its outcome.
    async fn start<I, S>(&self, streams: I, sink: Sink) -> Result<watch::Receiver<Outcome>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let streams = self.check_streams(streams).await?;
        let mut running = self.running.lock().await;
        match &*running {
            Some(r) if r.closing => return Err(Error::Closed),
            Some(_) => return Err(Error::AlreadyConsuming),
            None => {}
        }
        let ctx = Arc::new(Ctx {
            cfg: self.config.clone(),
            store: self.store.clone(),
            kinesis: self.kinesis.clone(),
            consumer_arns: self.consumer_arns.clone(),
            clock: self.clock.clone(),
            signals: self.signals.clone(),
            sink,
            load: crate::load::LoadMeter::new(self.config.load_window),
            flow: self.flow.clone(),
            tasks: TaskTracker::new(),
        });
        let tasks = ctx.tasks.clone();
        let waited = self.config.handoff_timeout;
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
        // The coordinator's result goes to a watch, so every close() and every
        // `Consuming` sees it; aborting this task (the member dropped) aborts the
        // coordinator with it.
        let (outcome_tx, outcome) = watch::channel(None);
        let task = AbortOnDropHandle::new(task);
        let watcher = tokio::spawn(async move {
            let result = task.await.unwrap_or(Err(Error::Closed));
            let result = all_ended(&tasks, waited, result).await;
            outcome_tx.send_replace(Some(result));
        });
        *running = Some(Running {
            cmds,
            _task: AbortOnDropHandle::new(watcher),
            outcome: outcome.clone(),
            closing: false,
        });
        Ok(outcome)
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in effect: once sent, the change is carried out whether or not the
    /// caller still waits for it; dropped earlier, nothing changed.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a commit once asked for runs to its end; the marks stay, and the
    /// next commit (periodic, or at close) writes them.
    pub async fn commit(&self) -> Result<()> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Commit(ack)).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Runtime errors from now on: throttling, failed commits, lost leases. A listener
    /// that falls behind loses the oldest and receives [`Error::Missed`] instead;
    /// consumption never waits for it. See [`Errors`].
    pub fn errors(&self) -> Errors {
        Errors::errors(self.signals.errors.subscribe())
    }

    /// Group events from now on: leases taken, released, lost; leadership; fencing. A
    /// listener that falls behind receives [`Event::Missed`](crate::Event::Missed). See
    /// [`Events`].
    pub fn events(&self) -> Events {
        Events::events(self.signals.events.subscribe())
    }

    /// Stops handing out the records of `shard` until [`resume`](Kinesumer::resume):
    /// the record in hand is finished, later ones wait in the shard's buffer, and once it
    /// is full the shard's reader stops reading. The lease is kept (heartbeats and
    /// commits go on); a handoff of a paused shard proceeds as usual, and the pause
    /// applies again if the shard comes back.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(member: kinesumer::Kinesumer) {
    /// // A downstream that is down for maintenance: stop everything, then go on.
    /// member.pause_all();
    /// tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    /// member.resume_all();
    /// # }
    /// ```
    pub fn pause(&self, shard: &ShardRef) {
        self.flow.pause(Some(shard));
    }

    /// Hands out the records of `shard` again (see [`pause`](Kinesumer::pause)).
    pub fn resume(&self, shard: &ShardRef) {
        self.flow.resume(Some(shard));
    }

    /// Pauses every shard this member holds or will hold (see
    /// [`pause`](Kinesumer::pause)).
    pub fn pause_all(&self) {
        self.flow.pause(None);
    }

    /// Lifts [`pause_all`](Kinesumer::pause_all); shards paused one by one stay paused.
    pub fn resume_all(&self) {
        self.flow.resume(None);
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
        self.status.borrow().clone()
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in effect: a deregistration sent is carried out by the service
    /// whether or not the answer is awaited.
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
    /// lock, and deletes its member item. Takes as long as those requests take. It
    /// returns once every task of the member has ended, so no handler of it runs
    /// afterwards (a handler blocking its thread is waited for up to `handoff_timeout`
    /// more).
    ///
    /// With auto-commit, the last record the [`Records`] stream handed out counts as
    /// processed: close after you are done with it.
    ///
    /// Every call returns the same outcome; a member that never consumed closes at once.
    ///
    /// # Errors
    ///
    /// [`Error::CloseIncomplete`] listing what did not finish (failed final commits,
    /// leases lost or not released in time, a failed lock release or leave, tasks still
    /// running: [`Error::StillRunning`]): the member
    /// left anyway, and what it did not release moves after the failover timeout. Or the
    /// error that had stopped the member for good ([`Error::Superseded`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the close runs in the member's own task. Once asked for, it runs to
    /// its end whether or not this future is still polled, and a later `close()` waits
    /// for the same outcome. Dropping the member itself still stops it at once.
    pub async fn close(&self) -> Result<()> {
        let mut outcome = {
            let mut running = self.running.lock().await;
            let Some(running) = running.as_mut() else {
                return Ok(());
            };
            if !running.closing {
                let (ack, _) = oneshot::channel();
                // Dropped during this send, nothing was sent and a later close starts
                // over. A coordinator that already stopped has its outcome waiting.
                let _ = running.cmds.send(Command::Close(ack)).await;
                running.closing = true;
            }
            running.outcome.clone()
        };
        wait_outcome(&mut outcome).await
    }
}

/// Waits until the coordinator has stopped; its outcome.
async fn wait_outcome(outcome: &mut watch::Receiver<Outcome>) -> Result<()> {
    match outcome.wait_for(Option::is_some).await {
        Ok(done) => done.clone().unwrap_or(Err(Error::Closed)),
        // The watcher is gone without an outcome: the member was dropped.
        Err(_) => Err(Error::Closed),
    }
}

/// Waits, for at most `waited`, until every task of the stopped member has ended (an
/// aborted task ends at its next await, a handler blocking its thread only when it
/// returns), so no code of the member runs once its close has returned. The ones still
/// running after that make the outcome a [`Error::CloseIncomplete`].
async fn all_ended(tasks: &TaskTracker, waited: Duration, outcome: Result<()>) -> Result<()> {
    tasks.close();
    if tokio::time::timeout(waited, tasks.wait()).await.is_ok() {
        return outcome;
    }
    let running = Error::StillRunning {
        tasks: tasks.len(),
        waited,
    };
    tracing::warn!(error = %running, "closed with tasks still running");
    match outcome {
        Ok(()) => Err(Error::CloseIncomplete {
            failures: vec![running],
        }),
        Err(Error::CloseIncomplete { mut failures }) => {
            failures.push(running);
            Err(Error::CloseIncomplete { failures })
        }
        Err(other) => Err(other),
    }
}

/// A member consuming with a handler ([`Kinesumer::consume_with`]): a future that
/// completes when the member stops.
///
/// It resolves to the result of [`Kinesumer::close`], or to the error that stopped the
/// member for good ([`Error::Superseded`]), or to [`Error::Closed`] when the member was
/// dropped. Dropping it does not stop the member.
///
/// # Cancel safety
///
/// Cancel-safe: it only watches.
#[must_use = "the handle completes when the member stops; dropping it does not stop it"]
pub struct Consuming(BoxFuture<'static, Result<()>>);

impl Consuming {
    fn new(mut outcome: watch::Receiver<Outcome>) -> Self {
        Self(async move { wait_outcome(&mut outcome).await }.boxed())
    }
}

impl Future for Consuming {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.0.poll_unpin(cx)
    }
}

impl fmt::Debug for Consuming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consuming").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
