//! The log of one shard.
