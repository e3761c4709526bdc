//! Mapping SDK errors to [`StoreError`]: the one place that decides what a DynamoDB
//! error means for the protocol.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::store::{Operation, StoreError};

/// Maps an SDK error. `item` names the item for [`StoreError::ConditionFailed`].
///
/// The message is the SDK's error chain (service code and message, or the dispatch or
/// timeout failure): it carries neither credentials nor request payloads.
pub(super) fn classify<E, R>(
    err: &SdkError<E, R>,
    op: Operation,
    table: &str,
    item: &str,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.code() {
        Some("ConditionalCheckFailedException") => StoreError::ConditionFailed {
            item: item.to_owned(),
        },
        Some("ResourceNotFoundException") => StoreError::TableNotFound {
            table: table.to_owned(),
        },
        Some(
            "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "ThrottlingException",
        ) => StoreError::Throttled { op },
        _ => StoreError::Unavailable {
            op,
            message: DisplayErrorContext(err).to_string(),
        },
    }
}
