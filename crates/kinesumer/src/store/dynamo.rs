//! stub
#![allow(missing_docs, unused)]
use super::*;
pub const LSI_NAME: &str = "index-client-key-last-update";
#[derive(Debug, Clone)]
pub struct DynamoStore {}
impl DynamoStore { pub fn new(c: aws_sdk_dynamodb::Client, t: impl Into<String>, a: impl Into<String>) -> Self { todo!() } pub async fn check_table(&self) -> Result<(), StoreError> { todo!() } }
#[derive(Debug, Clone, Copy)]
pub enum TableBilling { OnDemand }
pub async fn create_table() {}
