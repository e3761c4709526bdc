//! Assignment (to be written).
