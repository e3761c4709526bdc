//! The group protocol (DESIGN §3): membership with incarnations and heartbeats, the
//! leader lock and its plans, fenced leases, and the pure assignment.
//!
//! ```text
//!            ┌───────────── heartbeat task (own timer) ─────────────┐
//!            │ heartbeat + lock renewal, concurrently, retried       │
//!            └──────────────┬────────────────────────────────────────┘
//!                           │ fenced / superseded / member item gone
//!  coordinator task ◀───────┘
//!   every tick: read lock + own plan ─▶ (leader: read group, plan, write plans)
//!               follow the plan ─▶ one shard task per shard being taken, held or released
//!                                   (take ─▶ read + deliver + commit ─▶ release)
//! ```
//!
//! Everything runs on the [`crate::store::StateStore`], [`crate::reader::KinesisApi`] and
//! [`crate::clock::Clock`] seams, so
//! the same code runs against AWS, the local stack, or an in-memory simulation.

pub mod assign;
mod heartbeat;
mod leader;
pub(crate) mod member;
mod plan;
mod shard;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Balancing, Config};
use crate::delivery::Sink;
use crate::load::{Limits, LoadMeter, LoadReport};
use crate::reader::fanout::ConsumerArns;
use crate::reader::KinesisApi;
use crate::signals::Signals;
use crate::store::{Operation, StateStore, StoreError};

/// What every task of one member shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) kinesis: Arc<dyn KinesisApi>,
    /// The fan-out consumer of each stream (empty when polling).
    pub(crate) consumer_arns: ConsumerArns,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) signals: Signals,
    pub(crate) sink: Sink,
    /// What this member's readers read, for its heartbeats' load reports.
    pub(crate) load: LoadMeter,
    pub(crate) flow: crate::flow::Flow,
    /// Every task of this member (coordinator, heartbeat, shard tasks, readers,
    /// deliveries), so that a close returns only once they have all ended.
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

impl Ctx {
    /// Runs one state-store request within `request_timeout` ([`crate::store::timed`]).
    pub(crate) async fn timed<T>(
        &self,
        op: Operation,
        request: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        crate::store::timed(op, self.cfg.request_timeout, request).await
    }

    /// The load meter for a shard's reader, when the group balances by load (otherwise
    /// nothing is measured).
    pub(crate) fn load_meter(&self) -> Option<LoadMeter> {
        (self.cfg.balance == Balancing::Load).then(|| self.load.clone())
    }

    /// The load report for the next heartbeat, when the group balances by load or the
    /// member declares a limit (by count it carries the limit and no load).
    pub(crate) fn load_report(&self) -> Option<LoadReport> {
        let limits = self.limits();
        (self.cfg.balance == Balancing::Load || limits.is_limited())
            .then(|| self.load.report(self.cfg.capacity, limits))
    }

    /// The most this member takes, as configured.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_shards: self.cfg.max_shards,
            max_bytes_per_sec: self.cfg.max_bytes_per_second.map(|b| b as f64),
        }
    }

    /// `sync_interval` spread by up to ± `jitter`, so members do not beat in lockstep.
    pub(crate) fn jittered_interval(&self) -> Duration {
        let spread = self.cfg.jitter * (2.0 * crate::random::unit() - 1.0);
        self.cfg.sync_interval.mul_f64(1.0 + spread)
    }
}
#[cfg(test)]
mod hardening;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod randomized;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
