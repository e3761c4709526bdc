//! Records aggregated by the Kinesis Producer Library, on the local stack: a member
//! receives them as user records, and a restart inside an aggregate neither skips nor
//! repeats user records. The aggregates are the independent aggregator's vectors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kpl::{vector, VectorRecord};
use common::*;
use futures::StreamExt;
use kinesumer::store::StateStore;
use kinesumer::{Kinesumer, Position, Record};

/// What a test checks of a received record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    sequence: String,
    sub_sequence: Option<u64>,
    user: VectorRecord,
}

fn got(r: &Record) -> Got {
    Got {
        sequence: r.sequence_number.to_string(),
        sub_sequence: r.sub_sequence_number,
        user: VectorRecord {
            partition_key: r.partition_key.clone(),
            explicit_hash_key: r.explicit_hash_key.clone(),
            data: r.data.to_vec(),
        },
    }
}

/// The records expected from the Kinesis record `sequence`: its user records when it is
/// `aggregate`, otherwise itself.
fn expect(sequence: &str, whole: (&str, &[u8]), aggregate: Option<&[VectorRecord]>) -> Vec<Got> {
    match aggregate {
        Some(users) => users
            .iter()
            .enumerate()
            .map(|(i, u)| Got {
                sequence: sequence.into(),
                sub_sequence: Some(i as u64),
                user: u.clone(),
            })
            .collect(),
        None => vec![Got {
            sequence: sequence.into(),
            sub_sequence: None,
            user: VectorRecord {
                partition_key: whole.0.into(),
                explicit_hash_key: None,
                data: whole.1.to_vec(),
            },
        }],
    }
}

async fn member(app: &str, table: &str, auto_commit: bool) -> Arc<Kinesumer> {
    let config = config(app, table, "member")
        .auto_commit(auto_commit)
        .commit_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    Arc::new(within("new", Kinesumer::new(config)).await.expect("new"))
}

/// Receives records until `until` holds for what was received; every record is passed to
/// `each` first (to mark it, say).
async fn receive(
    m: &Arc<Kinesumer>,
    stream: &str,
    mut each: impl FnMut(&Kinesumer, &Record),
    until: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let mut records = within("consume", m.consume([stream]))
        .await
        .expect("consume");
    let seen = Arc::new(Mutex::new(Vec::new()));
    within("receive", async {
        while !until(&seen.lock().unwrap()) {
            let r = records.next().await.expect("the stream ended");
            each(m, &r);
            seen.lock().unwrap().push(got(&r));
        }
    })
    .await;
    let out = seen.lock().unwrap().clone();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_are_received_as_user_records() {
    init_tracing();
    let (table, app, stream) = (create_table().await, random_name("app"), random_name("s"));
    let kinesis = kinesis().await;
    create_stream(&kinesis, &stream, 1).await;
    let names = ["binary", "explicit_hash_keys", "empty", "many", "single"];
    let mut puts = vec![("k".to_owned(), b"before".to_vec())];
    puts.extend(
        names
            .iter()
            .map(|n| ("agg".to_owned(), vector(n).aggregate)),
    );
    puts.push(("k".to_owned(), b"after".to_vec()));
    let seqs = put_records(&kinesis, &stream, &puts).await;

    let mut want = expect(&seqs[0], ("k", b"before"), None);
    for (i, name) in names.iter().enumerate() {
        want.extend(expect(
            &seqs[i + 1],
            ("", b""),
            Some(&vector(name).user_records),
        ));
    }
    want.extend(expect(seqs.last().unwrap(), ("k", b"after"), None));
    assert_eq!(want.len(), 1 + 4 + 12 + 500 + 1 + 1);

    let m = member(&app, &table, true).await;
    let received = receive(&m, &stream, |_, _| {}, |g| g.len() >= want.len()).await;
    assert_eq!(received, want);
    m.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_an_aggregate_neither_skips_nor_repeats_user_records() {
    init_tracing();
    let (table, app, stream) = (create_table().await, random_name("app"), random_name("s"));
    let kinesis = kinesis().await;
    create_stream(&kinesis, &stream, 1).await;
    let many = vector("many");
    let puts = [
        ("agg".to_owned(), many.aggregate.clone()),
        ("k".to_owned(), b"after".to_vec()),
    ];
    let seqs = put_records(&kinesis, &stream, &puts).await;
    let all = [
        expect(&seqs[0], ("", b""), Some(&many.user_records)),
        expect(&seqs[1], ("k", b"after"), None),
    ]
    .concat();
    let store = store(&table, &app).await;
    let checkpoint = || async {
        let leases = within("leases", store.leases(&stream))
            .await
            .expect("leases");
        leases.into_iter().next().and_then(|l| l.checkpoint)
    };

    // First run: process the first 200 user records (marking the one at index 199),
    // commit, close.
    const K: usize = 200;
    let first = member(&app, &table, false).await;
    let received = receive(
        &first,
        &stream,
        |m, r| {
            if r.sub_sequence_number == Some(K as u64 - 1) {
                m.mark(r);
            }
        },
        |g| g.len() >= K,
    )
    .await;
    assert_eq!(received, all[..K]);
    within("commit", first.commit()).await.expect("commit");
    first.close().await.expect("close");
    let inside = Position {
        sequence: seqs[0].parse().unwrap(),
        sub_sequence: Some(K as u64 - 1),
    };
    assert_eq!(
        checkpoint().await,
        Some(inside),
        "stored inside the aggregate"
    );

    // Second run, same client id: from user record 200 on, each once; marking the last
    // user record stores the whole record, without a sub-sequence number.
    let second = member(&app, &table, false).await;
    let received = receive(
        &second,
        &stream,
        |m, r| {
            if r.sub_sequence_number == Some(499) {
                m.mark(r);
                assert_eq!(r.position(), Position::whole(r.sequence_number.clone()));
            }
        },
        |g| g.len() >= all.len() - K,
    )
    .await;
    assert_eq!(received, all[K..]);
    within("commit", second.commit()).await.expect("commit");
    assert_eq!(
        checkpoint().await,
        Some(Position::whole(seqs[0].parse().unwrap())),
        "the last user record completes the aggregate"
    );
    second.close().await.expect("close");
}
