//! [`InProcessTransport`]: a leader and its followers in one process,
//! connected by bounded Tokio channels.
//!
//! For tests and one-process deployments (a leader per shard in one
//! process). There is no authentication: every party shares the one
//! `Arc<InProcessTransport>`, and nothing crosses a trust boundary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::transport::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Transport, transport_err,
};
use crate::error::{Result, TidalError};

/// Frames buffered per direction by default: enough to keep a follower busy
/// while the leader reads the next batch, small enough that a stalled
/// follower pushes back on its shipper instead of growing memory.
pub const DEFAULT_CHANNEL_FRAMES: usize = 1024;

/// Followers that may wait in `connect` for the leader's `accept`; more
/// wait for a slot, so a flood of connects cannot grow memory.
const PENDING_CONNECTIONS: usize = 64;

/// A transport over Tokio channels, shared by a leader and its followers in
/// one process.
///
/// The leader calls [`listen`](Transport::listen) (one listener at a time),
/// followers call [`connect`](Transport::connect). Channels are bounded, so
/// a slow receiver slows its sender down. Dropping either end of a
/// connection ends the other side's `recv` with `Ok(None)`.
///
/// ```
/// use bytes::Bytes;
/// use tidal::{InProcessTransport, Transport};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let transport = InProcessTransport::new();
/// let mut listener = transport.listen().await?;
/// let follower = transport.connect().await?;
/// let leader_end = listener.accept().await?;
/// let (mut to_leader, _) = follower.split();
/// let (_, mut from_follower) = leader_end.split();
/// to_leader.send(Bytes::from_static(b"hello")).await?;
/// assert_eq!(from_follower.recv().await?, Some(Bytes::from_static(b"hello")));
/// # Ok::<(), tidal::TidalError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct InProcessTransport {
    /// Hands connections to the current listener; `None` until `listen`.
    acceptor: Mutex<Option<mpsc::Sender<InProcessConnection>>>,
    /// Frames buffered per direction of each connection.
    channel_frames: usize,
    /// Numbers followers, so each connection has a distinct peer label.
    next_follower: AtomicU64,
}

impl InProcessTransport {
    /// A transport with [`DEFAULT_CHANNEL_FRAMES`] frames buffered per
    /// direction, wrapped in an `Arc` because leader and followers share it.
    pub fn new() -> Arc<InProcessTransport> {
        InProcessTransport::with_channel_frames(DEFAULT_CHANNEL_FRAMES)
    }

    /// A transport buffering `channel_frames` frames per direction (at
    /// least 1), for tests that want back-pressure early.
    pub fn with_channel_frames(channel_frames: usize) -> Arc<InProcessTransport> {
        Arc::new(InProcessTransport {
            acceptor: Mutex::new(None),
            channel_frames: channel_frames.max(1),
            next_follower: AtomicU64::new(1),
        })
    }

    /// The acceptor slot; a panic elsewhere while holding it cannot leave it
    /// inconsistent (it is a single `Option`), so poisoning is ignored.
    fn acceptor(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<InProcessConnection>>> {
        self.acceptor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for InProcessTransport {
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let mut slot = self.acceptor();
            if slot.as_ref().is_some_and(|tx| !tx.is_closed()) {
                return Err(transport_err(
                    "in-process",
                    "a leader is already listening on this transport",
                ));
            }
            let (tx, rx) = mpsc::channel(PENDING_CONNECTIONS);
            *slot = Some(tx);
            Ok(Box::new(InProcessListener { incoming: rx }) as Box<dyn Listener>)
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let acceptor = self
                .acceptor()
                .clone()
                .ok_or_else(|| transport_err("in-process:leader", "no leader is listening yet"))?;
            let n = self.next_follower.fetch_add(1, Ordering::Relaxed);
            let (to_follower, from_leader) = mpsc::channel(self.channel_frames);
            let (to_leader, from_follower) = mpsc::channel(self.channel_frames);
            let leader_end = InProcessConnection {
                peer: format!("in-process:follower-{n}"),
                tx: to_follower,
                rx: from_follower,
            };
            let follower_end = InProcessConnection {
                peer: "in-process:leader".to_string(),
                tx: to_leader,
                rx: from_leader,
            };
            acceptor
                .send(leader_end)
                .await
                .map_err(|_| transport_err("in-process:leader", "the leader stopped listening"))?;
            Ok(Box::new(follower_end) as Box<dyn Connection>)
        })
    }
}

/// The leader's listener: receives the leader ends of new connections.
struct InProcessListener {
    incoming: mpsc::Receiver<InProcessConnection>,
}

impl Listener for InProcessListener {
    fn accept(&mut self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            match self.incoming.recv().await {
                Some(conn) => Ok(Box::new(conn) as Box<dyn Connection>),
                // Unreachable while the transport holds the sender, but a
                // closed channel must not hang the leader's accept loop.
                None => Err(TidalError::Closed),
            }
        })
    }

    fn local_label(&self) -> String {
        "in-process:leader".to_string()
    }
}

/// One end of an in-process connection: a channel each way.
#[derive(Debug)]
struct InProcessConnection {
    peer: String,
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

impl Connection for InProcessConnection {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let conn = *self;
        (
            Box::new(InProcessSender {
                peer: conn.peer,
                tx: conn.tx,
            }),
            Box::new(InProcessReceiver { rx: conn.rx }),
        )
    }
}

/// The sending half: a bounded channel sender.
struct InProcessSender {
    peer: String,
    tx: mpsc::Sender<Bytes>,
}

impl FrameSender for InProcessSender {
    fn send(&mut self, frame: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.tx
                .send(frame)
                .await
                .map_err(|_| transport_err(&self.peer, "the peer closed the connection"))
        })
    }
}

/// The receiving half: a bounded channel receiver.
struct InProcessReceiver {
    rx: mpsc::Receiver<Bytes>,
}

impl FrameReceiver for InProcessReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        // `mpsc::Receiver::recv` is cancel-safe, so this is too.
        Box::pin(async move { Ok(self.rx.recv().await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn frames_round_trip_both_ways_and_close_ends_recv() {
        let transport = InProcessTransport::with_channel_frames(4);
        let shared: Arc<dyn Transport> = transport.clone();
        let mut listener = shared.listen().await.unwrap();
        let follower = shared.connect().await.unwrap();
        let leader = listener.accept().await.unwrap();
        assert_eq!(follower.peer(), "in-process:leader");
        assert!(leader.peer().starts_with("in-process:follower-"));
        let (mut l_tx, mut l_rx) = leader.split();
        let (mut f_tx, mut f_rx) = follower.split();

        // More frames than the channel holds: the reader drains concurrently.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(frame) = f_rx.recv().await.unwrap() {
                got.push(frame);
            }
            got
        });
        let sent: Vec<Bytes> = (0..100u32)
            .map(|i| Bytes::from(vec![i as u8; i as usize * 10]))
            .collect();
        for frame in &sent {
            l_tx.send(frame.clone()).await.unwrap();
        }
        f_tx.send(Bytes::from_static(b"ack")).await.unwrap();
        assert_eq!(
            l_rx.recv().await.unwrap().unwrap(),
            Bytes::from_static(b"ack")
        );

        drop(l_tx);
        assert_eq!(reader.await.unwrap(), sent);
        drop(f_tx);
        assert_eq!(l_rx.recv().await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_a_whole_end_closes_both_directions() {
        let transport = InProcessTransport::new();
        let mut listener = transport.listen().await.unwrap();
        let follower = transport.connect().await.unwrap();
        let leader = listener.accept().await.unwrap();
        drop(follower);
        let (mut l_tx, mut l_rx) = leader.split();
        assert_eq!(l_rx.recv().await.unwrap(), None);
        let err = l_tx.send(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, TidalError::Transport { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connect_without_listener_and_second_listener_are_refused() {
        let transport = InProcessTransport::new();
        let err = transport.connect().await.unwrap_err();
        assert!(matches!(err, TidalError::Transport { .. }), "{err}");
        let listener = transport.listen().await.unwrap();
        let err = transport.listen().await.unwrap_err();
        assert!(err.to_string().contains("already listening"), "{err}");
        // A dropped listener frees the transport for a new leader, and
        // followers of the old one are told it stopped.
        drop(listener);
        let err = transport.connect().await.unwrap_err();
        assert!(err.to_string().contains("stopped listening"), "{err}");
        let mut listener = transport.listen().await.unwrap();
        let follower = transport.connect().await.unwrap();
        let leader = listener.accept().await.unwrap();
        let (mut f_tx, _f_rx) = follower.split();
        let (_l_tx, mut l_rx) = leader.split();
        f_tx.send(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(
            l_rx.recv().await.unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
    }
}
