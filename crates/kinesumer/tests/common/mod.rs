//! Shared helpers of the integration tests: clients for the local stack
//! (`scripts/local-stack start`), random names, and a timeout for every await.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

/// Every await on the stack is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Awaits `f` for at most [`TEST_TIMEOUT`], naming `what` when it does not finish.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TEST_TIMEOUT:?}: {what} (is the local stack up? scripts/local-stack start)"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("condition not reached within {deadline:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
