//! TCP transport tests over loopback, with a man-in-the-middle proxy and
//! raw sockets standing in for broken or hostile peers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::auth::{self, MAC_BYTES, MAGIC, NONCE_BYTES};
use super::frame::HEADER_BYTES;
use super::*;

pub(super) const SECRET: &[u8] = b"cluster-secret-A-0123456789";
const OTHER_SECRET: &[u8] = b"cluster-secret-B-0123456789";
const CAP_BYTES: usize = 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_millis(400);

pub(super) fn opts() -> TcpOptions {
    TcpOptions {
        max_frame_bytes: CAP_BYTES,
        io_timeout: IO_TIMEOUT,
        idle_timeout: None,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
        connect_deadline: Duration::from_secs(2),
        max_pending_handshakes: 8,
    }
}

async fn leader_listening(secret: &[u8], options: TcpOptions) -> (Box<dyn Listener>, SocketAddr) {
    let transport: Arc<dyn Transport> =
        TcpTransport::listener("127.0.0.1:0", secret, options).unwrap();
    let listener = transport.listen().await.unwrap();
    let addr = listener.local_label().parse().unwrap();
    (listener, addr)
}

/// (leader end, follower end) of a session through `addr` (the leader
/// itself, or a proxy in front of it).
async fn pair(
    listener: &mut Box<dyn Listener>,
    addr: SocketAddr,
    options: TcpOptions,
) -> (Box<dyn Connection>, Box<dyn Connection>) {
    let follower = TcpTransport::connector(addr.to_string(), SECRET, options).unwrap();
    let (f, l) = tokio::join!(follower.connect(), listener.accept());
    (l.unwrap(), f.unwrap())
}

pub(super) fn frame(i: usize) -> Bytes {
    Bytes::from(format!("frame number {i}").into_bytes())
}

/// Resolves once `rx` reports the end of the connection (close or error);
/// panics if it is still open after two seconds.
async fn assert_closed(rx: &mut Box<dyn FrameReceiver>) {
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "connection still open after a refused frame");
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_round_trip_both_ways_including_frames_at_the_cap() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let (leader, follower) = pair(&mut listener, addr, opts()).await;
    assert_eq!(follower.peer(), addr.to_string());
    let (mut l_tx, mut l_rx) = leader.split();
    let (mut f_tx, mut f_rx) = follower.split();

    let big = Bytes::from((0..CAP_BYTES).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut sent: Vec<Bytes> = (0..200).map(frame).collect();
    sent.push(Bytes::new());
    sent.push(big.clone());
    sent.push(big.slice(1..));
    sent.push(frame(999));

    // Both directions at once, each with its own reader task.
    let to_f = sent.clone();
    let leader_writer = tokio::spawn(async move {
        for f in to_f {
            l_tx.send(f).await.unwrap();
        }
        l_tx
    });
    let to_l = sent.clone();
    let follower_writer = tokio::spawn(async move {
        for f in to_l {
            f_tx.send(f).await.unwrap();
        }
        f_tx
    });
    for want in &sent {
        assert_eq!(&f_rx.recv().await.unwrap().unwrap(), want);
        assert_eq!(&l_rx.recv().await.unwrap().unwrap(), want);
    }
    let mut l_tx = leader_writer.await.unwrap();
    let f_tx = follower_writer.await.unwrap();

    // Over the cap is refused before anything is written: the session lives.
    let over = Bytes::from(vec![0u8; CAP_BYTES + 1]);
    let err = l_tx.send(over).await.unwrap_err();
    assert!(
        matches!(err, TidalError::FrameTooLarge { len, limit_bytes: CAP_BYTES, .. } if len == CAP_BYTES as u64 + 1),
        "{err}"
    );
    l_tx.send(frame(7)).await.unwrap();
    assert_eq!(f_rx.recv().await.unwrap().unwrap(), frame(7));

    // Dropping a sender is a clean close of that direction.
    drop(l_tx);
    assert_eq!(f_rx.recv().await.unwrap(), None);
    drop(f_tx);
    assert_eq!(l_rx.recv().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn recv_is_cancel_safe() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let (leader, follower) = pair(&mut listener, addr, opts()).await;
    let (mut l_tx, _l_rx) = leader.split();
    let (_f_tx, mut f_rx) = follower.split();
    let big = Bytes::from(vec![5u8; CAP_BYTES]);
    let sent = vec![frame(0), big.clone(), frame(2), big, frame(4)];
    let to_send = sent.clone();
    tokio::spawn(async move {
        for f in to_send {
            l_tx.send(f).await.unwrap();
        }
        l_tx
    });
    // Abandon recv over and over (as a select! with a timer would); no byte
    // may be lost in between.
    let mut got = Vec::new();
    while got.len() < sent.len() {
        tokio::select! {
            f = f_rx.recv() => got.push(f.unwrap().unwrap()),
            _ = tokio::time::sleep(Duration::from_micros(50)) => {}
        }
    }
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_refused_on_both_sides() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let follower = TcpTransport::connector(addr.to_string(), OTHER_SECRET, opts()).unwrap();
    let started = Instant::now();
    let (f, l) = tokio::join!(follower.connect(), listener.accept());
    let f = f.unwrap_err();
    let l = l.unwrap_err();
    assert!(matches!(f, TidalError::AuthFailed { .. }), "follower: {f}");
    assert!(matches!(l, TidalError::AuthFailed { .. }), "leader: {l}");
    // Not retried: a wrong secret does not fix itself.
    assert!(started.elapsed() < Duration::from_secs(1));

    // The listener keeps serving followers that know the secret.
    let (leader, follower) = pair(&mut listener, addr, opts()).await;
    let (mut l_tx, _l_rx) = leader.split();
    let (_f_tx, mut f_rx) = follower.split();
    l_tx.send(frame(1)).await.unwrap();
    assert_eq!(f_rx.recv().await.unwrap().unwrap(), frame(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_refuses_a_leader_without_the_secret() {
    // A raw impostor leader that answers with a made-up proof.
    let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = impostor.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut s, _) = impostor.accept().await.unwrap();
        let mut hello = [0u8; MAGIC.len() + NONCE_BYTES];
        s.read_exact(&mut hello).await.unwrap();
        let mut challenge = [7u8; MAGIC.len() + NONCE_BYTES + MAC_BYTES];
        challenge[..MAGIC.len()].copy_from_slice(&MAGIC);
        s.write_all(&challenge).await.unwrap();
        let mut answer = [0u8; 1 + MAC_BYTES];
        s.read_exact(&mut answer).await.unwrap();
        answer
    });
    let follower = TcpTransport::connector(addr.to_string(), SECRET, opts()).unwrap();
    let err = follower.connect().await.unwrap_err();
    assert!(matches!(err, TidalError::AuthFailed { .. }), "{err}");
    // The follower refused and sent no proof of its own.
    assert_eq!(fake.await.unwrap(), [0u8; 1 + MAC_BYTES]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_refuses_a_follower_without_the_secret() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    // A raw impostor follower that accepts any leader and makes up a proof.
    let fake = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut hello = [3u8; MAGIC.len() + NONCE_BYTES];
        hello[..MAGIC.len()].copy_from_slice(&MAGIC);
        s.write_all(&hello).await.unwrap();
        let mut challenge = [0u8; MAGIC.len() + NONCE_BYTES + MAC_BYTES];
        s.read_exact(&mut challenge).await.unwrap();
        s.write_all(&[1u8; 1 + MAC_BYTES]).await.unwrap();
        let mut verdict = [9u8; 1];
        s.read_exact(&mut verdict).await.unwrap();
        verdict[0]
    };
    let (verdict, accepted) = tokio::join!(fake, listener.accept());
    let err = accepted.unwrap_err();
    assert!(
        matches!(&err, TidalError::AuthFailed { reason, .. } if reason.contains("did not prove")),
        "{err}"
    );
    assert_eq!(verdict, 0, "the impostor must be told it was refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_is_refused_and_the_listener_keeps_serving() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    stranger.write_all(&[b'G'; 40]).await.unwrap();
    let err = listener.accept().await.unwrap_err();
    assert!(
        matches!(&err, TidalError::Transport { reason, .. } if reason.contains("magic")),
        "{err}"
    );
    let (_leader, _follower) = pair(&mut listener, addr, opts()).await;
}

// ----- a man in the middle -----

/// Fault applied by the proxy to one frame of one direction.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Flip bits of the byte at this offset into frame `frame`.
    Flip {
        frame: usize,
        at: FlipAt,
    },
    /// Send frame `frame` twice.
    Duplicate {
        frame: usize,
    },
    /// Swap frames `frame` and `frame + 1`.
    Swap {
        frame: usize,
    },
}

#[derive(Clone, Copy, Debug)]
enum FlipAt {
    /// Most significant byte of the length: the length jumps over the cap.
    Len,
    Seq,
    Payload,
    Tag,
}

/// Handshake messages per direction, forwarded whole before frames start.
const F2L_HANDSHAKE: [usize; 2] = [MAGIC.len() + NONCE_BYTES, 1 + MAC_BYTES];
const L2F_HANDSHAKE: [usize; 2] = [MAGIC.len() + NONCE_BYTES + MAC_BYTES, 1];

async fn proxy(upstream: SocketAddr, l2f: Fault, f2l: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::spawn(pipe(cr, sw, F2L_HANDSHAKE, f2l));
        tokio::spawn(pipe(sr, cw, L2F_HANDSHAKE, l2f));
    });
    addr
}

/// Forwards the handshake, then frame by frame, applying `fault`. Ends
/// (closing its write side) when either socket does.
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, handshake: [usize; 2], fault: Fault) {
    for n in handshake {
        let mut msg = vec![0u8; n];
        if r.read_exact(&mut msg).await.is_err() || w.write_all(&msg).await.is_err() {
            return;
        }
    }
    let mut held: Option<Vec<u8>> = None;
    for index in 0.. {
        let mut header = [0u8; HEADER_BYTES];
        if r.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut frame = vec![0u8; HEADER_BYTES + len + MAC_BYTES];
        frame[..HEADER_BYTES].copy_from_slice(&header);
        if r.read_exact(&mut frame[HEADER_BYTES..]).await.is_err() {
            return;
        }
        let mut out = vec![];
        match fault {
            Fault::Flip { frame: n, at } if n == index => {
                let offset = match at {
                    FlipAt::Len => 0,
                    FlipAt::Seq => HEADER_BYTES - 1,
                    FlipAt::Payload => HEADER_BYTES + len / 2,
                    FlipAt::Tag => frame.len() - 1,
                };
                frame[offset] ^= 0x80;
                out.push(frame);
            }
            Fault::Duplicate { frame: n } if n == index => {
                out.push(frame.clone());
                out.push(frame);
            }
            Fault::Swap { frame: n } if n == index => held = Some(frame),
            Fault::Swap { frame: n } if n + 1 == index => {
                out.push(frame);
                out.extend(held.take());
            }
            _ => out.push(frame),
        }
        for f in out {
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
    }
}

/// Sends frames 0..5 through a proxy applying `fault` leader-to-follower
/// (or follower-to-leader), and returns the receiving side's error after
/// checking the frames before the faulty one arrived intact.
async fn refused_through_proxy(fault: Fault, leader_to_follower: bool) -> TidalError {
    let frames: Vec<Bytes> = (0..5).map(frame).collect();
    refused_frames_through_proxy(fault, leader_to_follower, &frames).await
}

/// [`refused_through_proxy`] with the given frames.
async fn refused_frames_through_proxy(
    fault: Fault,
    leader_to_follower: bool,
    frames: &[Bytes],
) -> TidalError {
    let (mut listener, upstream) = leader_listening(SECRET, opts()).await;
    let (l2f, f2l) = if leader_to_follower {
        (fault, Fault::None)
    } else {
        (Fault::None, fault)
    };
    let addr = proxy(upstream, l2f, f2l).await;
    let (leader, follower) = pair(&mut listener, addr, opts()).await;
    let (l_tx, l_rx) = leader.split();
    let (f_tx, f_rx) = follower.split();
    let (mut tx, mut rx, mut other_rx) = if leader_to_follower {
        (l_tx, f_rx, l_rx)
    } else {
        (f_tx, l_rx, f_rx)
    };
    for f in frames {
        tx.send(f.clone()).await.unwrap();
    }
    let faulty = match fault {
        Fault::Flip { frame, .. } | Fault::Duplicate { frame } | Fault::Swap { frame } => frame,
        Fault::None => unreachable!("a fault test needs a fault"),
    };
    let intact = if matches!(fault, Fault::Duplicate { .. }) {
        faulty + 1
    } else {
        faulty
    };
    for f in &frames[..intact] {
        assert_eq!(&rx.recv().await.unwrap().unwrap(), f, "{fault:?}");
    }
    let err = rx.recv().await.unwrap_err();
    // Refused for good, and the whole connection is closed.
    assert!(rx.recv().await.is_err());
    assert_closed(&mut other_rx).await;
    drop(tx);
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_a_frame_is_refused() {
    for leader_to_follower in [true, false] {
        for at in [FlipAt::Seq, FlipAt::Payload, FlipAt::Tag] {
            let err = refused_through_proxy(Fault::Flip { frame: 2, at }, leader_to_follower).await;
            assert!(
                matches!(
                    err,
                    TidalError::FrameRejected {
                        expected_seq: 2,
                        ..
                    }
                ),
                "{at:?}: {err}"
            );
        }
        // A corrupted length is refused by the cap (or, if below it, by the tag).
        let at = FlipAt::Len;
        let err = refused_through_proxy(Fault::Flip { frame: 0, at }, leader_to_follower).await;
        assert!(matches!(err, TidalError::FrameTooLarge { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_or_reordered_frame_is_refused() {
    for leader_to_follower in [true, false] {
        let err = refused_through_proxy(Fault::Duplicate { frame: 2 }, leader_to_follower).await;
        assert!(
            matches!(&err, TidalError::FrameRejected { expected_seq: 3, reason, .. } if reason.contains("sequence 2")),
            "{err}"
        );
        let err = refused_through_proxy(Fault::Swap { frame: 1 }, leader_to_follower).await;
        assert!(
            matches!(&err, TidalError::FrameRejected { expected_seq: 1, reason, .. } if reason.contains("sequence 2")),
            "{err}"
        );
    }
}

// ----- raw, authenticated but misbehaving peers -----

/// A raw follower socket that completed a genuine handshake.
async fn raw_follower(
    listener: &mut Box<dyn Listener>,
    addr: SocketAddr,
) -> (Box<dyn Connection>, TcpStream) {
    let raw = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        auth::follower_handshake(&mut s, SECRET, "leader")
            .await
            .unwrap();
        s
    };
    let (raw, conn) = tokio::join!(raw, listener.accept());
    (conn.unwrap(), raw)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_announcing_more_than_the_cap_fails_fast_without_allocating() {
    // Leader receiving: a follower announces 4 GiB - 1 and sends nothing else.
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let (conn, mut raw) = raw_follower(&mut listener, addr).await;
    let (_tx, mut rx) = conn.split();
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    raw.write_all(&header).await.unwrap();
    let started = Instant::now();
    let err = rx.recv().await.unwrap_err();
    // Refused on the header alone: waiting for (or reserving) the payload
    // would end in a timeout after IO_TIMEOUT instead.
    assert!(
        matches!(err, TidalError::FrameTooLarge { len, limit_bytes: CAP_BYTES, .. } if len == u64::from(u32::MAX)),
        "{err}"
    );
    assert!(started.elapsed() < IO_TIMEOUT / 2);
    // And the connection is closed on the liar.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "connection left open");

    // Follower receiving: a raw leader does the same.
    let raw_leader = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = raw_leader.local_addr().unwrap();
    let raw = async {
        let (mut s, _) = raw_leader.accept().await.unwrap();
        auth::leader_handshake(&mut s, SECRET, "follower")
            .await
            .unwrap();
        s.write_all(&header).await.unwrap();
        s
    };
    let follower = TcpTransport::connector(addr.to_string(), SECRET, opts()).unwrap();
    let (_raw, conn) = tokio::join!(raw, follower.connect());
    let (_tx, mut rx) = conn.unwrap().split();
    let err = rx.recv().await.unwrap_err();
    assert!(matches!(err, TidalError::FrameTooLarge { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_stalling_mid_frame_is_timed_out() {
    let (mut listener, addr) = leader_listening(SECRET, opts()).await;
    let (conn, mut raw) = raw_follower(&mut listener, addr).await;
    let (_tx, mut rx) = conn.split();
    let mut half = [0u8; HEADER_BYTES + 10];
    half[..4].copy_from_slice(&100u32.to_be_bytes());
    raw.write_all(&half).await.unwrap();
    let started = Instant::now();
    let err = rx.recv().await.unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::TransportTimeout {
                op: "read frame",
                ..
            }
        ),
        "{err}"
    );
    let waited = started.elapsed();
    assert!(waited >= IO_TIMEOUT - Duration::from_millis(50) && waited < IO_TIMEOUT * 3);

    // A client stalling inside the handshake is cut off too.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&MAGIC).await.unwrap();
    let err = listener.accept().await.unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::TransportTimeout {
                op: "handshake",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_timeout_ends_a_silent_session() {
    let options = TcpOptions {
        idle_timeout: Some(Duration::from_millis(200)),
        ..opts()
    };
    let (mut listener, addr) = leader_listening(SECRET, options.clone()).await;
    let (leader, _follower) = pair(&mut listener, addr, options).await;
    let (_tx, mut rx) = leader.split();
    let err = rx.recv().await.unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::TransportTimeout {
                op: "wait for a frame",
                ..
            }
        ),
        "{err}"
    );
}

// ----- connecting -----

#[path = "message_flip_tests.rs"]
mod message_flips;
