//! [`TcpTransport`]: authenticated replication over TCP.
//!
//! One type serves both sides, built for one of them:
//! [`TcpTransport::listener`] for a leader (its `connect` is refused) and
//! [`TcpTransport::connector`] for a follower (its `listen` is refused).
//! Peers prove a shared cluster secret to each other without sending it
//! (see `auth`), derive a session key from both nonces, and tag every frame
//! with it and a per-direction sequence number (see `frame`), so nobody
//! without the secret can subscribe, inject or replay.
//!
//! Heartbeats are messages of the protocol above this transport; a session
//! with `idle_timeout` set relies on them to stay open when no data flows.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::auth::{SessionKey, follower_handshake, leader_handshake};
use self::frame::{Closer, Direction, FrameMac, TcpFrameReceiver, TcpFrameSender};
use super::transport::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Transport, transport_err,
};
use crate::error::{Result, TidalError};

mod auth;
#[cfg(test)]
mod connect_tests;
mod frame;
#[cfg(test)]
mod tests;

/// Shortest cluster secret accepted. Nonces and proofs cross the wire in
/// the clear, so a short secret could be guessed offline from one recorded
/// handshake; 16 bytes of randomness put that out of reach.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest duration accepted in [`TcpOptions`]: deadlines are computed as
/// `now + duration`, and a year is "forever" for a retry loop while keeping
/// that sum far from overflow (which would panic).
const MAX_OPTION_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Limits and timings of a [`TcpTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// Largest frame payload sent or accepted. A longer announced length is
    /// refused from the header alone, before memory is reserved for it, so a
    /// peer cannot make this process allocate more. Must be at most
    /// `u32::MAX` (the length prefix is a u32). Default 64 MiB: above the
    /// largest log batch or snapshot chunk the protocol sends.
    pub max_frame_bytes: usize,
    /// Bound on the handshake, on each connect attempt, on writing one frame
    /// and on reading one frame once its first byte arrived. A peer that
    /// stalls mid-frame is cut off after it. Default 10 s.
    pub io_timeout: Duration,
    /// Bound on waiting for the next frame to start, or `None` to wait
    /// forever. Set it above the protocol's heartbeat interval to detect a
    /// dead peer at this layer. Default `None`: the protocol's heartbeats
    /// and its own lag tracking decide when a silent peer is dead.
    pub idle_timeout: Option<Duration>,
    /// First delay between connect attempts. Default 50 ms.
    pub backoff_initial: Duration,
    /// Cap on the delay, which doubles after each failed attempt. Each
    /// sleep is drawn between half and all of the current delay, so
    /// followers of a restarted leader do not reconnect in lockstep.
    /// Default 5 s.
    pub backoff_max: Duration,
    /// How long `connect` keeps retrying before it gives up. Default 60 s.
    pub connect_deadline: Duration,
    /// Incoming connections that may be in their handshake at once; more
    /// wait in the kernel's backlog, so a flood of unauthenticated sockets
    /// cannot grow memory. Default 64.
    pub max_pending_handshakes: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            max_frame_bytes: 64 * 1024 * 1024,
            io_timeout: Duration::from_secs(10),
            idle_timeout: None,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_deadline: Duration::from_secs(60),
            max_pending_handshakes: 64,
        }
    }
}

impl TcpOptions {
    fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(TidalError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_frame_bytes == 0 || u32::try_from(self.max_frame_bytes).is_err() {
            return bad("max_frame_bytes", "must be between 1 and u32::MAX");
        }
        if self.io_timeout.is_zero() {
            return bad("io_timeout", "must be above zero");
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return bad("idle_timeout", "must be above zero when set");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad(
                "backoff_initial",
                "must be above zero and at most backoff_max",
            );
        }
        let durations = [
            ("io_timeout", Some(self.io_timeout)),
            ("idle_timeout", self.idle_timeout),
            ("backoff_max", Some(self.backoff_max)),
            ("connect_deadline", Some(self.connect_deadline)),
        ];
        for (field, value) in durations {
            if value.is_some_and(|d| d > MAX_OPTION_DURATION) {
                return bad(field, "must be at most 365 days");
            }
        }
        if self.max_pending_handshakes == 0 {
            return bad("max_pending_handshakes", "must be at least 1");
        }
        Ok(())
    }
}

/// Which side a [`TcpTransport`] was built for, with the address it uses.
#[derive(Clone, Debug)]
enum Side {
    Leader {
        listen_addr: String,
        /// The socket bound by [`TcpTransport::bind`], shared by each listen.
        bound: Option<Arc<std::net::TcpListener>>,
    },
    Follower {
        leader_addr: String,
    },
}

/// Replication over TCP with mutual authentication and per-frame MACs.
///
/// Built for one side: [`listener`](TcpTransport::listener) (a leader) or
/// [`connector`](TcpTransport::connector) (a follower); calling the other
/// side's method returns [`TidalError::Transport`]. Addresses are
/// `host:port` strings resolved at each bind or connect, so a leader's DNS
/// name may move between attempts.
///
/// ```
/// use tidal::{TcpOptions, TcpTransport};
/// let secret = b"a shared cluster secret, 16+ bytes";
/// let leader = TcpTransport::listener("0.0.0.0:7400", secret, TcpOptions::default())?;
/// let follower = TcpTransport::connector("leader:7400", secret, TcpOptions::default())?;
/// // A secret shorter than 16 bytes is refused.
/// assert!(TcpTransport::connector("leader:7400", b"short", TcpOptions::default()).is_err());
/// # let _ = (leader, follower);
/// # Ok::<(), tidal::TidalError>(())
/// ```
pub struct TcpTransport {
    side: Side,
    secret: Arc<[u8]>,
    options: TcpOptions,
}

// The secret stays out of logs.
impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("side", &self.side)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// A leader's transport, listening on `addr` (`host:port`; port 0 picks
    /// a free port, see [`Listener::local_label`]).
    ///
    /// Fails with [`TidalError::InvalidConfig`] for a secret shorter than
    /// [`MIN_SECRET_BYTES`] or inconsistent options.
    pub fn listener(
        addr: impl Into<String>,
        secret: impl AsRef<[u8]>,
        options: TcpOptions,
    ) -> Result<Arc<TcpTransport>> {
        Self::build(
            Side::Leader {
                listen_addr: addr.into(),
                bound: None,
            },
            secret.as_ref(),
            options,
        )
    }

    /// A leader's transport whose socket is bound now, on `addr`
    /// (`host:port`; port 0 picks a free port): [`local_addr`] then tells
    /// followers where to connect, before the leader even opens. The port
    /// stays bound while the transport lives.
    ///
    /// Fails with [`TidalError::InvalidConfig`] for a short secret or
    /// inconsistent options, and [`TidalError::Transport`] if the address
    /// cannot be bound.
    ///
    /// [`local_addr`]: TcpTransport::local_addr
    ///
    /// ```
    /// use tidal::{TcpOptions, TcpTransport};
    /// let t = TcpTransport::bind("127.0.0.1:0", [7u8; 32], TcpOptions::default()).unwrap();
    /// assert_ne!(t.local_addr().unwrap().port(), 0);
    /// ```
    pub fn bind(
        addr: impl Into<String>,
        secret: impl AsRef<[u8]>,
        options: TcpOptions,
    ) -> Result<Arc<TcpTransport>> {
        let addr = addr.into();
        let socket = std::net::TcpListener::bind(&addr)
            .map_err(|e| transport_err(&addr, format!("bind: {e}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| transport_err(&addr, format!("set non-blocking: {e}")))?;
        Self::build(
            Side::Leader {
                listen_addr: addr,
                bound: Some(Arc::new(socket)),
            },
            secret.as_ref(),
            options,
        )
    }

    /// The address a transport made by [`bind`](TcpTransport::bind) is
    /// bound to; `None` for other transports.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.side {
            Side::Leader {
                bound: Some(socket),
                ..
            } => socket.local_addr().ok(),
            _ => None,
        }
    }

    /// A follower's transport, connecting to its leader at `leader_addr`.
    ///
    /// Fails with [`TidalError::InvalidConfig`] for a secret shorter than
    /// [`MIN_SECRET_BYTES`] or inconsistent options.
    pub fn connector(
        leader_addr: impl Into<String>,
        secret: impl AsRef<[u8]>,
        options: TcpOptions,
    ) -> Result<Arc<TcpTransport>> {
        Self::build(
            Side::Follower {
                leader_addr: leader_addr.into(),
            },
            secret.as_ref(),
            options,
        )
    }

    fn build(side: Side, secret: &[u8], options: TcpOptions) -> Result<Arc<TcpTransport>> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TidalError::InvalidConfig {
                field: "secret",
                reason: format!(
                    "is {} bytes; a cluster secret needs at least {MIN_SECRET_BYTES}",
                    secret.len()
                ),
            });
        }
        options.validate()?;
        Ok(Arc::new(TcpTransport {
            side,
            secret: Arc::from(secret),
            options,
        }))
    }

    async fn listen_inner(
        &self,
        listen_addr: &str,
        bound: Option<&std::net::TcpListener>,
    ) -> Result<Box<dyn Listener>> {
        let socket = match bound {
            Some(bound) => bound
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|e| transport_err(listen_addr, format!("listen on bound socket: {e}")))?,
            None => tokio::net::TcpListener::bind(listen_addr)
                .await
                .map_err(|e| transport_err(listen_addr, format!("bind: {e}")))?,
        };
        let local = socket
            .local_addr()
            .map_err(|e| transport_err(listen_addr, format!("local address: {e}")))?;
        let limit = self.options.max_pending_handshakes;
        let (results, incoming) = mpsc::channel(limit);
        let task = tokio::spawn(accept_loop(
            socket,
            Arc::clone(&self.secret),
            self.options.clone(),
            results,
            Arc::new(Semaphore::new(limit)),
        ));
        Ok(Box::new(TcpListenerHandle {
            incoming,
            local: local.to_string(),
            task,
        }))
    }

    /// Connects with capped exponential backoff until `connect_deadline`.
    /// Authentication failures are returned at once: retrying cannot fix a
    /// wrong secret, and hammering a leader with bad proofs helps nobody.
    async fn connect_inner(&self, leader_addr: &str) -> Result<Box<dyn Connection>> {
        let opts = &self.options;
        let deadline = Instant::now() + opts.connect_deadline;
        let mut delay = opts.backoff_initial;
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let err = match self.connect_once(leader_addr).await {
                Ok(conn) => return Ok(conn),
                Err(e @ TidalError::AuthFailed { .. }) => return Err(e),
                Err(e) => e,
            };
            let sleep = jittered(delay);
            if Instant::now() + sleep >= deadline {
                return Err(transport_err(
                    leader_addr,
                    format!(
                        "gave up after {attempts} connect attempts within {} ms; last error: {err}",
                        opts.connect_deadline.as_millis()
                    ),
                ));
            }
            tracing::debug!(leader = leader_addr, attempts, error = %err, "replication connect failed; retrying");
            tokio::time::sleep(sleep).await;
            delay = delay.saturating_mul(2).min(opts.backoff_max);
        }
    }

    async fn connect_once(&self, leader_addr: &str) -> Result<Box<dyn Connection>> {
        let io_timeout = self.options.io_timeout;
        let mut stream = tokio::time::timeout(io_timeout, TcpStream::connect(leader_addr))
            .await
            .map_err(|_| timeout_err(leader_addr, "connect", io_timeout))?
            .map_err(|e| transport_err(leader_addr, format!("connect: {e}")))?;
        let key = tokio::time::timeout(
            io_timeout,
            follower_handshake(&mut stream, &self.secret, leader_addr),
        )
        .await
        .map_err(|_| timeout_err(leader_addr, "handshake", io_timeout))??;
        let conn = TcpConnection::new(
            leader_addr.to_string(),
            stream,
            &key,
            Direction::FollowerToLeader,
            &self.options,
        )?;
        Ok(Box::new(conn))
    }
}

impl Transport for TcpTransport {
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            match &self.side {
                Side::Leader { listen_addr, bound } => {
                    self.listen_inner(listen_addr, bound.as_deref()).await
                }
                Side::Follower { leader_addr } => Err(transport_err(
                    leader_addr,
                    "this TcpTransport was built with connector() for a follower; \
                     a leader needs TcpTransport::listener",
                )),
            }
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            match &self.side {
                Side::Follower { leader_addr } => self.connect_inner(leader_addr).await,
                Side::Leader { listen_addr, .. } => Err(transport_err(
                    listen_addr,
                    "this TcpTransport was built with listener() for a leader; \
                     a follower needs TcpTransport::connector",
                )),
            }
        })
    }
}

fn timeout_err(peer: &str, op: &'static str, after: Duration) -> TidalError {
    TidalError::TransportTimeout {
        peer: peer.to_string(),
        op,
        timeout_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A delay drawn between half and all of `delay` ("equal jitter"); without
/// OS randomness, the full delay.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    match getrandom::u32() {
        Ok(r) => half + half.mul_f64(f64::from(r) / f64::from(u32::MAX)),
        Err(_) => delay,
    }
}

/// Accepts sockets and runs each handshake in its own task, at most
/// `permits` at a time, handing results to the listener handle. A slow or
/// hostile client therefore delays nobody else's handshake.
async fn accept_loop(
    socket: tokio::net::TcpListener,
    secret: Arc<[u8]>,
    options: TcpOptions,
    results: mpsc::Sender<Result<Box<dyn Connection>>>,
    permits: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, addr) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of
                // spinning, and keep serving the followers already here.
                tracing::warn!(error = %e, "replication accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let secret = Arc::clone(&secret);
        let options = options.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let peer = addr.to_string();
            let outcome = accept_one(stream, peer, &secret, &options).await;
            // The handle may be gone; the connection is then dropped.
            let _ = results.send(outcome).await;
            drop(permit);
        });
    }
}

async fn accept_one(
    mut stream: TcpStream,
    peer: String,
    secret: &[u8],
    options: &TcpOptions,
) -> Result<Box<dyn Connection>> {
    let key = tokio::time::timeout(
        options.io_timeout,
        leader_handshake(&mut stream, secret, &peer),
    )
    .await
    .map_err(|_| timeout_err(&peer, "handshake", options.io_timeout))??;
    let conn = TcpConnection::new(peer, stream, &key, Direction::LeaderToFollower, options)?;
    Ok(Box::new(conn))
}

/// The leader's listener: results of handshakes run by the accept task.
struct TcpListenerHandle {
    incoming: mpsc::Receiver<Result<Box<dyn Connection>>>,
    local: String,
    task: JoinHandle<()>,
}

impl Drop for TcpListenerHandle {
    fn drop(&mut self) {
        // Stops accepting and frees the port; handshakes already running end
        // within io_timeout and their connections are dropped.
        self.task.abort();
    }
}

impl Listener for TcpListenerHandle {
    fn accept(&mut self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            self.incoming
                .recv()
                .await
                .unwrap_or(Err(TidalError::Closed))
        })
    }

    fn local_label(&self) -> String {
        self.local.clone()
    }
}

/// An authenticated TCP session, ready to split.
struct TcpConnection {
    sender: TcpFrameSender,
    receiver: TcpFrameReceiver,
}

impl TcpConnection {
    /// `outgoing` is the direction this side sends in; it receives in the
    /// other one.
    fn new(
        peer: String,
        stream: TcpStream,
        key: &SessionKey,
        outgoing: Direction,
        options: &TcpOptions,
    ) -> Result<TcpConnection> {
        let incoming = match outgoing {
            Direction::LeaderToFollower => Direction::FollowerToLeader,
            Direction::FollowerToLeader => Direction::LeaderToFollower,
        };
        // Frames are small and latency matters more than packet count.
        stream
            .set_nodelay(true)
            .map_err(|e| transport_err(&peer, format!("set TCP_NODELAY: {e}")))?;
        // A duplicate of the socket lets either half shut both down.
        let std_stream = stream
            .into_std()
            .map_err(|e| transport_err(&peer, format!("detach socket: {e}")))?;
        let dup = std_stream
            .try_clone()
            .map_err(|e| transport_err(&peer, format!("duplicate socket: {e}")))?;
        let stream = TcpStream::from_std(std_stream)
            .map_err(|e| transport_err(&peer, format!("register socket: {e}")))?;
        let closer = Closer(Arc::new(dup));
        let (reader, writer) = stream.into_split();
        Ok(TcpConnection {
            sender: TcpFrameSender {
                peer: peer.clone(),
                writer,
                mac: FrameMac::new(key, outgoing)?,
                next_seq: 0,
                max_frame_bytes: options.max_frame_bytes,
                io_timeout: options.io_timeout,
                closer: closer.clone(),
                broken: None,
                in_flight: false,
            },
            receiver: TcpFrameReceiver {
                peer,
                reader,
                buf: BytesMut::new(),
                mac: FrameMac::new(key, incoming)?,
                next_seq: 0,
                max_frame_bytes: options.max_frame_bytes,
                io_timeout: options.io_timeout,
                idle_timeout: options.idle_timeout,
                closer,
                frame_deadline: None,
                broken: None,
            },
        })
    }
}

impl Connection for TcpConnection {
    fn peer(&self) -> &str {
        &self.sender.peer
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        (Box::new(self.sender), Box::new(self.receiver))
    }
}
