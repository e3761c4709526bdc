//! The fault-injection harness: several `kinesumer consume` processes share a stream on
//! the local stack while a producer writes numbered records under many partition keys;
//! faults are injected, and the run is then verified from the members' outputs and from
//! the state-store table, sampled during the run.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo build -p kinesumer-cli -p kinesumer-bench
//! target/debug/chaos [--scenario mixed] [--members 3] [--shards 4] [--rate 40]
//!                    [--kills 12] [--sync-ms 1000] [--failover-ms 8000] [--request-ms 1000]
//!                    [--commit-ms 1000] [--outage-secs 20] [--fault-percent 70]
//!                    [--fault-secs 15] [--keep-logs]
//! ```
//!
//! Scenarios: `kill`, `zombie`, `reshard`, `store-outage`, `kinesis-faults`,
//! `leader-restart`, `twin`, `pause` (stopped past the fence deadline, not the failover),
//! `flap` (the state store stalls and comes back, again and again), `mixed` (one of each
//! fault), `all` (each in turn, then mixed). Members reach DynamoDB through a TCP proxy that can refuse or stall every
//! connection, and Kinesis through an HTTP proxy that can answer with throttling or 500s;
//! the harness itself reads both services directly. The exit code is 1 when a verdict
//! fails (docs/reliability.md lists them). After a failure (always with `--keep-logs`)
//! each run's stderr and the group's state are written under the temporary directory.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::Shard;
use kinesumer::seq::Position;
use kinesumer::store::{create_table, DynamoStore, LeaseItem, Owner, StateStore, TableBilling};
use rustix::process::Signal;
use tokio::process::Command;

use kinesumer_bench::member::{Delivery, Member};
use kinesumer_bench::proxy::{HttpFault, HttpFaultProxy, HttpFaults, TcpMode, TcpProxy};
use kinesumer_bench::{
    arg, arg_str, check, create_stream, delete_stream, endpoint, put_numbered, Error,
};

/// Partition keys of the producer.
const KEYS: u64 = 64;
/// How often the state-store table is sampled.
const SAMPLE: Duration = Duration::from_millis(200);
/// How long a member may take to exit on SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Group timings given to every member (CLI flags).
#[derive(Debug, Clone, Copy)]
struct Timings {
    sync: Duration,
    failover: Duration,
    request: Duration,
    commit: Duration,
}

/// What does not change between scenarios.
struct Env {
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    cli: PathBuf,
    kinesis_upstream: String,
    dynamodb_upstream: String,
    timings: Timings,
    members: u64,
    shards: i32,
    rate: u64,
    kills: u64,
}

/// How a run (one member process) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Running,
    Killed,
    /// Exited on SIGTERM, with this code (`None`: by a signal).
    Terminated(Option<i32>),
    /// Exited by itself, with this code.
    Alone(Option<i32>),
    /// Did not exit within the deadline after SIGTERM.
    Hung,
}

/// Why a run may have delivered records it never committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disruption {
    Killed,
    Stopped,
    StoreOutage,
    Superseded,
}

struct Run {
    client_id: String,
    member: Member,
    end: End,
    disruption: Option<Disruption>,
    /// When a zombie got SIGCONT.
    woke: Option<Instant>,
}

impl Run {
    fn deliveries(&self) -> Vec<Delivery> {
        self.member.deliveries.lock().expect("lock").clone()
    }

    /// The member logged a lease loss, a failed commit or a fencing.
    fn lost_a_lease(&self) -> bool {
        ["fenced", "lease of", "commit of"]
            .iter()
            .any(|needle| self.member.stderr_count(needle) > 0)
    }
}

/// One reading of one lease.
struct Sample {
    at: Instant,
    owner: Option<Owner>,
    checkpoint: Option<Position>,
}

/// The table as the sampler saw it.
#[derive(Default)]
struct Table {
    /// Per shard, in time order.
    samples: BTreeMap<String, Vec<Sample>>,
    regressions: Vec<String>,
    read_errors: u64,
}

impl Table {
    fn record(&mut self, at: Instant, leases: Vec<LeaseItem>) {
        for lease in leases {
            let samples = self.samples.entry(lease.shard_id.clone()).or_default();
            let before = samples.iter().rev().find_map(|s| s.checkpoint.as_ref());
            if let Some(before) = before {
                let now = lease.checkpoint.as_ref();
                if now.is_none_or(|now| now < before) {
                    self.regressions.push(format!(
                        "{}: {} → {}",
                        lease.shard_id,
                        before.sequence.as_str(),
                        now.map_or("none", |p| p.sequence.as_str())
                    ));
                }
            }
            samples.push(Sample {
                at,
                owner: lease.owner,
                checkpoint: lease.checkpoint,
            });
        }
    }

    /// Whether a delivery of `client_id` was never committed by its tenure: the tenure is
    /// the incarnation of `client_id` the lease named last before the delivery was read
    /// (or, for a take younger than one sample, first in the second after), and its
    /// commits are every checkpoint seen under it.
    fn uncommitted(&self, d: &Delivery, client_id: &str) -> bool {
        let Some(samples) = self.samples.get(&d.shard) else {
            return true;
        };
        let mine = |s: &Sample| s.owner.clone().filter(|o| o.client_id == client_id);
        let now = samples.partition_point(|s| s.at <= d.at);
        let soon = samples.partition_point(|s| s.at <= d.at + Duration::from_secs(1));
        let tenure = samples[..now].iter().rev().find_map(mine);
        let Some(tenure) = tenure.or_else(|| samples[now..soon].iter().find_map(mine)) else {
            return true;
        };
        samples
            .iter()
            .filter(|s| s.owner.as_ref() == Some(&tenure))
            .filter_map(|s| s.checkpoint.as_ref())
            .max()
            .is_none_or(|c| d.seq > c.sequence)
    }

    /// Whether a checkpoint at or past the delivery was seen a second (the read lag)
    /// or more before it: a committed record delivered again.
    fn committed_before(&self, d: &Delivery) -> bool {
        self.samples.get(&d.shard).is_some_and(|samples| {
            samples
                .iter()
                .take_while(|s| s.at + Duration::from_secs(1) <= d.at)
                .filter_map(|s| s.checkpoint.as_ref())
                .any(|c| c.sequence >= d.seq)
        })
    }

    /// Whether the samples of `shard` around `at` name owners, none of them `client_id`.
    fn foreign(&self, shard: &str, client_id: &str, at: Instant) -> bool {
        let Some(samples) = self.samples.get(shard) else {
            return false;
        };
        let from = samples.partition_point(|s| s.at + Duration::from_secs(2) < at);
        let to = samples.partition_point(|s| s.at <= at + Duration::from_secs(1));
        let owners: Vec<&str> = samples[from..to]
            .iter()
            .filter_map(|s| s.owner.as_ref().map(|o| o.client_id.as_str()))
            .collect();
        owners.len() >= 3 && !owners.contains(&client_id)
    }
}

/// The verdicts and figures of one scenario.
#[derive(Debug, Default)]
struct Report {
    scenario: String,
    secs: u64,
    produced: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    duplicate_bound: u64,
    unexplained_duplicates: u64,
    committed_again: u64,
    disorder: u64,
    regressions: u64,
    foreign: u64,
    zombie_window: u64,
    lease_losses: u64,
    fencings: u64,
    panics: u64,
    bad_exits: u64,
    runs: usize,
    throttled: u64,
    server_errors: u64,
    notes: Vec<String>,
}

impl Report {
    fn passed(&self) -> bool {
        self.lost == 0
            && self.disorder == 0
            && self.regressions == 0
            && self.panics == 0
            && self.bad_exits == 0
            && self.foreign == 0
            && self.unexplained_duplicates == 0
            && self.committed_again == 0
            && self.duplicates <= self.duplicate_bound
            && self.notes.iter().all(|n| !n.starts_with("FAIL"))
    }

    fn print(&self) {
        println!("\n## {}\n", self.scenario);
        println!("| measure | value |\n|---|---|");
        println!("| duration | {} s |", self.secs);
        let figures = [
            self.runs as u64,
            self.produced,
            self.delivered,
            self.lost,
            self.duplicates,
            self.duplicate_bound,
            self.unexplained_duplicates,
            self.committed_again,
            self.disorder,
            self.regressions,
            self.foreign,
            self.zombie_window,
            self.lease_losses,
            self.fencings,
            self.panics,
            self.bad_exits,
            self.throttled,
            self.server_errors,
        ];
        for (measure, value) in MEASURES.iter().zip(figures) {
            println!("| {measure} | {value} |");
        }
        let verdict = if self.passed() { "pass" } else { "FAIL" };
        println!("| verdict | {verdict} |");
        for note in &self.notes {
            println!("- {note}");
        }
    }
}

/// The rows of [`Report::print`], in its order.
const MEASURES: [&str; 18] = [
    "member runs (process lifetimes)",
    "records produced",
    "records delivered",
    "lost",
    "duplicates",
    "bound: delivered, never committed, by a disrupted run",
    "duplicates first delivered by an undisrupted run",
    "delivered again after its checkpoint was written",
    "per-key order violations within a run",
    "checkpoint regressions",
    "deliveries while another member held the lease",
    "… by a zombie before it noticed (allowed)",
    "lease losses and failed commits (warnings)",
    "fencings",
    "panics",
    "bad exits (SIGTERM → not 0, or no exit)",
    "Kinesis calls throttled by the proxy",
    "Kinesis calls answered 500 by the proxy",
];

/// One scenario's group: its table, stream, proxies, member runs, producer and sampler.
struct Scenario<'e> {
    env: &'e Env,
    name: String,
    app: String,
    table_name: String,
    stream: String,
    store: DynamoStore,
    store_proxy: TcpProxy,
    kinesis_proxy: HttpFaultProxy,
    runs: Vec<Run>,
    produced: Arc<AtomicU64>,
    producing: Arc<AtomicBool>,
    table: Arc<Mutex<Table>>,
    producer: Option<tokio::task::JoinHandle<()>>,
    sampler: tokio::task::JoinHandle<()>,
    notes: Vec<String>,
    started: Instant,
}

impl<'e> Scenario<'e> {
    async fn start(env: &'e Env, name: &str) -> Result<Scenario<'e>, Error> {
        let tag = format!("{:08x}", rand::random::<u32>());
        let (app, table_name, stream) = (
            format!("chaos-{tag}"),
            format!("chaos-{tag}"),
            format!("chaos-{name}-{tag}"),
        );
        create_table(&env.dynamodb, &table_name, TableBilling::OnDemand).await?;
        create_stream(&env.kinesis, &stream, env.shards).await?;
        let store = DynamoStore::new(env.dynamodb.clone(), &table_name, &app);
        let table = Arc::new(Mutex::new(Table::default()));
        let sampler = {
            let (store, table, stream) = (store.clone(), table.clone(), stream.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE);
                loop {
                    tick.tick().await;
                    let read = store.leases(&stream).await;
                    let mut table = table.lock().expect("lock");
                    match read {
                        Ok(leases) => table.record(Instant::now(), leases),
                        Err(_) => table.read_errors += 1,
                    }
                }
            })
        };
        let mut s = Scenario {
            env,
            name: name.to_owned(),
            app,
            table_name,
            stream,
            store,
            store_proxy: TcpProxy::start(env.dynamodb_upstream.clone()).await?,
            kinesis_proxy: HttpFaultProxy::start(env.kinesis_upstream.clone()).await?,
            runs: Vec::new(),
            produced: Arc::default(),
            producing: Arc::new(AtomicBool::new(true)),
            table,
            producer: None,
            sampler,
            notes: Vec::new(),
            started: Instant::now(),
        };
        for i in 0..env.members {
            s.spawn(&format!("m{i}"))?;
        }
        s.producer = Some(s.produce());
        s.await_all_owned(Duration::from_secs(120)).await?;
        println!("{name}: {} members hold every shard", env.members);
        Ok(s)
    }

    fn produce(&self) -> tokio::task::JoinHandle<()> {
        let (kinesis, stream) = (self.env.kinesis.clone(), self.stream.clone());
        let (produced, producing) = (self.produced.clone(), self.producing.clone());
        let batch = (self.env.rate / 5).max(1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while producing.load(Ordering::SeqCst) {
                tick.tick().await;
                let from = produced.load(Ordering::SeqCst);
                match put_numbered(&kinesis, &stream, from..from + batch, KEYS).await {
                    Ok(()) => {
                        produced.store(from + batch, Ordering::SeqCst);
                    }
                    Err(e) => eprintln!("chaos: put failed, retrying: {e}"),
                }
            }
        })
    }

    fn spawn(&mut self, client_id: &str) -> Result<usize, Error> {
        let t = self.env.timings;
        let ms = |d: Duration| d.as_millis().to_string();
        let mut command = Command::new(&self.env.cli);
        command
            .arg("consume")
            .args(["--app", &self.app, "--table", &self.table_name])
            .args(["--stream", &self.stream, "--client-id", client_id])
            .args(["--from", "trim-horizon", "--format", "jsonl"])
            .args(["--commit-interval-ms", &ms(t.commit)])
            .args(["--sync-interval-ms", &ms(t.sync)])
            .args(["--failover-timeout-ms", &ms(t.failover)])
            .args(["--request-timeout-ms", &ms(t.request)])
            .args(["--kinesis-endpoint", &self.kinesis_proxy.url()])
            .args(["--dynamodb-endpoint", &self.store_proxy.url()]);
        self.runs.push(Run {
            client_id: client_id.to_owned(),
            member: Member::spawn(command)?,
            end: End::Running,
            disruption: None,
            woke: None,
        });
        Ok(self.runs.len() - 1)
    }

    /// The running run of `client_id` started last.
    fn live(&self, client_id: &str) -> Result<usize, Error> {
        self.runs
            .iter()
            .rposition(|r| r.end == End::Running && r.client_id == client_id)
            .ok_or_else(|| format!("no running member {client_id}").into())
    }

    async fn kill(&mut self, run: usize) -> Result<(), Error> {
        let r = &mut self.runs[run];
        r.member.signal(Signal::KILL)?;
        r.member.wait(EXIT_DEADLINE).await?;
        r.end = End::Killed;
        r.disruption = Some(Disruption::Killed);
        Ok(())
    }

    /// Each member item's incarnation token.
    async fn incarnations(&self) -> Result<BTreeMap<String, String>, Error> {
        let members = self.store.members().await?;
        Ok(members
            .into_iter()
            .filter_map(|m| Some((m.client_id, m.incarnation?)))
            .collect())
    }

    async fn leases(&self) -> Result<Vec<LeaseItem>, Error> {
        Ok(self.store.leases(&self.stream).await?)
    }

    /// The client id of the lock's owner.
    async fn leader(&self) -> Result<Option<String>, Error> {
        let lock = self.store.read_lock().await?;
        Ok(lock.and_then(|l| l.owner).map(|o| o.client_id))
    }

    /// The open shards of the stream, by starting hash key.
    async fn open_shards(&self) -> Result<Vec<Shard>, Error> {
        let out = self
            .env
            .kinesis
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await?;
        let mut open: Vec<Shard> = out
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .cloned()
            .collect();
        open.sort_by_key(|s| hash_range(s).0);
        Ok(open)
    }

    /// Waits until every open shard's lease names the current incarnation (its member
    /// item's) of a running member.
    async fn await_all_owned(&self, deadline: Duration) -> Result<(), Error> {
        let until = Instant::now() + deadline;
        loop {
            let members = self.store.members().await?;
            let current: Vec<Owner> = members
                .into_iter()
                .filter(|m| self.live(&m.client_id).is_ok())
                .filter_map(|m| {
                    m.incarnation.map(|token| Owner {
                        client_id: m.client_id,
                        token,
                    })
                })
                .collect();
            let open = self.open_shards().await?;
            let leases = self.leases().await?;
            let owned = open.iter().all(|shard| {
                leases.iter().any(|l| {
                    l.shard_id == shard.shard_id()
                        && l.owner.as_ref().is_some_and(|o| current.contains(o))
                })
            });
            if owned {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(
                    format!("{}: shards not all owned within {deadline:?}", self.name).into(),
                );
            }
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// Waits until some member delivered a record of `shard`.
    async fn await_read(&self, shard: &str, deadline: Duration) -> Result<(), Error> {
        let until = Instant::now() + deadline;
        while !self.runs.iter().any(|r| {
            let d = r.member.deliveries.lock().expect("lock");
            d.iter().any(|d| d.shard == shard)
        }) {
            if Instant::now() > until {
                return Err(format!("{}: {shard} not read within {deadline:?}", self.name).into());
            }
            tokio::time::sleep(SAMPLE).await;
        }
        Ok(())
    }

    fn note(&mut self, note: String) {
        println!("{}: {note}", self.name);
        self.notes.push(note);
    }

    // ----- faults -----

    /// SIGKILL a member and restart it under its client id, `kills` times, every 4 s.
    async fn kills(&mut self, kills: u64) -> Result<(), Error> {
        for i in 0..kills {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let id = format!("m{}", i % self.env.members);
            let run = self.live(&id)?;
            self.kill(run).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.spawn(&id)?;
        }
        self.note(format!("{kills} SIGKILL + restart"));
        self.await_all_owned(self.env.timings.failover * 6).await
    }

    /// SIGSTOP the leader until its unfinished shards moved (at least twice the failover
    /// timeout), then SIGCONT; waits until it notices (it logs its fencing).
    async fn zombie(&mut self) -> Result<(), Error> {
        let failover = self.env.timings.failover;
        let id = self.await_leader().await?;
        let run = self.live(&id)?;
        self.runs[run].member.signal(Signal::STOP)?;
        self.runs[run].disruption = Some(Disruption::Stopped);
        let stopped = Instant::now();
        let until = stopped + failover * 6;
        loop {
            tokio::time::sleep(SAMPLE).await;
            let named = self
                .leases()
                .await?
                .iter()
                .any(|l| !l.shard_end && l.owner.as_ref().is_some_and(|o| o.client_id == id));
            if !named && stopped.elapsed() > failover * 2 {
                break;
            }
            if Instant::now() > until {
                self.runs[run].member.signal(Signal::CONT)?;
                return Err(format!("{id}'s shards did not move while it was stopped").into());
            }
        }
        let woke = self.wake(run).await?;
        self.note(format!(
            "leader {id} stopped {:.1} s, its shards moved; fenced {:.1} s after SIGCONT",
            (woke - stopped).as_secs_f64(),
            woke.elapsed().as_secs_f64()
        ));
        self.await_all_owned(failover * 6).await
    }

    async fn await_leader(&self) -> Result<String, Error> {
        let until = Instant::now() + self.env.timings.failover * 6;
        loop {
            if let Some(id) = self.leader().await? {
                if self.live(&id).is_ok() {
                    return Ok(id);
                }
            }
            if Instant::now() > until {
                return Err("no running leader".into());
            }
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// Splits the first open shard at the middle of its hash range; waits until both
    /// children are read.
    async fn split(&mut self) -> Result<(), Error> {
        let open = self.open_shards().await?;
        let parent = open.first().ok_or("no open shard")?;
        let (low, high) = hash_range(parent);
        self.env
            .kinesis
            .split_shard()
            .stream_name(&self.stream)
            .shard_to_split(parent.shard_id())
            .new_starting_hash_key((low + (high - low) / 2 + 1).to_string())
            .send()
            .await?;
        let children = self.await_new_shards(&open).await?;
        for child in &children {
            self.await_read(child, Duration::from_secs(90)).await?;
        }
        self.note(format!(
            "split {} into {children:?}; both read",
            parent.shard_id()
        ));
        Ok(())
    }

    /// Merges the first two adjacent open shards; waits until the child is read.
    async fn merge(&mut self) -> Result<(), Error> {
        let open = self.open_shards().await?;
        let pair = open
            .windows(2)
            .find(|w| hash_range(&w[0]).1 + 1 == hash_range(&w[1]).0)
            .ok_or("no adjacent open shards")?;
        let (a, b) = (pair[0].shard_id().to_owned(), pair[1].shard_id().to_owned());
        self.env
            .kinesis
            .merge_shards()
            .stream_name(&self.stream)
            .shard_to_merge(&a)
            .adjacent_shard_to_merge(&b)
            .send()
            .await?;
        let children = self.await_new_shards(&open).await?;
        for child in &children {
            self.await_read(child, Duration::from_secs(90)).await?;
        }
        self.note(format!("merged {a} and {b} into {children:?}; read"));
        Ok(())
    }

    /// Waits for the stream to list open shards not in `before`, and returns them.
    async fn await_new_shards(&self, before: &[Shard]) -> Result<Vec<String>, Error> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let new: Vec<String> = self
                .open_shards()
                .await?
                .iter()
                .filter(|s| before.iter().all(|b| b.shard_id() != s.shard_id()))
                .map(|s| s.shard_id().to_owned())
                .collect();
            if !new.is_empty() {
                return Ok(new);
            }
            if Instant::now() > until {
                return Err("the reshard did not complete within 30 s".into());
            }
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// The members' state store refuses every connection for `refuse`, then stalls them
    /// for `stall`.
    /// A member gets SIGTERM while the store stalls and must exit 0; every other member,
    /// out longer than its fence deadline, must fence and rejoin as a new incarnation;
    /// the shards must then all be taken again.
    async fn store_outage(&mut self, refuse: Duration, stall: Duration) -> Result<(), Error> {
        let before = self.incarnations().await?;
        self.store_lost();
        self.store_proxy.set(TcpMode::Refuse);
        tokio::time::sleep(refuse).await;
        self.store_proxy.set(TcpMode::Stall);
        // One member is stopped while nothing answers: it must still exit 0.
        let (id, exited) = self.sigterm_last().await?;
        tokio::time::sleep(stall.saturating_sub(exited.1)).await;
        self.store_proxy.set(TcpMode::Pass);
        let to = Instant::now();
        self.spawn(&id)?;
        let until = to + self.env.timings.failover * 6;
        loop {
            let now = self.incarnations().await?;
            let rejoined = self.runs.iter().filter(|r| r.end == End::Running).all(|r| {
                now.get(&r.client_id)
                    .is_some_and(|token| before.get(&r.client_id) != Some(token))
            });
            if rejoined {
                break;
            }
            if Instant::now() > until {
                return Err("members did not rejoin after the state-store outage".into());
            }
            tokio::time::sleep(SAMPLE).await;
        }
        let rejoined = to.elapsed();
        self.await_all_owned(self.env.timings.failover * 6).await?;
        self.note(format!(
            "state store refused {:?} then stalled {:?}; {id} got SIGTERM meanwhile: {} after {:.1} s; every member rejoined {:.1} s and every shard was owned again {:.1} s after",
            refuse,
            stall,
            exited.0,
            exited.1.as_secs_f64(),
            rejoined.as_secs_f64(),
            to.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// SIGCONT a stopped run and wait until it logs its fencing (a failed verdict after
    /// 30 s); returns when it woke.
    async fn wake(&mut self, run: usize) -> Result<Instant, Error> {
        self.runs[run].member.signal(Signal::CONT)?;
        let woke = Instant::now();
        self.runs[run].woke = Some(woke);
        while self.runs[run].member.stderr_count("fenced") == 0 {
            if woke.elapsed() > Duration::from_secs(30) {
                let id = self.runs[run].client_id.clone();
                self.note(format!("FAIL: {id} did not fence within 30 s of SIGCONT"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(woke)
    }

    /// Marks every running run as out of the state store for a while.
    fn store_lost(&mut self) {
        for r in &mut self.runs {
            if r.end == End::Running && r.disruption.is_none() {
                r.disruption = Some(Disruption::StoreOutage);
            }
        }
    }

    /// SIGSTOP a member that is not the leader past its fence deadline but for less than
    /// the failover timeout, then SIGCONT: its shards have not moved yet, and it must fence
    /// itself on waking all the same.
    async fn pause(&mut self) -> Result<(), Error> {
        let leader = self.await_leader().await?;
        let id = (0..self.env.members)
            .map(|i| format!("m{i}"))
            .find(|id| *id != leader)
            .ok_or("no member besides the leader")?;
        let run = self.live(&id)?;
        let fence = self.env.timings.failover.mul_f64(0.75);
        let pause = (fence + self.env.timings.failover) / 2;
        self.runs[run].member.signal(Signal::STOP)?;
        self.runs[run].disruption = Some(Disruption::Stopped);
        tokio::time::sleep(pause).await;
        let woke = self.wake(run).await?;
        self.note(format!(
            "{id} stopped {pause:?} (fence deadline {fence:?}); fenced {:.1} s after SIGCONT",
            woke.elapsed().as_secs_f64()
        ));
        self.await_all_owned(self.env.timings.failover * 6).await
    }

    /// The state store flaps: stalled for `down`, reachable for `up`, `times` times.
    async fn flap(&mut self, down: Duration, up: Duration, times: u32) -> Result<(), Error> {
        for _ in 0..times {
            self.store_proxy.set(TcpMode::Stall);
            tokio::time::sleep(down).await;
            self.store_proxy.set(TcpMode::Pass);
            tokio::time::sleep(up).await;
        }
        self.store_lost();
        self.await_all_owned(self.env.timings.failover * 6).await?;
        self.note(format!(
            "the state store stalled {down:?} then passed {up:?}, {times} times"
        ));
        Ok(())
    }

    /// A slow network for `each`: every state-store request is held up to 1.5 × the
    /// members' request timeout (some land after the member gave up on them, out of
    /// order with later ones), Kinesis listings take up to 3 s and a third of the other
    /// Kinesis calls up to 1 s; the stream is split halfway through. Members may fence;
    /// the verdicts stay: nothing lost, order per key, never two readers, exit 0.
    async fn slow_network(&mut self, each: Duration) -> Result<(), Error> {
        let store_delay = self.env.timings.request.mul_f64(1.5);
        self.store_proxy.set(TcpMode::Delay(store_delay));
        self.kinesis_proxy.set(Some(HttpFaults {
            fault: HttpFault::Delay(Duration::from_secs(3)),
            fraction: 1.0,
            operations: &["ListShards", "DescribeStreamSummary"],
        }));
        self.store_lost();
        tokio::time::sleep(each / 2).await;
        let slow_reads = HttpFaults::all(HttpFault::Delay(Duration::from_secs(1)), 0.33);
        self.kinesis_proxy.set(Some(slow_reads));
        self.split().await?;
        tokio::time::sleep(each / 2).await;
        self.store_proxy.set(TcpMode::Pass);
        self.kinesis_proxy.set(None);
        let delayed = self.kinesis_proxy.counts().delayed.load(Ordering::Relaxed);
        self.await_all_owned(self.env.timings.failover * 6).await?;
        self.note(format!(
            "state-store requests held up to {store_delay:?} and {delayed} Kinesis calls delayed for {each:?}, a split halfway"
        ));
        Ok(())
    }

    /// Kinesis answers `fraction` of the calls with throttling for `each`, then with 500s.
    /// Halfway through the 500s, one member gets SIGTERM and must exit 0; it is
    /// restarted when the faults end.
    async fn kinesis_faults(&mut self, fraction: f64, each: Duration) -> Result<(), Error> {
        self.kinesis_proxy
            .set(Some(HttpFaults::all(HttpFault::Throttle, fraction)));
        tokio::time::sleep(each).await;
        self.kinesis_proxy
            .set(Some(HttpFaults::all(HttpFault::ServerError, fraction)));
        tokio::time::sleep(each / 2).await;
        let (id, exited) = self.sigterm_last().await?;
        tokio::time::sleep((each / 2).saturating_sub(exited.1)).await;
        self.kinesis_proxy.set(None);
        self.spawn(&id)?;
        self.note(format!(
            "{:.0} % of Kinesis calls throttled for {each:?}, then 500 for {each:?}; {id} got SIGTERM meanwhile: {} after {:.1} s",
            fraction * 100.0,
            exited.0,
            exited.1.as_secs_f64()
        ));
        Ok(())
    }

    /// SIGTERM to the last member; returns its client id, and how it exited and when.
    async fn sigterm_last(&mut self) -> Result<(String, (String, Duration)), Error> {
        let id = format!("m{}", self.env.members - 1);
        let run = self.live(&id)?;
        let asked = Instant::now();
        let code = self.runs[run].member.terminate(EXIT_DEADLINE).await?;
        self.runs[run].end = code.map_or(End::Hung, End::Terminated);
        let exit = code.map_or("no exit".into(), exit_text);
        Ok((id, (exit, asked.elapsed())))
    }

    /// SIGKILL the leader and restart it at once under its client id, `times` times.
    async fn leader_restarts(&mut self, times: u64) -> Result<(), Error> {
        for _ in 0..times {
            let id = self.await_leader().await?;
            let term = self.store.read_lock().await?.map_or(0, |l| l.term);
            let run = self.live(&id)?;
            self.kill(run).await?;
            self.spawn(&id)?;
            let until = Instant::now() + self.env.timings.failover * 6;
            while self.store.read_lock().await?.map_or(0, |l| l.term) <= term {
                if Instant::now() > until {
                    return Err("no new leader term after the leader's restart".into());
                }
                tokio::time::sleep(SAMPLE).await;
            }
            self.await_all_owned(self.env.timings.failover * 6).await?;
        }
        self.note(format!(
            "leader SIGKILLed and restarted under its id {times} times; a new term each time"
        ));
        Ok(())
    }

    /// A second process under a live member's client id: one of the two stops by itself
    /// (the older, DESIGN §10 scenario 7), and leases do not ping-pong afterwards.
    async fn twin(&mut self) -> Result<(), Error> {
        let id = "m0";
        let older = self.live(id)?;
        let newer = self.spawn(id)?;
        let until = Instant::now() + self.env.timings.failover * 6;
        let stopped = loop {
            let mut alone = None;
            for run in [older, newer] {
                if let Some(code) = self.runs[run].member.exited()? {
                    alone = Some((run, code));
                }
            }
            if let Some(found) = alone {
                break found;
            }
            if Instant::now() > until {
                return Err("neither process under one client id stopped".into());
            }
            tokio::time::sleep(SAMPLE).await;
        };
        let (run, code) = stopped;
        let r = &mut self.runs[run];
        r.member.wait(EXIT_DEADLINE).await?;
        r.end = End::Alone(code);
        r.disruption = Some(Disruption::Superseded);
        let which = if run == older { "older" } else { "newer" };
        let said = r.member.stderr_count("another process") > 0;
        if run != older || code != Some(1) || !said {
            self.note(format!(
                "FAIL: the {which} process under {id} stopped ({}, said so: {said})",
                exit_text(code)
            ));
        }
        self.await_all_owned(self.env.timings.failover * 6).await?;
        tokio::time::sleep(self.env.timings.sync * 3).await;
        let counters =
            |leases: Vec<LeaseItem>| -> u64 { leases.iter().filter_map(|l| l.lease_counter).sum() };
        let before = counters(self.leases().await?);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let moves = counters(self.leases().await?) - before;
        self.note(format!(
            "the {which} process under {id} stopped ({}); lease counter moves in the 10 s after: {moves}",
            exit_text(code)
        ));
        if moves > 2 * self.env.shards as u64 {
            self.note("FAIL: leases ping-pong between the two processes".into());
        }
        Ok(())
    }

    // ----- the end -----

    /// Writes every run's stderr, and the leases and lock as they are now, to files
    /// under the system's temporary directory, for the diagnosis of a failure.
    async fn dump(&self) {
        let dir = std::env::temp_dir().join(&self.app);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        for (i, run) in self.runs.iter().enumerate() {
            let lines = run.member.stderr.lock().expect("lock").join("\n");
            let _ = std::fs::write(dir.join(format!("run{i}-{}.log", run.client_id)), lines);
        }
        let state = format!(
            "{:#?}\n{:#?}\n{:#?}",
            self.store.read_lock().await,
            self.store.members().await,
            self.leases().await
        );
        let _ = std::fs::write(dir.join("state.txt"), state);
        println!("{}: logs and state in {}", self.name, dir.display());
    }

    /// Stops the producer, waits until every record is delivered, SIGTERMs every member,
    /// and judges the run.
    async fn finish(&mut self) -> Result<Report, Error> {
        self.producing.store(false, Ordering::SeqCst);
        if let Some(producer) = self.producer.take() {
            producer.await?;
        }
        let produced = self.produced.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(180);
        while self.lost(produced) > 0 && Instant::now() < until {
            tokio::time::sleep(SAMPLE).await;
        }
        for r in &mut self.runs {
            if r.end != End::Running {
                continue;
            }
            if let Some(code) = r.member.exited()? {
                r.member.wait(EXIT_DEADLINE).await?;
                r.end = End::Alone(code);
            } else {
                r.end = match r.member.terminate(EXIT_DEADLINE).await? {
                    Some(code) => End::Terminated(code),
                    None => End::Hung,
                };
            }
        }
        // Let the sampler see the last commits of the graceful exits.
        tokio::time::sleep(SAMPLE * 3).await;
        self.sampler.abort();
        let report = self.judge(produced);
        let _ = delete_stream(&self.env.kinesis, &self.stream).await;
        Ok(report)
    }

    fn lost(&self, produced: u64) -> u64 {
        let runs: Vec<Vec<Delivery>> = self.runs.iter().map(Run::deliveries).collect();
        check::lost(produced, runs.iter().map(Vec::as_slice))
    }

    fn judge(&self, produced: u64) -> Report {
        let table = self.table.lock().expect("lock");
        let runs: Vec<Vec<Delivery>> = self.runs.iter().map(Run::deliveries).collect();
        let slices = || runs.iter().map(Vec::as_slice);
        let disrupted = |r: &Run| r.disruption.is_some() || r.lost_a_lease();
        let mut report = Report {
            scenario: self.name.clone(),
            secs: self.started.elapsed().as_secs(),
            produced,
            delivered: runs.iter().map(|r| r.len() as u64).sum(),
            lost: check::lost(produced, slices()),
            duplicates: check::duplicates(slices()),
            disorder: runs.iter().map(|r| check::order_violations(r)).sum(),
            regressions: table.regressions.len() as u64,
            runs: self.runs.len(),
            throttled: self
                .kinesis_proxy
                .counts()
                .throttled
                .load(Ordering::Relaxed),
            server_errors: self
                .kinesis_proxy
                .counts()
                .server_errors
                .load(Ordering::Relaxed),
            notes: self.notes.clone(),
            ..Report::default()
        };
        // The bound: what disrupted runs delivered and their tenure never committed.
        for (run, deliveries) in self.runs.iter().zip(&runs) {
            if disrupted(run) {
                report.duplicate_bound += deliveries
                    .iter()
                    .filter(|d| table.uncommitted(d, &run.client_id))
                    .count() as u64;
            }
        }
        // Each record delivered again must have been delivered first by a disrupted run.
        let mut all: Vec<(usize, &Delivery)> = runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.iter().map(move |d| (i, d)))
            .collect();
        all.sort_by_key(|(_, d)| d.at);
        let mut first: HashMap<u64, usize> = HashMap::new();
        for (i, d) in all {
            match first.entry(d.n) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(e) => {
                    report.unexplained_duplicates += u64::from(!disrupted(&self.runs[*e.get()]));
                    report.committed_again += u64::from(table.committed_before(d));
                }
            }
        }
        for (run, deliveries) in self.runs.iter().zip(&runs) {
            for d in deliveries {
                if table.foreign(&d.shard, &run.client_id, d.at) {
                    let window = self.env.timings.failover;
                    if run.woke.is_some_and(|w| d.at >= w && d.at <= w + window) {
                        report.zombie_window += 1;
                    } else {
                        report.foreign += 1;
                    }
                }
            }
            report.lease_losses +=
                (run.member.stderr_count("lease of") + run.member.stderr_count("commit of")) as u64;
            report.fencings += run.member.stderr_count("fenced:") as u64;
            report.panics += run.member.stderr_count("panicked") as u64;
            let bad = match run.end {
                End::Terminated(code) => code != Some(0),
                End::Hung => true,
                End::Alone(_) => run.disruption != Some(Disruption::Superseded),
                End::Running | End::Killed => false,
            };
            report.bad_exits += bad as u64;
        }
        if !table.regressions.is_empty() {
            report.notes.push(format!(
                "FAIL: checkpoint regressions: {:?}",
                table.regressions
            ));
        }
        if table.read_errors > 0 {
            report
                .notes
                .push(format!("{} table samples failed", table.read_errors));
        }
        report
    }
}

/// An exit status as text: `exit 0`, or `killed by a signal`.
fn exit_text(code: Option<i32>) -> String {
    code.map_or("killed by a signal".into(), |c| format!("exit {c}"))
}

/// A shard's hash key range.
fn hash_range(shard: &Shard) -> (u128, u128) {
    let range = shard.hash_key_range();
    let parse = |s: Option<&str>| s.and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        parse(range.map(|r| r.starting_hash_key())),
        parse(range.map(|r| r.ending_hash_key())),
    )
}

async fn scenario(env: &Env, name: &str) -> Result<Report, Error> {
    let mut s = Scenario::start(env, name).await?;
    let settle = env.timings.failover;
    tokio::time::sleep(settle).await;
    if let Err(e) = faults(&mut s, name).await {
        s.dump().await;
        return Err(e);
    }
    tokio::time::sleep(settle).await;
    let report = s.finish().await?;
    if !report.passed() || std::env::args().any(|a| a == "--keep-logs") {
        s.dump().await;
    }
    Ok(report)
}

async fn faults(s: &mut Scenario<'_>, name: &str) -> Result<(), Error> {
    match name {
        "kill" => s.kills(s.env.kills).await,
        "zombie" => s.zombie().await,
        "reshard" => {
            s.split().await?;
            s.merge().await
        }
        "store-outage" => {
            let half = Duration::from_secs(arg("--outage-secs", 20)) / 2;
            s.store_outage(half, half).await
        }
        "kinesis-faults" => {
            let fraction = arg("--fault-percent", 70) as f64 / 100.0;
            let each = Duration::from_secs(arg("--fault-secs", 15));
            s.kinesis_faults(fraction, each).await
        }
        "leader-restart" => s.leader_restarts(3).await,
        "pause" => s.pause().await,
        "flap" => {
            let fence = s.env.timings.failover.mul_f64(0.75);
            s.flap(fence / 2, Duration::from_secs(2), 5).await?;
            s.flap(fence + Duration::from_secs(1), Duration::from_secs(2), 3)
                .await
        }
        "twin" => s.twin().await,
        "slow-network" => {
            s.slow_network(Duration::from_secs(arg("--slow-secs", 20)))
                .await
        }
        "mixed" => {
            s.kinesis_faults(0.5, Duration::from_secs(8)).await?;
            s.kills(3).await?;
            s.split().await?;
            s.zombie().await?;
            s.store_outage(Duration::from_secs(10), Duration::from_secs(10))
                .await?;
            s.merge().await?;
            s.leader_restarts(1).await
        }
        other => Err(format!("unknown scenario {other}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ms = |name, default| Duration::from_millis(arg(name, default));
    let env = Env {
        kinesis: aws_sdk_kinesis::Client::new(&sdk),
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        cli: std::env::current_exe()?.with_file_name("kinesumer"),
        kinesis_upstream: endpoint("AWS_ENDPOINT_URL_KINESIS")?,
        dynamodb_upstream: endpoint("AWS_ENDPOINT_URL_DYNAMODB")?,
        timings: Timings {
            sync: ms("--sync-ms", 1000),
            failover: ms("--failover-ms", 8000),
            request: ms("--request-ms", 1000),
            commit: ms("--commit-ms", 1000),
        },
        members: arg("--members", 3),
        shards: arg("--shards", 4) as i32,
        rate: arg("--rate", 40),
        kills: arg("--kills", 12),
    };
    let chosen = arg_str("--scenario").unwrap_or_else(|| "mixed".into());
    let names: Vec<&str> = match chosen.as_str() {
        "all" => vec![
            "kill",
            "zombie",
            "reshard",
            "store-outage",
            "kinesis-faults",
            "leader-restart",
            "twin",
            "pause",
            "flap",
            "slow-network",
            "mixed",
        ],
        one => vec![one],
    };
    println!("chaos: {names:?}, timings {:?}", env.timings);
    let mut reports = Vec::new();
    for name in names {
        let report = scenario(&env, name).await?;
        report.print();
        reports.push(report);
    }
    println!("\n| scenario | s | produced | lost | dups | bound | order | ckpt back | foreign | lease losses | fencings | panics | bad exits | verdict |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.secs,
            r.produced,
            r.lost,
            r.duplicates,
            r.duplicate_bound,
            r.disorder,
            r.regressions,
            r.foreign,
            r.lease_losses,
            r.fencings,
            r.panics,
            r.bad_exits,
            if r.passed() { "pass" } else { "FAIL" }
        );
    }
    Ok(if reports.iter().all(Report::passed) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
