//! The invariants a simulation checks as it runs (DESIGN §3, §6):
//!
//! - **exclusivity**: every hand-out of a record is logged with its member and its
//!   *tenure* (the lease it was read under); once a newer tenure of a shard has handed out
//!   a record, no older one may hand out again;
//! - **checkpoints never move back**: every lease write that lands is followed at once by
//!   a read of the lease, whose checkpoint must not be behind the last one seen.
//!
//! Losses (a record put but never handed out) and unread shards are judged at the end of
//! a run, by the [`Sim`](super::Sim).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;

use super::faults::Request;
use crate::checkpoint::ShardTrack;
use crate::record::Record;
use crate::seq::Position;
use crate::store::{MemoryStore, Operation, ShardRef, StateStore};

/// One record handed to a member's application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handout {
    /// When (tokio's clock, since the simulation started).
    pub at: Duration,
    /// The member (simulation name).
    pub member: String,
    /// The shard.
    pub shard: ShardRef,
    /// The record's sequence number.
    pub sequence: String,
    /// The lease tenure it was handed out under (numbered in order of first hand-out).
    pub tenure: u64,
}

/// A state-store request that landed.
#[derive(Debug, Clone)]
pub struct Landed {
    /// When it landed.
    pub at: Duration,
    /// The member that sent it.
    pub member: String,
    /// The request.
    pub request: Request,
    /// Whether the store accepted it (a refused condition is `false`).
    pub ok: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Per tenure (keyed by its track's address, kept alive below so it is never reused).
    tenures: BTreeMap<usize, (u64, Arc<ShardTrack>)>,
    /// Per shard: the tenure handing out now, and the ones before it.
    current: BTreeMap<ShardRef, u64>,
    ended: BTreeMap<ShardRef, BTreeSet<u64>>,
    checkpoints: BTreeMap<ShardRef, Position>,
    handouts: Vec<Handout>,
    landings: Vec<Landed>,
    violations: Vec<String>,
}

/// Watches a simulation: hand-outs, landed writes, and the violations found.
#[derive(Debug)]
pub struct Monitor {
    origin: tokio::time::Instant,
    observer: MemoryStore,
    state: Mutex<State>,
}

impl Monitor {
    /// Watches the store behind `observer` (a handle with its own request counts).
    pub(crate) fn new(observer: MemoryStore) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            observer,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time since the simulation started (tokio's clock).
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Logs a record handed to `member`'s application and checks exclusivity.
    pub(crate) fn handout(&self, member: &str, record: &Record) {
        let at = self.now();
        let shard = ShardRef {
            stream: record.stream.to_string(),
            shard_id: record.shard_id.to_string(),
        };
        let mut s = self.state();
        let key = Arc::as_ptr(&record.track) as usize;
        let next = s.tenures.len() as u64;
        let tenure = s
            .tenures
            .entry(key)
            .or_insert_with(|| (next, record.track.clone()))
            .0;
        match s.current.get(&shard).copied() {
            Some(now) if now == tenure => {}
            now => {
                if s.ended.get(&shard).is_some_and(|e| e.contains(&tenure)) {
                    let v = format!(
                        "exclusivity: {member} handed out {} of {}/{} at {at:?} under tenure {tenure}, after tenure {now:?} had started",
                        record.sequence_number, shard.stream, shard.shard_id
                    );
                    s.violations.push(v);
                } else {
                    if let Some(old) = now {
                        s.ended.entry(shard.clone()).or_default().insert(old);
                    }
                    s.current.insert(shard.clone(), tenure);
                }
            }
        }
        s.handouts.push(Handout {
            at,
            member: member.to_owned(),
            shard,
            sequence: record.sequence_number.to_string(),
            tenure,
        });
    }

    /// A request of `member` landed; lease writes are checked against the checkpoint.
    pub(crate) fn landed(&self, member: &str, request: &Request, ok: bool) {
        let at = self.now();
        let lease_write = matches!(
            request.op,
            Operation::TakeLease
                | Operation::ReleaseLease
                | Operation::Checkpoint
                | Operation::DeleteLease
                | Operation::SetCheckpoint
        );
        let mut s = self.state();
        s.landings.push(Landed {
            at,
            member: member.to_owned(),
            request: request.clone(),
            ok,
        });
        let Some(shard) = request.shard.as_ref().filter(|_| lease_write) else {
            return;
        };
        // The in-memory store answers at once: this read sees the write just landed.
        let item = self
            .observer
            .lease(&shard.stream, &shard.shard_id)
            .now_or_never()
            .and_then(Result::ok)
            .flatten();
        let Some(item) = item else {
            return;
        };
        let last = s.checkpoints.get(shard).cloned();
        match (&item.checkpoint, last) {
            (Some(now), Some(before)) if *now < before => {
                let v = format!(
                    "checkpoint of {}/{} moved back from {before:?} to {now:?} at {at:?} ({:?} by {member})",
                    shard.stream, shard.shard_id, request.op
                );
                s.violations.push(v);
            }
            (None, Some(before)) => {
                let v = format!(
                    "checkpoint of {}/{} vanished (was {before:?}) at {at:?} ({:?} by {member})",
                    shard.stream, shard.shard_id, request.op
                );
                s.violations.push(v);
            }
            (Some(now), _) => {
                s.checkpoints.insert(shard.clone(), now.clone());
            }
            (None, None) => {}
        }
    }

    /// Every record handed out so far.
    pub fn handouts(&self) -> Vec<Handout> {
        self.state().handouts.clone()
    }

    /// Every request that landed so far.
    pub fn landings(&self) -> Vec<Landed> {
        self.state().landings.clone()
    }

    /// The violations found so far.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }
}
