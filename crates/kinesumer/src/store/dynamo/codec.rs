//! The item formats of the table (DESIGN §2–§3): keys, attribute names, and the
//! conversions between DynamoDB items and the store's types.
//!
//! The names the Go client reads and writes (`last_update`, `sequence_number`, `shards`
//! with `ID` and `Closed`) are kept exactly.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::{
    format_time, parse_time, LeaseItem, Limits, LoadReport, LockItem, MemberItem, Owner,
    PlannedShard, ShardCache, ShardInfo, ShardRef, StoreError, StoredStart,
};
use crate::seq::{Position, SequenceNumber};

/// One DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

/// Attribute names, in one place.
pub(super) mod attr {
    pub(crate) const PK: &str = "pk";
    pub(crate) const SK: &str = "sk";
    pub(crate) const LAST_UPDATE: &str = "last_update";
    // member
    pub(crate) const INCARNATION: &str = "incarnation";
    pub(crate) const HEARTBEAT: &str = "heartbeat";
    pub(crate) const STREAMS: &str = "streams";
    pub(crate) const VERSION: &str = "version";
    pub(crate) const CAPACITY: &str = "capacity";
    pub(crate) const LOAD: &str = "load";
    pub(crate) const MAX_SHARDS: &str = "max_shards";
    pub(crate) const MAX_BYTES_PER_SEC: &str = "max_bytes_per_sec";
    // lock, lease
    pub(crate) const OWNER: &str = "owner";
    pub(crate) const TERM: &str = "term";
    pub(crate) const RENEWALS: &str = "renewals";
    // plan
    pub(crate) const TOKEN: &str = "token";
    pub(crate) const PLAN: &str = "plan";
    pub(crate) const PLAN_VERSION: &str = "plan_version";
    /// On the first item of a body split over several items: how many there are.
    pub(crate) const PARTS: &str = "parts";
    // shard cache
    pub(crate) const SHARDS: &str = "shards";
    pub(crate) const STREAM_CREATED: &str = "stream_created";
    pub(crate) const SHARD_ID: &str = "ID";
    pub(crate) const CLOSED: &str = "Closed";
    pub(crate) const PARENT: &str = "Parent";
    pub(crate) const ADJACENT_PARENT: &str = "AdjacentParent";
    pub(crate) const HASH_START: &str = "HashStart";
    pub(crate) const HASH_END: &str = "HashEnd";
    pub(crate) const ENDING_SEQUENCE: &str = "EndingSequence";
    // checkpoint + lease
    pub(crate) const SEQUENCE_NUMBER: &str = "sequence_number";
    pub(crate) const SUB_SEQUENCE_NUMBER: &str = "sub_sequence_number";
    pub(crate) const LEASE_COUNTER: &str = "lease_counter";
    pub(crate) const START: &str = "start";
    pub(crate) const SHARD_END: &str = "shard_end";
    pub(crate) const MILLIS_BEHIND: &str = "millis_behind";
}

/// The `start` value of TRIM_HORIZON.
const TRIM_HORIZON: &str = "TRIM_HORIZON";

/// The partition and sort keys of the items of one app.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    app: String,
}

impl Keys {
    pub(super) fn new(app: &str) -> Self {
        Self {
            app: app.to_owned(),
        }
    }

    pub(super) fn member_pk(&self) -> String {
        format!("client#{}", self.app)
    }

    pub(super) fn lock(&self) -> Item {
        key(format!("leader#{}", self.app), "leader".to_owned())
    }

    pub(super) fn plan_pk(&self) -> String {
        format!("plan#{}", self.app)
    }

    pub(super) fn shard_cache_pk(&self) -> String {
        format!("shard_cache#{}", self.app)
    }

    pub(super) fn lease_pk(&self, stream: &str) -> String {
        format!("check_point#{}#{stream}", self.app)
    }
}

/// A key item.
pub(super) fn key(pk: String, sk: String) -> Item {
    HashMap::from([(attr::PK.to_owned(), s(pk)), (attr::SK.to_owned(), s(sk))])
}

/// The sort key of part `n` (n ≥ 1) of a split body.
pub(super) fn part_sk(sk: &str, n: usize) -> String {
    format!("{sk}#{n}")
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn now() -> AttributeValue {
    s(format_time(Utc::now()))
}

pub(super) fn time(t: DateTime<Utc>) -> AttributeValue {
    s(format_time(t))
}

pub(super) fn string_list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x.as_str())).collect())
}

pub(super) fn start_value(start: &StoredStart) -> AttributeValue {
    match start {
        StoredStart::TrimHorizon => s(TRIM_HORIZON),
        StoredStart::AtTimestamp(t) => time(*t),
    }
}

/// Reads the attributes of one item, naming it in every [`StoreError::Malformed`].
pub(super) struct Attrs<'a> {
    item: &'a Item,
    name: &'a str,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(item: &'a Item, name: &'a str) -> Self {
        Self { item, name }
    }

    pub(super) fn malformed(&self, attr: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Malformed {
            item: self.name.to_owned(),
            reason: format!("attribute {attr}: {reason}"),
        }
    }

    fn get(&self, attr: &str) -> Option<&'a AttributeValue> {
        self.item.get(attr).filter(|v| !v.is_null())
    }

    pub(super) fn s(&self, attr: &str) -> Result<Option<&'a str>, StoreError> {
        self.get(attr)
            .map(|v| v.as_s().map(String::as_str))
            .transpose()
            .map_err(|_| self.malformed(attr, "not a string"))
    }

    pub(super) fn required_s(&self, attr: &str) -> Result<&'a str, StoreError> {
        self.s(attr)?.ok_or_else(|| self.malformed(attr, "missing"))
    }

    pub(super) fn n<T: FromStr>(&self, attr: &str) -> Result<Option<T>, StoreError> {
        let Some(v) = self.get(attr) else {
            return Ok(None);
        };
        let text = v.as_n().map_err(|_| self.malformed(attr, "not a number"))?;
        text.parse()
            .map(Some)
            .map_err(|_| self.malformed(attr, format!("{text:?} out of range")))
    }

    pub(super) fn required_n<T: FromStr>(&self, attr: &str) -> Result<T, StoreError> {
        self.n(attr)?.ok_or_else(|| self.malformed(attr, "missing"))
    }

    pub(super) fn bool(&self, attr: &str) -> Result<bool, StoreError> {
        self.get(attr)
            .map(|v| v.as_bool().copied())
            .transpose()
            .map(|b| b.unwrap_or(false))
            .map_err(|_| self.malformed(attr, "not a boolean"))
    }

    pub(super) fn time(&self, attr: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.s(attr)?
            .map(|t| {
                parse_time(t).ok_or_else(|| self.malformed(attr, format!("{t:?} is not RFC 3339")))
            })
            .transpose()
    }

    pub(super) fn owner(&self, attr: &str) -> Result<Option<Owner>, StoreError> {
        self.s(attr)?
            .map(|o| {
                Owner::parse(o).ok_or_else(|| {
                    self.malformed(attr, format!("{o:?} is not <client id>#<token>"))
                })
            })
            .transpose()
    }

    pub(super) fn list(&self, attr: &str) -> Result<&'a [AttributeValue], StoreError> {
        match self.get(attr) {
            None => Ok(&[]),
            Some(v) => v
                .as_l()
                .map(Vec::as_slice)
                .map_err(|_| self.malformed(attr, "not a list")),
        }
    }

    pub(super) fn string_list(&self, attr: &str) -> Result<Vec<String>, StoreError> {
        self.list(attr)?
            .iter()
            .map(|v| {
                v.as_s()
                    .cloned()
                    .map_err(|_| self.malformed(attr, "an element is not a string"))
            })
            .collect()
    }

    /// How many items the body of this (first) item spans.
    pub(super) fn parts(&self) -> Result<usize, StoreError> {
        Ok(self.n::<usize>(attr::PARTS)?.unwrap_or(1).max(1))
    }
}

/// Reads a member item.
pub(super) fn member(item: &Item) -> Result<MemberItem, StoreError> {
    let a = Attrs::new(item, "member");
    let client_id = a.required_s(attr::SK)?.to_owned();
    let name = format!("member {client_id}");
    let a = Attrs::new(item, &name);
    Ok(MemberItem {
        incarnation: a.s(attr::INCARNATION)?.map(str::to_owned),
        heartbeat: a.n(attr::HEARTBEAT)?.unwrap_or(0),
        streams: a.string_list(attr::STREAMS)?,
        last_update: a.time(attr::LAST_UPDATE)?,
        load: match (a.n::<f64>(attr::CAPACITY)?, a.s(attr::LOAD)?) {
            (Some(capacity), Some(json)) => {
                let limits = Limits {
                    max_shards: a.n(attr::MAX_SHARDS)?,
                    max_bytes_per_sec: a.n(attr::MAX_BYTES_PER_SEC)?,
                };
                Some(
                    LoadReport::from_json(capacity, limits, json)
                        .map_err(|e| a.malformed(attr::LOAD, e))?,
                )
            }
            _ => None,
        },
        client_id,
    })
}

/// Reads the leader lock.
pub(super) fn lock(item: &Item) -> Result<LockItem, StoreError> {
    let a = Attrs::new(item, "leader lock");
    Ok(LockItem {
        owner: a.owner(attr::OWNER)?,
        term: a.required_n(attr::TERM)?,
        renewals: a.required_n(attr::RENEWALS)?,
    })
}

/// Reads a checkpoint and lease item of `stream`.
pub(super) fn lease(stream: &str, item: &Item) -> Result<LeaseItem, StoreError> {
    let shard_id = Attrs::new(item, &format!("lease {stream}"))
        .required_s(attr::SK)?
        .to_owned();
    let name = format!("lease {stream}/{shard_id}");
    let a = Attrs::new(item, &name);
    let sequence = match a.s(attr::SEQUENCE_NUMBER)? {
        None | Some("") => None,
        Some(digits) => Some(
            SequenceNumber::from_str(digits).map_err(|e| a.malformed(attr::SEQUENCE_NUMBER, e))?,
        ),
    };
    let checkpoint = sequence
        .map(|sequence| -> Result<_, StoreError> {
            Ok(Position {
                sequence,
                sub_sequence: a.n(attr::SUB_SEQUENCE_NUMBER)?,
            })
        })
        .transpose()?;
    let start = match a.s(attr::START)? {
        None => None,
        Some(TRIM_HORIZON) => Some(StoredStart::TrimHorizon),
        Some(t) => Some(StoredStart::AtTimestamp(parse_time(t).ok_or_else(
            || {
                a.malformed(
                    attr::START,
                    format!("{t:?} is neither {TRIM_HORIZON} nor RFC 3339"),
                )
            },
        )?)),
    };
    Ok(LeaseItem {
        stream: stream.to_owned(),
        checkpoint,
        owner: a.owner(attr::OWNER)?,
        lease_counter: a.n(attr::LEASE_COUNTER)?,
        start,
        shard_end: a.bool(attr::SHARD_END)?,
        millis_behind: a.n(attr::MILLIS_BEHIND)?,
        last_update: a.time(attr::LAST_UPDATE)?,
        shard_id,
    })
}

/// The body of a plan, stored as JSON in `plan` (split over several items when large).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PlanBody {
    pub(super) streams: BTreeMap<String, Vec<PlannedShard>>,
    pub(super) release: Vec<ShardRef>,
}

/// Writes one shard of the shard cache as a map (`ID` and `Closed` as the Go client).
pub(super) fn shard_value(shard: &ShardInfo) -> AttributeValue {
    let mut m = HashMap::from([
        (attr::SHARD_ID.to_owned(), s(shard.shard_id.as_str())),
        (attr::CLOSED.to_owned(), AttributeValue::Bool(shard.closed)),
    ]);
    let (hash_start, hash_end) = shard.hash_range.clone().unzip();
    let optional = [
        (attr::PARENT, shard.parent.clone()),
        (attr::ADJACENT_PARENT, shard.adjacent_parent.clone()),
        (attr::HASH_START, hash_start),
        (attr::HASH_END, hash_end),
        (attr::ENDING_SEQUENCE, shard.ending_sequence.clone()),
    ];
    m.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), s(v?)))),
    );
    AttributeValue::M(m)
}

/// Reads the shards of (one part of) a shard cache item.
pub(super) fn shards(a: &Attrs<'_>) -> Result<Vec<ShardInfo>, StoreError> {
    a.list(attr::SHARDS)?
        .iter()
        .map(|v| {
            let m = v
                .as_m()
                .map_err(|_| a.malformed(attr::SHARDS, "an element is not a map"))?;
            let s = Attrs::new(m, a.name);
            let opt = |k: &str| s.s(k).map(|v| v.map(str::to_owned));
            let hash_range = match (opt(attr::HASH_START)?, opt(attr::HASH_END)?) {
                (Some(start), Some(end)) => Some((start, end)),
                _ => None,
            };
            Ok(ShardInfo {
                shard_id: s.required_s(attr::SHARD_ID)?.to_owned(),
                parent: opt(attr::PARENT)?,
                adjacent_parent: opt(attr::ADJACENT_PARENT)?,
                closed: s.bool(attr::CLOSED)?,
                hash_range,
                ending_sequence: opt(attr::ENDING_SEQUENCE)?,
            })
        })
        .collect()
}

/// Reads the first item of a shard cache (its own shards; the caller adds the parts').
pub(super) fn shard_cache(stream: &str, a: &Attrs<'_>) -> Result<ShardCache, StoreError> {
    Ok(ShardCache {
        stream: stream.to_owned(),
        shards: shards(a)?,
        stream_created: a.time(attr::STREAM_CREATED)?,
    })
}
