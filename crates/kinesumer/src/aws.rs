//! SDK clients from the configuration (temporary; replaced by the reader's).

use crate::config::Config;
use crate::error::Result;

pub(crate) async fn sdk_clients(
    _config: &Config,
) -> Result<(aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client)> {
    unimplemented!()
}
