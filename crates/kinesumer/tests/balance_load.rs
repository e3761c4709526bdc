//! Balancing by load on the local stack (issue 21): three members, one shard written ten
//! times as fast as each other; its holder ends up with fewer shards than the others, and
//! the moves lose and repeat nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use common::*;
use futures::StreamExt;
use kinesumer::{Balancing, Kinesumer};

/// Every record handed to any member: its sequence number, as many times as handed out.
type Seen = Arc<Mutex<Vec<String>>>;

/// Starts a member balancing by load that marks every record it receives.
async fn member(f: &Fresh, id: &str, seen: &Seen) -> Arc<Kinesumer> {
    let config = config(&f.app, &f.table, id)
        .balance(Balancing::Load)
        .load_window(Duration::from_secs(2))
        .commit_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let member = Arc::new(within("new", Kinesumer::new(config)).await.expect("member"));
    let mut records = within("consume", member.consume([f.stream.as_str()]))
        .await
        .expect("consume");
    let (sink, m) = (seen.clone(), member.clone());
    tokio::spawn(async move {
        while let Some(r) = records.next().await {
            sink.lock().unwrap().push(r.sequence_number.to_string());
            m.mark(&r);
        }
    });
    member
}

/// Each shard's id and the first hash key of its range.
async fn hash_starts(f: &Fresh) -> Vec<(String, String)> {
    let listed = within(
        "list",
        f.kinesis.list_shards().stream_name(&f.stream).send(),
    )
    .await
    .expect("list shards");
    listed
        .shards()
        .iter()
        .map(|s| {
            let start = s.hash_key_range().expect("range").starting_hash_key();
            (s.shard_id().to_owned(), start.to_owned())
        })
        .collect()
}

/// Puts `n` records on the shard whose range starts at `hash`; returns their sequence
/// numbers.
async fn put_on(f: &Fresh, hash: &str, n: usize) -> Vec<String> {
    let entries = (0..n)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("k{i}"))
                .explicit_hash_key(hash)
                .data(Blob::new(vec![b'x'; 100]))
                .build()
                .expect("entry")
        })
        .collect();
    let put = f
        .kinesis
        .put_records()
        .stream_name(&f.stream)
        .set_records(Some(entries))
        .send();
    let out = within("put", put).await.expect("put records");
    assert_eq!(out.failed_record_count(), Some(0), "no record throttled");
    out.records()
        .iter()
        .map(|r| r.sequence_number().expect("sequence").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_shards_holder_ends_up_with_fewer_shards_and_nothing_is_lost() {
    init_tracing();
    let f = fresh("load", 6).await;
    let store = store(&f.table, &f.app).await;
    let seen: Seen = Arc::default();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        members.push(member(&f, id, &seen).await);
    }
    // No load yet: the shards are spread by count, two each.
    eventually("two shards each", Duration::from_secs(60), || async {
        let counts = share(&owners(&store, &f.stream).await, 6)?;
        is_balanced(&counts, 3).then_some(())
    })
    .await;

    let shards = hash_starts(&f).await;
    let (hot, hot_hash) = shards[0].clone();
    let mut put = Vec::new();
    // Ten records a tick on the hot shard, one on each other, until the hot shard's holder
    // holds fewer shards than each other member (at most 90 s).
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    let settled = loop {
        put.extend(put_on(&f, &hot_hash, 10).await);
        for (_, hash) in &shards[1..] {
            put.extend(put_on(&f, hash, 1).await);
        }
        let owners = owners(&store, &f.stream).await;
        if let (Some(counts), Some(Some(holder))) = (share(&owners, 6), owners.get(&hot)) {
            let fewer = counts.len() == 3
                && counts
                    .iter()
                    .all(|(m, &n)| m == holder || counts[holder] < n);
            if fewer {
                break Some(counts);
            }
        }
        if tokio::time::Instant::now() >= end {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let owners = owners(&store, &f.stream).await;
    let counts = settled
        .unwrap_or_else(|| panic!("the hot shard's holder never held fewer shards: {owners:?}"));
    eprintln!("settled: {counts:?}, the hot shard with {:?}", owners[&hot]);

    // Every record put is handed out, once.
    let put: BTreeSet<String> = put.into_iter().collect();
    eventually(
        "every record handed out",
        Duration::from_secs(60),
        || async {
            let seen: BTreeSet<String> = seen.lock().unwrap().iter().cloned().collect();
            put.is_subset(&seen).then_some(())
        },
    )
    .await;
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for s in seen.lock().unwrap().iter() {
        *times.entry(s.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = times.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        repeated.is_empty(),
        "records handed out twice: {repeated:?}"
    );
    for m in members {
        within("close", m.close()).await.expect("close");
    }
}
