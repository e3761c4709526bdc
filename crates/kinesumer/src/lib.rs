//! kinesumer
