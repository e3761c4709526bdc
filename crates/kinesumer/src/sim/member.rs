//! What a simulated member runs on besides the state store: its own clock (which a pause
//! freezes and a suspend or wall step moves) and a gated Kinesis.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::faults::Gate;
use crate::clock::{Clock, TestClock};
use crate::reader::{IteratorStart, KinesisApi, KinesisError, RecordsPage, StreamShards};

#[derive(Debug, Default)]
struct Offsets {
    /// While paused: the readings at the moment it paused.
    frozen: Option<(Duration, DateTime<Utc>)>,
    suspended: Duration,
    wall_step: chrono::Duration,
}

/// One member's clock over the simulation's [`TestClock`].
///
/// A paused process runs no code, so it reads no clock: while the member is paused its
/// clock stands still, and on resume it shows the time that passed (the fencing clock
/// counts a SIGSTOP, as `CLOCK_BOOTTIME` does). A suspend adds time to this member's
/// fencing and wall clocks only; a wall step moves its wall clock only.
#[derive(Debug)]
pub struct MemberClock {
    base: Arc<TestClock>,
    offsets: Mutex<Offsets>,
}

impl MemberClock {
    pub(crate) fn new(base: Arc<TestClock>) -> Self {
        Self {
            base,
            offsets: Mutex::default(),
        }
    }

    fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, o: &Offsets) -> (Duration, DateTime<Utc>) {
        let suspended = chrono::Duration::from_std(o.suspended).unwrap_or(chrono::Duration::MAX);
        (
            self.base.fencing_now() + o.suspended,
            self.base.wall() + suspended + o.wall_step,
        )
    }

    pub(crate) fn freeze(&self) {
        let mut o = self.offsets();
        let now = self.live(&o);
        o.frozen.get_or_insert(now);
    }

    pub(crate) fn thaw(&self) {
        self.offsets().frozen = None;
    }

    /// The machine was suspended for `d`: the fencing and wall clocks jump by `d`.
    pub fn suspend(&self, d: Duration) {
        self.offsets().suspended += d;
    }

    /// Steps the wall clock (forwards or backwards), as NTP or an operator might.
    pub fn step_wall(&self, step: chrono::Duration) {
        self.offsets().wall_step += step;
    }
}

impl Clock for MemberClock {
    fn fencing_now(&self) -> Duration {
        let o = self.offsets();
        o.frozen.unwrap_or_else(|| self.live(&o)).0
    }

    fn wall(&self) -> DateTime<Utc> {
        let o = self.offsets();
        o.frozen.unwrap_or_else(|| self.live(&o)).1
    }
}

/// A member's view of Kinesis: calls wait at the member's gate, going and coming back.
#[derive(Debug)]
pub(crate) struct GatedKinesis {
    pub(crate) inner: Arc<dyn KinesisApi>,
    pub(crate) gate: Gate,
}

impl GatedKinesis {
    async fn gated<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.gate.opened().await;
        let answer = call.await;
        self.gate.opened().await;
        answer
    }
}

#[async_trait]
impl KinesisApi for GatedKinesis {
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError> {
        self.gated(self.inner.list_shards(stream)).await
    }

    async fn stream_created(&self, stream: &str) -> Result<Option<DateTime<Utc>>, KinesisError> {
        self.gated(self.inner.stream_created(stream)).await
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        self.gated(self.inner.shard_iterator(stream, shard_id, start))
            .await
    }

    async fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, KinesisError> {
        self.gated(self.inner.get_records(stream, shard_id, iterator, limit))
            .await
    }
}
