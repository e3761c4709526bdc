//! stub
#![allow(missing_docs, unused)]
use std::sync::Arc;
use std::time::Duration;
use crate::seq::{Position, SequenceNumber};
use crate::store::StoredStart;
use super::{KinesisApi, KinesisError, RawRecord};
pub(crate) struct PollingConfig { pub(crate) limit: i32, pub(crate) scan_interval: Duration, pub(crate) scan_timeout: Duration }
#[derive(Debug, Clone)]
pub(crate) enum ReadFrom { After(Position), Start(StoredStart) }
pub(crate) struct ReadItem { pub(crate) record: RawRecord, pub(crate) millis_behind: Option<i64> }
pub(crate) enum ReaderEnd { Cancelled, ShardEnd { last: Option<SequenceNumber>, children: Vec<String> }, ShardGone, Fatal(KinesisError) }
pub(crate) async fn read_shard(api: Arc<dyn KinesisApi>, stream: Arc<str>, shard_id: Arc<str>, from: ReadFrom, cfg: PollingConfig, out: tokio::sync::mpsc::Sender<ReadItem>, cancel: tokio_util::sync::CancellationToken) -> ReaderEnd { todo!() }
