//! The records of the log. One record takes one SeqNo.
//!
//! Records are produced by the sequencer only after validation, so applying
//! one never fails (at replay too). Signal types travel as their id (the
//! registration order in `Config`, pinned by `META`).

use crate::crdt::ContributionKey;
use crate::crdt::hlc::Hlc;
use crate::state::entities::Stamp;
use crate::types::{EntityId, EntityKind, Epoch, NodeId, Position, SessionId, Timestamp, UserId};

/// One logged operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Opens an epoch: the first record of every epoch. The node's role and
    /// epoch are derived from these when it opens.
    EpochStart {
        /// The epoch that starts here.
        epoch: Epoch,
        /// The node that leads it (part of every later record's stamp).
        leader_node: NodeId,
        /// The leader's HLC when the epoch started.
        hlc: Hlc,
        /// Whether the epoch is led by a replicating leader (`true`) or a
        /// Single node (`false`).
        replicated: bool,
    },
    /// A signal applied to an entity's score and count.
    Signal {
        /// Signal type id.
        signal_type: u16,
        /// The entity.
        entity: EntityId,
        /// Finite weight; negative for skips.
        weight: f64,
        /// Event time.
        at: Timestamp,
    },
    /// Upserts an entity's metadata fields (each field last-writer-wins by
    /// the record's stamp). Also fixes the id's kind.
    Upsert {
        /// Item or creator.
        kind: EntityKind,
        /// The entity.
        id: EntityId,
        /// For items: the creator, if given (replaces the previous one).
        creator: Option<EntityId>,
        /// Fields to set.
        fields: Vec<(String, String)>,
    },
    /// Sets an entity's embedding (already normalized to unit length).
    Embedding {
        /// Item or creator.
        kind: EntityKind,
        /// The entity.
        id: EntityId,
        /// Unit-length vector of the database's dimension.
        vector: Vec<f32>,
    },
    /// A tombstone: removes the entity from every read.
    Delete {
        /// Item or creator.
        kind: EntityKind,
        /// The entity.
        id: EntityId,
    },
    /// Opens a session.
    OpenSession {
        /// The session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// When it opened.
        at: Timestamp,
    },
    /// One event of a session, numbered from 1 within the session.
    SessionEvent {
        /// The session.
        session: SessionId,
        /// The event's number in its session.
        seq: u32,
        /// The entity the event is about.
        entity: EntityId,
        /// Signal type id.
        signal_type: u16,
        /// Finite weight; negative makes the entity a hard negative of the user.
        weight: f64,
        /// Event time.
        at: Timestamp,
        /// Whether the entity is on this shard, so the event also applies
        /// as a signal here.
        apply_signal: bool,
    },
    /// Closes a session.
    CloseSession {
        /// The session.
        session: SessionId,
        /// When it closed.
        at: Timestamp,
    },
    /// Removes a user's sessions and hard negatives.
    DeleteUser {
        /// The user.
        user: UserId,
    },
    /// Remembers a request's idempotency key and the digest of its
    /// operations: the last record of that request, so its SeqNo is the
    /// request's `Position`. Applying inserts the key unless it is already
    /// known (the first one stands); keys expire by log time.
    IdempotencyKey {
        /// The caller's key (1 to `Limits::max_idempotency_key_bytes` bytes).
        key: Vec<u8>,
        /// Truncated SHA-256 of the request's encoded operations.
        digest: [u8; 16],
        /// How many records right before this one are the request's, so
        /// reconciliation can tell a request apart in a diverged suffix.
        span: u32,
        /// Logged by a reconciliation for a request of a diverged suffix
        /// (whose records were merged), not by a client's request.
        merged: bool,
    },
    /// A metadata upsert, embedding or delete of a diverged suffix, logged
    /// by reconciliation with the stamp it had in its own lineage: applying
    /// it is last-writer-wins by that stamp against what this lineage
    /// wrote, so the same record merged twice changes nothing.
    Reconciled {
        /// The record's stamp in the lineage that first logged it.
        stamp: Stamp,
        /// An `Upsert`, `Embedding` or `Delete` (the codec refuses others).
        record: Box<Record>,
    },
    /// A session event of a diverged suffix, appended by reconciliation
    /// after the session's last event (numbered when applied) and marked
    /// merged; `origin` makes applying it twice a no-op.
    MergedSessionEvent {
        /// The session.
        session: SessionId,
        /// The entity the event is about.
        entity: EntityId,
        /// Signal type id.
        signal_type: u16,
        /// Finite weight; negative makes the entity a hard negative of the user.
        weight: f64,
        /// Event time.
        at: Timestamp,
        /// Where the event was logged in its own lineage.
        origin: Position,
    },
    /// A reconciliation's contribution of a diverged suffix to one entity's
    /// score and count of one type (a `CrdtSignalState` contribution):
    /// applying it raises that key's stored contribution to the pointwise
    /// maximum and adds the increase to the entity's score and count, so
    /// the same contribution applied twice counts once.
    Merge {
        /// Signal type id.
        signal_type: u16,
        /// The entity.
        entity: EntityId,
        /// The suffix's origin `(epoch, leader node)`.
        key: ContributionKey,
        /// The landmark the masses are relative to (on the type's grid).
        landmark_ms: u64,
        /// Forward-decayed positive mass, finite and `>= 0`.
        positive_mass: f64,
        /// Forward-decayed magnitude of the negative weights, finite and `>= 0`.
        negative_mass: f64,
        /// Positive signals.
        positive_count: u64,
        /// Negative signals.
        negative_count: u64,
    },
}
