//! Balancing by load with whole members (simulation, `balance = load`): members measure
//! and report, the leader moves shards off the member holding a hot shard, and nothing
//! is lost or delivered twice by the moves.

use std::time::Duration;

use crate::config::{Balancing, ConfigBuilder};
use crate::event::{Event, MoveReason};
use crate::sim::Sim;

const HOT: &str = "shardId-000000000000";

fn by_load(c: ConfigBuilder) -> ConfigBuilder {
    c.balance(Balancing::Load)
        .load_window(Duration::from_secs(2))
}

/// The shards `name` holds.
fn held(sim: &Sim, name: &str) -> usize {
    sim.member(name).consumer.held_shards().len()
}

/// Who holds the hot shard.
fn hot_holder(sim: &Sim) -> Option<String> {
    sim.names().into_iter().find(|n| {
        let held = sim.member(n).consumer.held_shards();
        held.iter().any(|s| s.shard_id == HOT)
    })
}

#[tokio::test(start_paused = true)]
async fn a_hot_shards_holder_ends_up_with_fewer_shards() {
    let mut sim = Sim::new(21, &[("s", 6)]);
    for name in ["a", "b", "c"] {
        sim.start_with(name, &["s"], by_load).await;
    }
    sim.wait_for("every shard read", Duration::from_secs(30), |s| {
        s.unread().is_empty()
    })
    .await;

    // The hot shard gets ten times the records of each other shard, for 30 s.
    let shards: Vec<String> = (0..6).map(|i| format!("shardId-{i:012}")).collect();
    for _ in 0..300 {
        for shard in &shards {
            let n = if shard == HOT { 10 } else { 1 };
            sim.put_only_on("s", shard, n);
        }
        sim.run_for(Duration::from_millis(100)).await;
    }
    let hot = hot_holder(&sim).expect("the hot shard is held");
    let others: Vec<String> = sim.names().into_iter().filter(|n| *n != hot).collect();
    assert!(
        others.iter().all(|n| held(&sim, &hot) < held(&sim, n)),
        "the hot shard's holder has fewer shards than every other member\n{}",
        sim.describe()
    );
    let load_moves = sim
        .names()
        .iter()
        .map(|n| {
            sim.member(n).count_events(|e| {
                matches!(
                    e,
                    Event::ShardMoved {
                        reason: MoveReason::Load,
                        ..
                    }
                )
            })
        })
        .sum::<usize>();
    assert!(load_moves > 0, "the moves were made and explained as load");

    sim.wait_for("every record handed out", Duration::from_secs(30), |s| {
        s.lost().is_empty()
    })
    .await;
    assert_eq!(sim.duplicates(), 0, "a planned move delivers nothing twice");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// How many `UnplannedShards { count }` events the members have sent (the leader sends
/// them).
fn unplanned_events(sim: &Sim, count: usize) -> usize {
    sim.names()
        .iter()
        .map(|n| {
            sim.member(n)
                .count_events(|e| matches!(e, Event::UnplannedShards { count: c } if *c == count))
        })
        .sum()
}

/// Members at their `max_shards` leave shards unplanned: the leader says how many once,
/// and says so again when a member with room joins and every shard is read.
#[tokio::test(start_paused = true)]
async fn shards_no_member_has_room_for_are_announced_until_one_has() {
    let mut sim = Sim::new(22, &[("s", 4)]);
    for name in ["a", "b"] {
        sim.start_with(name, &["s"], |c| c.max_shards(1)).await;
    }
    sim.wait_for("two shards read", Duration::from_secs(30), |s| {
        s.unread().len() == 2
    })
    .await;
    sim.wait_for("the shortfall announced", Duration::from_secs(30), |s| {
        unplanned_events(s, 2) == 1
    })
    .await;
    sim.run_for(Duration::from_secs(5)).await;
    assert_eq!(
        unplanned_events(&sim, 2),
        1,
        "announced once, not every tick"
    );
    assert!(
        ["a", "b"].iter().all(|n| held(&sim, n) == 1),
        "{}",
        sim.describe()
    );

    sim.start("c", &["s"]).await;
    sim.wait_for("every shard read", Duration::from_secs(30), |s| {
        s.unread().is_empty()
    })
    .await;
    sim.wait_for(
        "the end of the shortfall announced",
        Duration::from_secs(30),
        |s| unplanned_events(s, 0) == 1,
    )
    .await;
    assert!(
        ["a", "b"].iter().all(|n| held(&sim, n) <= 1),
        "{}",
        sim.describe()
    );
}
