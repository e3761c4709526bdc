#![doc = include_str!("../README.md")]
//!
//! # This crate
//!
//! **Scope.** One member of a consumer group per [`Kinesumer`]: it reads the shards the
//! group's leader gives it, by polling (GetRecords) or enhanced fan-out
//! (SubscribeToShard), and hands their records to the application as a [`Records`]
//! stream or to a [`Handler`] per shard.
//!
//! **Guarantees.** At-least-once delivery without gaps, in order within a shard; one
//! lease per shard at a time, fenced so that a member that lost its lease can never move
//! a checkpoint; DynamoDB (one table) as the only shared state, with no traffic between
//! members.
//!
//! **Not in scope.** Producing records (the [`KinesisApi`](reader::KinesisApi) trait only
//! reads), exactly-once processing, and ordering across shards.
//!
//! # AWS configuration
//!
//! [`Kinesumer::new`] loads the standard AWS chain;
//! [`Kinesumer::from_sdk_config`] takes the application's own
//! [`aws_config::SdkConfig`] (credentials, retries, timeouts, HTTP client, interceptors)
//! and [`Kinesumer::from_clients`] ready SDK clients.
//!
//! # Feature flags
//!
//! - `test-util` (off): test scaffolding — the in-process simulator (`sim`),
//!   `TestClock`, `MemoryStore`, `Kinesumer::with_parts`, and `Record::for_test` to
//!   unit-test a handler. Enable it in `[dev-dependencies]` only.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aws;
mod backoff;
mod checkpoint;
pub mod clock;
pub mod config;
mod consumer;
pub mod dead_letter;
mod delivery;
mod error;
mod event;
pub(crate) mod fence;
mod flow;
pub mod group;
mod handler;
pub mod load;
pub mod metrics;
pub mod migrate;
pub mod processor;
mod random;
pub mod reader;
mod record;
pub(crate) mod sealed;
pub mod seq;
mod shards;
mod signals;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod sim;
pub mod store;

pub use aws::ca_bundle_http_client;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use clock::TestClock;
pub use clock::{Clock, SystemClock};
pub use config::{
    Aggregation, Balancing, Config, ConfigBuilder, ConfigError, InitialPosition, ReadMode,
};
pub use consumer::{Consuming, Kinesumer};
pub use delivery::Records;
pub use error::{Error, Result};
pub use event::{Event, MoveReason};
pub use handler::{ErrorPolicy, Handler, HandlerError, HandlerOutput};
pub use reader::KinesisError;
pub use record::Record;
pub use seq::{Position, SequenceNumber};
pub use signals::{Errors, Events, Notices};
pub use store::{Operation, RequestCounts, ShardRef, StoreError};
