//! `kinesumer migrate from-kcl` on the local stack: a KCL lease table written item by
//! item as the KCL writes it — the attribute names of its `DynamoDBLeaseSerializer`
//! (amazon-kinesis-client, `software/amazon/kinesis/leases/dynamodb/
//! DynamoDBLeaseSerializer.java`: `leaseKey`, `leaseOwner`, `leaseCounter`,
//! `ownerSwitchesSinceCheckpoint`, `checkpoint`, `checkpointSubSequenceNumber`,
//! `parentShardId`) — is imported, and a member then reads exactly the records after
//! each KCL checkpoint, including the rest of a half-read KPL aggregate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_kinesis::primitives::Blob;
use base64::Engine as _;
use common::*;

async fn sdk() -> aws_config::SdkConfig {
    let credentials =
        aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await
}

fn endpoint(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

async fn clients() -> (aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client) {
    let sdk = sdk().await;
    let kinesis = aws_sdk_kinesis::config::Builder::from(&sdk)
        .endpoint_url(endpoint(
            "AWS_ENDPOINT_URL_KINESIS",
            "http://127.0.0.1:4567",
        ))
        .build();
    let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(endpoint(
            "AWS_ENDPOINT_URL_DYNAMODB",
            "http://127.0.0.1:4566",
        ))
        .build();
    (
        aws_sdk_kinesis::Client::from_conf(kinesis),
        aws_sdk_dynamodb::Client::from_conf(dynamodb),
    )
}

/// A KCL lease table (key `leaseKey`), as the KCL's `DynamoDBLeaseRefresher` creates it,
/// or a vmware-go-kcl one (key `ShardID`, its `checkpoint.go`'s `LeaseKeyKey`).
async fn lease_table(dynamodb: &aws_sdk_dynamodb::Client, key: &str) -> String {
    let name = random_name("kcl-leases");
    dynamodb
        .create_table()
        .table_name(&name)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the lease table");
    name
}

async fn kcl_table(dynamodb: &aws_sdk_dynamodb::Client) -> String {
    lease_table(dynamodb, "leaseKey").await
}

/// A lease item with the KCL's attributes.
fn lease(
    shard: &str,
    counter: u64,
    checkpoint: &str,
    sub: u64,
) -> BTreeMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: u64| AttributeValue::N(v.to_string());
    BTreeMap::from([
        ("leaseKey".to_owned(), s(shard)),
        ("leaseOwner".to_owned(), s("kcl-worker-1")),
        ("leaseCounter".to_owned(), n(counter)),
        ("ownerSwitchesSinceCheckpoint".to_owned(), n(0)),
        ("checkpoint".to_owned(), s(checkpoint)),
        ("checkpointSubSequenceNumber".to_owned(), n(sub)),
    ])
}

async fn put_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    item: BTreeMap<String, AttributeValue>,
) {
    dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(item.into_iter().collect()))
        .send()
        .await
        .expect("put a KCL lease");
}

/// The open shards of `stream`, each with its starting hash key.
async fn shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, String)> {
    let out = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    out.shards()
        .iter()
        .map(|s| {
            let start = s.hash_key_range().map(|r| r.starting_hash_key().to_owned());
            (s.shard_id().to_owned(), start.unwrap_or_default())
        })
        .collect()
}

/// Puts `data` on the shard whose range starts at `hash`; returns its sequence number.
async fn put_on(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    hash: &str,
    data: Vec<u8>,
) -> String {
    kinesis
        .put_record()
        .stream_name(stream)
        .partition_key("k")
        .explicit_hash_key(hash)
        .data(Blob::new(data))
        .send()
        .await
        .expect("put a record")
        .sequence_number()
        .to_owned()
}

/// The KPL aggregate of 50 user records `distinct-0` … `distinct-49`
/// (crates/kinesumer/tests/fixtures/kpl, made by aws-kinesis-agg).
fn aggregate() -> (Vec<u8>, Vec<Vec<u8>>) {
    let text = include_str!("../../kinesumer/tests/fixtures/kpl/distinct_keys.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let b64 = |s: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap()
    };
    let users = v["user_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| b64(&u["data"]))
        .collect();
    (b64(&v["aggregate"]), users)
}

/// Starts a member of `app` and checks that it reads every record of `want` once and none
/// of `never` (records at or before a KCL checkpoint); returns it, still running.
async fn reads_exactly(
    app: &str,
    table: &str,
    stream: &str,
    want: &[Vec<u8>],
    never: &[Vec<u8>],
) -> Member {
    let member = Member::start(app, table, stream, "after-kcl");
    let lines = received_all(&[&member], want).await;
    let got: BTreeSet<Vec<u8>> = lines.iter().map(|l| l.data.clone()).collect();
    let early: Vec<String> = never
        .iter()
        .filter(|n| got.contains(*n))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(early.is_empty(), "read before a KCL checkpoint: {early:?}");
    assert_eq!(lines.len(), want.len(), "nothing delivered twice");
    member
}

/// `kinesumer migrate from-kcl` from `kcl` into `app`'s checkpoints of `stream`.
fn migrate_args(kcl: &str, app: &str, table: &str, stream: &str) -> Vec<String> {
    [
        "migrate",
        "from-kcl",
        "--kcl-table",
        kcl,
        "--app",
        app,
        "--table",
        table,
        "--stream",
        stream,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn a_kcl_lease_table_is_imported_and_members_resume_after_each_kcl_checkpoint() {
    let (kinesis, dynamodb) = clients().await;
    let (table, stream) = table_and_stream(4).await;
    let kcl = kcl_table(&dynamodb).await;
    let shards = shards(&kinesis, &stream).await;
    let line = |s: &str| s.as_bytes().to_vec();
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut never: Vec<Vec<u8>> = Vec::new();

    // Shard 0: checkpointed at its third record.
    let (s0, h0) = &shards[0];
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(put_on(&kinesis, &stream, h0, line(&format!("s0-{i}"))).await);
    }
    put_item(&dynamodb, &kcl, lease(s0, 12, &seqs[2], 0)).await;
    never.extend((0..3).map(|i| line(&format!("s0-{i}"))));
    want.extend((3..6).map(|i| line(&format!("s0-{i}"))));

    // Shard 1: never checkpointed past TRIM_HORIZON.
    let (s1, h1) = &shards[1];
    for i in 0..3 {
        put_on(&kinesis, &stream, h1, line(&format!("s1-{i}"))).await;
    }
    put_item(&dynamodb, &kcl, lease(s1, 3, "TRIM_HORIZON", 0)).await;
    want.extend((0..3).map(|i| line(&format!("s1-{i}"))));

    // Shard 2: inside a KPL aggregate, after its tenth user record (sub-record 9).
    let (s2, h2) = &shards[2];
    let (agg, users) = aggregate();
    let agg_seq = put_on(&kinesis, &stream, h2, agg).await;
    put_on(&kinesis, &stream, h2, line("s2-after")).await;
    put_item(&dynamodb, &kcl, lease(s2, 40, &agg_seq, 9)).await;
    never.extend(users[..10].iter().cloned());
    want.extend(users[10..].iter().cloned());
    want.push(line("s2-after"));

    // Shard 3: read to its end by the KCL.
    let (s3, h3) = &shards[3];
    for i in 0..2 {
        put_on(&kinesis, &stream, h3, line(&format!("s3-{i}"))).await;
    }
    let mut finished = lease(s3, 9, "SHARD_END", 0);
    finished.insert(
        "parentShardId".into(),
        AttributeValue::Ss(vec!["shardId-000000000099".into()]),
    );
    put_item(&dynamodb, &kcl, finished).await;
    never.extend((0..2).map(|i| line(&format!("s3-{i}"))));
    // Not a lease: another kind of item under the same key is ignored.
    put_item(
        &dynamodb,
        &kcl,
        BTreeMap::from([("leaseKey".into(), AttributeValue::S("Leader".into()))]),
    )
    .await;

    let app = random_name("migrated");
    let args = migrate_args(&kcl, &app, &table, &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dry = ok(&args).await;
    for (shard, expected) in [
        (s0, seqs[2].clone()),
        (s1, "TRIM_HORIZON".to_owned()),
        (s2, format!("{agg_seq} (sub-record 9)")),
        (s3, "SHARD_END".to_owned()),
    ] {
        assert!(
            dry.lines()
                .any(|l| l.starts_with(shard.as_str()) && l.contains(&expected)),
            "{shard} → {expected} in:\n{dry}"
        );
    }
    assert!(dry.contains("dry run"), "{dry}");
    let before = status(&app, &table, &stream).await;
    let shards_of = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["streams"][0]["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        shards_of(&before).is_empty(),
        "a dry run writes nothing: {before}"
    );

    let mut execute = args.to_vec();
    execute.extend([
        "--execute",
        "--kcl-observe-ms",
        "500",
        "--observe-ms",
        "300",
    ]);
    ok(&execute).await;
    let again = run(&execute, b"").await;
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--overwrite"), "{stderr}");

    let written = status(&app, &table, &stream).await;
    let row = |shard: &str| {
        shards_of(&written)
            .into_iter()
            .find(|r| r["shard_id"] == shard)
            .unwrap_or_else(|| panic!("{shard} written: {written}"))
    };
    assert_eq!(row(s0)["checkpoint"], seqs[2].as_str());
    assert_eq!(row(s1)["start"], "TRIM_HORIZON");
    assert_eq!(
        (
            row(s2)["checkpoint"].clone(),
            row(s2)["sub_sequence_number"].clone()
        ),
        (serde_json::json!(agg_seq), serde_json::json!(9))
    );
    assert_eq!(row(s3)["finished"], true);

    let member = reads_exactly(&app, &table, &stream, &want, &never).await;
    let owners = owners(&status(&app, &table, &stream).await);
    assert_eq!(
        owners.get(s3.as_str()),
        Some(&None),
        "the finished shard is never taken"
    );
    drop(member);
}

#[tokio::test]
async fn a_live_kcl_worker_is_refused() {
    let (_, dynamodb) = clients().await;
    let (table, stream) = table_and_stream(1).await;
    let kcl = kcl_table(&dynamodb).await;
    put_item(
        &dynamodb,
        &kcl,
        lease("shardId-000000000000", 1, "TRIM_HORIZON", 0),
    )
    .await;
    // A KCL worker renewing its lease: the counter moves.
    let renewing = {
        let (dynamodb, kcl) = (dynamodb.clone(), kcl.clone());
        tokio::spawn(async move {
            for counter in 2.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                put_item(
                    &dynamodb,
                    &kcl,
                    lease("shardId-000000000000", counter, "TRIM_HORIZON", 0),
                )
                .await;
            }
        })
    };
    let mut args = migrate_args(&kcl, &random_name("migrated"), &table, &stream);
    args.extend(["--execute", "--kcl-observe-ms", "1000"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, b"").await;
    renewing.abort();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KCL workers still hold leases"), "{stderr}");
}

/// `--execute`, watching the KCL leases and the group's members briefly.
const QUICK: [&str; 5] = [
    "--execute",
    "--kcl-observe-ms",
    "300",
    "--observe-ms",
    "300",
];

/// The shard rows `status --json` shows of `stream`, by shard id.
async fn shard_rows(app: &str, table: &str, stream: &str) -> BTreeMap<String, serde_json::Value> {
    let s = status(app, table, stream).await;
    s["streams"][0]["shards"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r["shard_id"].as_str().unwrap().to_owned(), r))
        .collect()
}

/// A multi-stream KCL table (keys `account:stream:creationEpoch:shardId`, with
/// `streamName` and `shardId`, as `DynamoDBMultiStreamLeaseSerializer` writes them)
/// imports only the stream asked for, with LATEST pinned at the import and AT_TIMESTAMP
/// at the time given; a vmware-go-kcl table imports its checkpoints and SHARD_END.
#[tokio::test]
async fn multi_stream_and_vmware_go_kcl_tables_with_every_sentinel() {
    let (_, dynamodb) = clients().await;
    let (table, stream) = table_and_stream(2).await;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let multi = kcl_table(&dynamodb).await;
    let id = |name: &str| format!("123456789012:{name}:1700000000");
    for (shard, checkpoint, on) in [
        ("shardId-000000000000", "LATEST", stream.as_str()),
        ("shardId-000000000001", "AT_TIMESTAMP", stream.as_str()),
        ("shardId-000000000000", "TRIM_HORIZON", "another-stream"),
    ] {
        let mut item = lease(&format!("{}:{shard}", id(on)), 1, checkpoint, 0);
        item.insert("streamName".into(), s(&id(on)));
        item.insert("shardId".into(), s(shard));
        put_item(&dynamodb, &multi, item).await;
    }
    let app = random_name("multi");
    let args = migrate_args(&multi, &app, &table, &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run(
        &[&args[..], &["--execute", "--kcl-observe-ms", "300"]].concat(),
        b"",
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--at-timestamp"));
    let at = "2024-05-01T00:00:00+00:00";
    let before = chrono::Utc::now();
    ok(&[&args[..], &QUICK, &["--at-timestamp", at]].concat()).await;
    let rows = shard_rows(&app, &table, &stream).await;
    let latest: chrono::DateTime<chrono::Utc> = rows["shardId-000000000000"]["start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        latest >= before - chrono::Duration::seconds(1),
        "LATEST pinned at the import: {latest}"
    );
    let timestamp: chrono::DateTime<chrono::Utc> = rows["shardId-000000000001"]["start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        timestamp,
        at.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
    assert_eq!(rows.len(), 2, "only this stream's leases: {rows:?}");

    // vmware-go-kcl: ShardID, Checkpoint, AssignedTo, LeaseTimeout (checkpoint.go).
    let (kinesis, _) = clients().await;
    let hash = shards(&kinesis, &stream).await[0].1.clone();
    let seq = put_on(&kinesis, &stream, &hash, b"vmware".to_vec()).await;
    let vmware = lease_table(&dynamodb, "ShardID").await;
    for (shard, checkpoint) in [
        ("shardId-000000000000", seq.as_str()),
        ("shardId-000000000001", "SHARD_END"),
    ] {
        let item = BTreeMap::from([
            ("ShardID".to_owned(), s(shard)),
            ("Checkpoint".to_owned(), s(checkpoint)),
            ("AssignedTo".to_owned(), s("go-worker-1")),
            ("LeaseTimeout".to_owned(), s("2024-05-01T00:00:00Z")),
        ]);
        put_item(&dynamodb, &vmware, item).await;
    }
    let app = random_name("vmware");
    let args = migrate_args(&vmware, &app, &table, &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&[&args[..], &QUICK].concat()).await;
    let rows = shard_rows(&app, &table, &stream).await;
    assert_eq!(rows["shardId-000000000000"]["checkpoint"], seq.as_str());
    assert_eq!(rows["shardId-000000000001"]["finished"], true);
}

/// A parent the KCL finished (`SHARD_END`, with its two children in `childShardId`) is
/// imported finished: a member reads neither it nor anything before each child's KCL
/// checkpoint, and the children from there.
#[tokio::test]
async fn a_finished_parent_and_its_two_children() {
    let (kinesis, dynamodb) = clients().await;
    let (table, stream) = table_and_stream(1).await;
    let parent = "shardId-000000000000";
    let line = |s: &str| s.as_bytes().to_vec();
    for i in 0..3 {
        let hash = shards(&kinesis, &stream).await[0].1.clone();
        put_on(&kinesis, &stream, &hash, line(&format!("parent-{i}"))).await;
    }
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("split");
    let children: Vec<(String, String)> =
        eventually("the children", Duration::from_secs(20), || async {
            let open: Vec<(String, String)> = shards(&kinesis, &stream)
                .await
                .into_iter()
                .filter(|(id, _)| id != parent)
                .collect();
            (open.len() == 2).then_some(open)
        })
        .await;
    let mut want = Vec::new();
    let mut never: Vec<Vec<u8>> = (0..3).map(|i| line(&format!("parent-{i}"))).collect();
    let mut first_of_left = String::new();
    for (n, (_, hash)) in children.iter().enumerate() {
        for i in 0..3 {
            let data = line(&format!("child{n}-{i}"));
            let seq = put_on(&kinesis, &stream, hash, data.clone()).await;
            match (n, i) {
                (0, 0) => {
                    first_of_left = seq;
                    never.push(data);
                }
                _ => want.push(data),
            }
        }
    }
    let kcl = kcl_table(&dynamodb).await;
    let mut finished = lease(parent, 9, "SHARD_END", 0);
    finished.insert(
        "childShardId".into(),
        AttributeValue::Ss(children.iter().map(|(id, _)| id.clone()).collect()),
    );
    put_item(&dynamodb, &kcl, finished).await;
    for (n, (id, _)) in children.iter().enumerate() {
        let mut child = if n == 0 {
            lease(id, 2, &first_of_left, 0)
        } else {
            lease(id, 1, "TRIM_HORIZON", 0)
        };
        child.insert(
            "parentShardId".into(),
            AttributeValue::Ss(vec![parent.into()]),
        );
        put_item(&dynamodb, &kcl, child).await;
    }
    let app = random_name("split");
    let args = migrate_args(&kcl, &app, &table, &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&[&args[..], &QUICK].concat()).await;
    reads_exactly(&app, &table, &stream, &want, &never).await;
}
