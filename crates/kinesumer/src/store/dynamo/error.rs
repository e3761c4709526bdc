//! Mapping SDK errors to [`StoreError`]: the one place that decides what a DynamoDB
//! error means for the protocol.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

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
    R: std::fmt::Debug + 'static,
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
            message: crate::aws::sdk_message("DynamoDB", err),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn classify_code(code: &str) -> StoreError {
        let err =
            UpdateItemError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let raw = Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        classify(
            &SdkError::service_error(err, raw),
            Operation::Checkpoint,
            "t",
            "lease s/1",
        )
    }

    #[test]
    fn maps_service_codes() {
        assert!(matches!(
            classify_code("ConditionalCheckFailedException"),
            StoreError::ConditionFailed { item } if item == "lease s/1"
        ));
        assert!(matches!(
            classify_code("ResourceNotFoundException"),
            StoreError::TableNotFound { table } if table == "t"
        ));
        for code in [
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "ThrottlingException",
        ] {
            assert!(matches!(
                classify_code(code),
                StoreError::Throttled {
                    op: Operation::Checkpoint
                }
            ));
        }
        let other = classify_code("InternalServerError");
        assert!(matches!(other, StoreError::Unavailable { .. }));
        assert!(other.is_retryable());
        assert!(other.to_string().contains("InternalServerError"), "{other}");
    }
}
