//! Per-request fault injection in front of a [`StateStore`], and the gate that pauses a
//! simulated member.
//!
//! A [`FaultyStore`] serves one member. Each request passes the member's [`Gate`] (a
//! paused member sends nothing and reads no answer), then meets the first matching
//! [`Rule`] of its script, or else a seeded [`RandomFaults`] draw, and suffers the
//! chosen [`Fault`]:
//!
//! ```text
//!  member ──▶ gate ──▶ fault? ──▶ (the network: lands even if the member gave up) ──▶ store
//!         ◀── gate ◀──────────────────────── answer (or an error, or nothing) ◀──────┘
//! ```
//!
//! A delayed or held request is sent into "the network" (a task of its own), so it lands
//! even after the member's `request_timeout` gave up on it — as a real request does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use super::monitor::Monitor;
use crate::seq::Position;
use crate::store::{
    CheckpointWrite, HeartbeatOutcome, LeaseDeletion, LeaseItem, LeaseSeen, LoadReport, LockItem,
    MemberItem, Operation, Owner, PlanItem, Registration, RequestCounter, RequestCounts,
    ShardCache, ShardRef, StateStore, StoreError, StoredStart,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flag tasks can wait on: open or closed.
#[derive(Debug, Default)]
struct Flag {
    closed: Mutex<bool>,
    changed: Notify,
}

impl Flag {
    fn set(&self, closed: bool) {
        *lock(&self.closed) = closed;
        self.changed.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        *lock(&self.closed)
    }

    async fn wait_for(&self, closed: bool) {
        loop {
            let changed = self.changed.notified();
            if self.is_closed() == closed {
                return;
            }
            changed.await;
        }
    }
}

/// Pauses a simulated member: while closed, its requests wait before they are sent and
/// before their answers are read, and its application takes no record.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Flag>);

impl Gate {
    /// Closes the gate (the member is paused).
    pub fn close(&self) {
        self.0.set(true);
    }

    /// Opens the gate (the member runs).
    pub fn open(&self) {
        self.0.set(false);
    }

    /// Whether the member is paused.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the gate is open.
    pub async fn opened(&self) {
        self.0.wait_for(false).await;
    }

    /// Waits until the gate is closed.
    pub async fn closed(&self) {
        self.0.wait_for(true).await;
    }
}

/// Holds requests in the network until released ([`Fault::Hold`]).
#[derive(Debug, Clone, Default)]
pub struct Latch(Arc<Flag>);

impl Latch {
    /// A latch that holds until [`Latch::release`].
    pub fn new() -> Self {
        let latch = Self::default();
        latch.0.set(true);
        latch
    }

    /// Lets every held request land.
    pub fn release(&self) {
        self.0.set(false);
    }

    pub(crate) async fn wait(&self) {
        self.0.wait_for(false).await;
    }
}

/// What happens to one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Refused before it lands (a connection error, or a 500 from Kinesis).
    Fail,
    /// Refused for load: the service's throttling error.
    Throttle,
    /// Never answered and never lands: the member's `request_timeout` ends it.
    Hang,
    /// Lands, and is answered, after this long (even if the member gave up waiting).
    Delay(Duration),
    /// Lands when the latch is released (even if the member gave up waiting).
    Hold(Latch),
    /// Lands, but its answer is lost: the member sees an error.
    LoseResponse,
    /// Refused as if its condition failed, without landing (a state store: another
    /// member's write got there first). For Kinesis, as [`Fault::Fail`].
    Refuse,
}

/// One request as the fault script sees it: a state-store [`Operation`], or a
/// [`KinesisOp`](super::KinesisOp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<O = Operation> {
    /// The operation.
    pub op: O,
    /// The lease (or Kinesis shard) it concerns; for a call about a whole stream (a
    /// shard listing), `shard_id` is empty.
    pub shard: Option<ShardRef>,
    /// The member whose plan it writes or deletes.
    pub member: Option<String>,
}

/// A scripted fault: the matching requests after the first `skip` get `fault`, `times`
/// times.
#[derive(Debug, Clone)]
pub struct Rule<O = Operation> {
    op: O,
    shard: Option<ShardRef>,
    stream: Option<String>,
    member: Option<String>,
    skip: usize,
    times: usize,
    fault: Fault,
}

impl<O: Copy + Eq> Rule<O> {
    /// The next request of `op` gets `fault`.
    pub fn new(op: O, fault: Fault) -> Self {
        Self {
            op,
            shard: None,
            stream: None,
            member: None,
            skip: 0,
            times: 1,
            fault,
        }
    }

    /// Only requests about this shard match.
    pub fn shard(mut self, stream: &str, shard_id: &str) -> Self {
        self.shard = Some(ShardRef {
            stream: stream.to_owned(),
            shard_id: shard_id.to_owned(),
        });
        self
    }

    /// Only requests about this stream (any of its shards) match.
    pub fn stream(mut self, stream: &str) -> Self {
        self.stream = Some(stream.to_owned());
        self
    }

    /// Only requests about this member's plan match.
    pub fn member(mut self, client_id: &str) -> Self {
        self.member = Some(client_id.to_owned());
        self
    }

    /// The first `n` matching requests pass untouched.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Applies to `n` matching requests (`usize::MAX`: until the script is cleared).
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    fn matches(&self, r: &Request<O>) -> bool {
        let stream = r.shard.as_ref().map(|s| s.stream.as_str());
        self.op == r.op
            && (self.shard.is_none() || self.shard == r.shard)
            && (self.stream.is_none() || self.stream.as_deref() == stream)
            && (self.member.is_none() || self.member == r.member)
    }
}

/// Seeded random faults, drawn for every request no rule claimed.
#[derive(Debug)]
pub struct RandomFaults {
    rng: StdRng,
    /// Chance of [`Fault::Fail`].
    pub fail: f64,
    /// Chance of [`Fault::Throttle`].
    pub throttle: f64,
    /// Chance of [`Fault::LoseResponse`].
    pub lose_response: f64,
    /// Chance of [`Fault::Hang`].
    pub hang: f64,
    /// Chance of a [`Fault::Delay`] between `min_delay` and `max_delay`.
    pub slow: f64,
    /// The shortest random delay.
    pub min_delay: Duration,
    /// The longest random delay.
    pub max_delay: Duration,
}

impl RandomFaults {
    /// No faults yet, drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            fail: 0.0,
            throttle: 0.0,
            lose_response: 0.0,
            hang: 0.0,
            slow: 0.0,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    fn draw(&mut self) -> Option<Fault> {
        let x: f64 = self.rng.random();
        let mut edge = 0.0;
        for (chance, fault) in [
            (self.fail, Fault::Fail),
            (self.throttle, Fault::Throttle),
            (self.lose_response, Fault::LoseResponse),
            (self.hang, Fault::Hang),
        ] {
            edge += chance;
            if x < edge {
                return Some(fault);
            }
        }
        edge += self.slow;
        if x < edge {
            let spread = self.max_delay.saturating_sub(self.min_delay);
            let d = self.min_delay + spread.mul_f64(self.rng.random());
            return Some(Fault::Delay(d));
        }
        None
    }
}

/// One request as it went: when it was sent and what happened.
#[derive(Debug, Clone)]
pub struct Sent<O = Operation> {
    /// The request.
    pub request: Request<O>,
    /// When it passed the gate (tokio's clock, since the simulation started).
    pub at: Duration,
    /// The fault it met, if any.
    pub fault: Option<Fault>,
}

/// The fault script of one member's requests of one kind (state-store [`Operation`]s,
/// or [`KinesisOp`](super::KinesisOp)s): the rules, the random draws, and the log of
/// what was sent. [`FaultyStore`] and [`FaultyKinesis`](super::FaultyKinesis) deref to
/// theirs.
#[derive(Debug)]
pub struct Script<O> {
    state: Mutex<ScriptState<O>>,
}

#[derive(Debug)]
struct ScriptState<O> {
    rules: VecDeque<(Rule<O>, usize)>,
    random: Option<RandomFaults>,
    log: Vec<Sent<O>>,
}

impl<O> Default for Script<O> {
    fn default() -> Self {
        Self {
            state: Mutex::new(ScriptState {
                rules: VecDeque::new(),
                random: None,
                log: Vec::new(),
            }),
        }
    }
}

impl<O: Copy + Eq> Script<O> {
    /// Adds a scripted fault (rules are tried in the order added).
    pub fn push(&self, rule: Rule<O>) {
        lock(&self.state).rules.push_back((rule, 0));
    }

    /// Draws random faults for requests no rule claims.
    pub fn set_random(&self, random: Option<RandomFaults>) {
        lock(&self.state).random = random;
    }

    /// Drops every rule and the random faults: requests go through untouched.
    pub fn clear(&self) {
        let mut s = lock(&self.state);
        s.rules.clear();
        s.random = None;
    }

    /// Every request sent so far.
    pub fn sent(&self) -> Vec<Sent<O>> {
        lock(&self.state).log.clone()
    }

    /// The fault `request`, sent at `at`, meets: the first matching rule's, or a random
    /// draw's. Logged.
    pub(crate) fn choose(&self, request: &Request<O>, at: Duration) -> Option<Fault> {
        let mut s = lock(&self.state);
        let mut chosen = None;
        for (rule, seen) in s.rules.iter_mut() {
            if !rule.matches(request) {
                continue;
            }
            *seen += 1;
            if *seen > rule.skip && rule.times > 0 {
                rule.times -= 1;
                chosen = Some(rule.fault.clone());
                break;
            }
        }
        s.rules.retain(|(r, _)| r.times > 0);
        if chosen.is_none() {
            chosen = s.random.as_mut().and_then(RandomFaults::draw);
        }
        s.log.push(Sent {
            request: request.clone(),
            at,
            fault: chosen.clone(),
        });
        chosen
    }
}

/// A [`StateStore`] in front of another, for one simulated member: gated, scripted,
/// counted per member, and watched by the simulation's [`Monitor`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn StateStore>,
    gate: Gate,
    monitor: Arc<Monitor>,
    name: String,
    script: Script<Operation>,
    counts: RequestCounter,
}

impl std::ops::Deref for FaultyStore {
    type Target = Script<Operation>;

    fn deref(&self) -> &Script<Operation> {
        &self.script
    }
}

type Apply<T> =
    Box<dyn FnOnce(Arc<dyn StateStore>) -> BoxFuture<'static, Result<T, StoreError>> + Send>;

impl FaultyStore {
    pub(crate) fn new(
        name: &str,
        inner: Arc<dyn StateStore>,
        gate: Gate,
        monitor: Arc<Monitor>,
    ) -> Self {
        Self {
            inner,
            gate,
            monitor,
            name: name.to_owned(),
            script: Script::default(),
            counts: RequestCounter::default(),
        }
    }

    async fn call<T: Send + 'static>(
        &self,
        request: Request,
        apply: Apply<T>,
    ) -> Result<T, StoreError> {
        self.counts.count(request.op);
        self.gate.opened().await;
        let fault = self.script.choose(&request, self.monitor.now());
        let op = request.op;
        let inner = self.inner.clone();
        let monitor = self.monitor.clone();
        let name = self.name.clone();
        let land = async move {
            let result = apply(inner).await;
            monitor.landed(&name, &request, result.is_ok());
            result
        };
        let injected = |what: &str| StoreError::Unavailable {
            op,
            message: format!("injected: {what}"),
        };
        let result = match fault {
            None => land.await,
            Some(Fault::Fail) => Err(injected("request failed")),
            Some(Fault::Throttle) => Err(StoreError::Throttled { op }),
            Some(Fault::Refuse) => Err(StoreError::ConditionFailed {
                item: "injected: refused".to_owned(),
            }),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LoseResponse) => land.await.and(Err(injected("response lost"))),
            Some(Fault::Delay(d)) => {
                in_network(async move {
                    tokio::time::sleep(d).await;
                    land.await
                })
                .await
            }
            Some(Fault::Hold(latch)) => {
                in_network(async move {
                    latch.wait().await;
                    land.await
                })
                .await
            }
        };
        self.gate.opened().await;
        result
    }
}

/// Runs a request in the network: it lands even if the caller stops waiting.
async fn in_network<T: Send + 'static>(
    request: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(request)
        .await
        .unwrap_or_else(|e| panic!("a simulated request panicked: {e}"))
}

fn req(op: Operation) -> Request {
    Request {
        op,
        shard: None,
        member: None,
    }
}

fn lease_req(op: Operation, stream: &str, shard_id: &str) -> Request {
    Request {
        shard: Some(ShardRef {
            stream: stream.to_owned(),
            shard_id: shard_id.to_owned(),
        }),
        ..req(op)
    }
}

fn plan_req(op: Operation, client_id: &str) -> Request {
    Request {
        member: Some(client_id.to_owned()),
        ..req(op)
    }
}

/// Boxes a request on owned arguments as an [`Apply`].
macro_rules! apply {
    (|$store:ident| $body:expr) => {
        Box::new(move |$store: Arc<dyn StateStore>| Box::pin(async move { $body.await }))
    };
}

impl crate::sealed::Sealed for FaultyStore {}

#[async_trait]
impl StateStore for FaultyStore {
    fn app(&self) -> &str {
        self.inner.app()
    }

    fn requests(&self) -> RequestCounts {
        self.counts.snapshot()
    }

    async fn register(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        how: &Registration,
        load: Option<&LoadReport>,
    ) -> Result<(), StoreError> {
        let (c, t, s, h) = (
            client_id.to_owned(),
            token.to_owned(),
            streams.to_vec(),
            how.clone(),
        );
        let l = load.cloned();
        self.call(
            req(Operation::Register),
            apply!(|st| st.register(&c, &t, &s, &h, l.as_ref())),
        )
        .await
    }

    async fn heartbeat(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        load: Option<&LoadReport>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let (c, t, s) = (client_id.to_owned(), token.to_owned(), streams.to_vec());
        let l = load.cloned();
        self.call(
            req(Operation::Heartbeat),
            apply!(|st| st.heartbeat(&c, &t, &s, l.as_ref())),
        )
        .await
    }

    async fn leave(&self, client_id: &str, token: &str) -> Result<(), StoreError> {
        let (c, t) = (client_id.to_owned(), token.to_owned());
        self.call(req(Operation::Leave), apply!(|st| st.leave(&c, &t)))
            .await
    }

    async fn read_lock_and_plan(
        &self,
        client_id: &str,
    ) -> Result<(Option<LockItem>, Option<PlanItem>), StoreError> {
        let c = client_id.to_owned();
        self.call(
            req(Operation::ReadLockAndPlan),
            apply!(|st| st.read_lock_and_plan(&c)),
        )
        .await
    }

    async fn read_lock(&self) -> Result<Option<LockItem>, StoreError> {
        self.call(req(Operation::ReadLock), apply!(|st| st.read_lock()))
            .await
    }

    async fn take_lock(&self, me: &Owner, seen: Option<&LockItem>) -> Result<LockItem, StoreError> {
        let (m, s) = (me.clone(), seen.cloned());
        self.call(
            req(Operation::TakeLock),
            apply!(|st| st.take_lock(&m, s.as_ref())),
        )
        .await
    }

    async fn renew_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        let m = me.clone();
        self.call(
            req(Operation::RenewLock),
            apply!(|st| st.renew_lock(&m, term)),
        )
        .await
    }

    async fn release_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        let m = me.clone();
        self.call(
            req(Operation::ReleaseLock),
            apply!(|st| st.release_lock(&m, term)),
        )
        .await
    }

    async fn members(&self) -> Result<Vec<MemberItem>, StoreError> {
        self.call(req(Operation::Members), apply!(|st| st.members()))
            .await
    }

    async fn leases(&self, stream: &str) -> Result<Vec<LeaseItem>, StoreError> {
        let s = stream.to_owned();
        self.call(req(Operation::Leases), apply!(|st| st.leases(&s)))
            .await
    }

    async fn lease(&self, stream: &str, shard_id: &str) -> Result<Option<LeaseItem>, StoreError> {
        let (s, id) = (stream.to_owned(), shard_id.to_owned());
        self.call(
            lease_req(Operation::Lease, stream, shard_id),
            apply!(|st| st.lease(&s, &id)),
        )
        .await
    }

    async fn take_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        seen: &LeaseSeen,
        start: &StoredStart,
    ) -> Result<LeaseItem, StoreError> {
        let (s, id, m, sn, sta) = (
            stream.to_owned(),
            shard_id.to_owned(),
            me.clone(),
            seen.clone(),
            start.clone(),
        );
        self.call(
            lease_req(Operation::TakeLease, stream, shard_id),
            apply!(|st| st.take_lease(&s, &id, &m, &sn, &sta)),
        )
        .await
    }

    async fn release_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
    ) -> Result<(), StoreError> {
        let (s, id, m) = (stream.to_owned(), shard_id.to_owned(), me.clone());
        self.call(
            lease_req(Operation::ReleaseLease, stream, shard_id),
            apply!(|st| st.release_lease(&s, &id, &m, counter)),
        )
        .await
    }

    async fn checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
        previous: Option<&Position>,
        write: &CheckpointWrite,
    ) -> Result<(), StoreError> {
        let (s, id, m, p, w) = (
            stream.to_owned(),
            shard_id.to_owned(),
            me.clone(),
            previous.cloned(),
            write.clone(),
        );
        self.call(
            lease_req(Operation::Checkpoint, stream, shard_id),
            apply!(|st| st.checkpoint(&s, &id, &m, counter, p.as_ref(), &w)),
        )
        .await
    }

    async fn delete_lease(
        &self,
        stream: &str,
        shard_id: &str,
        which: LeaseDeletion,
    ) -> Result<(), StoreError> {
        let (s, id) = (stream.to_owned(), shard_id.to_owned());
        self.call(
            lease_req(Operation::DeleteLease, stream, shard_id),
            apply!(|st| st.delete_lease(&s, &id, which)),
        )
        .await
    }

    async fn set_checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        position: Option<&Position>,
        start: Option<&StoredStart>,
        finished: bool,
        force: bool,
    ) -> Result<(), StoreError> {
        let (s, id, p, sta) = (
            stream.to_owned(),
            shard_id.to_owned(),
            position.cloned(),
            start.cloned(),
        );
        self.call(
            lease_req(Operation::SetCheckpoint, stream, shard_id),
            apply!(|st| st.set_checkpoint(&s, &id, p.as_ref(), sta.as_ref(), finished, force)),
        )
        .await
    }

    async fn write_plan(&self, plan: &PlanItem) -> Result<(), StoreError> {
        let p = plan.clone();
        self.call(
            plan_req(Operation::WritePlan, &plan.client_id),
            apply!(|st| st.write_plan(&p)),
        )
        .await
    }

    async fn delete_plan(
        &self,
        client_id: &str,
        term: u64,
        version: u64,
    ) -> Result<(), StoreError> {
        let c = client_id.to_owned();
        self.call(
            plan_req(Operation::DeletePlan, client_id),
            apply!(|st| st.delete_plan(&c, term, version)),
        )
        .await
    }

    async fn prune(
        &self,
        client_id: &str,
        heartbeat: u64,
        incarnation: Option<&str>,
    ) -> Result<(), StoreError> {
        let (c, i) = (client_id.to_owned(), incarnation.map(str::to_owned));
        self.call(
            req(Operation::Prune),
            apply!(|st| st.prune(&c, heartbeat, i.as_deref())),
        )
        .await
    }

    async fn shard_cache(&self, stream: &str) -> Result<Option<ShardCache>, StoreError> {
        let s = stream.to_owned();
        self.call(req(Operation::ShardCache), apply!(|st| st.shard_cache(&s)))
            .await
    }

    async fn put_shard_cache(&self, cache: &ShardCache) -> Result<(), StoreError> {
        let c = cache.clone();
        self.call(
            req(Operation::PutShardCache),
            apply!(|st| st.put_shard_cache(&c)),
        )
        .await
    }
}
