//! The records handed to the application.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::delivery::ShardTrack;
use crate::seq::{Position, SequenceNumber};

/// One record of a shard, as handed to the application.
///
/// Its `Debug` form never shows the payload or the partition key.
#[derive(Clone)]
pub struct Record {
    /// The stream it was read from.
    pub stream: Arc<str>,
    /// The shard it was read from.
    pub shard_id: Arc<str>,
    /// The Kinesis sequence number.
    pub sequence_number: SequenceNumber,
    /// The user record's index inside a record aggregated by the KPL; `None` otherwise.
    pub sub_sequence_number: Option<u64>,
    /// The partition key.
    pub partition_key: String,
    /// The payload.
    pub data: Vec<u8>,
    /// When Kinesis received the record.
    pub approximate_arrival: Option<DateTime<Utc>>,
    pub(crate) track: Arc<ShardTrack>,
}

impl Record {
    /// The record's position in its shard.
    pub fn position(&self) -> Position {
        Position {
            sequence: self.sequence_number.clone(),
            sub_sequence: self.sub_sequence_number,
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("stream", &self.stream)
            .field("shard_id", &self.shard_id)
            .field("sequence_number", &self.sequence_number)
            .field("sub_sequence_number", &self.sub_sequence_number)
            .field("data_len", &self.data.len())
            .finish_non_exhaustive()
    }
}
