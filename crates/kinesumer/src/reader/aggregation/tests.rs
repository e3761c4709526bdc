//! The decoder against the independent aggregator's vectors, hand-made malformed records,
//! a round trip through a test-only encoder, and "never panics" properties.
//!
//! The long run of the properties (see `docs/aggregation.md`):
//! `PROPTEST_CASES=1000000 cargo test --release -p kinesumer --lib reader::aggregation`

use proptest::prelude::*;

use super::*;

#[path = "../../../tests/common/kpl.rs"]
#[allow(dead_code, unreachable_pub)]
mod kpl;

/// The decoder on a copy of `data`: the tests build their inputs as plain byte slices.
fn decode(data: &[u8]) -> Result<Vec<UserRecord>, AggregateError> {
    super::decode(&Bytes::copy_from_slice(data))
}

fn fixtures() -> Vec<(String, Vec<u8>, Vec<UserRecord>)> {
    kpl::vectors()
        .into_iter()
        .map(|v| {
            let records = v
                .user_records
                .into_iter()
                .map(|r| UserRecord {
                    partition_key: r.partition_key,
                    explicit_hash_key: r.explicit_hash_key,
                    data: r.data.into(),
                })
                .collect();
            (v.name, v.aggregate, records)
        })
        .collect()
}

/// The aggregate of the vector `name`.
pub(in crate::reader) fn fixture(name: &str) -> Vec<u8> {
    kpl::vector(name).aggregate
}

/// A varint, for the test encoder.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Magic, `message`, MD5 of `message`.
fn wrap(message: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(message);
    out.extend_from_slice(&Md5::digest(message));
    out
}

/// The protobuf message of an aggregate (one table entry per record: enough for tests).
fn message(records: &[UserRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ehks = 0;
    for r in records {
        put_bytes(&mut out, 1, r.partition_key.as_bytes());
        if let Some(e) = &r.explicit_hash_key {
            put_bytes(&mut out, 2, e.as_bytes());
        }
    }
    for (i, r) in records.iter().enumerate() {
        let mut rec = Vec::new();
        put_varint(&mut rec, 1 << 3);
        put_varint(&mut rec, i as u64);
        if r.explicit_hash_key.is_some() {
            put_varint(&mut rec, 2 << 3);
            put_varint(&mut rec, ehks);
            ehks += 1;
        }
        put_bytes(&mut rec, 3, &r.data);
        put_bytes(&mut out, 3, &rec);
    }
    out
}

fn user(pk: &str, data: &[u8]) -> UserRecord {
    UserRecord {
        partition_key: pk.into(),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn decodes_every_vector_of_the_independent_aggregator() {
    let all = fixtures();
    let names: Vec<_> = all.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "binary",
            "distinct_keys",
            "empty",
            "explicit_hash_keys",
            "large",
            "many",
            "shared_keys",
            "single"
        ]
    );
    for (name, aggregate, expected) in all {
        assert!(is_aggregated(&aggregate), "{name}");
        let got = decode(&aggregate).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn a_record_without_the_magic_is_not_aggregated() {
    assert_eq!(decode(b""), Err(AggregateError::NotAggregated));
    assert_eq!(decode(&MAGIC[..3]), Err(AggregateError::NotAggregated));
    assert_eq!(decode(b"{\"json\":1}"), Err(AggregateError::NotAggregated));
}

#[test]
fn broken_aggregates_are_reported_not_split() {
    let good = fixture("shared_keys");
    // Too short for a digest.
    assert_eq!(
        decode(&good[..19]),
        Err(AggregateError::TooShort { len: 19 })
    );
    // Any flipped bit, in the message or the digest, fails the checksum.
    for at in [4, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert_eq!(decode(&bad), Err(AggregateError::Checksum), "bit at {at}");
    }
    // Truncated: the digest no longer matches.
    assert_eq!(
        decode(&good[..good.len() - 1]),
        Err(AggregateError::Checksum)
    );
}

#[test]
fn indexes_outside_their_tables_are_malformed() {
    let mut rec = Vec::new();
    put_varint(&mut rec, 1 << 3);
    put_varint(&mut rec, 1); // the table has one key: index 1 is outside
    put_bytes(&mut rec, 3, b"x");
    let mut m = Vec::new();
    put_bytes(&mut m, 1, b"k");
    put_bytes(&mut m, 3, &rec);
    assert_eq!(
        decode(&wrap(&m)),
        Err(AggregateError::IndexOutOfRange {
            index: 0,
            table: "partition key",
            value: 1
        })
    );
    // An explicit hash key index with an empty table.
    let mut rec = Vec::new();
    put_varint(&mut rec, 1 << 3);
    put_varint(&mut rec, 0);
    put_varint(&mut rec, 2 << 3);
    put_varint(&mut rec, u64::MAX);
    put_bytes(&mut rec, 3, b"x");
    let mut m = Vec::new();
    put_bytes(&mut m, 1, b"k");
    put_bytes(&mut m, 3, &rec);
    assert!(matches!(
        decode(&wrap(&m)),
        Err(AggregateError::IndexOutOfRange {
            table: "explicit hash key",
            value: u64::MAX,
            ..
        })
    ));
}

#[test]
fn missing_required_fields_and_non_utf8_keys_are_malformed() {
    let mut m = Vec::new();
    put_bytes(&mut m, 1, b"k");
    put_bytes(&mut m, 3, &[1 << 3, 0]); // no data
    assert_eq!(
        decode(&wrap(&m)),
        Err(AggregateError::MissingField {
            index: 0,
            field: "data"
        })
    );
    let mut m = Vec::new();
    put_bytes(&mut m, 3, &[3 << 3 | 2, 0]); // no partition key index
    assert_eq!(
        decode(&wrap(&m)),
        Err(AggregateError::MissingField {
            index: 0,
            field: "partition_key_index"
        })
    );
    let mut m = Vec::new();
    put_bytes(&mut m, 1, &[0xff, 0xfe]);
    put_bytes(&mut m, 3, &[1 << 3, 0, 3 << 3 | 2, 0]);
    assert_eq!(
        decode(&wrap(&m)),
        Err(AggregateError::NotUtf8 {
            index: 0,
            table: "partition key"
        })
    );
}

#[test]
fn unknown_fields_of_every_wire_type_and_tags_are_skipped() {
    let mut m = message(&[user("k", b"payload")]);
    // Unknown top-level fields: varint, fixed64, bytes, a group holding a group, fixed32.
    put_varint(&mut m, 9 << 3);
    put_varint(&mut m, 300);
    put_varint(&mut m, 10 << 3 | 1);
    m.extend_from_slice(&[0; 8]);
    put_bytes(&mut m, 11, b"later KPL");
    put_varint(&mut m, 12 << 3 | 3);
    put_varint(&mut m, 13 << 3 | 3);
    put_varint(&mut m, 13 << 3 | 4);
    put_varint(&mut m, 12 << 3 | 4);
    put_varint(&mut m, 14 << 3 | 5);
    m.extend_from_slice(&[0; 4]);
    // A second user record with a tag (field 4) before its other fields.
    let mut rec = Vec::new();
    let mut tag = Vec::new();
    put_bytes(&mut tag, 1, b"tag-key");
    put_bytes(&mut tag, 2, b"tag-value");
    put_bytes(&mut rec, 4, &tag);
    put_bytes(&mut rec, 3, b"second");
    put_varint(&mut rec, 1 << 3);
    put_varint(&mut rec, 0);
    put_bytes(&mut m, 3, &rec);
    assert_eq!(
        decode(&wrap(&m)),
        Ok(vec![user("k", b"payload"), user("k", b"second")])
    );
}

#[test]
fn invalid_protobuf_is_malformed() {
    let protobuf = |m: &[u8]| matches!(decode(&wrap(m)), Err(AggregateError::Protobuf { .. }));
    assert!(protobuf(&[0]), "field number 0");
    assert!(protobuf(&[1 << 3 | 7]), "wire type 7");
    assert!(protobuf(&[1 << 3 | 2, 5, b'a']), "bytes past the end");
    assert!(protobuf(&[1 << 3 | 2]), "missing length");
    assert!(protobuf(&[0xff; 11]), "varint too long");
    assert!(protobuf(&[9 << 3 | 3]), "unterminated group");
    assert!(protobuf(&[9 << 3 | 4]), "unmatched end of group");
    assert!(
        protobuf(&[9 << 3 | 3, 8 << 3 | 4]),
        "group ended by another field"
    );
    let deep: Vec<u8> = std::iter::repeat_n(9 << 3 | 3, 1000).collect();
    assert!(protobuf(&deep), "groups nested too deep");
    assert!(protobuf(&[9 << 3 | 1, 0, 0]), "fixed64 past the end");
}

fn arb_user() -> impl Strategy<Value = UserRecord> {
    (
        ".{0,8}",
        proptest::option::of("[0-9]{1,39}"),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(partition_key, explicit_hash_key, data)| UserRecord {
            partition_key,
            explicit_hash_key,
            data: data.into(),
        })
}

/// An edit of a valid aggregate: flip, set, insert or delete bytes, or cut it short.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Mutation::Flip(at, x)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Mutation::Flip(at, x) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= x;
                }
            }
            Mutation::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

proptest! {
    #[test]
    fn round_trips(records in proptest::collection::vec(arb_user(), 0..20)) {
        prop_assert_eq!(decode(&wrap(&message(&records))), Ok(records));
    }

    /// Arbitrary bytes, as they come and behind the magic with a valid digest (so the
    /// protobuf reader sees them): never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode(&wrap(&bytes));
    }

    /// Mutated valid aggregates, with the digest left as it was (the checksum must
    /// catch it, or the edit was a no-op) and recomputed (the parser must cope): never a
    /// panic, and a decoded result never has more records than the bytes could hold.
    #[test]
    fn mutated_aggregates_never_panic(
        records in proptest::collection::vec(arb_user(), 0..8),
        edits in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let valid = message(&records);
        let edited = mutate(wrap(&valid), &edits);
        if let Ok(got) = decode(&edited) {
            prop_assert_eq!(got, records.clone());
        }
        let message = mutate(valid, &edits);
        if let Ok(got) = decode(&wrap(&message)) {
            prop_assert!(got.len() <= message.len() / 2);
        }
    }
}

#[test]
fn mutations_of_the_independent_vectors_never_panic() {
    // Every single-byte flip of a small vector, digest recomputed: each must decode to
    // something or fail cleanly.
    let good = fixture("explicit_hash_keys");
    let message = &good[MAGIC.len()..good.len() - DIGEST_LEN];
    for at in 0..message.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut m = message.to_vec();
            m[at] ^= x;
            let _ = decode(&wrap(&m));
        }
    }
}
