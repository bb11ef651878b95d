//! META (being written).
