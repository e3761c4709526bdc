//! The records handed to the application.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::checkpoint::ShardTrack;
#[cfg(any(test, feature = "test-util"))]
use crate::fence::Fence;
use crate::reader::feed::ReadItem;
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
    /// The partition key (a user record's own, inside an aggregated record).
    pub partition_key: String,
    /// The explicit hash key of a user record whose producer set one; `None` otherwise
    /// (Kinesis does not return the explicit hash key of a whole record).
    pub explicit_hash_key: Option<String>,
    /// The payload (a slice of the aggregate's buffer for a user record of a KPL
    /// aggregate: splitting copies nothing).
    pub data: Bytes,
    /// When Kinesis received the record.
    pub approximate_arrival: Option<DateTime<Utc>>,
    /// Where marking this record puts its shard's mark.
    pub(crate) position: Position,
    pub(crate) track: Arc<ShardTrack>,
}

impl Record {
    /// A record read from the shard that `track` follows.
    pub(crate) fn new(item: ReadItem, track: Arc<ShardTrack>) -> Self {
        let raw = item.record;
        Self {
            stream: track.stream.clone(),
            shard_id: track.shard_id.clone(),
            sequence_number: raw.sequence_number,
            sub_sequence_number: item.sub_sequence,
            partition_key: raw.partition_key,
            explicit_hash_key: item.explicit_hash_key,
            data: raw.data,
            approximate_arrival: raw.approximate_arrival,
            position: item.position,
            track,
        }
    }

    /// The position that marking this record marks processed: `(sequence number,
    /// sub-sequence number)`, except for the last user record of an aggregated record,
    /// whose position is the whole Kinesis record — processing it completes the
    /// aggregate, so its checkpoint needs no sub-sequence number.
    pub fn position(&self) -> Position {
        self.position.clone()
    }

    /// The fencing token of the lease this record was read under: the lease counter of
    /// its take, which strictly increases with every take of the shard. A downstream
    /// store that keeps the highest token it saw per shard and refuses writes with a
    /// lower one refuses the writes of a stale holder after a failover (docs/processing.md,
    /// "Fencing tokens").
    pub fn fencing_token(&self) -> u64 {
        self.track.token
    }
}

#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
impl Record {
    /// A whole record (no sub-sequence number) of no real shard, to unit-test a
    /// [`Handler`](crate::Handler) or the code that reads a [`Records`](crate::Records)
    /// stream. Its partition key is empty and it has no arrival time; set the public
    /// fields to change them. Marking it ([`Kinesumer::mark`](crate::Kinesumer::mark))
    /// moves the mark of a shard of its own, which no member commits.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut record = kinesumer::Record::for_test("orders", "shardId-000000000000", "49590".parse()?, "hello");
    /// record.partition_key = "customer-7".into();
    /// assert_eq!(&record.data[..], b"hello");
    /// # Ok::<(), kinesumer::seq::InvalidSequenceNumber>(())
    /// ```
    pub fn for_test(
        stream: &str,
        shard_id: &str,
        sequence_number: SequenceNumber,
        data: impl Into<Bytes>,
    ) -> Self {
        use crate::clock::{Clock, SystemClock};
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // A fence that never trips: there is no lease to lose.
        let fence = Fence::new(clock.clone(), std::time::Duration::MAX, clock.fencing_now());
        let track = ShardTrack::new(stream.into(), shard_id.into(), 1, Arc::new(fence));
        Self {
            stream: track.stream.clone(),
            shard_id: track.shard_id.clone(),
            position: Position::whole(sequence_number.clone()),
            sequence_number,
            sub_sequence_number: None,
            partition_key: String::new(),
            explicit_hash_key: None,
            data: data.into(),
            approximate_arrival: None,
            track: Arc::new(track),
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
