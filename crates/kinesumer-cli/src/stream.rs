//! `kinesumer stream create`: a stream for demos and tests.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kinesis::client::Waiters;
use aws_sdk_kinesis::error::DisplayErrorContext;

use crate::aws::Aws;
use crate::cli::StreamCommand;

/// How long a new stream may take to become ACTIVE.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `kinesumer stream …`.
pub(crate) async fn run(aws: &Aws, cmd: StreamCommand) -> anyhow::Result<()> {
    let StreamCommand::Create { stream, shards } = cmd;
    let kinesis = aws.kinesis().await;
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(shards)
        .send()
        .await
        .map_err(aws_sdk_kinesis::Error::from)
        .with_context(|| format!("creating stream {stream:?}"))?;
    // The SDK's waiter polls DescribeStream until ACTIVE, with its own backoff.
    kinesis
        .wait_until_stream_exists()
        .stream_name(&stream)
        .wait(ACTIVE_DEADLINE)
        .await
        .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(&e)))
        .with_context(|| format!("stream {stream:?} not ACTIVE within {ACTIVE_DEADLINE:?}"))?;
    println!("stream {stream} with {shards} shards is ACTIVE");
    Ok(())
}
