//! [`KinesisApi`](super::KinesisApi) over the AWS SDK (to be written).

/// Kinesis over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkKinesis {}
