//! An in-memory Kinesis.
//!
//! [`SimKinesis`] implements [`KinesisApi`] over shards held in memory: records put are
//! routed by partition key to an open shard, shards can be split and closed. It is not
//! used against AWS or the local stack; integration tests use the real emulators.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::reader::{
    IteratorStart, KinesisApi, KinesisError, RawRecord, RecordsPage, StreamShards,
};
use crate::shards::ShardInfo;

#[derive(Debug, Default)]
struct Shard {
    info: Option<ShardInfo>,
    records: Vec<RawRecord>,
}

/// The open shard (index into the stream's shards) a partition key hashes to.
fn shard_index(shards: &[Shard], partition_key: &str) -> usize {
    let open: Vec<usize> = (0..shards.len())
        .filter(|&i| shards[i].info.as_ref().is_some_and(|s| !s.closed))
        .collect();
    let hash = partition_key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    open[(hash % open.len() as u64) as usize]
}

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, Vec<Shard>>,
    created: BTreeMap<String, DateTime<Utc>>,
    next_sequence: u64,
    reads: Reads,
}

/// What GetRecords has returned so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reads {
    /// GetRecords calls answered.
    pub calls: u64,
    /// Records returned.
    pub records: u64,
}

/// An in-memory Kinesis. Records arrive at the wall time of its clock.
#[derive(Debug)]
pub struct SimKinesis {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl Default for SimKinesis {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

impl SimKinesis {
    /// An empty Kinesis on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty Kinesis whose records arrive at `clock`'s wall time (a simulation's
    /// clock, so AT_TIMESTAMP and pinned LATEST starts are exact).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::default(),
            clock,
        }
    }

    /// What GetRecords has returned so far, over every stream.
    pub fn reads(&self) -> Reads {
        self.state().reads
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a stream with `shards` open shards. Creating one that exists deletes it
    /// first, as deleting and re-creating a stream does: the new one has a later creation
    /// time, and its shard ids name new shards without records.
    pub fn create_stream(&self, stream: &str, shards: usize) {
        let list = (0..shards)
            .map(|n| Shard {
                info: Some(ShardInfo {
                    shard_id: shard_id(n),
                    parent: None,
                    adjacent_parent: None,
                    closed: false,
                    hash_range: None,
                    ending_sequence: None,
                }),
                records: Vec::new(),
            })
            .collect();
        let mut state = self.state();
        let now = self.clock.wall();
        let created = match state.created.get(stream) {
            Some(&before) if before >= now => before + chrono::Duration::milliseconds(1),
            _ => now,
        };
        state.created.insert(stream.to_owned(), created);
        state.streams.insert(stream.to_owned(), list);
    }

    /// How many shards ListShards lists for `stream` (0 when there is no such stream).
    pub fn shard_count(&self, stream: &str) -> usize {
        self.state().streams.get(stream).map_or(0, |shards| {
            shards.iter().filter(|s| s.info.is_some()).count()
        })
    }

    /// Appends a record to the open shard its partition key hashes to; returns the shard
    /// id and sequence number.
    pub fn put(&self, stream: &str, partition_key: &str, data: &[u8]) -> (String, String) {
        let mut state = self.state();
        state.next_sequence += 1;
        let sequence = format!("{:020}", state.next_sequence);
        let shards = state.streams.get_mut(stream).expect("stream exists");
        let index = shard_index(shards, partition_key);
        let shard = &mut shards[index];
        shard.records.push(RawRecord {
            sequence_number: sequence.parse().expect("digits"),
            partition_key: partition_key.to_owned(),
            data: bytes::Bytes::copy_from_slice(data),
            approximate_arrival: Some(self.clock.wall()),
        });
        let id = shard
            .info
            .as_ref()
            .map(|s| s.shard_id.clone())
            .unwrap_or_default();
        (id, sequence)
    }

    /// The shard id a record with `partition_key` would go to now.
    pub fn shard_for(&self, stream: &str, partition_key: &str) -> String {
        let state = self.state();
        let shards = &state.streams[stream];
        let info = shards[shard_index(shards, partition_key)].info.as_ref();
        info.map(|s| s.shard_id.clone()).unwrap_or_default()
    }

    /// Closes `shard` and opens two children (a split).
    pub fn split(&self, stream: &str, shard: &str) {
        let mut state = self.state();
        let shards = state.streams.get_mut(stream).expect("stream exists");
        let parent = shards
            .iter_mut()
            .find_map(|s| s.info.as_mut().filter(|i| i.shard_id == shard))
            .expect("shard exists");
        parent.closed = true;
        let next = shards.len();
        for n in next..next + 2 {
            shards.push(Shard {
                info: Some(ShardInfo {
                    shard_id: shard_id(n),
                    parent: Some(shard.to_owned()),
                    adjacent_parent: None,
                    closed: false,
                    hash_range: None,
                    ending_sequence: None,
                }),
                records: Vec::new(),
            });
        }
    }

    /// Removes `shard` and its records, as Kinesis does once a closed shard is past the
    /// stream's retention: it is no longer listed and reads of it fail with
    /// ResourceNotFound.
    pub fn expire(&self, stream: &str, shard: &str) {
        let mut state = self.state();
        let shards = state.streams.get_mut(stream).expect("stream exists");
        for s in shards.iter_mut() {
            if s.info.as_ref().is_some_and(|i| i.shard_id == shard) {
                s.info = None;
                s.records.clear();
            }
        }
    }

    fn find<'a>(state: &'a State, stream: &str, shard: &str) -> Result<&'a Shard, KinesisError> {
        let shards = state
            .streams
            .get(stream)
            .ok_or_else(|| KinesisError::StreamNotFound {
                stream: stream.to_owned(),
            })?;
        shards
            .iter()
            .find(|s| s.info.as_ref().is_some_and(|i| i.shard_id == shard))
            .ok_or_else(|| KinesisError::ShardNotFound {
                stream: stream.to_owned(),
                shard_id: shard.to_owned(),
            })
    }
}

impl crate::sealed::Sealed for SimKinesis {}

#[async_trait]
impl KinesisApi for SimKinesis {
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError> {
        let state = self.state();
        let shards = state
            .streams
            .get(stream)
            .ok_or_else(|| KinesisError::StreamNotFound {
                stream: stream.to_owned(),
            })?;
        Ok(StreamShards {
            shards: shards.iter().filter_map(|s| s.info.clone()).collect(),
        })
    }

    async fn stream_created(&self, stream: &str) -> Result<Option<DateTime<Utc>>, KinesisError> {
        let state = self.state();
        match state.created.get(stream) {
            Some(&created) => Ok(Some(created)),
            None => Err(KinesisError::StreamNotFound {
                stream: stream.to_owned(),
            }),
        }
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        let state = self.state();
        let shard = Self::find(&state, stream, shard_id)?;
        let index = match start {
            IteratorStart::TrimHorizon => 0,
            IteratorStart::Latest => shard.records.len(),
            IteratorStart::After(seq) => shard
                .records
                .iter()
                .position(|r| &r.sequence_number > seq)
                .unwrap_or(shard.records.len()),
            IteratorStart::At(seq) => shard
                .records
                .iter()
                .position(|r| &r.sequence_number >= seq)
                .unwrap_or(shard.records.len()),
            IteratorStart::AtTimestamp(t) => shard
                .records
                .iter()
                .position(|r| r.approximate_arrival.is_some_and(|a| &a >= t))
                .unwrap_or(shard.records.len()),
        };
        Ok(index.to_string())
    }

    async fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, KinesisError> {
        let mut state = self.state();
        let shard = Self::find(&state, stream, shard_id)?;
        let from: usize = iterator.parse().map_err(|_| KinesisError::Other {
            operation: "GetRecords",
            stream: stream.to_owned(),
            message: "invalid shard iterator".into(),
        })?;
        let to = (from + usize::try_from(limit).unwrap_or(1)).min(shard.records.len());
        let records: Vec<RawRecord> = shard.records[from.min(to)..to].to_vec();
        let closed = shard.info.as_ref().is_some_and(|i| i.closed);
        let at_end = to == shard.records.len();
        state.reads.calls += 1;
        state.reads.records += records.len() as u64;
        Ok(RecordsPage {
            bytes: records.iter().map(|r| r.data.len()).sum(),
            records,
            next_iterator: if closed && at_end {
                None
            } else {
                Some(to.to_string())
            },
            millis_behind: Some(if at_end { 0 } else { 1000 }),
            child_shards: Vec::new(),
        })
    }
}
