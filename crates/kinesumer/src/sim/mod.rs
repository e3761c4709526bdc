//! Simulations of whole consumer groups in one process: the real protocol code on an
//! in-memory Kinesis and state store, under tokio's paused clock.
//!
//! - [`SimKinesis`]: an in-memory Kinesis.
//! - [`Sim`]: a group of members, each a real [`Kinesumer`] on its own [`FaultyStore`]
//!   and [`FaultyKinesis`] (per-request faults: fail, throttle, hang, delay, hold, lose
//!   the response), its own
//!   [`MemberClock`] (pause, suspend, wall steps) and a [`Gate`] that pauses it as a
//!   SIGSTOP would; a [`Monitor`] checks exclusivity and checkpoints as the run goes.
//!
//! A run is deterministic when it is driven on a current-thread runtime with the paused
//! clock: [`Sim::new`] seeds the library's random source on this thread, and the fault
//! draws are seeded too, so a seed replays exactly.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() {
//! use std::time::Duration;
//! use kinesumer::sim::{Fault, Rule, Sim};
//! use kinesumer::store::Operation;
//!
//! // Inside `#[tokio::test(start_paused = true)]`:
//! let mut sim = Sim::new(1, &[("orders", 4)]);
//! sim.start("a", &["orders"]).await;
//! sim.start("b", &["orders"]).await;
//! sim.member("b").store.push(Rule::new(Operation::TakeLease, Fault::LoseResponse));
//! sim.put("orders", 100);
//! sim.wait_for("every record handed out", Duration::from_secs(30), |s| s.lost().is_empty())
//!     .await;
//! assert!(sim.violations().is_empty());
//! # }
//! ```

mod app;
mod faults;
mod kinesis;
mod member;
mod monitor;
pub mod scale;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

pub use app::App;
pub use faults::{Fault, FaultyStore, Gate, Latch, RandomFaults, Request, Rule, Script, Sent};
pub use kinesis::SimKinesis;
pub use member::{FaultyKinesis, KinesisOp, MemberClock};
pub use monitor::{Handout, Landed, Monitor};

use crate::clock::TestClock;
use crate::config::{ConfigBuilder, InitialPosition};
use crate::event::Event;
use crate::reader::KinesisApi;
use crate::store::{MemoryStore, ShardRef, StateStore};
use crate::{Config, Kinesumer};

const APP: &str = "sim";

/// One simulated member: a real [`Kinesumer`] and what the simulation controls of it.
#[derive(Debug)]
pub struct SimMember {
    /// The member.
    pub consumer: Arc<Kinesumer>,
    /// Its state store, where its faults are scripted.
    pub store: Arc<FaultyStore>,
    /// Its Kinesis, where its faults are scripted.
    pub kinesis: Arc<FaultyKinesis>,
    /// Its clock.
    pub clock: Arc<MemberClock>,
    gate: Gate,
    processing: Arc<Mutex<Duration>>,
    events: Arc<Mutex<Vec<(Duration, Event)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimMember {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SimMember {
    /// The group events this member reported, with when (since the simulation started).
    pub fn events(&self) -> Vec<(Duration, Event)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many events match `f`.
    pub fn count_events(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events().iter().filter(|(_, e)| f(e)).count()
    }

    /// How long its application takes over each record (auto-commit marks a record when
    /// the next one is asked for); an [`App::Stream`]'s only.
    pub fn set_processing(&self, d: Duration) {
        *self.processing.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_closed()
    }
}

/// A simulated consumer group. See the [module documentation](self).
#[derive(Debug)]
pub struct Sim {
    store: MemoryStore,
    kinesis: Arc<SimKinesis>,
    clock: Arc<TestClock>,
    monitor: Arc<Monitor>,
    members: BTreeMap<String, SimMember>,
    streams: Vec<String>,
    put: BTreeMap<String, ShardRef>,
    seed: u64,
}

impl Sim {
    /// A group over streams of the given shard counts, with the library's random source
    /// on this thread seeded by `seed`. Call inside a runtime with the paused clock.
    pub fn new(seed: u64, streams: &[(&str, usize)]) -> Self {
        crate::random::seed_thread(Some(seed));
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let kinesis = Arc::new(SimKinesis::with_clock(clock.clone()));
        for (name, shards) in streams {
            kinesis.create_stream(name, *shards);
        }
        let store = MemoryStore::new(APP);
        Self {
            monitor: Arc::new(Monitor::new(store.for_app(APP))),
            store,
            kinesis,
            clock,
            members: BTreeMap::new(),
            streams: streams.iter().map(|(s, _)| s.to_string()).collect(),
            put: BTreeMap::new(),
            seed,
        }
    }

    /// The configuration members start with: TRIM_HORIZON, commits every second, a 1 s
    /// handoff timeout; the timing defaults otherwise.
    pub fn config(name: &str) -> ConfigBuilder {
        Config::builder(APP, "table")
            .client_id(name)
            .initial_position(InitialPosition::TrimHorizon)
            .commit_interval(Duration::from_secs(1))
            .handoff_timeout(Duration::from_secs(1))
    }

    /// Starts member `name` consuming `streams` with [`Sim::config`].
    pub async fn start(&mut self, name: &str, streams: &[&str]) {
        self.start_with(name, streams, |c| c).await;
    }

    /// Starts member `name` with a configuration changed by `configure`. A member of that
    /// name still running is replaced as by a crash.
    pub async fn start_with(
        &mut self,
        name: &str,
        streams: &[&str],
        configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) {
        self.launch(name, streams, configure, App::Stream).await;
    }

    /// Starts member `name` with [`Sim::config`] and the application `app`.
    pub async fn start_as(&mut self, name: &str, streams: &[&str], app: App) {
        self.launch(name, streams, |c| c, app).await;
    }

    async fn launch(
        &mut self,
        name: &str,
        streams: &[&str],
        configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
        app: App,
    ) {
        self.members.remove(name);
        let config = configure(Self::config(name)).build().expect("valid config");
        let gate = Gate::default();
        let store = Arc::new(FaultyStore::new(
            name,
            Arc::new(self.store.clone()),
            gate.clone(),
            self.monitor.clone(),
        ));
        let clock = Arc::new(MemberClock::new(self.clock.clone()));
        let kinesis = Arc::new(FaultyKinesis::new(
            self.kinesis.clone(),
            gate.clone(),
            self.monitor.clone(),
        ));
        let consumer = Kinesumer::with_parts(
            config,
            store.clone() as Arc<dyn StateStore>,
            kinesis.clone() as Arc<dyn KinesisApi>,
            clock.clone(),
        );
        let (consumer, failing) = match app {
            App::Stream => (consumer, None),
            App::Failing {
                failures,
                dead_letter,
            } => {
                let monitor = self.monitor.clone();
                let f = app::Failing::new(name, monitor, gate.clone(), self.seed, failures);
                (consumer.with_error_policy(f.policy(dead_letter)), Some(f))
            }
        };
        let consumer = Arc::new(consumer);
        let events: Arc<Mutex<Vec<(Duration, Event)>>> = Arc::default();
        let collect = tokio::spawn(collect_events(
            consumer.events(),
            events.clone(),
            self.monitor.clone(),
        ));
        let processing: Arc<Mutex<Duration>> = Arc::default();
        let streams = streams.iter().copied();
        let app = match failing {
            None => {
                let records = consumer.consume(streams).await.expect("the member starts");
                tokio::spawn(app::stream(
                    name.to_owned(),
                    records,
                    gate.clone(),
                    processing.clone(),
                    self.monitor.clone(),
                ))
            }
            Some(f) => {
                let consuming = consumer
                    .consume_with(streams, app::Calls(f))
                    .await
                    .expect("the member starts");
                // The member's end is judged by the monitor, not by how it ended.
                tokio::spawn(consuming.map(drop))
            }
        };
        self.members.insert(
            name.to_owned(),
            SimMember {
                consumer,
                store,
                kinesis,
                clock,
                gate,
                processing,
                events,
                tasks: vec![collect, app],
            },
        );
    }

    /// The member called `name`.
    ///
    /// # Panics
    ///
    /// If there is none.
    pub fn member(&self, name: &str) -> &SimMember {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// The names of the members (running or not, not crashed).
    pub fn names(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Kills member `name` at once: no commit, no release, nothing more sent.
    pub fn crash(&mut self, name: &str) {
        self.members.remove(name);
    }

    /// Closes member `name` gracefully and forgets it.
    pub async fn close(&mut self, name: &str) {
        if let Some(m) = self.members.remove(name) {
            // Under faults a close may not finish cleanly; the monitor judges the run.
            let _ = m.consumer.close().await;
        }
    }

    /// Pauses member `name` (SIGSTOP): it sends nothing, reads no answer, hands out
    /// nothing, and its clock stands still until [`Sim::resume`].
    pub fn pause(&self, name: &str) {
        let m = self.member(name);
        m.clock.freeze();
        m.gate.close();
    }

    /// Resumes a paused member: its clock first shows the time that passed, then it runs.
    pub fn resume(&self, name: &str) {
        let m = self.member(name);
        m.clock.thaw();
        m.gate.open();
    }

    /// The in-memory Kinesis.
    pub fn kinesis(&self) -> &SimKinesis {
        &self.kinesis
    }

    /// A handle on the state store (with its own request counts).
    pub fn store(&self) -> MemoryStore {
        self.store.for_app(APP)
    }

    /// The monitor: hand-outs, landed requests, violations.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Time since the simulation started.
    pub fn now(&self) -> Duration {
        self.monitor.now()
    }

    /// Puts `n` records with distinct partition keys; returns their sequence numbers.
    pub fn put(&mut self, stream: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let key = format!("key-{}", self.put.len());
                let (shard_id, seq) = self.kinesis.put(stream, &key, b"x");
                let shard = ShardRef {
                    stream: stream.to_owned(),
                    shard_id,
                };
                self.put.insert(seq.clone(), shard);
                seq
            })
            .collect()
    }

    /// Puts records with fresh partition keys until `n` of them went to `shard_id` (the
    /// others land on other shards and count as put too).
    pub fn put_on(&mut self, stream: &str, shard_id: &str, n: usize) {
        let mut on = 0;
        while on < n {
            let seq = self.put(stream, 1).remove(0);
            if self.put[&seq].shard_id == shard_id {
                on += 1;
            }
        }
    }

    /// Puts exactly `n` records on `shard_id`, each with a fresh partition key that hashes
    /// there (unlike [`Sim::put_on`], nothing lands on other shards).
    pub fn put_only_on(&mut self, stream: &str, shard_id: &str, n: usize) {
        let mut on = 0;
        let mut attempt = 0;
        while on < n {
            let key = format!("key-{}-{attempt}", self.put.len());
            attempt += 1;
            if self.kinesis.shard_for(stream, &key) == shard_id {
                let (shard_id, seq) = self.kinesis.put(stream, &key, b"x");
                let shard = ShardRef {
                    stream: stream.to_owned(),
                    shard_id,
                };
                self.put.insert(seq, shard);
                on += 1;
            }
        }
    }

    /// The records put but never handed out to any member.
    pub fn lost(&self) -> BTreeSet<String> {
        let handed: BTreeSet<String> = self
            .monitor
            .handouts()
            .into_iter()
            .map(|h| h.sequence)
            .collect();
        self.put
            .keys()
            .filter(|s| !handed.contains(*s))
            .cloned()
            .collect()
    }

    /// How many hand-outs repeated a record already handed out.
    pub fn duplicates(&self) -> usize {
        let handouts = self.monitor.handouts();
        let distinct: BTreeSet<&String> = handouts.iter().map(|h| &h.sequence).collect();
        handouts.len() - distinct.len()
    }

    /// The invariant violations found so far.
    pub fn violations(&self) -> Vec<String> {
        self.monitor.violations()
    }

    /// The running, unpaused member that leads, if any.
    pub fn leader(&self) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.consumer.is_leader() && !m.is_paused())
            .map(|(n, _)| n.clone())
    }

    /// Shards of the simulation's streams that no running, unpaused member holds, leaving
    /// out closed shards already finished (their lease written `shard_end`).
    pub fn unread(&self) -> Vec<ShardRef> {
        let store = self.store();
        let finished = |stream: &str, shard_id: &str| {
            store
                .lease(stream, shard_id)
                .now_or_never()
                .and_then(Result::ok)
                .flatten()
                .is_some_and(|l| l.shard_end)
        };
        let held: BTreeSet<ShardRef> = self
            .members
            .values()
            .filter(|m| m.consumer.is_running() && !m.is_paused())
            .flat_map(|m| m.consumer.held_shards())
            .collect();
        self.streams
            .iter()
            .flat_map(|stream| {
                let listed = self.kinesis.list_shards(stream).now_or_never();
                let shards = listed.and_then(Result::ok).map(|l| l.shards);
                shards.unwrap_or_default().into_iter().map(|s| ShardRef {
                    stream: stream.clone(),
                    shard_id: s.shard_id,
                })
            })
            .filter(|s| !held.contains(s) && !finished(&s.stream, &s.shard_id))
            .collect()
    }

    /// What the group looks like now: each member's state and shards, the shards no one
    /// reads, the records not handed out — for a failure message.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (name, m) in &self.members {
            let held: Vec<String> = m
                .consumer
                .held_shards()
                .into_iter()
                .map(|s| format!("{}/{}", s.stream, s.shard_id))
                .collect();
            out.push_str(&format!(
                "member {name}: running {}, paused {}, leader {}, holds {held:?}\n",
                m.consumer.is_running(),
                m.is_paused(),
                m.consumer.is_leader()
            ));
        }
        out.push_str(&format!("unread: {:?}\n", self.unread()));
        out.push_str(&format!("records not handed out: {}", self.lost().len()));
        out
    }

    /// The streams of the simulation.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// Lets time pass for `d`, checking the invariants every 50 ms.
    ///
    /// # Panics
    ///
    /// On the first violation.
    pub async fn run_for(&self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < end {
            self.step().await;
        }
    }

    /// Waits until `done` holds, for at most `limit`, checking the invariants every 50 ms.
    ///
    /// # Panics
    ///
    /// On a violation, or when `limit` passes first (naming `what`).
    pub async fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Sim) -> bool) {
        let end = tokio::time::Instant::now() + limit;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < end,
                "not reached within {limit:?}: {what}\n{}",
                self.describe()
            );
            self.step().await;
        }
    }

    async fn step(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let violations = self.violations();
        assert!(violations.is_empty(), "invariant violated: {violations:#?}");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        crate::random::seed_thread(None);
    }
}

/// A member's application: takes records as fast as it processes them, logs each
/// hand-out, and stops taking while the member is paused.
async fn collect_events(
    mut rx: crate::Events,
    events: Arc<Mutex<Vec<(Duration, Event)>>>,
    monitor: Arc<Monitor>,
) {
    while let Some(e) = rx.next().await {
        if !matches!(e, Event::Missed { .. }) {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((monitor.now(), e));
        }
    }
}
