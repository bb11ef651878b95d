//! A flipped byte in a frame of every replication message type is refused.

use bytes::Bytes;

use super::*;

/// One flipped byte in a frame of each replication message type, in the
/// direction that type travels, is refused: the receiving side gets
/// `FrameRejected` and the connection closes. The byte flipped lies inside
/// the encoded message (the proxy flips the middle of the payload).
#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_every_message_type_is_refused() {
    use crate::replication::message::{Message, RefuseReason};
    use crate::types::{Epoch, NodeId, Position, SeqNo};
    let hlc = crate::Hlc(42 << 16);
    let at = Position::new(Epoch(3), SeqNo(99));
    let payload = Bytes::from(vec![7u8; 600]);
    let leader_sends = [
        Message::Welcome {
            leader_epoch: Epoch(3),
            leader_node: NodeId(1),
            divergence: Some(at),
            hlc,
        },
        Message::Batch {
            bytes: payload.clone(),
            hlc,
        },
        Message::Heartbeat {
            leader_epoch: Epoch(3),
            last: at,
            commit_ms: 1_700_000_000_000,
            hlc,
        },
        Message::SnapshotChunk {
            seqno: SeqNo(99),
            offset: 0,
            total: 600,
            bytes: payload.clone(),
            hlc,
        },
        Message::Refused {
            reason: RefuseReason::Fingerprint,
            hlc,
        },
    ];
    let follower_sends = [
        Message::Hello {
            protocol_version: 1,
            fingerprint: 0xfeed,
            node: NodeId(2),
            last: at,
            hlc,
        },
        Message::Ack {
            durable: at,
            applied: at,
            hlc,
        },
        Message::DivergedSuffix {
            epoch: Epoch(2),
            first: SeqNo(50),
            batches: payload,
            hlc,
        },
    ];
    let cases = leader_sends
        .iter()
        .map(|m| (m, true))
        .chain(follower_sends.iter().map(|m| (m, false)));
    for (msg, leader_to_follower) in cases {
        // The flipped frame is the second: the first must arrive intact.
        let frames = [msg.encode(), msg.encode()];
        let fault = Fault::Flip {
            frame: 1,
            at: FlipAt::Payload,
        };
        let err = refused_frames_through_proxy(fault, leader_to_follower, &frames).await;
        assert!(
            matches!(
                err,
                TidalError::FrameRejected {
                    expected_seq: 1,
                    ..
                }
            ),
            "{msg:?}: {err}"
        );
    }
}
