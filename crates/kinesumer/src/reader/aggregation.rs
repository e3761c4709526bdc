//! Records aggregated by the Kinesis Producer Library (KPL): detection and splitting into
//! user records (DESIGN §5 "Aggregated records").
//!
//! The KPL packs many user records into one Kinesis record in this format (the KPL's
//! `aggregation-format.md`):
//!
//! ```text
//!  F3 89 9A C2 │ protobuf AggregatedRecord                       │ MD5(protobuf), 16 bytes
//!  magic       │  1: repeated string partition_key_table          │
//!              │  2: repeated string explicit_hash_key_table      │
//!              │  3: repeated Record records                      │
//!              │       1: uint64 partition_key_index (required)   │
//!              │       2: uint64 explicit_hash_key_index          │
//!              │       3: bytes  data (required)                  │
//!              │       4: repeated Tag tags (ignored)             │
//! ```
//!
//! The consumer splits every such record into its user records: user record `i` has the
//! Kinesis record's sequence number and sub-sequence number `i`. A record with the magic
//! prefix that does not decode — too short, MD5 mismatch, broken protobuf, an index
//! outside its table, a partition key that is not UTF-8 — is delivered as it is and
//! counted (`kinesumer_aggregated_malformed_total`), never dropped.
//!
//! The decoder is a small hand-written protobuf reader: it reads varints and
//! length-delimited fields, skips unknown fields of every wire type (groups too, to a
//! bounded depth), and never panics or allocates more than its input suggests, whatever
//! the bytes.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use kinesumer::reader::aggregation::{self, AggregateError};
//!
//! let plain = Bytes::from_static(b"not aggregated");
//! assert!(!aggregation::is_aggregated(&plain));
//! assert!(matches!(aggregation::decode(&plain), Err(AggregateError::NotAggregated)));
//!
//! // The magic, an empty protobuf, and the MD5 of nothing: an aggregate of no records.
//! let mut empty = vec![0xF3, 0x89, 0x9A, 0xC2];
//! empty.extend([
//!     0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04,
//!     0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
//! ]);
//! assert!(aggregation::decode(&Bytes::from(empty)).unwrap().is_empty());
//! ```

use std::fmt;

use bytes::Bytes;
use md5::{Digest, Md5};
use thiserror::Error;

/// The first four bytes of every KPL aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// How deep unknown groups may nest before the record is judged malformed: bounds the
/// recursion on hostile input (protobuf's own parsers stop at 100).
const MAX_GROUP_DEPTH: u32 = 32;

/// One user record of an aggregated record.
///
/// Its `Debug` form never shows the payload or the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user record's own partition key.
    pub partition_key: String,
    /// Its explicit hash key, when the producer set one.
    pub explicit_hash_key: Option<String>,
    /// The payload.
    /// A slice of the aggregate's buffer: splitting copies no payload.
    pub data: Bytes,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("partition_key_len", &self.partition_key.len())
            .field("explicit_hash_key", &self.explicit_hash_key.is_some())
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Why a record is not split into user records.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggregateError {
    /// It does not start with [`MAGIC`]: an ordinary record.
    #[error("not an aggregated record")]
    NotAggregated,
    /// It has the magic prefix but no room for a digest.
    #[error("aggregated record too short: {len} bytes")]
    TooShort {
        /// The record's length.
        len: usize,
    },
    /// The MD5 trailer does not match the protobuf bytes.
    #[error("aggregated record checksum mismatch")]
    Checksum,
    /// The protobuf message does not parse.
    #[error("aggregated record does not parse at byte {offset}: {reason}")]
    Protobuf {
        /// The offset inside the protobuf message.
        offset: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A user record names a partition key or explicit hash key outside its table.
    #[error("user record {index}: {table} index {value} out of range")]
    IndexOutOfRange {
        /// The user record (its sub-sequence number).
        index: usize,
        /// `"partition key"` or `"explicit hash key"`.
        table: &'static str,
        /// The index it names.
        value: u64,
    },
    /// A partition key or explicit hash key is not UTF-8 (a protobuf `string` must be).
    #[error("user record {index}: {table} is not UTF-8")]
    NotUtf8 {
        /// The user record (its sub-sequence number).
        index: usize,
        /// `"partition key"` or `"explicit hash key"`.
        table: &'static str,
    },
    /// A user record lacks a required field.
    #[error("user record {index} has no {field}")]
    MissingField {
        /// The user record (its sub-sequence number).
        index: usize,
        /// The field's name.
        field: &'static str,
    },
}

/// Whether `data` starts with the KPL magic prefix. Such a record is decoded with
/// [`decode`]; one that fails is still delivered as it is.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Splits an aggregated record into its user records, in sub-sequence order. An
/// aggregate of no user records gives an empty vector.
///
/// # Errors
///
/// [`AggregateError::NotAggregated`] without the magic prefix; any other variant for a
/// record with the prefix that does not verify or decode.
pub fn decode(data: &Bytes) -> Result<Vec<UserRecord>, AggregateError> {
    if !is_aggregated(data) {
        return Err(AggregateError::NotAggregated);
    }
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(AggregateError::TooShort { len: data.len() });
    }
    let (message, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(message).as_slice() != digest {
        return Err(AggregateError::Checksum);
    }
    parse(message)?.resolve(data)
}

/// The message as read, borrowing the input: tables and records may come in any order,
/// so indexes are resolved only once everything is read.
#[derive(Default)]
struct Parsed<'a> {
    partition_keys: Vec<&'a [u8]>,
    explicit_hash_keys: Vec<&'a [u8]>,
    records: Vec<ParsedRecord<'a>>,
}

#[derive(Default)]
struct ParsedRecord<'a> {
    partition_key_index: Option<u64>,
    explicit_hash_key_index: Option<u64>,
    data: Option<&'a [u8]>,
}

impl Parsed<'_> {
    /// The user records; their payloads are slices of `buffer`, the aggregate that
    /// `self` borrows from.
    fn resolve(self, buffer: &Bytes) -> Result<Vec<UserRecord>, AggregateError> {
        let key = |table: &[&[u8]], name, index, value: u64| {
            let bytes = usize::try_from(value)
                .ok()
                .and_then(|v| table.get(v))
                .ok_or(AggregateError::IndexOutOfRange {
                    index,
                    table: name,
                    value,
                })?;
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| AggregateError::NotUtf8 { index, table: name })
        };
        let missing = |index, field| AggregateError::MissingField { index, field };
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pk = r
                    .partition_key_index
                    .ok_or_else(|| missing(i, "partition_key_index"))?;
                Ok(UserRecord {
                    partition_key: key(&self.partition_keys, "partition key", i, pk)?,
                    explicit_hash_key: r
                        .explicit_hash_key_index
                        .map(|e| key(&self.explicit_hash_keys, "explicit hash key", i, e))
                        .transpose()?,
                    data: buffer.slice_ref(r.data.ok_or_else(|| missing(i, "data"))?),
                })
            })
            .collect()
    }
}

fn parse(message: &[u8]) -> Result<Parsed<'_>, AggregateError> {
    let mut parsed = Parsed::default();
    let mut r = Reader::new(message, 0);
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, Wire::Len) => parsed.partition_keys.push(r.bytes()?),
            (2, Wire::Len) => parsed.explicit_hash_keys.push(r.bytes()?),
            (3, Wire::Len) => {
                let offset = r.offset();
                parsed.records.push(parse_record(r.bytes()?, offset)?);
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(parsed)
}

fn parse_record(bytes: &[u8], base: usize) -> Result<ParsedRecord<'_>, AggregateError> {
    let mut record = ParsedRecord::default();
    let mut r = Reader::new(bytes, base);
    // A field seen twice keeps its last value, as protobuf merges scalars.
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, Wire::Varint) => record.partition_key_index = Some(r.varint()?),
            (2, Wire::Varint) => record.explicit_hash_key_index = Some(r.varint()?),
            (3, Wire::Len) => record.data = Some(r.bytes()?),
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(record)
}

/// Protobuf wire types (the encoding guide, "Message Structure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    StartGroup,
    EndGroup,
    Fixed32,
}

/// A cursor over protobuf bytes; `base` is where they start in the whole message, for
/// error offsets.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn error(&self, reason: &'static str) -> AggregateError {
        AggregateError::Protobuf {
            offset: self.offset(),
            reason,
        }
    }

    /// The next field's number and wire type; `None` at the end.
    fn tag(&mut self) -> Result<Option<(u64, Wire)>, AggregateError> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            3 => Wire::StartGroup,
            4 => Wire::EndGroup,
            5 => Wire::Fixed32,
            _ => return Err(self.error("invalid wire type")),
        };
        match key >> 3 {
            0 => Err(self.error("field number 0")),
            field => Ok(Some((field, wire))),
        }
    }

    /// A base-128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, AggregateError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], AggregateError> {
        let rest = self.bytes.len() - self.pos;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= rest)
            .ok_or_else(|| self.error("field runs past the end"))?;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self) -> Result<&'a [u8], AggregateError> {
        let len = self.varint()?;
        self.take(len)
    }

    /// Skips a field this decoder does not use (tags, and anything a later KPL adds).
    fn skip(&mut self, field: u64, wire: Wire, depth: u32) -> Result<(), AggregateError> {
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::Fixed64 => self.take(8).map(drop),
            Wire::Fixed32 => self.take(4).map(drop),
            Wire::Len => self.bytes().map(drop),
            Wire::EndGroup => Err(self.error("unmatched end of group")),
            Wire::StartGroup => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(self.error("groups nested too deep"));
                }
                loop {
                    match self.tag()? {
                        None => return Err(self.error("unterminated group")),
                        Some((f, Wire::EndGroup)) if f == field => return Ok(()),
                        Some((f, w)) => self.skip(f, w, depth + 1)?,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
