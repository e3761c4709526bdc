//! Writes each shard's latest record to a downstream DynamoDB table, fenced by the
//! lease's token, so that a member that lost a shard cannot overwrite its new holder's
//! writes (docs/processing.md, "Fencing tokens"). The downstream write itself is
//! `downstream.rs`, which the integration test `tests/application.rs` runs through a
//! failover.
//!
//! ```sh
//! eval "$(scripts/local-stack start)"
//! cargo run -p kinesumer --example fenced_writes -- APP STATE_TABLE STREAM DOWNSTREAM_TABLE
//! ```
//!
//! The downstream table needs a string hash key `pk`.

mod downstream;

use kinesumer::{Config, Kinesumer, Record};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [app, table, stream, downstream_table] = &args[..] else {
        return Err("usage: fenced_writes APP STATE_TABLE STREAM DOWNSTREAM_TABLE".into());
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let member = Kinesumer::from_sdk_config(Config::builder(app, table).build()?, &sdk).await?;
    let downstream_table = downstream_table.clone();
    let consuming = member
        .consume_with([stream.as_str()], move |record: Record| {
            let (dynamodb, table) = (dynamodb.clone(), downstream_table.clone());
            async move {
                let value = String::from_utf8_lossy(&record.data).into_owned();
                if !downstream::put_fenced(&dynamodb, &table, &record, &value).await? {
                    // A newer holder wrote: this member lost the shard. Nothing to retry.
                    eprintln!(
                        "refused: {} is held by a newer lease",
                        downstream::key(&record)
                    );
                }
                Ok::<(), aws_sdk_dynamodb::Error>(())
            }
        })
        .await?;
    tokio::select! {
        stopped = consuming => stopped?,
        _ = tokio::signal::ctrl_c() => member.close().await?,
    }
    Ok(())
}
