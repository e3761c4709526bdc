//! The member's shard tasks: one per shard being taken, held or released, owned by a
//! `JoinMap` under its shard; what their ends teach the next plan following (a handoff
//! that was slow, a failure cooling down); and the waits of `Kinesumer::commit`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinSet};
use tokio_util::task::JoinMap;
use tracing::warn;

use super::shard::{self, Outcome, ShardCmd, ShardHandle, ShardJob, FAILURE_COOLDOWN};
use super::Ctx;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::store::{Operation, Owner, PlannedShard, ShardRef, StoreError};

/// What starts shard tasks: the member's current incarnation.
pub(super) struct Starter<'a> {
    pub(super) ctx: &'a Arc<Ctx>,
    pub(super) me: &'a Owner,
    pub(super) fence: &'a Arc<Fence>,
    /// This process's previous incarnation after a fence: its readers have stopped, so
    /// the leases it names are this incarnation's to take back at once.
    pub(super) predecessor: Option<&'a Owner>,
}

/// A shard task and what it was started for.
#[derive(Debug)]
struct Running {
    handle: ShardHandle,
    planned: Option<PlannedShard>,
    releasing: bool,
}

/// The shard tasks of one member.
#[derive(Debug, Default)]
pub(super) struct ShardTasks {
    running: BTreeMap<ShardRef, Running>,
    /// The tasks themselves, by shard: each yields its outcome when it ends.
    tasks: JoinMap<ShardRef, Outcome>,
    /// Shards whose fast handoff poll ran out, with the plan entry it ran for.
    slow: BTreeMap<ShardRef, PlannedShard>,
    /// Shards whose task failed, not started again until the time (fencing clock) given.
    cooldown: BTreeMap<ShardRef, Duration>,
    /// `Kinesumer::commit` calls waiting for their shards' answers: owned here, so they
    /// end with the member.
    commits: JoinSet<()>,
}

impl ShardTasks {
    /// The shards whose lease is held.
    pub(super) fn held(&self) -> BTreeSet<ShardRef> {
        self.running
            .iter()
            .filter(|(_, r)| r.handle.held())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How many shard tasks run.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// Every shard with a task.
    pub(super) fn keys(&self) -> Vec<ShardRef> {
        self.running.keys().cloned().collect()
    }

    /// Step 4: follows the plan's shards (`desired`) and release list. A held shard the
    /// plan shows under a newer lease stops at once; one no longer planned, or listed for
    /// release, is released; a listed shard without a task gets a release-only task (a
    /// take that landed late); a planned shard without a task is taken, unless it failed
    /// lately.
    pub(super) fn follow(
        &mut self,
        starter: &Starter<'_>,
        desired: BTreeMap<ShardRef, PlannedShard>,
        release: &[ShardRef],
    ) {
        let releases: BTreeSet<&ShardRef> = release.iter().collect();
        for (key, running) in self.running.iter_mut() {
            if !running.handle.held() || running.releasing {
                continue;
            }
            let counter = running
                .handle
                .counter
                .load(std::sync::atomic::Ordering::Acquire);
            match desired.get(key) {
                Some(p) if p.lease_counter.is_some_and(|c| c > counter) => {
                    // The leader saw a newer lease than ours: someone took it; stop at once.
                    let _ = running.handle.cmds.send(ShardCmd::Lost);
                }
                Some(_) if !releases.contains(key) => {}
                _ => {
                    running.releasing = true;
                    let _ = running.handle.cmds.send(ShardCmd::Release);
                }
            }
        }
        let now = starter.fence.now();
        self.cooldown.retain(|_, until| *until > now);
        for key in release {
            if !self.running.contains_key(key) {
                self.spawn(starter, key.clone(), ShardJob::ReleaseOnly, None);
            }
        }
        for (key, planned) in desired {
            if self.running.contains_key(&key) || self.cooldown.contains_key(&key) {
                continue;
            }
            let fast_poll = self.slow.get(&key) != Some(&planned);
            let job = ShardJob::Take {
                planned: planned.clone(),
                fast_poll,
                predecessor: starter.predecessor.cloned(),
            };
            self.spawn(starter, key, job, Some(planned));
        }
    }

    fn spawn(
        &mut self,
        starter: &Starter<'_>,
        key: ShardRef,
        job: ShardJob,
        planned: Option<PlannedShard>,
    ) {
        let handle = shard::spawn(
            starter.ctx.clone(),
            starter.me.clone(),
            starter.fence.clone(),
            key.clone(),
            job,
            &mut self.tasks,
        );
        let running = Running {
            handle,
            planned,
            releasing: false,
        };
        self.running.insert(key, running);
    }

    /// Waits until a shard task ends (reaping finished commit waits meanwhile); pending
    /// while there is none. Cancel-safe.
    pub(super) async fn next_end(&mut self) -> (ShardRef, Result<Outcome, JoinError>) {
        loop {
            tokio::select! {
                Some(end) = self.tasks.join_next(), if !self.tasks.is_empty() => return end,
                Some(_) = self.commits.join_next(), if !self.commits.is_empty() => {}
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// A shard task ended at `now` (fencing clock): with its outcome, by a panic (a
    /// failure), or aborted (forgotten already: nothing to do).
    pub(super) fn ended(&mut self, key: ShardRef, end: Result<Outcome, JoinError>, now: Duration) {
        let outcome = match end {
            Ok(outcome) => outcome,
            Err(e) if e.is_cancelled() => return,
            Err(_) => Outcome::Failed,
        };
        let Some(running) = self.running.remove(&key) else {
            return;
        };
        match outcome {
            Outcome::NotAcquired { polled: true } => {
                if let Some(planned) = running.planned {
                    self.slow.insert(key, planned);
                }
            }
            Outcome::Failed => {
                self.cooldown.insert(key, now + FAILURE_COOLDOWN);
            }
            // A tick-rate attempt after the fast poll ran out: keep the shard "slow", or
            // the next tick would poll fast for another window (scenario 3).
            Outcome::NotAcquired { polled: false } => {}
            _ => {
                self.slow.remove(&key);
            }
        }
    }

    /// Asks the given shard tasks to release (or stop, when not held) and waits for them
    /// to end, for at most `limit`. Returns the shards stopped because they did not
    /// release in time.
    pub(super) async fn release_and_wait(
        &mut self,
        keys: &[ShardRef],
        limit: Duration,
        fence: &Fence,
    ) -> Vec<ShardRef> {
        for key in keys {
            if let Some(running) = self.running.get_mut(key) {
                if running.handle.held() {
                    running.releasing = true;
                    let _ = running.handle.cmds.send(ShardCmd::Release);
                } else {
                    running.handle.cancel.cancel();
                }
            }
        }
        let wait = async {
            while keys.iter().any(|k| self.running.contains_key(k)) {
                match self.tasks.join_next().await {
                    Some((key, end)) => self.ended(key, end, fence.now()),
                    None => break,
                }
            }
        };
        let mut stuck = Vec::new();
        if tokio::time::timeout(limit, wait).await.is_err() {
            warn!("shards did not release in time; stopping them");
            for key in keys {
                if self.running.remove(key).is_some() {
                    self.tasks.abort(key);
                    stuck.push(key.clone());
                }
            }
        }
        stuck
    }

    /// Commits every held shard now; answers `ack` when all have answered, or when
    /// `timeout` ran out.
    pub(super) fn commit(&mut self, ack: oneshot::Sender<Result<()>>, timeout: Duration) {
        let mut answers = Vec::new();
        for running in self.running.values().filter(|r| r.handle.held()) {
            let (tx, rx) = oneshot::channel();
            if running.handle.cmds.send(ShardCmd::Commit(tx)).is_ok() {
                answers.push(rx);
            }
        }
        self.commits.spawn(async move {
            let all = futures::future::join_all(answers);
            let result = match tokio::time::timeout(timeout, all).await {
                Ok(results) => results
                    .into_iter()
                    .filter_map(|r| r.ok())
                    .collect::<Result<Vec<()>>>()
                    .map(|_| ()),
                Err(_) => Err(Error::Store(StoreError::Unavailable {
                    op: Operation::Checkpoint,
                    message: format!("commit did not finish within {timeout:?}"),
                })),
            };
            let _ = ack.send(result);
        });
    }

    /// Stops every shard task (fenced or superseded): those holding a lease commit what
    /// the application processed, conditionally, and write nothing else. What a fenced
    /// incarnation learned of slow handoffs is forgotten with it.
    pub(super) async fn stop_all(&mut self) {
        for running in self.running.values() {
            if !running.handle.held() || running.handle.cmds.send(ShardCmd::Fenced).is_err() {
                running.handle.cancel.cancel();
            }
        }
        let wait = async {
            while !self.running.is_empty() {
                match self.tasks.join_next().await {
                    Some((key, _)) => {
                        self.running.remove(&key);
                    }
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        self.tasks.abort_all();
        self.running.clear();
        self.slow.clear();
    }
}
