//! Replication: the leader ships its write-ahead log to its followers.
//!
//! This module holds the sans-I/O core (DESIGN.md section 6): the
//! [`shipper::Shipper`] (leader) and [`receiver::Receiver`] (follower) are
//! state machines fed messages and time (`now_ms`) that return messages to
//! send and actions for the I/O layer. They read no clock, touch no file or
//! socket and start no thread, so a deterministic simulator can drive them
//! and every interleaving a test finds can be replayed. The transports only
//! move authenticated frames.
//!
//! - [`message`]: the [`message::Message`]s and their wire codec.
//! - [`protocol`]: the handshake rules shared by both sides (divergence
//!   point, epoch lookup) and the message clock.
//! - [`shipper`]: handshakes, streaming requests, heartbeats, HWM, fencing.
//! - [`receiver`]: hello, cuts, batch checks, acks, stale-leader refusal.
//! - [`transport`]: the object-safe `Transport`; [`in_process`] over Tokio
//!   channels, [`tcp`] over TCP with mutual HMAC-SHA256 authentication and
//!   per-frame MACs.

pub mod in_process;
pub(crate) mod message;
pub(crate) mod node;
pub(crate) mod protocol;
pub(crate) mod receiver;
pub(crate) mod shipper;
pub mod tcp;
pub mod transport;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;
