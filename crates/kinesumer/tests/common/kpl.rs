//! The KPL test vectors of `tests/fixtures/kpl/` (written by `scripts/make-kpl-vectors`
//! with the independent aggregator `aws-kinesis-agg`). Shared by the integration tests
//! and the decoder's unit tests (which include this file by path).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

/// One vector: the aggregate as the aggregator serialized it, and the user records that
/// went in.
#[derive(Debug, Clone)]
pub struct Vector {
    /// The file's name without `.json`.
    pub name: String,
    /// The aggregated Kinesis record's data.
    pub aggregate: Vec<u8>,
    /// The user records, in sub-sequence order.
    pub user_records: Vec<VectorRecord>,
}

/// A user record of a vector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VectorRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, if any.
    pub explicit_hash_key: Option<String>,
    /// Its data, base64 in the file, decoded here.
    #[serde(deserialize_with = "base64_bytes")]
    pub data: Vec<u8>,
}

#[derive(Deserialize)]
struct File {
    name: String,
    #[serde(deserialize_with = "base64_bytes")]
    aggregate: Vec<u8>,
    user_records: Vec<VectorRecord>,
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    B64.decode(text).map_err(serde::de::Error::custom)
}

/// Every vector, sorted by name.
pub fn vectors() -> Vec<Vector> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kpl");
    let mut out: Vec<Vector> = std::fs::read_dir(dir)
        .expect("the KPL fixtures (scripts/make-kpl-vectors)")
        .map(|entry| {
            let text = std::fs::read_to_string(entry.expect("fixture").path()).expect("read");
            let f: File = serde_json::from_str(&text).expect("fixture JSON");
            Vector {
                name: f.name,
                aggregate: f.aggregate,
                user_records: f.user_records,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The vector `name`.
pub fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no KPL vector {name:?}"))
}
