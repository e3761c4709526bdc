//! A downstream store that refuses a stale holder's writes: one DynamoDB item per
//! (stream, shard), written only with a fencing token at least the one it holds.
//!
//! After a failover, the member that lost the shard may still be running a handler (a
//! paused process, a slow network). Its records carry the old lease's token; the new
//! holder's carry a larger one. Once the new holder wrote, the old one's writes fail
//! the condition — whatever its clock or its view of the group says.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use kinesumer::Record;

/// The downstream item's key: one item per stream and shard.
pub(crate) fn key(record: &Record) -> String {
    format!("{}/{}", record.stream, record.shard_id)
}

/// Writes `value` as the latest state of `record`'s shard in `table` (key `pk`), unless
/// a holder with a newer fencing token wrote first. Returns `Ok(false)` when refused.
pub(crate) async fn put_fenced(
    client: &Client,
    table: &str,
    record: &Record,
    value: &str,
) -> Result<bool, aws_sdk_dynamodb::Error> {
    let token = record.fencing_token().to_string();
    let written = client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(key(record)))
        .item("value", AttributeValue::S(value.to_owned()))
        .item(
            "sequence_number",
            AttributeValue::S(record.sequence_number.to_string()),
        )
        .item("fencing_token", AttributeValue::N(token.clone()))
        .condition_expression("attribute_not_exists(pk) OR fencing_token <= :token")
        .expression_attribute_values(":token", AttributeValue::N(token))
        .send()
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
