//! Delivery of records to the application: per-shard tracking of what was handed out
//! and what was marked.

/// The delivery state of one shard lease, shared by its records.
#[derive(Debug, Default)]
pub(crate) struct ShardTrack {}
