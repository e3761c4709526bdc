//! What a simulated member runs on besides the state store: its own clock (which a pause
//! freezes and a suspend or wall step moves) and a gated Kinesis with its fault script.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::faults::{Fault, Gate, Request, Script};
use super::monitor::Monitor;
use crate::clock::{Clock, TestClock};
use crate::reader::{IteratorStart, KinesisApi, KinesisError, RecordsPage, StreamShards};
use crate::store::ShardRef;

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

/// The Kinesis calls a simulated member makes, as its fault script names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KinesisOp {
    /// ListShards.
    ListShards,
    /// DescribeStreamSummary (the stream's creation time).
    DescribeStreamSummary,
    /// GetShardIterator.
    GetShardIterator,
    /// GetRecords.
    GetRecords,
}

impl KinesisOp {
    fn name(self) -> &'static str {
        match self {
            KinesisOp::ListShards => "ListShards",
            KinesisOp::DescribeStreamSummary => "DescribeStreamSummary",
            KinesisOp::GetShardIterator => "GetShardIterator",
            KinesisOp::GetRecords => "GetRecords",
        }
    }
}

/// A member's view of Kinesis: calls wait at the member's gate, going and coming back,
/// and meet the faults of its script (it derefs to its [`Script`]): latency, throttling,
/// 500s, hangs, lost answers.
#[derive(Debug)]
pub struct FaultyKinesis {
    inner: Arc<dyn KinesisApi>,
    gate: Gate,
    monitor: Arc<Monitor>,
    script: Script<KinesisOp>,
}

impl std::ops::Deref for FaultyKinesis {
    type Target = Script<KinesisOp>;

    fn deref(&self) -> &Script<KinesisOp> {
        &self.script
    }
}

impl FaultyKinesis {
    pub(crate) fn new(inner: Arc<dyn KinesisApi>, gate: Gate, monitor: Arc<Monitor>) -> Self {
        Self {
            inner,
            gate,
            monitor,
            script: Script::default(),
        }
    }

    async fn call<T>(
        &self,
        op: KinesisOp,
        stream: &str,
        shard_id: &str,
        call: impl std::future::Future<Output = Result<T, KinesisError>>,
    ) -> Result<T, KinesisError> {
        self.gate.opened().await;
        let request = Request {
            op,
            shard: Some(ShardRef {
                stream: stream.to_owned(),
                shard_id: shard_id.to_owned(),
            }),
            member: None,
        };
        let injected = |what: &str| KinesisError::Other {
            operation: op.name(),
            stream: stream.to_owned(),
            message: format!("injected: {what}"),
        };
        let answer = match self.script.choose(&request, self.monitor.now()) {
            None => call.await,
            Some(Fault::Fail | Fault::Refuse) => Err(injected("internal failure (500)")),
            Some(Fault::Throttle) => Err(KinesisError::Throttled {
                operation: op.name(),
                stream: stream.to_owned(),
            }),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Hold(latch)) => {
                latch.wait().await;
                call.await
            }
            Some(Fault::LoseResponse) => call.await.and(Err(injected("response lost"))),
        };
        self.gate.opened().await;
        answer
    }
}

impl crate::sealed::Sealed for FaultyKinesis {}

#[async_trait]
impl KinesisApi for FaultyKinesis {
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError> {
        self.call(
            KinesisOp::ListShards,
            stream,
            "",
            self.inner.list_shards(stream),
        )
        .await
    }

    async fn stream_created(&self, stream: &str) -> Result<Option<DateTime<Utc>>, KinesisError> {
        self.call(
            KinesisOp::DescribeStreamSummary,
            stream,
            "",
            self.inner.stream_created(stream),
        )
        .await
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        self.call(
            KinesisOp::GetShardIterator,
            stream,
            shard_id,
            self.inner.shard_iterator(stream, shard_id, start),
        )
        .await
    }

    async fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, KinesisError> {
        self.call(
            KinesisOp::GetRecords,
            stream,
            shard_id,
            self.inner.get_records(stream, shard_id, iterator, limit),
        )
        .await
    }
}
