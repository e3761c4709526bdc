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
pub(crate) mod fence;
mod heartbeat;
mod leader;
pub(crate) mod member;
mod shard;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::Sink;
use crate::error::{Error, Event};
use crate::reader::fanout::ConsumerArns;
use crate::reader::KinesisApi;
use crate::store::{Operation, StateStore, StoreError};

/// Where events and errors go: broadcast channels, so a slow or absent listener never
/// blocks consumption (it loses the oldest instead). Events are counted too
/// ([`crate::metrics`]), under the member's application.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    app: Arc<str>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) errors: broadcast::Sender<Error>,
}

impl Signals {
    pub(crate) fn new(app: &str, capacity: usize) -> Self {
        Self {
            app: app.into(),
            events: broadcast::channel(capacity).0,
            errors: broadcast::channel(capacity).0,
        }
    }

    pub(crate) fn event(&self, event: Event) {
        tracing::info!(?event, "group event");
        crate::metrics::event(&self.app, &event);
        let _ = self.events.send(event);
    }

    /// Reports a runtime error: to [`Kinesumer::errors`](crate::Kinesumer::errors), and
    /// as a `tracing` warning under the target `kinesumer::errors`, which an application
    /// that prints the stream itself can turn off.
    pub(crate) fn error(&self, error: Error) {
        tracing::warn!(target: "kinesumer::errors", %error, "consumer error");
        let _ = self.errors.send(error);
    }
}

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
}

impl Ctx {
    /// Runs one state-store request within `request_timeout`. A request that times out
    /// may still land: callers treat it as "outcome unknown", like any transient error.
    pub(crate) async fn timed<T>(
        &self,
        op: Operation,
        request: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.cfg.request_timeout, request).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                op,
                message: format!("timed out after {:?}", self.cfg.request_timeout),
            }),
        };
        if let Err(e) = &result {
            crate::metrics::store_failure(op, e);
        }
        result
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
mod randomized;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
