//! What the Kinesis readers and the state store both say of a shard: its entry in a
//! listing ([`ShardInfo`], kept in the shard cache) and where it starts without a
//! checkpoint ([`StoredStart`], kept in its lease). Both are re-exported from
//! [`crate::store`], where the operator's tools find them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One shard as the shard cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The shard id.
    pub shard_id: String,
    /// The parent (split, or the first parent of a merge).
    pub parent: Option<String>,
    /// The adjacent parent of a merge.
    pub adjacent_parent: Option<String>,
    /// The shard has an ending sequence number: it receives no new records.
    pub closed: bool,
    /// The hash key range, as decimal strings.
    pub hash_range: Option<(String, String)>,
    /// The ending sequence number of a closed shard.
    pub ending_sequence: Option<String>,
}

/// Where a shard with no checkpoint starts, as stored in its lease (`start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredStart {
    /// The oldest record in the shard.
    TrimHorizon,
    /// The first record at or after this time (LATEST is pinned this way).
    AtTimestamp(DateTime<Utc>),
}
