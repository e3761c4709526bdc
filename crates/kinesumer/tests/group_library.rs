//! The library in-process on the local stack: fencing, Go-client checkpoints, refresh,
//! and clear errors for bad input.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kinesumer::store::{
    CheckpointWrite, LeaseSeen, Owner, Registration, StateStore, StoreError, StoredStart,
};
use kinesumer::{Error, Kinesumer, Position};

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Collects (stream, sequence) of every record the member receives, marking each.
async fn collect(member: &Arc<Kinesumer>, streams: &[&str]) -> Seen {
    let mut records = within("consume", member.consume(streams.iter().copied()))
        .await
        .expect("consume");
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let m = member.clone();
    tokio::spawn(async move {
        while let Some(r) = records.next().await {
            sink.lock()
                .unwrap()
                .push((r.stream.to_string(), r.sequence_number.to_string()));
            m.mark(&r);
        }
    });
    seen
}

fn of_stream(seen: &Seen, stream: &str) -> BTreeSet<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| s == stream)
        .map(|(_, q)| q.clone())
        .collect()
}

async fn member(app: &str, table: &str, id: &str) -> Arc<Kinesumer> {
    let config = config(app, table, id)
        .commit_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    Arc::new(
        within("new", Kinesumer::new(config))
            .await
            .expect("new member"),
    )
}

/// A member whose lease was taken by another owner cannot move the checkpoint, and its
/// reader stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_lease_cannot_move_the_checkpoint() {
    init_tracing();
    let (table, app, stream) = (create_table().await, random_name("app"), random_name("s"));
    let kinesis = kinesis().await;
    create_stream(&kinesis, &stream, 1).await;
    let m = member(&app, &table, "victim").await;
    let mut errors = m.errors();
    let seen = collect(&m, &[&stream]).await;
    let store = store(&table, &app).await;
    let first = put_records(&kinesis, &stream, &numbered("a", 5, 1)).await;
    eventually("received", Duration::from_secs(30), || async {
        (of_stream(&seen, &stream).len() == 5).then_some(())
    })
    .await;
    let lease = eventually(
        "the victim's checkpoint",
        Duration::from_secs(30),
        || async {
            let l = store.leases(&stream).await.ok()?.pop()?;
            (l.checkpoint.as_ref()?.sequence.to_string() == first[4]).then_some(l)
        },
    )
    .await;
    // A thief — a live member, beating — takes the lease (as a leader's plan would after
    // judging the victim gone) and writes its own checkpoint back at the first record.
    let thief = Owner {
        client_id: "thief".into(),
        token: "t".into(),
    };
    let streams = vec![stream.clone()];
    store
        .register("thief", "t", &streams, &Registration::Start, None)
        .await
        .expect("register the thief");
    let beating = store.clone();
    let beats = tokio::spawn(async move {
        loop {
            let _ = beating.heartbeat("thief", "t", &streams, None).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let seen_lease = LeaseSeen {
        exists: true,
        owner: lease.owner.clone(),
        lease_counter: lease.lease_counter,
    };
    let taken = store
        .take_lease(
            &stream,
            &lease.shard_id,
            &thief,
            &seen_lease,
            &StoredStart::TrimHorizon,
        )
        .await
        .expect("steal");
    let back = Position::whole(first[0].parse().unwrap());
    store
        .checkpoint(
            &stream,
            &lease.shard_id,
            &thief,
            taken.lease_counter.unwrap(),
            taken.checkpoint.as_ref(),
            &CheckpointWrite {
                position: Some(back.clone()),
                shard_end: false,
                millis_behind: None,
            },
        )
        .await
        .expect("thief's checkpoint");
    // The victim reads more, marks it, and its commit is refused: it reports the loss.
    put_records(&kinesis, &stream, &numbered("b", 3, 1)).await;
    let lost = within("lease lost reported", async {
        loop {
            match errors.next().await {
                Some(Error::LeaseLost { shard_id, .. }) => return shard_id,
                Some(_) => continue,
                None => panic!("the errors stream ended"),
            }
        }
    })
    .await;
    assert_eq!(lost, lease.shard_id);
    let now = store
        .lease(&stream, &lease.shard_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.owner, Some(thief), "the lease stays the thief's");
    assert_eq!(
        now.checkpoint,
        Some(back),
        "the victim never moved the checkpoint"
    );
    eventually(
        "the victim's reader stopped",
        Duration::from_secs(10),
        || async { m.held_shards().is_empty().then_some(()) },
    )
    .await;
    beats.abort();
    m.close().await.expect("close");
}

/// A checkpoint item in the Go client's format (only `sequence_number` and
/// `last_update`, with a local offset) is resumed from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_client_checkpoint_is_resumed_from() {
    let (table, app, stream) = (create_table().await, random_name("app"), random_name("s"));
    let kinesis = kinesis().await;
    create_stream(&kinesis, &stream, 1).await;
    let seqs = put_records(&kinesis, &stream, &numbered("go", 10, 1)).await;
    use aws_sdk_dynamodb::types::AttributeValue as V;
    within(
        "write a Go checkpoint",
        dynamodb()
            .await
            .put_item()
            .table_name(&table)
            .item("pk", V::S(format!("check_point#{app}#{stream}")))
            .item("sk", V::S("shardId-000000000000".into()))
            .item("sequence_number", V::S(seqs[5].clone()))
            .item("last_update", V::S("2024-01-02T03:04:05.5+09:00".into()))
            .send(),
    )
    .await
    .expect("put");
    let m = member(&app, &table, "rust").await;
    let seen = collect(&m, &[&stream]).await;
    let want: BTreeSet<String> = seqs[6..].iter().cloned().collect();
    eventually(
        "records after the Go checkpoint",
        Duration::from_secs(30),
        || async { (of_stream(&seen, &stream) == want).then_some(()) },
    )
    .await;
    m.close().await.expect("close");
}

/// `refresh` adds a stream while consuming, then drops one: its leases are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_adds_and_drops_streams_while_consuming() {
    let (table, app) = (create_table().await, random_name("app"));
    let (s1, s2) = (random_name("s1"), random_name("s2"));
    let kinesis = kinesis().await;
    create_stream(&kinesis, &s1, 1).await;
    create_stream(&kinesis, &s2, 1).await;
    let m = member(&app, &table, "r").await;
    let seen = collect(&m, &[&s1]).await;
    let one = put_records(&kinesis, &s1, &numbered("a", 5, 1)).await;
    eventually("s1 read", Duration::from_secs(30), || async {
        (of_stream(&seen, &s1).len() == one.len()).then_some(())
    })
    .await;
    within("refresh add", m.refresh([s1.as_str(), s2.as_str()]))
        .await
        .unwrap();
    let two = put_records(&kinesis, &s2, &numbered("b", 5, 1)).await;
    eventually("s2 read after refresh", Duration::from_secs(30), || async {
        (of_stream(&seen, &s2).len() == two.len()).then_some(())
    })
    .await;
    within("refresh drop", m.refresh([s2.as_str()]))
        .await
        .unwrap();
    let store = store(&table, &app).await;
    let s1_owners = owners(&store, &s1).await;
    assert!(
        s1_owners.values().all(Option::is_none),
        "s1's lease released: {s1_owners:?}"
    );
    put_records(&kinesis, &s1, &numbered("c", 5, 1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        of_stream(&seen, &s1).len(),
        one.len(),
        "a dropped stream is not read"
    );
    m.close().await.expect("close");
}

#[tokio::test]
async fn a_missing_table_says_how_to_create_it() {
    let config = config("app", &random_name("missing-table"), "x")
        .build()
        .unwrap();
    let err = within("new", Kinesumer::new(config)).await.unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::TableNotFound { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("create"), "{err}");
}

#[tokio::test]
async fn a_missing_stream_is_named() {
    let table = create_table().await;
    let m = member(&random_name("app"), &table, "x").await;
    let missing = random_name("no-such-stream");
    let err = within("consume", m.consume([missing.as_str()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error_not_a_hang_or_panic() {
    let config = kinesumer::Config::builder("app", "table")
        .dynamodb_endpoint("http://127.0.0.1:9")
        .dynamodb_region("us-east-1")
        .kinesis_region("us-east-1")
        .build()
        .unwrap();
    let err = within("new", Kinesumer::new(config)).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_configuration_names_the_field() {
    let err = kinesumer::Config::builder("app", "table")
        .failover_timeout(Duration::from_millis(500))
        .build()
        .unwrap_err();
    assert_eq!(err.field, "failover_timeout");
    assert!(err.to_string().contains("timing rule"), "{err}");
}
