//! DESIGN §10's failure scenarios of the group protocol, one test each, on the
//! simulation harness ([`crate::sim`]): real members, in-memory stores, tokio's paused
//! clock. Every wait has a deadline, and every [`Sim::wait_for`] and [`Sim::run_for`]
//! checks exclusivity and checkpoint monotonicity as it goes; each test ends by checking
//! that no record was lost and no shard is left unread.

use std::time::Duration;

use crate::event::Event;
use crate::sim::{Fault, Latch, Sim};
use crate::store::{Operation, StateStore};
use crate::InitialPosition;

pub(super) const S: &str = "orders";
pub(super) const LONG: Duration = Duration::from_secs(60);

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The failover timeout of the default configuration.
pub(super) fn failover() -> Duration {
    Sim::config("x").build().unwrap().failover_timeout()
}

/// A group of `names` sharing `shards` shards of [`S`], every shard read.
pub(super) async fn group(shards: usize, names: &[&str]) -> Sim {
    let mut sim = Sim::new(1, &[(S, shards)]);
    for name in names {
        sim.start(name, &[S]).await;
    }
    settled(&sim).await;
    sim
}

pub(super) async fn settled(sim: &Sim) {
    sim.wait_for("every shard read", LONG, |s| s.unread().is_empty())
        .await;
}

/// Puts records, then checks that every record put so far was handed out and every shard
/// is read by a running member.
pub(super) async fn nothing_lost(sim: &mut Sim) {
    sim.put(S, 20);
    settled(sim).await;
    sim.wait_for("every record handed out", LONG, |s| s.lost().is_empty())
        .await;
    assert!(sim.violations().is_empty());
}

pub(super) fn fenced(sim: &Sim, name: &str) -> usize {
    sim.member(name)
        .count_events(|e| matches!(e, Event::Fenced { .. }))
}

pub(super) fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

pub(super) fn rule(op: Operation, fault: Fault) -> crate::sim::Rule {
    crate::sim::Rule::new(op, fault)
}

/// Tenures (leases) `name` handed records out under before `until`.
fn tenures_before(sim: &Sim, name: &str, until: Duration) -> Vec<u64> {
    let mut t: Vec<u64> = sim
        .monitor()
        .handouts()
        .iter()
        .filter(|h| h.member == name && h.at <= until)
        .map(|h| h.tenure)
        .collect();
    t.dedup();
    t
}

/// No hand-out by `name` after `since` under a tenure it used before `since`.
fn no_old_tenure_after(sim: &Sim, name: &str, since: Duration) {
    let old = tenures_before(sim, name, since);
    let late: Vec<_> = sim
        .monitor()
        .handouts()
        .into_iter()
        .filter(|h| h.member == name && h.at > since && old.contains(&h.tenure))
        .collect();
    assert!(late.is_empty(), "handed out under old leases: {late:?}");
}

// 1. A slow owner commits between the new owner's read and its take.
#[tokio::test(start_paused = true)]
async fn s01_take_starts_from_the_checkpoint_the_take_returned() {
    let mut sim = group(1, &["a", "b"]).await;
    let owner = if sim.member("a").consumer.held_shards().is_empty() {
        "b"
    } else {
        "a"
    };
    let taker = if owner == "a" { "b" } else { "a" };
    sim.put(S, 10);
    sim.wait_for("first batch", LONG, |s| s.lost().is_empty())
        .await;
    // The owner's next checkpoint write is held in the network; the owner then stops.
    let slow = Latch::new();
    sim.member(owner)
        .store
        .push(rule(Operation::Checkpoint, Fault::Hold(slow.clone())));
    sim.put(S, 1);
    sim.wait_for("the owner's write is in flight", LONG, |s| {
        s.member(owner)
            .store
            .sent()
            .iter()
            .any(|r| matches!(r.fault, Some(Fault::Hold(_))))
    })
    .await;
    sim.pause(owner);
    // The taker reads the lease, and its take is held until the slow write landed.
    let take = Latch::new();
    sim.member(taker)
        .store
        .push(rule(Operation::TakeLease, Fault::Hold(take.clone())));
    sim.wait_for("the taker's take is in flight", LONG, |s| {
        s.member(taker)
            .store
            .sent()
            .iter()
            .any(|r| r.request.op == Operation::TakeLease)
    })
    .await;
    slow.release();
    sim.run_for(Duration::from_millis(100)).await;
    let checkpointed = sim
        .monitor()
        .landings()
        .iter()
        .any(|l| l.member == owner && l.request.op == Operation::Checkpoint && l.ok);
    assert!(
        checkpointed,
        "the slow owner's write landed before the take"
    );
    let lease = sim.store().lease(S, &shard_id(0)).await.unwrap().unwrap();
    let landed = lease.checkpoint.expect("a checkpoint").sequence;
    take.release();
    sim.wait_for("the taker reads", LONG, |s| {
        s.member(taker).consumer.held_shards().len() == 1
    })
    .await;
    sim.crash(owner);
    nothing_lost(&mut sim).await;
    let early: Vec<_> = sim
        .monitor()
        .handouts()
        .into_iter()
        .filter(|h| {
            h.member == taker && h.sequence.parse::<crate::SequenceNumber>().unwrap() <= landed
        })
        .collect();
    assert!(
        early.is_empty(),
        "the taker starts after the checkpoint its take returned ({landed}): {early:?}"
    );
}

// 2. Leadership moves A → B → A.
#[tokio::test(start_paused = true)]
async fn s02_a_returning_leader_rewrites_every_plan_and_a_deposed_one_is_refused() {
    let mut sim = group(4, &["a", "b"]).await;
    assert_eq!(sim.leader().as_deref(), Some("a"));
    // A pauses: B takes the lock.
    sim.pause("a");
    sim.wait_for("a new leader", LONG, |s| {
        s.leader().is_some_and(|l| l != "a")
    })
    .await;
    let second = sim.leader().unwrap();
    // The second leader's next plan write is held in the network, then it pauses.
    let late = Latch::new();
    sim.member(&second)
        .store
        .push(rule(Operation::WritePlan, Fault::Hold(late.clone())));
    sim.resume("a");
    sim.put(S, 4);
    sim.wait_for("a held plan write", LONG, |s| {
        s.member(&second)
            .store
            .sent()
            .iter()
            .any(|r| matches!(r.fault, Some(Fault::Hold(_))))
    })
    .await;
    sim.pause(&second);
    sim.wait_for("a leads again", LONG, |s| {
        s.leader().as_deref() == Some("a")
    })
    .await;
    let relead = sim.now();
    late.release();
    sim.run_for(secs(1)).await;
    let landings = sim.monitor().landings();
    let deposed: Vec<_> = landings
        .iter()
        .filter(|l| l.member == second && l.request.op.is_write() && l.at >= relead)
        .collect();
    assert!(
        deposed
            .iter()
            .any(|l| l.request.op == Operation::WritePlan && !l.ok),
        "the deposed leader's late plan write was refused"
    );
    let landed: Vec<_> = deposed
        .iter()
        .filter(|l| l.ok && matches!(l.request.op, Operation::WritePlan | Operation::DeletePlan))
        .collect();
    assert!(
        landed.is_empty(),
        "a deposed leader's plan write landed: {landed:?}"
    );
    let store = sim.store();
    let (lock, _) = store.read_lock_and_plan("a").await.unwrap();
    let term = lock.unwrap().term;
    for name in ["a", "b"].into_iter().filter(|n| *n != second) {
        let (_, plan) = store.read_lock_and_plan(name).await.unwrap();
        assert_eq!(plan.unwrap().term, term, "{name}'s plan is of the new term");
    }
    sim.crash(&second);
    nothing_lost(&mut sim).await;
}

// 3. A member waiting for a planned handoff while the holder dies.
#[tokio::test(start_paused = true)]
async fn s03_a_handoff_waiter_notices_a_dead_holder_and_polls_within_bounds() {
    let mut sim = Sim::new(1, &[(S, 2), ("other", 1)]);
    sim.start("a", &["other"]).await;
    sim.start("h", &[S]).await;
    settled(&sim).await;
    // The holder can never release: its handoff hangs until it dies.
    sim.member("h")
        .store
        .push(rule(Operation::ReleaseLease, Fault::Hang).times(usize::MAX));
    sim.start("w", &[S]).await;
    sim.wait_for("w waits for the handoff", LONG, |s| {
        s.member("w")
            .store
            .sent()
            .iter()
            .any(|r| r.request.op == Operation::Lease)
    })
    .await;
    let waiting = sim.now();
    sim.run_for(secs(4)).await;
    sim.crash("h");
    let crashed = sim.now();
    sim.wait_for("w takes the shard", LONG, |s| {
        s.member("w").consumer.held_shards().len() == 2
    })
    .await;
    assert!(
        sim.now() - crashed <= failover() + secs(2),
        "taken {:?} after the holder died",
        sim.now() - crashed
    );
    // Fast polls (150 ms) for at most twice the handoff timeout, then one read per tick.
    let reads = sim
        .member("w")
        .store
        .sent()
        .iter()
        .filter(|r| r.request.op == Operation::Lease)
        .count();
    let elapsed = sim.now() - waiting;
    let handoff = Sim::config("x").build().unwrap().handoff_timeout();
    let bound = (handoff * 2).as_millis() / 150 + elapsed.as_millis() / 400 + 4;
    assert!(
        reads as u128 <= bound,
        "{reads} lease reads in {elapsed:?} (bound {bound})"
    );
    nothing_lost(&mut sim).await;
}

// 4. A leader's renewal response is lost; a leader restarts under the same client id.
#[tokio::test(start_paused = true)]
async fn s04_a_lost_renewal_response_is_not_a_lost_lock_and_a_restarted_leader_shares_nothing() {
    let mut sim = group(4, &["a", "b"]).await;
    assert_eq!(sim.leader().as_deref(), Some("a"));
    sim.member("a")
        .store
        .push(rule(Operation::RenewLock, Fault::LoseResponse).times(3));
    sim.put(S, 20);
    sim.run_for(secs(5)).await;
    assert_eq!(sim.leader().as_deref(), Some("a"), "still the leader");
    assert_eq!(fenced(&sim, "a"), 0);
    // Restart the leader under its client id while records flow.
    sim.member("a").set_processing(Duration::from_millis(20));
    sim.member("b").set_processing(Duration::from_millis(20));
    sim.put(S, 200);
    sim.run_for(secs(1)).await;
    sim.crash("a");
    sim.start("a", &[S]).await;
    nothing_lost(&mut sim).await;
}

// 5. A member paused (SIGSTOP) longer than the failover timeout.
#[tokio::test(start_paused = true)]
async fn s05_a_member_paused_past_the_failover_hands_out_nothing_on_waking() {
    let mut sim = group(2, &["a", "b"]).await;
    sim.member("b").set_processing(Duration::from_millis(20));
    sim.put(S, 100);
    sim.run_for(Duration::from_millis(300)).await;
    sim.pause("b");
    sim.put(S, 20);
    sim.wait_for("a holds both shards", LONG, |s| {
        s.member("a").consumer.held_shards().len() == 2
    })
    .await;
    sim.run_for(failover()).await;
    let woke = sim.now();
    sim.resume("b");
    sim.run_for(secs(3)).await;
    assert!(fenced(&sim, "b") >= 1, "b fenced itself on waking");
    no_old_tenure_after(&sim, "b", woke);
    // Writes nothing under its old incarnation: whatever it sends after waking and before
    // its rejoin lands is refused (its fenced commit, conditional on the lease it lost).
    let landings = sim.monitor().landings();
    let rejoined = landings
        .iter()
        .find(|l| l.member == "b" && l.at >= woke && l.request.op == Operation::Register)
        .map(|l| l.at)
        .expect("b rejoined");
    let written: Vec<_> = landings
        .iter()
        .filter(|l| l.member == "b" && l.ok && l.at >= woke && l.at < rejoined)
        .filter(|l| l.request.op.is_write())
        .collect();
    assert!(written.is_empty(), "b wrote on waking: {written:?}");
    nothing_lost(&mut sim).await;
}

// 6. A member's machine suspended and resumed.
#[tokio::test(start_paused = true)]
async fn s06_the_fencing_clock_counts_a_suspend() {
    let mut sim = group(2, &["a", "b"]).await;
    sim.put(S, 20);
    sim.wait_for("handed out", LONG, |s| s.lost().is_empty())
        .await;
    // Tokio's timers barely move (the monotonic clock stops in a suspend); the fencing
    // clock jumps.
    sim.pause("b");
    sim.member("b").clock.suspend(failover() * 3);
    sim.run_for(Duration::from_millis(100)).await;
    let woke = sim.now();
    sim.resume("b");
    sim.put(S, 20);
    sim.run_for(secs(1)).await;
    assert!(fenced(&sim, "b") >= 1, "b fenced itself on waking");
    no_old_tenure_after(&sim, "b", woke);
    nothing_lost(&mut sim).await;
}

// 7. Two live processes under one client id.
#[tokio::test(start_paused = true)]
async fn s07_two_processes_under_one_client_id_one_stops_and_no_lease_ping_pong() {
    let mut sim = group(4, &["a", "b"]).await;
    sim.start_with("a-again", &[S], |c| c.client_id("a")).await;
    sim.wait_for("the older process stops for good", LONG, |s| {
        !s.member("a").consumer.is_running()
    })
    .await;
    settled(&sim).await;
    let counters = |leases: Vec<crate::store::LeaseItem>| -> Vec<Option<u64>> {
        leases.into_iter().map(|l| l.lease_counter).collect()
    };
    let before = counters(sim.store().leases(S).await.unwrap());
    sim.run_for(secs(10)).await;
    let after = counters(sim.store().leases(S).await.unwrap());
    assert_eq!(before, after, "no lease moved once settled");
    assert!(sim.member("a-again").consumer.is_running());
    nothing_lost(&mut sim).await;
}

/// Starts `name` alone at LATEST with commits far apart, lets it take the shard and hand
/// out `n` records, and crashes it before its first commit.
async fn latest_crash_before_commit(sim: &mut Sim, name: &str, ahead: chrono::Duration) {
    sim.start_with(name, &[S], |c| {
        c.initial_position(InitialPosition::Latest)
            .commit_interval(secs(600))
    })
    .await;
    sim.member(name).clock.step_wall(ahead);
    settled(sim).await;
    sim.put(S, 5);
    sim.wait_for("handed out", LONG, |s| s.lost().is_empty())
        .await;
    sim.crash(name);
    sim.put(S, 5);
}

// 8. LATEST, and a crash before the first commit.
#[tokio::test(start_paused = true)]
async fn s08_the_next_owner_starts_from_the_pinned_latest() {
    let mut sim = Sim::new(1, &[(S, 1)]);
    latest_crash_before_commit(&mut sim, "a", chrono::Duration::zero()).await;
    sim.run_for(secs(90)).await;
    sim.start_with("b", &[S], |c| c.initial_position(InitialPosition::Latest))
        .await;
    nothing_lost(&mut sim).await;
}

// 18. LATEST with a member whose wall clock runs ahead, crashing before its first commit.
#[tokio::test(start_paused = true)]
async fn s18_a_clock_ahead_within_the_skew_margin_loses_nothing() {
    let mut sim = Sim::new(1, &[(S, 1)]);
    latest_crash_before_commit(&mut sim, "a", chrono::Duration::seconds(30)).await;
    sim.start_with("b", &[S], |c| c.initial_position(InitialPosition::Latest))
        .await;
    nothing_lost(&mut sim).await;
}

// 9. `refresh` drops a stream; a member restarts with other streams.
#[tokio::test(start_paused = true)]
async fn s09_leases_of_a_dropped_stream_are_released_or_judged_gone() {
    const T: &str = "other";
    let mut sim = Sim::new(1, &[(S, 2), (T, 2)]);
    sim.start("a", &[S, T]).await;
    sim.start("b", &[S, T]).await;
    settled(&sim).await;
    sim.member("a").consumer.refresh([T]).await.unwrap();
    sim.wait_for("b holds every shard of the dropped stream", LONG, |s| {
        s.member("b")
            .consumer
            .held_shards()
            .iter()
            .filter(|r| r.stream == S)
            .count()
            == 2
    })
    .await;
    // b restarts consuming only T: its leases of S are judged gone and a takes them.
    sim.crash("b");
    sim.start("b", &[T]).await;
    sim.member("a").consumer.refresh([S, T]).await.unwrap();
    sim.wait_for("a holds every shard of S", LONG, |s| {
        s.member("a")
            .consumer
            .held_shards()
            .iter()
            .filter(|r| r.stream == S)
            .count()
            == 2
    })
    .await;
    sim.put(T, 10);
    nothing_lost(&mut sim).await;
}

// 10. A wall-clock step on the leader larger than the prune age.
#[tokio::test(start_paused = true)]
async fn s10_a_wall_step_on_the_leader_prunes_no_live_member() {
    let mut sim = group(2, &["a", "b"]).await;
    let prune = Sim::config("x").build().unwrap().prune_age();
    let step = chrono::Duration::from_std(prune * 2).unwrap();
    sim.member("a").clock.step_wall(step);
    sim.run_for(secs(10)).await;
    sim.member("a").clock.step_wall(-step * 2);
    sim.run_for(secs(10)).await;
    assert_eq!(sim.store().members().await.unwrap().len(), 2);
    for name in ["a", "b"] {
        assert_eq!(fenced(&sim, name), 0, "{name} was never judged gone");
    }
    nothing_lost(&mut sim).await;
}

// 11. A timed-out checkpoint write lands after a newer one.
#[tokio::test(start_paused = true)]
async fn s11_a_late_checkpoint_write_is_refused() {
    let mut sim = group(1, &["a"]).await;
    let late = Latch::new();
    sim.member("a")
        .store
        .push(rule(Operation::Checkpoint, Fault::Hold(late.clone())));
    sim.put(S, 5);
    sim.wait_for("the first write is in flight", LONG, |s| {
        s.member("a")
            .store
            .sent()
            .iter()
            .any(|r| matches!(r.fault, Some(Fault::Hold(_))))
    })
    .await;
    sim.put(S, 5);
    let newer = |s: &Sim| {
        s.monitor()
            .landings()
            .iter()
            .any(|l| l.request.op == Operation::Checkpoint && l.ok)
    };
    sim.wait_for("a newer write landed", LONG, newer).await;
    let newest = sim.store().lease(S, &shard_id(0)).await.unwrap().unwrap();
    late.release();
    sim.run_for(secs(1)).await;
    let landed = sim.monitor().landings();
    let checkpoints: Vec<bool> = landed
        .iter()
        .filter(|l| l.request.op == Operation::Checkpoint)
        .map(|l| l.ok)
        .collect();
    assert_eq!(
        checkpoints.last(),
        Some(&false),
        "the late write was refused: {checkpoints:?}"
    );
    let now = sim.store().lease(S, &shard_id(0)).await.unwrap().unwrap();
    assert!(now.checkpoint >= newest.checkpoint);
    nothing_lost(&mut sim).await;
}

// 13. A planned handoff while the application is slow, and while it keeps up.
#[tokio::test(start_paused = true)]
async fn s13_a_handoff_with_a_stuck_application_releases_after_the_timeout() {
    let mut sim = group(2, &["a"]).await;
    // The application is stuck on a record of the shard that will move to b.
    sim.member("a").set_processing(secs(3600));
    sim.put_on(S, &shard_id(1), 1);
    sim.run_for(secs(1)).await;
    sim.start("b", &[S]).await;
    sim.wait_for("b takes its share", LONG, |s| {
        s.member("b").consumer.held_shards().len() == 1
    })
    .await;
    assert_eq!(
        sim.member("b").consumer.held_shards()[0].shard_id,
        shard_id(1)
    );
    let lost = sim
        .member("a")
        .count_events(|e| matches!(e, Event::LeaseLost { .. }));
    assert!(lost >= 1, "the timed-out handoff reports a lost lease");
    sim.crash("a");
    nothing_lost(&mut sim).await;
}

#[tokio::test(start_paused = true)]
async fn s13_a_handoff_with_a_fast_application_delivers_nothing_twice() {
    let mut sim = group(2, &["a"]).await;
    sim.put(S, 20);
    sim.wait_for("handed out", LONG, |s| s.lost().is_empty())
        .await;
    // Records in the application's hands during the handoff, and the handoff's first
    // commit fails: neither may make the next owner deliver anything again.
    sim.member("a").set_processing(Duration::from_millis(5));
    sim.put(S, 200);
    sim.member("a")
        .store
        .push(rule(Operation::Checkpoint, Fault::Fail));
    sim.run_for(Duration::from_millis(100)).await;
    sim.start("b", &[S]).await;
    sim.wait_for("b takes its share", LONG, |s| {
        s.member("b").consumer.held_shards().len() == 1
    })
    .await;
    nothing_lost(&mut sim).await;
    assert_eq!(sim.duplicates(), 0);
}

// 16. The leader's renewals fail for longer than the failover while its heartbeats work.
#[tokio::test(start_paused = true)]
async fn s16_a_leader_failing_renewals_stops_reading_before_its_shards_move() {
    let mut sim = group(2, &["a", "b"]).await;
    for name in ["a", "b"] {
        sim.member(name).set_processing(Duration::from_millis(20));
    }
    sim.put(S, 300);
    sim.run_for(Duration::from_millis(500)).await;
    sim.member("a")
        .store
        .push(rule(Operation::RenewLock, Fault::Fail).times(usize::MAX));
    sim.wait_for("b leads", LONG, |s| s.leader().as_deref() == Some("b"))
        .await;
    assert!(fenced(&sim, "a") >= 1, "a fenced itself");
    sim.member("a").store.clear();
    nothing_lost(&mut sim).await;
}

// 17. A take (and a lock take) lands but its response is lost.
#[tokio::test(start_paused = true)]
async fn s17_a_member_finds_itself_named_after_a_lost_take_response() {
    let mut sim = Sim::new(1, &[(S, 2)]);
    sim.start("a", &[S]).await;
    let store = &sim.member("a").store;
    store.push(rule(Operation::TakeLock, Fault::LoseResponse));
    store.push(rule(Operation::TakeLease, Fault::LoseResponse));
    settled(&sim).await;
    assert_eq!(sim.leader().as_deref(), Some("a"));
    let (lock, _) = sim.store().read_lock_and_plan("a").await.unwrap();
    assert_eq!(lock.unwrap().term, 1, "the lost lock take was its own");
    for lease in sim.store().leases(S).await.unwrap() {
        assert_eq!(lease.lease_counter, Some(1), "taken once: {lease:?}");
    }
    nothing_lost(&mut sim).await;
}

// 19. Requests slowed to just under the request timeout, 5 % of responses lost.
#[tokio::test(start_paused = true)]
async fn s19_slow_requests_and_lost_responses_do_not_fence_healthy_members() {
    let mut sim = group(4, &["a", "b", "c"]).await;
    let timeout = Sim::config("x").build().unwrap().request_timeout();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let mut faults = crate::sim::RandomFaults::new(i as u64);
        faults.lose_response = 0.05;
        faults.slow = 1.0;
        faults.min_delay = timeout - Duration::from_millis(10);
        faults.max_delay = faults.min_delay;
        sim.member(name).store.set_random(Some(faults));
    }
    for _ in 0..30 {
        sim.put(S, 5);
        sim.run_for(secs(1)).await;
        assert!(sim.unread().is_empty(), "every shard keeps being read");
    }
    for name in ["a", "b", "c"] {
        assert_eq!(fenced(&sim, name), 0, "{name} never fenced");
    }
    nothing_lost(&mut sim).await;
}

// 20. A member paused past its fence deadline whose retried heartbeat then succeeds.
#[tokio::test(start_paused = true)]
async fn s20_a_late_successful_heartbeat_does_not_revive_a_fenced_member() {
    let mut sim = group(2, &["a", "b"]).await;
    let deadline = Sim::config("x").build().unwrap().fence_deadline();
    sim.member("a").set_processing(Duration::from_millis(20));
    sim.put(S, 200);
    sim.run_for(Duration::from_millis(300)).await;
    sim.pause("a");
    sim.run_for(deadline + Duration::from_millis(300)).await;
    let woke = sim.now();
    sim.resume("a");
    sim.run_for(secs(2)).await;
    let beat =
        sim.monitor().landings().iter().any(|l| {
            l.member == "a" && l.request.op == Operation::Heartbeat && l.ok && l.at >= woke
        });
    assert!(beat, "a heartbeat succeeded after waking");
    assert!(fenced(&sim, "a") >= 1, "a fenced anyway");
    no_old_tenure_after(&sim, "a", woke);
    nothing_lost(&mut sim).await;
}

// 21. A member adds a stream with `refresh`.
#[tokio::test(start_paused = true)]
async fn s21_an_added_stream_is_read_only_after_a_heartbeat_advertised_it() {
    const T: &str = "other";
    let mut sim = Sim::new(1, &[(S, 2), (T, 2)]);
    sim.start("a", &[S]).await;
    sim.start("b", &[S, T]).await;
    settled(&sim).await;
    sim.member("a")
        .store
        .push(rule(Operation::Heartbeat, Fault::Hang).times(3));
    let refreshed = sim.now();
    sim.member("a").consumer.refresh([S, T]).await.unwrap();
    sim.wait_for("a reads a shard of T", LONG, |s| {
        s.member("a")
            .consumer
            .held_shards()
            .iter()
            .any(|r| r.stream == T)
    })
    .await;
    let landed = sim.monitor().landings();
    let first = |op: Operation, f: &dyn Fn(&crate::sim::Landed) -> bool| {
        landed
            .iter()
            .filter(|l| l.member == "a" && l.at >= refreshed && l.request.op == op && l.ok && f(l))
            .map(|l| l.at)
            .min()
            .unwrap()
    };
    let beat = first(Operation::Heartbeat, &|_| true);
    let take = first(Operation::TakeLease, &|l| {
        l.request.shard.as_ref().is_some_and(|r| r.stream == T)
    });
    assert!(take > beat, "took at {take:?}, advertised at {beat:?}");
    let lost = sim
        .member("b")
        .count_events(|e| matches!(e, Event::LeaseLost { .. }));
    assert_eq!(lost, 0, "no lease of b was taken from it early");
    sim.put(T, 10);
    nothing_lost(&mut sim).await;
}

// 22. A take that lands after the plan moved the shard elsewhere.
#[tokio::test(start_paused = true)]
async fn s22_a_late_take_is_released_when_the_plan_lists_it_under_release() {
    let mut sim = Sim::new(1, &[(S, 2)]);
    let late = Latch::new();
    sim.start("a", &[S]).await;
    let one = shard_id(1);
    // a's take of shard 1 lands late, and its reads of that lease fail meanwhile, so its
    // shard task gives up without knowing.
    sim.member("a")
        .store
        .push(rule(Operation::TakeLease, Fault::Hold(late.clone())).shard(S, &one));
    sim.member("a").store.push(
        rule(Operation::Lease, Fault::Fail)
            .shard(S, &one)
            .skip(1)
            .times(usize::MAX),
    );
    sim.wait_for("a's take is in flight", LONG, |s| {
        s.member("a")
            .store
            .sent()
            .iter()
            .any(|r| matches!(r.fault, Some(Fault::Hold(_))))
    })
    .await;
    sim.start("b", &[S]).await;
    let b_take = Latch::new();
    sim.member("b").store.push(
        rule(Operation::TakeLease, Fault::Hold(b_take.clone()))
            .shard(S, &one)
            .times(usize::MAX),
    );
    sim.wait_for("the plan gives shard 1 to b", LONG, |s| {
        s.member("b")
            .store
            .sent()
            .iter()
            .any(|r| r.request.op == Operation::TakeLease)
    })
    .await;
    sim.run_for(secs(3)).await;
    late.release();
    sim.run_for(Duration::from_millis(100)).await;
    let owner = sim.store().lease(S, &one).await.unwrap().unwrap().owner;
    assert_eq!(
        owner.map(|o| o.client_id).as_deref(),
        Some("a"),
        "a's late take landed"
    );
    sim.member("a").store.clear();
    b_take.release();
    sim.member("b").store.clear();
    sim.wait_for("b reads shard 1", LONG, |s| {
        s.member("b")
            .consumer
            .held_shards()
            .iter()
            .any(|r| r.shard_id == one)
    })
    .await;
    nothing_lost(&mut sim).await;
}

// 23. A fenced member re-registers and the response is lost.
#[tokio::test(start_paused = true)]
async fn s23_a_rejoin_whose_response_is_lost_is_recognised_on_retry() {
    let mut sim = group(2, &["a", "b"]).await;
    sim.member("a")
        .store
        .push(rule(Operation::Register, Fault::LoseResponse));
    sim.pause("a");
    sim.run_for(failover() * 2).await;
    sim.resume("a");
    sim.wait_for("a fences", LONG, |s| fenced(s, "a") >= 1)
        .await;
    sim.wait_for("a reads again", LONG, |s| {
        !s.member("a").consumer.held_shards().is_empty()
    })
    .await;
    assert!(fenced(&sim, "a") >= 1);
    let superseded = sim
        .member("a")
        .count_events(|e| matches!(e, Event::Superseded));
    assert_eq!(superseded, 0, "the retry recognised its own token");
    assert!(sim.member("a").consumer.is_running());
    nothing_lost(&mut sim).await;
}

// DESIGN §3 cost budget: a non-leader makes at most two requests per tick at steady state.
#[tokio::test(start_paused = true)]
async fn steady_state_requests_stay_within_the_budget() {
    let sim = group(4, &["a", "b", "c"]).await;
    sim.run_for(secs(5)).await;
    let cfg = Sim::config("x").build().unwrap();
    let window = secs(30);
    let ticks = window.as_secs_f64() / (cfg.sync_interval().as_secs_f64() * (1.0 - cfg.jitter()));
    for name in ["b", "c"] {
        let before = sim.member(name).store.requests();
        sim.run_for(window).await;
        let made = sim.member(name).store.requests().since(&before);
        assert!(
            made.total() as f64 <= 2.0 * ticks.ceil(),
            "{name}: {made:?} in {ticks:.0} ticks"
        );
        assert_eq!(
            made.total(),
            made.get(Operation::Heartbeat) + made.get(Operation::ReadLockAndPlan),
            "{name}: only a heartbeat and one batched read: {made:?}"
        );
    }
}

// Found by the chaos harness (docs/reliability.md): SIGTERM to a member fenced by a
// state-store outage. Its coordinator retried the rejoin until the store answered and
// read no command meanwhile, so `close` waited as long as the outage: the process did
// not exit.
#[tokio::test(start_paused = true)]
async fn a_member_fenced_by_an_unreachable_store_closes_without_waiting_for_it() {
    let mut sim = group(2, &["a", "b"]).await;
    let mut down = crate::sim::RandomFaults::new(0);
    down.fail = 1.0;
    sim.member("a").store.set_random(Some(down));
    sim.wait_for("a fenced", LONG, |s| fenced(s, "a") >= 1)
        .await;
    sim.run_for(failover()).await;
    let close = sim.close("a");
    assert!(
        tokio::time::timeout(failover(), close).await.is_ok(),
        "close returned while the store was still unreachable"
    );
    nothing_lost(&mut sim).await;
}
