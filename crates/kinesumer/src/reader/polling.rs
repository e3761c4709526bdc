//! The polling reader (to be written).
