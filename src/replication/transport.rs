//! The seam between the replication protocol and the network.
//!
//! A [`Transport`] moves opaque frames (`bytes::Bytes`) between a shard's
//! leader and its followers. It knows nothing of what a frame means: the
//! protocol encodes and decodes them, so it can be driven by a simulator
//! through the same seam. It is connection-oriented because the protocol's
//! handshake, fencing and sequence checks are per connection: a leader
//! [`listen`](Transport::listen)s and accepts one [`Connection`] per
//! follower, a follower [`connect`](Transport::connect)s to its leader.
//!
//! The traits are object-safe (`Arc<dyn Transport>`) without the
//! `async-trait` crate: each async method returns a boxed future.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::error::{Result, TidalError};

/// A boxed, sendable future borrowing its receiver: what every async method
/// of the transport traits returns, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Moves frames between one shard's leader and its followers.
///
/// Shared as `Arc<dyn Transport>` by the db layer, which calls
/// [`listen`](Transport::listen) on a leader and
/// [`connect`](Transport::connect) on a follower. An implementation built
/// for one side may refuse the other with [`TidalError::Transport`].
pub trait Transport: Send + Sync {
    /// Starts accepting followers; the leader side.
    ///
    /// Each accepted [`Connection`] is already authenticated (where the
    /// transport authenticates). Dropping the listener stops accepting.
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>>;

    /// Opens a connection to the leader; the follower side.
    ///
    /// Implementations may retry (TCP retries with capped backoff); an
    /// error means they gave up.
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>>;
}

/// The leader's end of a listening transport.
pub trait Listener: Send {
    /// Waits for the next follower.
    ///
    /// An `Err` concerns one incoming connection (for example a peer that
    /// failed authentication, [`TidalError::AuthFailed`]); the listener stays
    /// usable and the caller keeps accepting. [`TidalError::Closed`] means
    /// the listener itself has stopped.
    fn accept(&mut self) -> BoxFuture<'_, Result<Box<dyn Connection>>>;

    /// Where this listener can be reached (the bound socket address for
    /// TCP), so a test binding port 0 can tell followers where to connect.
    fn local_label(&self) -> String;
}

/// One authenticated, ordered, bidirectional stream of frames with a peer.
pub trait Connection: Send {
    /// The peer's address or label, for logs, errors and `status()`.
    fn peer(&self) -> &str;

    /// Splits the connection so one task reads while another writes.
    ///
    /// Dropping the sender closes this direction: the peer's
    /// [`FrameReceiver::recv`] then returns `Ok(None)`.
    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>);
}

/// The sending half of a [`Connection`].
pub trait FrameSender: Send {
    /// Sends one frame; frames arrive in the order sent.
    ///
    /// Returns once the frame is handed to the peer's channel or the
    /// socket, not when the peer has processed it. An error is final: the
    /// connection is unusable afterwards. Not cancel-safe on TCP: dropping
    /// the future mid-send poisons the sender, because half a frame may
    /// already be on the wire.
    fn send(&mut self, frame: Bytes) -> BoxFuture<'_, Result<()>>;
}

/// The receiving half of a [`Connection`].
pub trait FrameReceiver: Send {
    /// Waits for the next frame; `Ok(None)` when the peer closed cleanly.
    ///
    /// An error is final: the connection is closed, and later calls return
    /// an error again. Cancel-safe: dropping the future (in a `select!`)
    /// loses no bytes.
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>>;
}

/// A [`TidalError::Transport`] for `peer`.
pub(crate) fn transport_err(peer: &str, reason: impl Into<String>) -> TidalError {
    TidalError::Transport {
        peer: peer.to_string(),
        reason: reason.into(),
    }
}

// Object safety is the point of these traits: if one of them stops being
// object-safe, this stops compiling.
static_assertions::assert_obj_safe!(Transport, Listener, Connection, FrameSender, FrameReceiver);
static_assertions::assert_impl_all!(std::sync::Arc<dyn Transport>: Send, Sync);

// Debug by label, so a `Result<Box<dyn Connection>>` can be logged and
// unwrapped in tests without every implementation deriving Debug.
impl std::fmt::Debug for dyn Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer())
            .finish()
    }
}

impl std::fmt::Debug for dyn Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local_label())
            .finish()
    }
}
