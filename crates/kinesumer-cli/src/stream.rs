//! `kinesumer stream create`: a stream for demos and tests.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kinesis::types::StreamStatus;

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
    let deadline = tokio::time::Instant::now() + ACTIVE_DEADLINE;
    loop {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .map_err(aws_sdk_kinesis::Error::from)
            .with_context(|| format!("describing stream {stream:?}"))?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            println!("stream {stream} with {shards} shards is ACTIVE");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("stream {stream:?} not ACTIVE after {ACTIVE_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
