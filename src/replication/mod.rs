//! Replication: the leader ships its write-ahead log to its followers.
//!
//! The protocol is a sans-I/O core (DESIGN.md section 6): the shipper
//! (leader) and receiver (follower) are state machines fed messages and time
//! that return messages to send and actions for the I/O layer. They read no
//! clock, touch no file or socket and start no thread, so a deterministic
//! simulator can drive them. Tokio tasks only move bytes. The transports
//! move authenticated frames:
//!
//! - [`transport`]: the object-safe [`Transport`](transport::Transport).
//! - [`in_process`]: [`InProcessTransport`](in_process::InProcessTransport), over Tokio channels.
//! - [`tcp`]: [`TcpTransport`](tcp::TcpTransport), over TCP with mutual
//!   HMAC-SHA256 authentication and a MAC on every frame.

pub mod in_process;
pub(crate) mod message;
pub(crate) mod node;
pub(crate) mod node_follower;
pub(crate) mod protocol;
pub(crate) mod receiver;
pub(crate) mod shipper;
pub(crate) mod shipper_output;
pub mod tcp;
pub mod transport;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_cluster;
#[cfg(test)]
mod sim_cluster_check;
#[cfg(test)]
mod sim_cluster_events;
#[cfg(test)]
mod sim_cluster_io;
#[cfg(test)]
mod sim_cluster_tests;
#[cfg(test)]
mod sim_cut_tests;
#[cfg(test)]
mod sim_tests;
