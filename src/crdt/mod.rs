//! Clocks and conflict-free replicated data types.

pub mod hlc;
