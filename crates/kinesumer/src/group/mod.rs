//! The group protocol: membership, the leader, the assignment, leases.

pub mod assign;
