//! The write-ahead log: format, segments, recovery and group commit.

pub(crate) mod commit;
pub mod format;
pub mod log;
pub(crate) mod reader;
pub mod record;
mod record_codec;
mod recovery;
pub mod segment;
