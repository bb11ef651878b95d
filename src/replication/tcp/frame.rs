//! Authenticated, sequenced, length-prefixed frames on an established
//! TCP session.
//!
//! ```text
//! frame = len (u32 BE) | seq (u64 BE) | payload (len bytes) | tag (32)
//! tag   = HMAC-SHA256(session key, direction label | seq (u64 BE) | payload)
//! ```
//!
//! `seq` counts frames per direction from 0. The direction label
//! (`tidal-l2f-v1` or `tidal-f2l-v1`) keeps a frame from being reflected
//! back to its sender. The receiver refuses a frame whose `len` is over the
//! cap before it reserves any memory for it, and a frame whose `seq` is not
//! the next expected one (replay, reorder, drop) or whose tag does not
//! verify (tampering, injection); either way it closes the connection.

use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hmac::Mac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use super::auth::{HmacSha256, MAC_BYTES, SessionKey, keyed_mac};
use crate::error::{Result, TidalError};
use crate::replication::transport::{BoxFuture, FrameReceiver, FrameSender, transport_err};

/// Bytes before the payload: `len` (u32) and `seq` (u64).
pub(super) const HEADER_BYTES: usize = 4 + 8;
/// Bytes after the payload: the full HMAC-SHA256 tag. Not truncated: 16
/// extra bytes a frame are cheap next to a log batch, and `verify_slice`
/// compares the full tag in constant time.
pub(super) const TAG_BYTES: usize = MAC_BYTES;
/// Read granularity while waiting for a header, so small frames arrive in
/// few syscalls without reserving memory a peer has not earned.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The two directions of a session, each with its own tag label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// Frames the leader sends to a follower.
    LeaderToFollower,
    /// Frames a follower sends to its leader.
    FollowerToLeader,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::LeaderToFollower => b"tidal-l2f-v1",
            Direction::FollowerToLeader => b"tidal-f2l-v1",
        }
    }
}

/// The tagger of one direction: HMAC keyed once with the session key and
/// fed the direction label, cloned per frame.
#[derive(Clone)]
pub(super) struct FrameMac {
    prefix: HmacSha256,
}

impl FrameMac {
    pub(super) fn new(key: &SessionKey, direction: Direction) -> Result<FrameMac> {
        Ok(FrameMac {
            prefix: keyed_mac(&key.0, &[direction.label()])?,
        })
    }

    fn over(&self, seq: u64, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.prefix.clone();
        mac.update(&seq.to_be_bytes());
        mac.update(payload);
        mac
    }

    pub(super) fn tag(&self, seq: u64, payload: &[u8]) -> [u8; TAG_BYTES] {
        self.over(seq, payload).finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` (via `Mac::verify_slice`).
    fn verify(&self, seq: u64, payload: &[u8], tag: &[u8]) -> bool {
        self.over(seq, payload).verify_slice(tag).is_ok()
    }
}

/// Shuts the socket down in both directions, whichever half noticed the
/// problem: a refused frame must end the whole connection, and the Tokio
/// halves cannot close each other. Holds a duplicate of the socket.
#[derive(Clone)]
pub(super) struct Closer(pub(super) Arc<std::net::TcpStream>);

impl Closer {
    fn close(&self) {
        // Already closed or reset is fine: the goal is that it is closed.
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sending half of a TCP session.
pub(super) struct TcpFrameSender {
    pub(super) peer: String,
    pub(super) writer: OwnedWriteHalf,
    pub(super) mac: FrameMac,
    pub(super) next_seq: u64,
    pub(super) max_frame_bytes: usize,
    pub(super) io_timeout: Duration,
    pub(super) closer: Closer,
    /// Why this sender is unusable (an error, or a send dropped mid-frame).
    pub(super) broken: Option<String>,
    /// True while a frame is being written; still true at the next call if
    /// that send's future was dropped with half a frame on the wire.
    pub(super) in_flight: bool,
}

impl TcpFrameSender {
    async fn send_frame(&mut self, payload: Bytes) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(transport_err(
                &self.peer,
                format!("sender unusable after an earlier failure: {why}"),
            ));
        }
        if self.in_flight {
            self.fail("a send was cancelled mid-frame");
            return Err(transport_err(
                &self.peer,
                "a previous send was cancelled mid-frame; the stream is torn",
            ));
        }
        let len = match u32::try_from(payload.len()) {
            Ok(len) if payload.len() <= self.max_frame_bytes => len,
            // Refused before anything is written, so the session stays usable.
            _ => {
                return Err(TidalError::FrameTooLarge {
                    peer: self.peer.clone(),
                    len: payload.len() as u64,
                    limit_bytes: self.max_frame_bytes,
                });
            }
        };
        let seq = self.next_seq;
        let tag = self.mac.tag(seq, &payload);
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&len.to_be_bytes());
        header[4..].copy_from_slice(&seq.to_be_bytes());
        // Header, payload and tag go out as one vectored write where the
        // socket allows, without copying the payload.
        let mut wire = Buf::chain(Buf::chain(&header[..], payload), &tag[..]);
        self.in_flight = true;
        let written =
            tokio::time::timeout(self.io_timeout, self.writer.write_all_buf(&mut wire)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.fail(&e.to_string());
                return Err(transport_err(&self.peer, format!("write frame: {e}")));
            }
            Err(_) => {
                self.fail("write timed out");
                return Err(TidalError::TransportTimeout {
                    peer: self.peer.clone(),
                    op: "write frame",
                    timeout_ms: millis(self.io_timeout),
                });
            }
        }
        self.in_flight = false;
        self.next_seq = match seq.checked_add(1) {
            Some(next) => next,
            None => {
                self.fail("sequence numbers exhausted");
                return Err(transport_err(&self.peer, "sequence numbers exhausted"));
            }
        };
        Ok(())
    }

    fn fail(&mut self, why: &str) {
        self.broken = Some(why.to_string());
        self.closer.close();
    }
}

impl FrameSender for TcpFrameSender {
    fn send(&mut self, frame: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.send_frame(frame))
    }
}

/// The receiving half of a TCP session. Partial frames live in `buf`, so
/// `recv` can be cancelled without losing bytes.
pub(super) struct TcpFrameReceiver {
    pub(super) peer: String,
    pub(super) reader: OwnedReadHalf,
    pub(super) buf: BytesMut,
    pub(super) mac: FrameMac,
    pub(super) next_seq: u64,
    pub(super) max_frame_bytes: usize,
    pub(super) io_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) closer: Closer,
    /// When the frame being read must be complete; set at its first byte.
    pub(super) frame_deadline: Option<Instant>,
    /// Why this receiver is unusable, once a frame was refused.
    pub(super) broken: Option<String>,
}

impl TcpFrameReceiver {
    async fn recv_frame(&mut self) -> Result<Option<Bytes>> {
        if let Some(why) = &self.broken {
            return Err(transport_err(
                &self.peer,
                format!("connection closed after an earlier error: {why}"),
            ));
        }
        let got = self.next_frame().await;
        if let Err(e) = &got {
            self.broken = Some(e.to_string());
            self.closer.close();
        }
        got
    }

    async fn next_frame(&mut self) -> Result<Option<Bytes>> {
        while self.buf.len() < HEADER_BYTES {
            if !self.read_more().await? {
                return Ok(None);
            }
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = len as usize;
        if len > self.max_frame_bytes {
            // Refused on the header alone: nothing was reserved for it.
            return Err(TidalError::FrameTooLarge {
                peer: self.peer.clone(),
                len: len as u64,
                limit_bytes: self.max_frame_bytes,
            });
        }
        // Checked because `usize` may be 32 bits wide; a length that
        // overflows it is over any cap.
        let Some(total) = len.checked_add(HEADER_BYTES + TAG_BYTES) else {
            return Err(TidalError::FrameTooLarge {
                peer: self.peer.clone(),
                len: len as u64,
                limit_bytes: self.max_frame_bytes,
            });
        };
        // Only now, with the length under the cap, is room made for it.
        self.buf.reserve(total.saturating_sub(self.buf.len()));
        while self.buf.len() < total {
            if !self.read_more().await? {
                return Err(transport_err(&self.peer, "closed mid-frame"));
            }
        }
        let frame = self.buf.split_to(total).freeze();
        self.frame_deadline = None;

        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&frame[4..HEADER_BYTES]);
        let seq = u64::from_be_bytes(seq_bytes);
        let expected_seq = self.next_seq;
        if seq != expected_seq {
            return Err(TidalError::FrameRejected {
                peer: self.peer.clone(),
                expected_seq,
                reason: format!("frame carries sequence {seq}: replayed, reordered or dropped"),
            });
        }
        let payload = frame.slice(HEADER_BYTES..HEADER_BYTES + len);
        if !self.mac.verify(seq, &payload, &frame[HEADER_BYTES + len..]) {
            return Err(TidalError::FrameRejected {
                peer: self.peer.clone(),
                expected_seq,
                reason: "MAC tag does not verify: tampered with or injected".to_string(),
            });
        }
        self.next_seq = expected_seq.wrapping_add(1);
        Ok(Some(payload))
    }

    /// Reads more bytes into `buf`. `Ok(false)` at EOF on a frame boundary
    /// would be a clean close; EOF inside a frame is reported by the caller.
    ///
    /// Waiting for the first byte of a frame is bounded by `idle_timeout`
    /// (heartbeats keep a healthy session busy); once a frame has started,
    /// the whole of it must arrive within `io_timeout`, so a peer cannot hold
    /// the connection by trickling bytes.
    async fn read_more(&mut self) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() == 0 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        let starting = self.buf.is_empty();
        if !starting && self.frame_deadline.is_none() {
            self.frame_deadline = Some(Instant::now() + self.io_timeout);
        }
        let read = match (self.frame_deadline, self.idle_timeout) {
            (Some(deadline), _) => {
                tokio::time::timeout_at(deadline, self.reader.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| self.timeout("read frame", self.io_timeout))?
            }
            (None, Some(idle)) => tokio::time::timeout(idle, self.reader.read_buf(&mut self.buf))
                .await
                .map_err(|_| self.timeout("wait for a frame", idle))?,
            (None, None) => self.reader.read_buf(&mut self.buf).await,
        };
        let n = read.map_err(|e| transport_err(&self.peer, format!("read frame: {e}")))?;
        if n == 0 {
            if starting {
                return Ok(false);
            }
            return Err(transport_err(&self.peer, "closed mid-frame"));
        }
        if self.frame_deadline.is_none() {
            self.frame_deadline = Some(Instant::now() + self.io_timeout);
        }
        Ok(true)
    }

    fn timeout(&self, op: &'static str, after: Duration) -> TidalError {
        TidalError::TransportTimeout {
            peer: self.peer.clone(),
            op,
            timeout_ms: millis(after),
        }
    }
}

impl FrameReceiver for TcpFrameReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        Box::pin(self.recv_frame())
    }
}
