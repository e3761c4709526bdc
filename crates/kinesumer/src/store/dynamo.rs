//! The DynamoDB state store (to be written).

/// The name of the local secondary index on `last_update`.
pub const LSI_NAME: &str = "index-client-key-last-update";

/// The DynamoDB state store.
#[derive(Debug, Clone)]
pub struct DynamoStore {}

/// The billing mode of a created table.
#[derive(Debug, Clone, Copy)]
pub enum TableBilling {
    /// On demand.
    OnDemand,
}

/// Creates the table (to be written).
pub async fn create_table() {}
