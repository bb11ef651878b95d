//! The write-ahead log: format, segments, recovery and group commit.

pub mod record;
