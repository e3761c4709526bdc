//! The in-memory state store (to be written).

/// The in-memory state store.
#[derive(Debug, Clone)]
pub struct MemoryStore {}
