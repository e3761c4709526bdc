//! Moving a consumer over from the AWS Kinesis Client Library without reprocessing:
//! reading a KCL lease table and writing this group's checkpoints for the same shards.
//!
//! Two lease-table formats are read:
//!
//! - **KCL 2.x/3.x** (Java, and the MultiLangDaemon that Python, Node and Ruby consumers
//!   run): one item per shard, keyed `leaseKey` — the shard id, or for a multi-stream
//!   application `account:stream:creationEpoch:shardId` (with `streamName` and `shardId`
//!   attributes) — with `leaseOwner`, `leaseCounter`, `checkpoint` (a sequence number or
//!   a sentinel: `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END`),
//!   `checkpointSubSequenceNumber`, and the lineage `parentShardId` / `childShardId`
//!   (string sets). The attribute names are those of the KCL's `DynamoDBLeaseSerializer`
//!   and `DynamoDBMultiStreamLeaseSerializer`. Items of other kinds (KCL 3 keeps worker
//!   metrics and coordinator state apart, but a table may hold such items, e.g. a
//!   `Leader` key) are skipped: a lease key is a shard id or a multi-stream key.
//! - **vmware-go-kcl**: keyed `ShardID`, with `Checkpoint` (a sequence number or
//!   `SHARD_END`), `AssignedTo`, `LeaseTimeout` and `ParentShardId` (its
//!   `checkpoint.go`).
//!
//! A KCL checkpoint `(N, k)` means the records up to sub-record `k` of record `N` are
//! processed; `k = 0` means the whole record (the KCL resumes after it). It becomes this
//! group's checkpoint `N` (whole record) or `(N, k)` inside a KPL aggregate, so the next
//! owner resumes at the next record or user record — neither before nor after.
//! `SHARD_END` becomes a finished lease, so the shard's children start at their beginning
//! and it is never read again. `TRIM_HORIZON` and `AT_TIMESTAMP` become the stored start;
//! `LATEST` (nothing processed yet) becomes a start pinned at the time of the import.
//! The KCL keeps no timestamp with `AT_TIMESTAMP` (it is in the worker's configuration), so
//! the import must be told it.
//!
//! ```no_run
//! # async fn run(dynamodb: aws_sdk_dynamodb::Client, store: kinesumer::store::DynamoStore)
//! # -> Result<(), kinesumer::migrate::MigrateError> {
//! use kinesumer::migrate;
//!
//! let leases = migrate::read_lease_table(&dynamodb, "orders-kcl-leases").await?;
//! let imports = migrate::plan(&leases, "orders", None, chrono::Utc::now())?;
//! for i in &imports {
//!     println!("{}: {} -> {}", i.shard_id, i.kcl, i.write);
//! }
//! migrate::import(&store, "orders", &imports, false).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::seq::{Position, SequenceNumber};
use crate::store::{StateStore, StoreError, StoredStart};

/// The lease-table format an item was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseFormat {
    /// The Java KCL 2.x/3.x (and the MultiLangDaemon).
    Kcl,
    /// vmware-go-kcl.
    VmwareGoKcl,
}

/// What a KCL lease says of its shard's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KclCheckpoint {
    /// Processed up to this position.
    At(Position),
    /// Nothing processed; start at the oldest record.
    TrimHorizon,
    /// Nothing processed; start at records written from now on.
    Latest,
    /// Nothing processed; start at a time kept in the KCL worker's configuration.
    AtTimestamp,
    /// Read to its end.
    ShardEnd,
    /// No checkpoint at all.
    None,
}

impl fmt::Display for KclCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KclCheckpoint::At(p) => match p.sub_sequence {
                Some(k) => write!(f, "{} (sub-record {k})", p.sequence),
                None => write!(f, "{}", p.sequence),
            },
            KclCheckpoint::TrimHorizon => f.write_str("TRIM_HORIZON"),
            KclCheckpoint::Latest => f.write_str("LATEST"),
            KclCheckpoint::AtTimestamp => f.write_str("AT_TIMESTAMP"),
            KclCheckpoint::ShardEnd => f.write_str("SHARD_END"),
            KclCheckpoint::None => f.write_str("none"),
        }
    }
}

/// One lease of a KCL lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KclLease {
    /// The format it was read in.
    pub format: LeaseFormat,
    /// The stream, for a multi-stream KCL application; `None` for a single-stream one.
    pub stream: Option<String>,
    /// The shard id.
    pub shard_id: String,
    /// The worker holding it, if any.
    pub owner: Option<String>,
    /// What moves while a worker holds it: the KCL's `leaseCounter`, vmware-go-kcl's
    /// `LeaseTimeout`. Read twice a while apart, a change means a live worker.
    pub liveness: Option<String>,
    /// The checkpoint.
    pub checkpoint: KclCheckpoint,
    /// The parent shards, as the KCL recorded them.
    pub parents: Vec<String>,
    /// The child shards, as the KCL recorded them.
    pub children: Vec<String>,
}

/// A failed import.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The KCL lease table could not be read.
    #[error("reading the KCL lease table {table:?}: {message}")]
    LeaseTable {
        /// The table.
        table: String,
        /// What went wrong.
        message: String,
    },
    /// An item of the lease table is not as the KCL writes it.
    #[error("KCL lease {key:?}: {reason}")]
    Malformed {
        /// The lease key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Leases checkpointed at `AT_TIMESTAMP`, with no timestamp given.
    #[error("the KCL leases of {shards:?} start AT_TIMESTAMP, whose time the KCL keeps in its worker configuration: give it (--at-timestamp)")]
    TimestampNeeded {
        /// The shards.
        shards: Vec<String>,
    },
    /// The KCL table has no lease of the stream.
    #[error("the KCL lease table has no lease of stream {stream:?}: check the table and the stream name")]
    NoLeases {
        /// The stream.
        stream: String,
    },
    /// The group already has checkpoints of these shards.
    #[error("the group already has checkpoints of {stream}: {shards:?}; pass --overwrite to replace them")]
    WouldOverwrite {
        /// The stream.
        stream: String,
        /// The shards.
        shards: Vec<String>,
    },
    /// A state-store request failed (a refused write: a member holds the shard).
    #[error(
        "writing {stream}/{shard_id}: {source} (is a member of the group running? stop it first)"
    )]
    Store {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The error.
        source: StoreError,
    },
}

type Item = HashMap<String, AttributeValue>;

fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_n().ok().cloned()
}

fn strings(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(v)) => v.clone(),
        Some(AttributeValue::S(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn checkpoint(key: &str, sequence: Option<&str>, sub: u64) -> Result<KclCheckpoint, MigrateError> {
    Ok(match sequence {
        None | Some("") => KclCheckpoint::None,
        Some("TRIM_HORIZON") => KclCheckpoint::TrimHorizon,
        Some("LATEST") => KclCheckpoint::Latest,
        Some("AT_TIMESTAMP") => KclCheckpoint::AtTimestamp,
        Some("SHARD_END") => KclCheckpoint::ShardEnd,
        Some(seq) => {
            let sequence: SequenceNumber = seq.parse().map_err(|_| MigrateError::Malformed {
                key: key.to_owned(),
                reason: format!("checkpoint {seq:?} is neither a sequence number nor a sentinel"),
            })?;
            KclCheckpoint::At(Position {
                sequence,
                sub_sequence: (sub > 0).then_some(sub),
            })
        }
    })
}

/// Reads one lease-table item; `None` for an item that is no lease (another kind of KCL
/// item).
///
/// # Errors
///
/// A lease whose checkpoint or sub-sequence number cannot be read.
pub fn parse_item(item: &Item) -> Result<Option<KclLease>, MigrateError> {
    if let Some(key) = string(item, "leaseKey") {
        let (stream, shard_id) = match (string(item, "streamName"), string(item, "shardId")) {
            (Some(id), Some(shard)) => (Some(stream_name(&id).to_owned()), shard),
            // Not a shard's lease: another kind of item kept under the same key.
            _ if !key.starts_with("shardId-") => return Ok(None),
            _ => (None, key.clone()),
        };
        let sub = match number(item, "checkpointSubSequenceNumber") {
            None => 0,
            Some(n) => n.parse().map_err(|_| MigrateError::Malformed {
                key: key.clone(),
                reason: format!("checkpointSubSequenceNumber {n:?} is not a number"),
            })?,
        };
        let sequence = string(item, "checkpoint");
        return Ok(Some(KclLease {
            format: LeaseFormat::Kcl,
            stream,
            checkpoint: checkpoint(&key, sequence.as_deref(), sub)?,
            shard_id,
            owner: string(item, "leaseOwner"),
            liveness: number(item, "leaseCounter"),
            parents: strings(item, "parentShardId"),
            children: strings(item, "childShardId"),
        }));
    }
    if let Some(shard_id) = string(item, "ShardID") {
        let sequence = string(item, "Checkpoint");
        return Ok(Some(KclLease {
            format: LeaseFormat::VmwareGoKcl,
            stream: None,
            checkpoint: checkpoint(&shard_id, sequence.as_deref(), 0)?,
            owner: string(item, "AssignedTo"),
            liveness: string(item, "LeaseTimeout"),
            parents: strings(item, "ParentShardId"),
            children: Vec::new(),
            shard_id,
        }));
    }
    Ok(None)
}

/// The stream name of a KCL stream identifier `account:stream:creationEpoch`.
fn stream_name(identifier: &str) -> &str {
    let parts: Vec<&str> = identifier.split(':').collect();
    match parts.as_slice() {
        [_, stream, _] => stream,
        _ => identifier,
    }
}

/// Reads every lease of a KCL lease table (a paged Scan, strongly consistent).
///
/// # Errors
///
/// The table cannot be read, or a lease in it cannot.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn read_lease_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<KclLease>, MigrateError> {
    let mut leases = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| MigrateError::LeaseTable {
                table: table.to_owned(),
                message: crate::aws::sdk_message("DynamoDB", &e),
            })?;
        for item in page.items() {
            leases.extend(parse_item(item)?);
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(leases),
        }
    }
}

/// What an import writes for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportWrite {
    /// The checkpoint: reading resumes after it.
    Checkpoint(Position),
    /// No checkpoint; the stored start.
    Start(StoredStart),
    /// A finished lease: the shard is never read again and its children start at their
    /// beginning.
    Finished,
    /// Nothing: the KCL lease has no checkpoint, and the group's initial position applies.
    Nothing,
}

impl fmt::Display for ImportWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportWrite::Checkpoint(p) => match p.sub_sequence {
                Some(k) => write!(f, "checkpoint {} (user record {k})", p.sequence),
                None => write!(f, "checkpoint {}", p.sequence),
            },
            ImportWrite::Start(StoredStart::TrimHorizon) => f.write_str("start TRIM_HORIZON"),
            ImportWrite::Start(StoredStart::AtTimestamp(t)) => write!(f, "start at {t}"),
            ImportWrite::Finished => f.write_str("finished (shard_end)"),
            ImportWrite::Nothing => f.write_str("nothing (initial position)"),
        }
    }
}

/// One shard's import: what the KCL lease says and what is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The shard.
    pub shard_id: String,
    /// The KCL checkpoint.
    pub kcl: KclCheckpoint,
    /// What is written.
    pub write: ImportWrite,
    /// The parent shards the KCL recorded.
    pub parents: Vec<String>,
}

/// The import of `stream`'s leases: a pure function of the leases read. `at_timestamp` is
/// the time of the KCL workers' `AT_TIMESTAMP` initial position, if any lease still
/// starts there; `now` pins `LATEST`.
///
/// # Errors
///
/// No lease of the stream; leases at `AT_TIMESTAMP` without a time.
pub fn plan(
    leases: &[KclLease],
    stream: &str,
    at_timestamp: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<Import>, MigrateError> {
    let mut untimed = Vec::new();
    let mut imports: Vec<Import> = leases
        .iter()
        .filter(|l| l.stream.as_deref().is_none_or(|s| s == stream))
        .map(|l| {
            let write = match &l.checkpoint {
                KclCheckpoint::At(p) => ImportWrite::Checkpoint(p.clone()),
                KclCheckpoint::TrimHorizon => ImportWrite::Start(StoredStart::TrimHorizon),
                KclCheckpoint::Latest => ImportWrite::Start(StoredStart::AtTimestamp(now)),
                KclCheckpoint::AtTimestamp => match at_timestamp {
                    Some(t) => ImportWrite::Start(StoredStart::AtTimestamp(t)),
                    None => {
                        untimed.push(l.shard_id.clone());
                        ImportWrite::Nothing
                    }
                },
                KclCheckpoint::ShardEnd => ImportWrite::Finished,
                KclCheckpoint::None => ImportWrite::Nothing,
            };
            Import {
                shard_id: l.shard_id.clone(),
                kcl: l.checkpoint.clone(),
                write,
                parents: l.parents.clone(),
            }
        })
        .collect();
    if imports.is_empty() {
        return Err(MigrateError::NoLeases {
            stream: stream.to_owned(),
        });
    }
    if !untimed.is_empty() {
        return Err(MigrateError::TimestampNeeded { shards: untimed });
    }
    imports.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    Ok(imports)
}

/// Writes the imports as this group's checkpoints of `stream`, each conditional on the
/// lease having no owner (no member of the group may run meanwhile). Refuses, writing
/// nothing, when the group already has a checkpoint, start or finished lease of one of
/// the shards, unless `overwrite`.
///
/// # Errors
///
/// [`MigrateError::WouldOverwrite`], or a state-store error naming the shard.
///
/// # Cancel safety
///
/// Not cancel safe: dropped part-way, some shards are written and others not; running it
/// again with `overwrite` completes it.
pub async fn import(
    store: &dyn StateStore,
    stream: &str,
    imports: &[Import],
    overwrite: bool,
) -> Result<(), MigrateError> {
    let store_error = |shard_id: &str, source| MigrateError::Store {
        stream: stream.to_owned(),
        shard_id: shard_id.to_owned(),
        source,
    };
    let existing = store
        .leases(stream)
        .await
        .map_err(|e| store_error("*", e))?;
    let taken: Vec<String> = existing
        .iter()
        .filter(|l| l.checkpoint.is_some() || l.start.is_some() || l.shard_end)
        .filter(|l| imports.iter().any(|i| i.shard_id == l.shard_id))
        .map(|l| l.shard_id.clone())
        .collect();
    if !taken.is_empty() && !overwrite {
        return Err(MigrateError::WouldOverwrite {
            stream: stream.to_owned(),
            shards: taken,
        });
    }
    for i in imports {
        let (position, start, finished) = match &i.write {
            ImportWrite::Checkpoint(p) => (Some(p), None, false),
            ImportWrite::Start(s) => (None, Some(s), false),
            ImportWrite::Finished => (None, None, true),
            ImportWrite::Nothing => continue,
        };
        store
            .set_checkpoint(stream, &i.shard_id, position, start, finished, false)
            .await
            .map_err(|e| store_error(&i.shard_id, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: u64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    fn kcl(key: &str, checkpoint: &str, sub: u64) -> Item {
        Item::from([
            ("leaseKey".to_owned(), s(key)),
            ("leaseCounter".to_owned(), n(7)),
            ("ownerSwitchesSinceCheckpoint".to_owned(), n(0)),
            ("checkpoint".to_owned(), s(checkpoint)),
            ("checkpointSubSequenceNumber".to_owned(), n(sub)),
        ])
    }

    fn lease_of(item: &Item) -> KclLease {
        parse_item(item).unwrap().unwrap()
    }

    #[test]
    fn kcl_checkpoints_and_sentinels_map_to_this_groups_checkpoints() {
        let now = Utc::now();
        let t = DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let leases: Vec<KclLease> = [
            kcl(
                "shardId-000000000000",
                "49590338271490256608559692538361571095921575989136588898",
                0,
            ),
            kcl(
                "shardId-000000000001",
                "49590338271490256608559692538361571095921575989136588899",
                3,
            ),
            kcl("shardId-000000000002", "TRIM_HORIZON", 0),
            kcl("shardId-000000000003", "LATEST", 0),
            kcl("shardId-000000000004", "AT_TIMESTAMP", 0),
            kcl("shardId-000000000005", "SHARD_END", 0),
        ]
        .iter()
        .map(lease_of)
        .collect();
        let writes: Vec<ImportWrite> = plan(&leases, "any", Some(t), now)
            .unwrap()
            .into_iter()
            .map(|i| i.write)
            .collect();
        let seq = |v: &str, sub| Position {
            sequence: v.parse().unwrap(),
            sub_sequence: sub,
        };
        assert_eq!(
            writes,
            vec![
                ImportWrite::Checkpoint(seq(
                    "49590338271490256608559692538361571095921575989136588898",
                    None
                )),
                ImportWrite::Checkpoint(seq(
                    "49590338271490256608559692538361571095921575989136588899",
                    Some(3)
                )),
                ImportWrite::Start(StoredStart::TrimHorizon),
                ImportWrite::Start(StoredStart::AtTimestamp(now)),
                ImportWrite::Start(StoredStart::AtTimestamp(t)),
                ImportWrite::Finished,
            ]
        );
        let err = plan(&leases, "any", None, now).unwrap_err();
        assert!(
            matches!(err, MigrateError::TimestampNeeded { ref shards } if shards == &["shardId-000000000004"])
        );
    }

    #[test]
    fn multi_stream_keys_select_the_stream() {
        let mut item = kcl(
            "123456789012:orders:1700000000:shardId-000000000001",
            "TRIM_HORIZON",
            0,
        );
        item.insert("streamName".into(), s("123456789012:orders:1700000000"));
        item.insert("shardId".into(), s("shardId-000000000001"));
        let mut other = kcl(
            "123456789012:events:1700000000:shardId-000000000001",
            "LATEST",
            0,
        );
        other.insert("streamName".into(), s("123456789012:events:1700000000"));
        other.insert("shardId".into(), s("shardId-000000000001"));
        let leases = vec![lease_of(&item), lease_of(&other)];
        assert_eq!(leases[0].stream.as_deref(), Some("orders"));
        let imports = plan(&leases, "orders", None, Utc::now()).unwrap();
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].shard_id, "shardId-000000000001");
        assert!(matches!(
            plan(&leases, "nope", None, Utc::now()),
            Err(MigrateError::NoLeases { .. })
        ));
    }

    #[test]
    fn vmware_go_kcl_items_and_other_items() {
        let item = Item::from([
            ("ShardID".to_owned(), s("shardId-000000000000")),
            ("Checkpoint".to_owned(), s("SHARD_END")),
            ("AssignedTo".to_owned(), s("worker-1")),
            ("LeaseTimeout".to_owned(), s("2024-05-01T00:00:00Z")),
            ("ParentShardId".to_owned(), s("shardId-000000000009")),
        ]);
        let lease = lease_of(&item);
        assert_eq!(lease.format, LeaseFormat::VmwareGoKcl);
        assert_eq!(lease.checkpoint, KclCheckpoint::ShardEnd);
        assert_eq!(lease.parents, vec!["shardId-000000000009".to_string()]);
        let stray = Item::from([("key".to_owned(), s("worker-metrics"))]);
        assert_eq!(parse_item(&stray).unwrap(), None);
        let other = Item::from([("leaseKey".to_owned(), s("Leader"))]);
        assert_eq!(parse_item(&other).unwrap(), None);
        let bad = kcl("shardId-1", "not-a-number", 0);
        assert!(matches!(
            parse_item(&bad),
            Err(MigrateError::Malformed { .. })
        ));
    }
}
