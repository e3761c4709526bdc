//! stub
#![allow(missing_docs, unused)]
use async_trait::async_trait;
use super::*;
#[derive(Debug, Clone)]
pub struct SdkKinesis {}
impl SdkKinesis { pub fn new(c: aws_sdk_kinesis::Client) -> Self { todo!() } }
#[async_trait]
impl KinesisApi for SdkKinesis {
    async fn list_shards(&self, stream: &str) -> Result<StreamShards, KinesisError> { todo!() }
    async fn shard_iterator(&self, stream: &str, shard_id: &str, start: &IteratorStart) -> Result<String, KinesisError> { todo!() }
    async fn get_records(&self, stream: &str, shard_id: &str, iterator: &str, limit: i32) -> Result<RecordsPage, KinesisError> { todo!() }
}
