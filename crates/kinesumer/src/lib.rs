//! kinesumer
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod aws;
mod backoff;
pub mod clock;
pub mod config;
mod consumer;
mod delivery;
mod error;
pub mod group;
pub mod metrics;
mod random;
pub mod reader;
mod record;
pub mod seq;
pub mod sim;
pub mod store;

pub use aws::ca_bundle_http_client;
pub use clock::{Clock, SystemClock, TestClock};
pub use config::{Aggregation, Config, ConfigBuilder, ConfigError, InitialPosition, ReadMode};
pub use consumer::Kinesumer;
pub use delivery::{Handler, Records};
pub use error::{Error, Event, Result};
pub use record::Record;
pub use seq::{Position, SequenceNumber};
