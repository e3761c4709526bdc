//! Creating and checking the state-store table (the Go client's schema, DESIGN §2).

use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, TableDescription,
};

use super::codec::attr;
use super::error::classify;
use crate::store::{Operation, StoreError};

/// The name of the local secondary index on (`pk`, `last_update`), as the Go client
/// creates it.
pub const LSI_NAME: &str = "index-client-key-last-update";

/// How long [`create_table`] waits for the table to become ACTIVE.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(300);

/// The billing mode of a table made by [`create_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableBilling {
    /// Pay per request.
    OnDemand,
    /// Provisioned capacity units.
    Provisioned {
        /// Read capacity units.
        read: i64,
        /// Write capacity units.
        write: i64,
    },
}

fn build_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        op: Operation::CreateTable,
        message: format!("invalid request: {e}"),
    }
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(build_error)
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

/// Creates the state-store table with the Go client's schema: key `pk` (S, HASH), `sk`
/// (S, RANGE), and the local secondary index [`LSI_NAME`] on (`pk`, `last_update` S),
/// keys only; then waits until it is ACTIVE. A table that already exists is fine (its
/// schema is then checked as [`DynamoStore::check_table`](super::DynamoStore::check_table)
/// does).
///
/// # Errors
///
/// [`StoreError::Unavailable`] when a request fails or the table is not ACTIVE within
/// five minutes; [`StoreError::TableSchema`] when an existing table has another key.
///
/// # Cancel safety
///
/// Cancel safe: dropped part-way, the table may exist or be being created; calling it
/// again finds it and waits until it is ACTIVE.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    billing: TableBilling,
) -> Result<(), StoreError> {
    let lsi = LocalSecondaryIndex::builder()
        .index_name(LSI_NAME)
        .key_schema(key_element(attr::PK, KeyType::Hash)?)
        .key_schema(key_element(attr::LAST_UPDATE, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(build_error)?;
    let mut req = client
        .create_table()
        .table_name(table)
        .attribute_definitions(string_attribute(attr::PK)?)
        .attribute_definitions(string_attribute(attr::SK)?)
        .attribute_definitions(string_attribute(attr::LAST_UPDATE)?)
        .key_schema(key_element(attr::PK, KeyType::Hash)?)
        .key_schema(key_element(attr::SK, KeyType::Range)?)
        .local_secondary_indexes(lsi);
    req = match billing {
        TableBilling::OnDemand => req.billing_mode(BillingMode::PayPerRequest),
        TableBilling::Provisioned { read, write } => req
            .billing_mode(BillingMode::Provisioned)
            .provisioned_throughput(
                ProvisionedThroughput::builder()
                    .read_capacity_units(read)
                    .write_capacity_units(write)
                    .build()
                    .map_err(build_error)?,
            ),
    };
    tracing::debug!(table, "CreateTable");
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {
            tracing::debug!(table, "table exists already");
        }
        Err(e) => return Err(classify(&e, Operation::CreateTable, table, table)),
    }
    // The SDK's waiter polls DescribeTable until ACTIVE, with its own backoff.
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(ACTIVE_DEADLINE)
        .await
        .map_err(|e| StoreError::Unavailable {
            op: Operation::CreateTable,
            message: format!(
                "table {table:?} not ACTIVE within {ACTIVE_DEADLINE:?}: {}",
                crate::aws::sdk_message("DynamoDB", &e)
            ),
        })?;
    check_schema(table, &describe(client, table).await?)
}

/// DescribeTable; a missing table is [`StoreError::TableNotFound`].
pub(super) async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<TableDescription, StoreError> {
    tracing::debug!(table, "DescribeTable");
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| classify(&e, Operation::DescribeTable, table, table))?;
    out.table.ok_or_else(|| StoreError::Unavailable {
        op: Operation::DescribeTable,
        message: format!("DescribeTable of {table:?} returned no table"),
    })
}

/// Checks that the table's key is `pk` (S, HASH) and `sk` (S, RANGE).
pub(super) fn check_schema(table: &str, desc: &TableDescription) -> Result<(), StoreError> {
    let keys: Vec<(String, String)> = desc
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    let expected = [
        (attr::PK.to_owned(), KeyType::Hash.as_str().to_owned()),
        (attr::SK.to_owned(), KeyType::Range.as_str().to_owned()),
    ];
    if keys != expected {
        let found: Vec<String> = keys.iter().map(|(n, k)| format!("{n} {k}")).collect();
        return Err(StoreError::TableSchema {
            table: table.to_owned(),
            problem: format!(
                "its key is [{}], expected [pk HASH, sk RANGE]",
                found.join(", ")
            ),
        });
    }
    for name in [attr::PK, attr::SK] {
        let kind = desc
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == name)
            .map(|d| d.attribute_type().clone());
        if kind != Some(ScalarAttributeType::S) {
            return Err(StoreError::TableSchema {
                table: table.to_owned(),
                problem: format!("key attribute {name} has type {kind:?}, expected S"),
            });
        }
    }
    if !desc
        .local_secondary_indexes()
        .iter()
        .any(|i| i.index_name() == Some(LSI_NAME))
    {
        // This client never queries the index; the Go client's tools may.
        tracing::warn!(table, index = LSI_NAME, "state-store table has no LSI");
    }
    Ok(())
}
