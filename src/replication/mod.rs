//! Replication: moving a shard leader's log to its followers.
// Integrated by the db layer in the replication work.
#![allow(dead_code)]

pub(crate) mod in_process;
pub(crate) mod tcp;
pub(crate) mod transport;
