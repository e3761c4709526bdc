//! The supertrait that seals [`StateStore`](crate::store::StateStore),
//! [`KinesisApi`](crate::reader::KinesisApi) and [`Subscription`](crate::reader::Subscription):
//! they can be used and called from outside the crate, not implemented (why:
//! docs/design.md, "Sealed seams").

/// Implemented only inside this crate.
#[allow(unreachable_pub)] // Public in a private module: the sealing pattern.
pub trait Sealed {}
