//! Shared helpers of the integration tests: clients for the local stack
//! (`scripts/local-stack start`), random names, and a timeout for every await.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

pub mod logs;
pub mod tls;
mod wait;
pub use wait::*;

/// The Kinesis endpoint of the local stack.
pub fn kinesis_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_KINESIS").unwrap_or_else(|_| "http://127.0.0.1:4567".into())
}

/// The DynamoDB (and STS) endpoint of the local stack.
pub fn dynamodb_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// An SDK configuration with static test credentials and the local region.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::for_tests())
        .load()
        .await
}

/// A DynamoDB client for the local stack.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await)
        .endpoint_url(dynamodb_endpoint())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// A Kinesis client for the local stack.
pub async fn kinesis() -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::config::Builder::from(&sdk_config().await)
        .endpoint_url(kinesis_endpoint())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// A name no other test uses.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Creates a stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    within("create stream", async {
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .expect("create stream");
        loop {
            let d = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .expect("describe stream");
            let status = d
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Splits `shard` of `stream` in the middle of its hash range and waits until the stream
/// is ACTIVE again.
pub async fn split_shard(client: &aws_sdk_kinesis::Client, stream: &str, shard: &str) {
    let shards = within("list", client.list_shards().stream_name(stream).send())
        .await
        .unwrap();
    let s = shards
        .shards()
        .iter()
        .find(|s| s.shard_id() == shard)
        .unwrap();
    let range = s.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    within(
        "split",
        client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
            .send(),
    )
    .await
    .unwrap();
    wait_stream_active(client, stream).await;
}

/// Waits until `stream` is ACTIVE.
pub async fn wait_stream_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    eventually("stream active", Duration::from_secs(30), || async {
        let d = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()?;
        (d.stream_description_summary()?.stream_status()
            == &aws_sdk_kinesis::types::StreamStatus::Active)
            .then_some(())
    })
    .await
}

/// A new app, state-store table and stream on the local stack.
pub struct Fresh {
    /// The app (group) name.
    pub app: String,
    /// The state-store table.
    pub table: String,
    /// The stream.
    pub stream: String,
    /// A Kinesis client for the local stack.
    pub kinesis: aws_sdk_kinesis::Client,
}

/// A new app and table, and a new stream named `<prefix>-…` of `shards` shards.
pub async fn fresh(prefix: &str, shards: i32) -> Fresh {
    let kinesis = kinesis().await;
    let stream = random_name(prefix);
    create_stream(&kinesis, &stream, shards).await;
    Fresh {
        app: random_name("app"),
        table: create_table().await,
        stream,
        kinesis,
    }
}

/// A fresh state-store table on the local stack.
pub async fn create_table() -> String {
    let table = random_name("kinesumer-test");
    within(
        "create table",
        kinesumer::store::create_table(
            &dynamodb().await,
            &table,
            kinesumer::store::TableBilling::OnDemand,
        ),
    )
    .await
    .expect("create table");
    table
}

/// A state-store handle on `table` for `app`.
pub async fn store(table: &str, app: &str) -> kinesumer::store::DynamoStore {
    kinesumer::store::DynamoStore::new(dynamodb().await, table, app)
}

/// Puts records (partition key, data) and retries failed entries until all landed.
/// Returns the sequence numbers, in the order given.
pub async fn put_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[(String, Vec<u8>)],
) -> Vec<String> {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let mut sequences = vec![String::new(); records.len()];
    for (chunk_index, chunk) in records.chunks(500).enumerate() {
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&chunk[i].0)
                        .data(Blob::new(chunk[i].1.clone()))
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = within(
                "put records",
                client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(entries))
                    .send(),
            )
            .await
            .expect("put records");
            let mut failed = Vec::new();
            for (&i, result) in pending.iter().zip(out.records()) {
                match result.sequence_number() {
                    Some(seq) if result.error_code().is_none() => {
                        sequences[chunk_index * 500 + i] = seq.to_owned()
                    }
                    _ => failed.push(i),
                }
            }
            pending = failed;
        }
    }
    sequences
}

/// `n` records under `keys` partition keys, data `"<prefix>-<i>"`.
pub fn numbered(prefix: &str, n: usize, keys: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("key-{}", i % keys),
                format!("{prefix}-{i}").into_bytes(),
            )
        })
        .collect()
}

/// Who holds each shard of `stream`, by client id (`None` = free).
pub async fn owners(
    store: &kinesumer::store::DynamoStore,
    stream: &str,
) -> std::collections::BTreeMap<String, Option<String>> {
    use kinesumer::store::StateStore;
    within("read leases", store.leases(stream))
        .await
        .expect("leases")
        .into_iter()
        .map(|l| (l.shard_id, l.owner.map(|o| o.client_id)))
        .collect()
}

/// Counts of held shards per client id, when every one of `shards` shards is held.
pub fn share(
    owners: &std::collections::BTreeMap<String, Option<String>>,
    shards: usize,
) -> Option<std::collections::BTreeMap<String, usize>> {
    if owners.len() != shards || owners.values().any(Option::is_none) {
        return None;
    }
    let mut counts = std::collections::BTreeMap::new();
    for owner in owners.values().flatten() {
        *counts.entry(owner.clone()).or_insert(0usize) += 1;
    }
    Some(counts)
}

/// Whether per-member counts differ by at most one across exactly `members` members.
pub fn is_balanced(counts: &std::collections::BTreeMap<String, usize>, members: usize) -> bool {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    counts.len() == members && max - min <= 1
}

/// A configuration for an in-process member on the local stack.
pub fn config(app: &str, table: &str, id: &str) -> kinesumer::ConfigBuilder {
    kinesumer::Config::builder(app, table)
        .client_id(id)
        .kinesis_endpoint(kinesis_endpoint())
        .dynamodb_endpoint(dynamodb_endpoint())
        .kinesis_region("us-east-1")
        .dynamodb_region("us-east-1")
        .initial_position(kinesumer::InitialPosition::TrimHorizon)
}
pub mod kpl;
#[allow(dead_code)]
pub mod process;
pub mod proxy;

/// Logs of the library to the test's output (`RUST_LOG`, default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
