//! What the leader's [`Shipper`](super::shipper::Shipper) tells the I/O
//! layer: the effects to carry out, and where each follower stands.

use bytes::Bytes;

use crate::replication::message::Message;
use crate::replication::shipper::FollowerId;
use crate::types::{Epoch, NodeId, Position, SeqNo};

/// An effect the I/O layer carries out, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipperOutput {
    /// Send this message on that connection.
    Send(FollowerId, Message),
    /// Stream the stored batches holding SeqNos `from..=to` to the follower
    /// (each as a [`Message::Batch`] stamped by [`Shipper::stamp`]), then
    /// call [`Shipper::batches_sent`]. `to` is never past the leader's
    /// durable end, so a record the leader could still lose never ships.
    ReadFrom {
        /// The connection.
        f: FollowerId,
        /// First SeqNo to send (a batch boundary).
        from: SeqNo,
        /// Last SeqNo to send (a batch boundary, durable).
        to: SeqNo,
    },
    /// The follower needs records older than the retained log: send it the
    /// newest snapshot as [`Message::SnapshotChunk`]s. The follower says
    /// hello again once it has installed it.
    SendSnapshot {
        /// The connection.
        f: FollowerId,
    },
    /// A follower cut these records after a divergence: keep them durably
    /// for reconciliation.
    StoreDiverged {
        /// The connection.
        f: FollowerId,
        /// The node that sent it, once it said hello.
        origin: Option<NodeId>,
        /// Epoch of the first cut record.
        epoch: Epoch,
        /// SeqNo of the first cut record.
        first: SeqNo,
        /// The cut batches as logged.
        batches: Bytes,
    },
    /// A higher epoch exists: this leader has been superseded and must
    /// refuse writes (`TidalError::Fenced`).
    Fenced {
        /// The highest epoch learned of.
        seen: Epoch,
    },
    /// The HWM moved up to this SeqNo: replicated writes at or below it may
    /// return.
    HwmAdvanced(SeqNo),
    /// Close this connection (silent past the timeout, or misbehaving).
    Disconnect(FollowerId),
}

/// Where one follower stands, for `status()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The connection.
    pub id: FollowerId,
    /// The follower's node, once it said hello.
    pub node: Option<NodeId>,
    /// Last position handed to the transport for it.
    pub sent: Position,
    /// Last position it acknowledged durable (and that matched our history).
    pub durable: Position,
    /// Last position it acknowledged applied (and that matched our history).
    pub applied: Position,
    /// Records between the leader's durable end and its applied position.
    pub lag_records: u64,
    /// Milliseconds since the leader committed the first record it has not
    /// applied; 0 when caught up.
    pub lag_ms: u64,
}
