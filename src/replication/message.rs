//! Replication messages and their wire codec.
//!
//! A message on the wire is a wire-version byte, a tag byte, the sender's
//! HLC (u64) and the variant's fields, little-endian, through the same
//! bounds-checked codec as the log. Byte fields (batches, snapshot chunks,
//! diverged suffixes) are a u32 length and the bytes. [`Message::decode`]
//! never panics: a short, long or unknown input is a [`DecodeError`] with
//! its offset. Framing, size caps and MACs belong to the transport.

use bytes::Bytes;

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::types::{Epoch, NodeId, Position, SeqNo};

/// The version byte that starts every encoded message. A peer that sees
/// another value refuses the frame rather than guess at its layout.
pub const WIRE_VERSION: u8 = 1;

/// The replication protocol version a follower announces in its hello.
/// Leader and follower must agree exactly: the handshake refuses any other.
pub const PROTOCOL_VERSION: u16 = 1;

const TAG_HELLO: u8 = 1;
const TAG_WELCOME: u8 = 2;
const TAG_REFUSED: u8 = 3;
const TAG_BATCH: u8 = 4;
const TAG_ACK: u8 = 5;
const TAG_HEARTBEAT: u8 = 6;
const TAG_DIVERGED_SUFFIX: u8 = 7;
const TAG_SNAPSHOT_CHUNK: u8 = 8;

const REASON_PROTOCOL_VERSION: u8 = 1;
const REASON_FINGERPRINT: u8 = 2;
const REASON_STALE_LEADER: u8 = 3;

/// Why one side of a connection refused the other. Sent in
/// [`Message::Refused`] so the refused side can tell its operator why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The peers speak different protocol versions.
    ProtocolVersion,
    /// The follower's identity fingerprint differs from the leader's: its
    /// log would mean something else here.
    Fingerprint,
    /// The leader's epoch is below one the follower has seen (or logged):
    /// the leader has been superseded and must stop taking writes.
    StaleLeader {
        /// The highest epoch the refusing side knows of.
        follower_epoch: Epoch,
    },
}

/// One replication message. Every variant carries the sender's HLC, so
/// each side can observe the other's clock and report skew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Follower to leader, first on every connection and again after each
    /// cut: who it is and where its log ends.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`] on both sides.
        protocol_version: u16,
        /// The replicated identity (everything in `META` but the node id).
        fingerprint: u64,
        /// The follower's node id, so a leader counts acks per node.
        node: NodeId,
        /// The follower's last logged `(epoch, SeqNo)`; zero for an empty log.
        last: Position,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Leader to follower: the handshake's answer.
    Welcome {
        /// The leader's epoch; a follower refuses it if below one it has seen.
        leader_epoch: Epoch,
        /// The leader's node id.
        leader_node: NodeId,
        /// `None`: the histories agree up to the follower's last record and
        /// streaming starts right after it. `Some(p)`: the follower must cut
        /// its log to end at or before `p.seqno`, where `p.epoch` is the
        /// largest epoch of the leader's history at or below the follower's
        /// last epoch (the KIP-279 answer: the follower also cuts every
        /// record of an epoch above `p.epoch`), then say hello again.
        divergence: Option<Position>,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Either side: the connection is refused and why.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Leader to follower: one batch, the exact bytes of the leader's log
    /// (48-byte header and payload), never re-encoded.
    Batch {
        /// Header and payload as logged.
        bytes: Bytes,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Follower to leader: how far its log is durable and its state applied.
    Ack {
        /// Last record appended and synced.
        durable: Position,
        /// Last record applied to the follower's state.
        applied: Position,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Leader to follower when idle: keeps lag fresh and the link alive.
    Heartbeat {
        /// The leader's epoch.
        leader_epoch: Epoch,
        /// The leader's last durable position.
        last: Position,
        /// When the leader made `last` durable, in ms since the Unix epoch.
        commit_ms: u64,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Follower to leader: the records it cut after a divergence, for
    /// reconciliation. Each batch's header names its own epoch.
    DivergedSuffix {
        /// The epoch of the first cut record.
        epoch: Epoch,
        /// The SeqNo of the first cut record.
        first: SeqNo,
        /// The cut batches, concatenated as they were logged.
        batches: Bytes,
        /// Sender's clock.
        hlc: Hlc,
    },
    /// Leader to follower: part of a snapshot, when the follower is behind
    /// the leader's retained log.
    SnapshotChunk {
        /// The SeqNo the snapshot captures the state at.
        seqno: SeqNo,
        /// Where these bytes go in the snapshot file.
        offset: u64,
        /// The snapshot file's total length.
        total: u64,
        /// The chunk.
        bytes: Bytes,
        /// Sender's clock.
        hlc: Hlc,
    },
}

impl Message {
    /// The sender's clock reading carried by every message.
    pub fn hlc(&self) -> Hlc {
        match self {
            Message::Hello { hlc, .. }
            | Message::Welcome { hlc, .. }
            | Message::Refused { hlc, .. }
            | Message::Batch { hlc, .. }
            | Message::Ack { hlc, .. }
            | Message::Heartbeat { hlc, .. }
            | Message::DivergedSuffix { hlc, .. }
            | Message::SnapshotChunk { hlc, .. } => *hlc,
        }
    }

    /// Encodes the message (wire version, tag, HLC, fields).
    ///
    /// Byte fields are length-prefixed with a u32; the transport's frame cap
    /// keeps them far below 4 GiB.
    pub fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(32 + self.payload_len());
        v.put_u8(WIRE_VERSION);
        match self {
            Message::Hello {
                protocol_version,
                fingerprint,
                node,
                last,
                hlc,
            } => {
                head(&mut v, TAG_HELLO, *hlc);
                v.put_u16(*protocol_version);
                v.put_u64(*fingerprint);
                v.put_u64(node.0);
                put_pos(&mut v, *last);
            }
            Message::Welcome {
                leader_epoch,
                leader_node,
                divergence,
                hlc,
            } => {
                head(&mut v, TAG_WELCOME, *hlc);
                v.put_u64(leader_epoch.0);
                v.put_u64(leader_node.0);
                match divergence {
                    None => v.put_u8(0),
                    Some(p) => {
                        v.put_u8(1);
                        put_pos(&mut v, *p);
                    }
                }
            }
            Message::Refused { reason, hlc } => {
                head(&mut v, TAG_REFUSED, *hlc);
                match reason {
                    RefuseReason::ProtocolVersion => v.put_u8(REASON_PROTOCOL_VERSION),
                    RefuseReason::Fingerprint => v.put_u8(REASON_FINGERPRINT),
                    RefuseReason::StaleLeader { follower_epoch } => {
                        v.put_u8(REASON_STALE_LEADER);
                        v.put_u64(follower_epoch.0);
                    }
                }
            }
            Message::Batch { bytes, hlc } => {
                head(&mut v, TAG_BATCH, *hlc);
                v.put_bytes(bytes);
            }
            Message::Ack {
                durable,
                applied,
                hlc,
            } => {
                head(&mut v, TAG_ACK, *hlc);
                put_pos(&mut v, *durable);
                put_pos(&mut v, *applied);
            }
            Message::Heartbeat {
                leader_epoch,
                last,
                commit_ms,
                hlc,
            } => {
                head(&mut v, TAG_HEARTBEAT, *hlc);
                v.put_u64(leader_epoch.0);
                put_pos(&mut v, *last);
                v.put_u64(*commit_ms);
            }
            Message::DivergedSuffix {
                epoch,
                first,
                batches,
                hlc,
            } => {
                head(&mut v, TAG_DIVERGED_SUFFIX, *hlc);
                v.put_u64(epoch.0);
                v.put_u64(first.0);
                v.put_bytes(batches);
            }
            Message::SnapshotChunk {
                seqno,
                offset,
                total,
                bytes,
                hlc,
            } => {
                head(&mut v, TAG_SNAPSHOT_CHUNK, *hlc);
                v.put_u64(seqno.0);
                v.put_u64(*offset);
                v.put_u64(*total);
                v.put_bytes(bytes);
            }
        }
        Bytes::from(v)
    }

    /// Decodes one message. Refuses another wire version, an unknown tag or
    /// reason, a bad option flag, a short input and trailing bytes. Never
    /// panics, whatever the bytes.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(DecodeError {
                offset: 0,
                reason: format!("unknown replication wire version {version}"),
            });
        }
        let tag = r.u8()?;
        let hlc = Hlc(r.u64()?);
        let msg = match tag {
            TAG_HELLO => Message::Hello {
                protocol_version: r.u16()?,
                fingerprint: r.u64()?,
                node: NodeId(r.u64()?),
                last: pos(&mut r)?,
                hlc,
            },
            TAG_WELCOME => {
                let leader_epoch = Epoch(r.u64()?);
                let leader_node = NodeId(r.u64()?);
                let at = r.position();
                let divergence = match r.u8()? {
                    0 => None,
                    1 => Some(pos(&mut r)?),
                    b => {
                        return Err(DecodeError {
                            offset: at,
                            reason: format!("bad divergence flag {b}"),
                        });
                    }
                };
                Message::Welcome {
                    leader_epoch,
                    leader_node,
                    divergence,
                    hlc,
                }
            }
            TAG_REFUSED => {
                let at = r.position();
                let reason = match r.u8()? {
                    REASON_PROTOCOL_VERSION => RefuseReason::ProtocolVersion,
                    REASON_FINGERPRINT => RefuseReason::Fingerprint,
                    REASON_STALE_LEADER => RefuseReason::StaleLeader {
                        follower_epoch: Epoch(r.u64()?),
                    },
                    b => {
                        return Err(DecodeError {
                            offset: at,
                            reason: format!("unknown refuse reason {b}"),
                        });
                    }
                };
                Message::Refused { reason, hlc }
            }
            TAG_BATCH => Message::Batch {
                bytes: Bytes::copy_from_slice(r.bytes()?),
                hlc,
            },
            TAG_ACK => Message::Ack {
                durable: pos(&mut r)?,
                applied: pos(&mut r)?,
                hlc,
            },
            TAG_HEARTBEAT => Message::Heartbeat {
                leader_epoch: Epoch(r.u64()?),
                last: pos(&mut r)?,
                commit_ms: r.u64()?,
                hlc,
            },
            TAG_DIVERGED_SUFFIX => Message::DivergedSuffix {
                epoch: Epoch(r.u64()?),
                first: SeqNo(r.u64()?),
                batches: Bytes::copy_from_slice(r.bytes()?),
                hlc,
            },
            TAG_SNAPSHOT_CHUNK => Message::SnapshotChunk {
                seqno: SeqNo(r.u64()?),
                offset: r.u64()?,
                total: r.u64()?,
                bytes: Bytes::copy_from_slice(r.bytes()?),
                hlc,
            },
            other => {
                return Err(DecodeError {
                    offset: 1,
                    reason: format!("unknown replication message tag {other}"),
                });
            }
        };
        if !r.is_empty() {
            return Err(r.error(format!(
                "{} trailing bytes after a replication message",
                r.remaining()
            )));
        }
        Ok(msg)
    }

    /// Bytes of the variable-length field, to size the encode buffer once.
    fn payload_len(&self) -> usize {
        match self {
            Message::Batch { bytes, .. } | Message::SnapshotChunk { bytes, .. } => bytes.len(),
            Message::DivergedSuffix { batches, .. } => batches.len(),
            _ => 0,
        }
    }
}

fn head(v: &mut Vec<u8>, tag: u8, hlc: Hlc) {
    v.put_u8(tag);
    v.put_u64(hlc.0);
}

fn put_pos(v: &mut Vec<u8>, p: Position) {
    v.put_u64(p.epoch.0);
    v.put_u64(p.seqno.0);
}

fn pos(r: &mut Reader<'_>) -> Result<Position, DecodeError> {
    Ok(Position::new(Epoch(r.u64()?), SeqNo(r.u64()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn position() -> impl Strategy<Value = Position> {
        (any::<u64>(), any::<u64>()).prop_map(|(e, s)| Position::new(Epoch(e), SeqNo(s)))
    }

    fn blob() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
    }

    fn reason() -> impl Strategy<Value = RefuseReason> {
        prop_oneof![
            Just(RefuseReason::ProtocolVersion),
            Just(RefuseReason::Fingerprint),
            any::<u64>().prop_map(|e| RefuseReason::StaleLeader {
                follower_epoch: Epoch(e)
            }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        let hlc = any::<u64>().prop_map(Hlc);
        prop_oneof![
            (
                any::<u16>(),
                any::<u64>(),
                any::<u64>(),
                position(),
                hlc.clone()
            )
                .prop_map(|(v, f, n, last, hlc)| Message::Hello {
                    protocol_version: v,
                    fingerprint: f,
                    node: NodeId(n),
                    last,
                    hlc
                }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(position()),
                hlc.clone()
            )
                .prop_map(|(e, n, divergence, hlc)| Message::Welcome {
                    leader_epoch: Epoch(e),
                    leader_node: NodeId(n),
                    divergence,
                    hlc
                }),
            (reason(), hlc.clone()).prop_map(|(reason, hlc)| Message::Refused { reason, hlc }),
            (blob(), hlc.clone()).prop_map(|(bytes, hlc)| Message::Batch { bytes, hlc }),
            (position(), position(), hlc.clone()).prop_map(|(durable, applied, hlc)| {
                Message::Ack {
                    durable,
                    applied,
                    hlc,
                }
            }),
            (any::<u64>(), position(), any::<u64>(), hlc.clone()).prop_map(
                |(e, last, commit_ms, hlc)| Message::Heartbeat {
                    leader_epoch: Epoch(e),
                    last,
                    commit_ms,
                    hlc
                }
            ),
            (any::<u64>(), any::<u64>(), blob(), hlc.clone()).prop_map(
                |(e, first, batches, hlc)| Message::DivergedSuffix {
                    epoch: Epoch(e),
                    first: SeqNo(first),
                    batches,
                    hlc
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u64>(), blob(), hlc).prop_map(
                |(s, offset, total, bytes, hlc)| Message::SnapshotChunk {
                    seqno: SeqNo(s),
                    offset,
                    total,
                    bytes,
                    hlc
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in message()) {
            let bytes = m.encode();
            prop_assert_eq!(Message::decode(&bytes), Ok(m));
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(&b);
        }

        #[test]
        fn every_strict_prefix_and_any_extension_is_refused(
            m in message(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let bytes = m.encode();
            for n in 0..bytes.len() {
                prop_assert!(Message::decode(&bytes[..n]).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&extra);
            prop_assert!(Message::decode(&longer).is_err());
        }

        #[test]
        fn one_flipped_byte_never_panics(m in message(), at in any::<usize>(), bit in 0u8..8) {
            let mut bytes = m.encode().to_vec();
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn another_wire_version_is_refused() {
        let mut b = Message::Refused {
            reason: RefuseReason::Fingerprint,
            hlc: Hlc(1),
        }
        .encode()
        .to_vec();
        b[0] = WIRE_VERSION + 1;
        let e = Message::decode(&b).unwrap_err();
        assert_eq!(e.offset, 0);
    }
}
