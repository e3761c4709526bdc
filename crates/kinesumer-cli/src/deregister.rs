//! `kinesumer deregister-consumer`: removes the app's enhanced fan-out stream consumer
//! from streams (the library's `Kinesumer::deregister_fan_out_consumer`, without a
//! member: no state-store table is needed).

use anyhow::Context as _;
use kinesumer::config::fan_out_consumer_name;
use kinesumer::reader::{KinesisApi, SdkKinesis};

use crate::aws::Aws;
use crate::cli::DeregisterConsumerArgs;

/// Runs `kinesumer deregister-consumer`: one line per stream, whether a consumer went.
pub(crate) async fn run(aws: &Aws, args: DeregisterConsumerArgs) -> anyhow::Result<()> {
    let name = fan_out_consumer_name(&args.app, args.consumer.consumer_region.as_deref());
    let kinesis = SdkKinesis::new(aws.kinesis().await);
    for stream in &args.streams {
        let existed = kinesis
            .deregister_consumer(stream, &name)
            .await
            .with_context(|| format!("deregistering consumer {name:?} from stream {stream:?}"))?;
        if existed {
            println!("stream {stream}: consumer {name} deregistered");
        } else {
            println!("stream {stream}: no consumer {name}");
        }
    }
    Ok(())
}
