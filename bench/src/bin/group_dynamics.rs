//! Group dynamics and coordination cost at the default settings, on the local stack.
//!
//! ```text
//! scripts/local-stack start && eval "$(scripts/local-stack env)"
//! cargo run --release -p kinesumer-bench --bin group_dynamics [-- --runs 5 --idle-secs 30]
//! ```
//!
//! Measures, each as the median (min–max) of `--runs` runs on fresh streams:
//! - graceful handoff: a member of three closes → every shard it held is taken by another;
//! - crash takeover: a member of three that does not lead is dropped without closing (as
//!   SIGKILL: no release, no leave) → every shard it held is taken by another;
//! - leader crash takeover: the same, of the member that leads (DESIGN "a successor knows
//!   the old leader": it should cost what any member's crash costs);
//! - join: a fourth member starts → it holds its full share.
//!
//! - resharding: a split of one shard while two members consume → the first record read
//!   from a child, and the state-store requests the group made meanwhile.
//!
//! Times are read from the state store (a lease take is when reading starts), polled every
//! 20 ms. Then the state-store requests per member per tick, leader and non-leader, from
//! the store layer's counters over `--idle-secs` of an idle and of a loaded group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kinesumer::store::{
    create_table, DynamoStore, Operation, RequestCounts, StateStore, TableBilling,
};
use kinesumer::{Config, InitialPosition, Kinesumer};

const SHARDS: i32 = 6;
const POLL: Duration = Duration::from_millis(20);

use kinesumer_bench::{arg, create_stream, delete_stream, summary, Error};

struct Group {
    app: String,
    stream: String,
    store: DynamoStore,
    members: Vec<Arc<Kinesumer>>,
}

struct Bench {
    kinesis: aws_sdk_kinesis::Client,
    store_client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Bench {
    async fn stream(&self) -> Result<String, Error> {
        let name = format!("bench-{:08x}", rand::random::<u32>());
        create_stream(&self.kinesis, &name, SHARDS).await?;
        Ok(name)
    }

    async fn delete(&self, stream: &str) {
        let _ = delete_stream(&self.kinesis, stream).await;
    }

    async fn member(&self, app: &str, id: &str, stream: &str) -> Result<Arc<Kinesumer>, Error> {
        let config = Config::builder(app, &self.table)
            .client_id(id)
            .initial_position(InitialPosition::TrimHorizon)
            .build()?;
        let member = Arc::new(Kinesumer::new(config).await?);
        let mut records = member.consume([stream]).await?;
        tokio::spawn(async move { while records.next().await.is_some() {} });
        Ok(member)
    }

    /// Three members of a new app on a new stream, balanced, and left a few ticks to
    /// settle so a measurement starts from a steady group.
    async fn settled_group(&self) -> Result<Group, Error> {
        let app = format!("app-{:08x}", rand::random::<u32>());
        let stream = self.stream().await?;
        let store = self.store(&app);
        let mut members = Vec::new();
        for id in ["m1", "m2", "m3"] {
            members.push(self.member(&app, id, &stream).await?);
        }
        until(&store, &stream, Instant::now(), |o| balanced(o, 3)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Group {
            app,
            stream,
            store,
            members,
        })
    }

    fn store(&self, app: &str) -> DynamoStore {
        DynamoStore::new(self.store_client.clone(), &self.table, app)
    }
}

/// Shard → owner client id, for every lease.
async fn owners(
    store: &DynamoStore,
    stream: &str,
) -> Result<BTreeMap<String, Option<String>>, Error> {
    Ok(store
        .leases(stream)
        .await?
        .into_iter()
        .map(|l| (l.shard_id, l.owner.map(|o| o.client_id)))
        .collect())
}

/// Waits until `done(owners)` holds; returns the elapsed time since `since`.
async fn until(
    store: &DynamoStore,
    stream: &str,
    since: Instant,
    done: impl Fn(&BTreeMap<String, Option<String>>) -> bool,
) -> Result<Duration, Error> {
    let deadline = since + Duration::from_secs(60);
    loop {
        if done(&owners(store, stream).await?) {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            return Err("the group did not settle within 60 s".into());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn balanced(owners: &BTreeMap<String, Option<String>>, members: usize) -> bool {
    if owners.len() != SHARDS as usize || owners.values().any(Option::is_none) {
        return false;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in owners.values().flatten() {
        *counts.entry(o).or_default() += 1;
    }
    let (min, max) = (counts.values().min(), counts.values().max());
    counts.len() == members && max.zip(min).is_some_and(|(a, b)| a - b <= 1)
}

#[derive(Clone, Copy)]
enum Leave {
    Close,
    Crash,
    CrashLeader,
}

/// One run: three members balance; one leaves as `how` (the leader for
/// [`Leave::CrashLeader`], a member that does not lead otherwise); returns the time until
/// all of its shards are held by the others.
async fn leave_run(b: &Bench, how: Leave) -> Result<Duration, Error> {
    let Group {
        stream,
        store,
        mut members,
        ..
    } = b.settled_group().await?;
    let leads = matches!(how, Leave::CrashLeader);
    let index = members
        .iter()
        .position(|m| m.is_leader() == leads)
        .ok_or("no member of that role")?;
    let leaver = members.remove(index);
    let gone = leaver.client_id().to_owned();
    let started = Instant::now();
    match how {
        Leave::Close => leaver.close().await?,
        Leave::Crash | Leave::CrashLeader => drop(leaver),
    }
    let took = until(&store, &stream, started, |o| {
        balanced(o, 2) && o.values().flatten().all(|id| *id != gone)
    })
    .await?;
    for m in members {
        m.close().await?;
    }
    b.delete(&stream).await;
    Ok(took)
}

async fn join_run(b: &Bench) -> Result<Duration, Error> {
    let Group {
        app,
        stream,
        store,
        mut members,
    } = b.settled_group().await?;
    let started = Instant::now();
    members.push(b.member(&app, "m4", &stream).await?);
    let took = until(&store, &stream, started, |o| balanced(o, 4)).await?;
    for m in members {
        m.close().await?;
    }
    b.delete(&stream).await;
    Ok(took)
}

/// Prints the median (min–max) of durations, in milliseconds.
fn summary_ms(name: &str, runs: Vec<Duration>) {
    summary(
        name,
        "ms",
        runs.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
    );
}

/// Requests per member per tick over `secs`, with `load` records/s produced.
async fn cost(b: &Bench, secs: u64, load: bool) -> Result<(), Error> {
    let Group {
        stream, members, ..
    } = b.settled_group().await?;
    let before: Vec<RequestCounts> = members.iter().map(|m| m.requests()).collect();
    let started = Instant::now();
    let producer = load.then(|| {
        let kinesis = b.kinesis.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let _ = kinesis
                    .put_record()
                    .stream_name(&stream)
                    .partition_key(format!("k{}", i % 64))
                    .data(aws_sdk_kinesis::primitives::Blob::new(vec![b'x'; 200]))
                    .send()
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = started.elapsed();
    if let Some(p) = producer {
        p.abort();
    }
    let ticks = elapsed.as_secs_f64() / members[0].config().sync_interval().as_secs_f64();
    let label = if load {
        "under load (50 rec/s)"
    } else {
        "idle"
    };
    for (m, before) in members.iter().zip(&before) {
        let used = m.requests().since(before);
        let role = if m.is_leader() { "leader" } else { "member" };
        let per_tick = used.total() as f64 / ticks;
        let checkpoints = used.get(Operation::Checkpoint) as f64 / ticks;
        println!(
            "{label:<22} {} ({role:<6}) {per_tick:>5.2} requests/tick ({checkpoints:.2} checkpoint writes/tick)  {:?}",
            m.client_id(),
            used.0
        );
    }
    for m in members {
        m.close().await?;
    }
    b.delete(&stream).await;
    Ok(())
}

/// One split: the time from SplitShard to the first record read from a child, and the
/// state-store requests of both members in that time beyond their steady ticks.
async fn reshard_run(b: &Bench) -> Result<(Duration, u64, u64), Error> {
    let app = format!("app-{:08x}", rand::random::<u32>());
    let name = format!("bench-{:08x}", rand::random::<u32>());
    create_stream(&b.kinesis, &name, 1).await?;
    let first_child: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut members = Vec::new();
    for id in ["m1", "m2"] {
        let config = Config::builder(&app, &b.table)
            .client_id(id)
            .initial_position(InitialPosition::TrimHorizon)
            .build()?;
        let member = Arc::new(Kinesumer::new(config).await?);
        let mut records = member.consume([name.as_str()]).await?;
        let seen = first_child.clone();
        tokio::spawn(async move {
            while let Some(r) = records.next().await {
                if &*r.shard_id != "shardId-000000000000" {
                    seen.lock().expect("lock").get_or_insert_with(Instant::now);
                }
            }
        });
        members.push(member);
    }
    let store = b.store(&app);
    until(&store, &name, Instant::now(), |o| {
        o.len() == 1 && o.values().all(Option::is_some)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<RequestCounts> = members.iter().map(|m| m.requests()).collect();
    let started = Instant::now();
    b.kinesis
        .split_shard()
        .stream_name(&name)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await?;
    let producer = {
        let kinesis = b.kinesis.clone();
        let name = name.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let _ = kinesis
                    .put_record()
                    .stream_name(&name)
                    .partition_key(format!("k{i}"))
                    .data(aws_sdk_kinesis::primitives::Blob::new(vec![b'x'; 100]))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let deadline = started + Duration::from_secs(30);
    let took = loop {
        if let Some(t) = *first_child.lock().expect("lock") {
            break t - started;
        }
        if Instant::now() > deadline {
            return Err("no child record within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    producer.abort();
    let elapsed = started.elapsed();
    let ticks = elapsed.as_secs_f64() / members[0].config().sync_interval().as_secs_f64();
    let used: u64 = members
        .iter()
        .zip(&before)
        .map(|(m, b)| m.requests().since(b).total())
        .sum();
    // What two members spend in as many ticks when nothing happens: 2 (+3 for the leader).
    let steady = (ticks * (2.0 + 2.0 + 3.0)).round() as u64;
    for m in members {
        m.close().await?;
    }
    b.delete(&name).await;
    Ok((took, used, steady))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let runs = arg("--runs", 5) as usize;
    let idle_secs = arg("--idle-secs", 30);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let b = Bench {
        kinesis: aws_sdk_kinesis::Client::new(&sdk),
        store_client: aws_sdk_dynamodb::Client::new(&sdk),
        table: format!("kinesumer-bench-{:08x}", rand::random::<u32>()),
    };
    create_table(&b.store_client, &b.table, TableBilling::OnDemand).await?;
    let mut handoff = Vec::new();
    let mut crash = Vec::new();
    let mut leader_crash = Vec::new();
    let mut join = Vec::new();
    for _ in 0..runs {
        handoff.push(leave_run(&b, Leave::Close).await?);
        crash.push(leave_run(&b, Leave::Crash).await?);
        leader_crash.push(leave_run(&b, Leave::CrashLeader).await?);
        join.push(join_run(&b).await?);
    }
    summary_ms("graceful handoff", handoff);
    summary_ms("crash takeover", crash);
    summary_ms("leader crash takeover", leader_crash);
    summary_ms("join to full share", join);
    let mut reshard = Vec::new();
    for _ in 0..runs {
        let (took, used, steady) = reshard_run(&b).await?;
        println!(
            "split → first child record {:>6.0} ms; state-store requests meanwhile {used} (steady ticks alone ≈ {steady})",
            took.as_secs_f64() * 1000.0
        );
        reshard.push(took);
    }
    summary_ms("split to child record", reshard);
    cost(&b, idle_secs, false).await?;
    cost(&b, idle_secs, true).await?;
    Ok(())
}
