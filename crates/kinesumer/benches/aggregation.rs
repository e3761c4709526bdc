//! De-aggregation throughput on one core: user records per second and megabytes of
//! aggregated records per second, for the independent aggregator's vectors.
//!
//! ```text
//! cargo bench -p kinesumer --bench aggregation
//! ```
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) each vector is decoded once,
//! as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kinesumer::reader::aggregation;

#[path = "../tests/common/kpl.rs"]
#[allow(dead_code, unreachable_pub)]
mod kpl;

/// How long each vector is decoded for.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    println!(
        "{:<20} {:>9} {:>12} {:>16} {:>10}",
        "vector", "records", "bytes", "user records/s", "MB/s"
    );
    for name in ["many", "large", "explicit_hash_keys", "distinct_keys"] {
        let v = kpl::vector(name);
        let aggregate = bytes::Bytes::from(v.aggregate);
        let users = v.user_records.len();
        let mut decodes = 0u64;
        let start = Instant::now();
        loop {
            let got = aggregation::decode(black_box(&aggregate)).expect("a valid vector");
            assert_eq!(got.len(), users);
            black_box(got);
            decodes += 1;
            if !bench || start.elapsed() >= RUN {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:<20} {:>9} {:>12} {:>16.0} {:>10.1}",
            name,
            users,
            aggregate.len(),
            (decodes * users as u64) as f64 / secs,
            (decodes * aggregate.len() as u64) as f64 / secs / 1e6,
        );
    }
}
