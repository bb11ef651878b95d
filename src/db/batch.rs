//! `WriteBatch`: several writes applied atomically, in one log batch or not
//! at all.

use std::sync::Arc;

use crate::types::{EntityId, EntityKind, SessionId, Timestamp, UserId};

/// One write of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Signal {
        signal_type: Arc<str>,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
    },
    Upsert {
        kind: EntityKind,
        id: EntityId,
        creator: Option<EntityId>,
        fields: Vec<(String, String)>,
    },
    Embedding {
        kind: EntityKind,
        id: EntityId,
        vector: Vec<f32>,
    },
    Delete {
        kind: EntityKind,
        id: EntityId,
    },
    OpenSession {
        session: SessionId,
        user: UserId,
        at: Timestamp,
    },
    SessionEvent {
        session: SessionId,
        entity: EntityId,
        signal_type: Arc<str>,
        weight: f64,
        at: Timestamp,
    },
    CloseSession {
        session: SessionId,
        at: Timestamp,
    },
    DeleteUser {
        user: UserId,
    },
}

/// An atomic batch of writes: every write is validated against the state
/// plus the writes before it in the batch, and either all of them reach the
/// log in one batch or none does. [`TidalDb::write`](crate::TidalDb::write)
/// returns the `Position` of its last record.
///
/// ```
/// use tidal::{EntityId, SessionId, Timestamp, UserId, WriteBatch};
/// let at = Timestamp(1_000);
/// let batch = WriteBatch::new()
///     .write_item(EntityId(1), None, &[("lang", "en")])
///     .signal("like", EntityId(1), 1.0, at)
///     .open_session(SessionId(9), UserId(3), at)
///     .record_session_event(SessionId(9), EntityId(1), "like", 1.0, at);
/// assert_eq!(batch.len(), 4);
/// ```
///
/// A batch may carry an idempotency key
/// ([`WriteBatch::idempotency_key`]): a retry of the same key and content
/// returns the original `Position` without applying again. A single write
/// made safe to retry is a one-write batch:
///
/// ```
/// use tidal::{EntityId, Timestamp, WriteBatch};
/// let once = WriteBatch::new()
///     .signal("like", EntityId(1), 1.0, Timestamp(1_000))
///     .idempotency_key("request-7f3a");
/// assert_eq!(once.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    pub(crate) idempotency_key: Option<Vec<u8>>,
    /// Signal type names this batch used, shared by its ops: a batch of
    /// 1,000 signals of a few types allocated 1,000 strings before.
    names: Vec<Arc<str>>,
}

/// Distinct signal type names a batch shares; more are allocated per op.
const SHARED_NAMES: usize = 16;

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// A batch of `ops` (a shard's part of a sharded batch).
    pub(crate) fn from_ops(ops: Vec<Op>, idempotency_key: Option<Vec<u8>>) -> WriteBatch {
        WriteBatch {
            ops,
            idempotency_key,
            names: Vec::new(),
        }
    }

    /// `name` as an `Arc<str>` shared with the batch's earlier ops.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.iter().find(|n| &***n == name) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(name);
        if self.names.len() < SHARED_NAMES {
            self.names.push(Arc::clone(&n));
        }
        n
    }

    /// Sets the batch's idempotency key (1 to
    /// `Limits::max_idempotency_key_bytes` bytes, 128 by default; checked
    /// when written, `TidalError::Empty` / `TooLong` naming
    /// `idempotency_key`). Writing a keyed batch:
    ///
    /// - the first time, applies it and remembers the key, the digest of
    ///   its writes and its `Position` for `Config::idempotency_ttl` of log
    ///   time (a refused batch stores nothing);
    /// - again with the same writes (a retry, after a timeout, a restart or
    ///   a failover to a follower that had replicated it), applies nothing
    ///   and returns the original `Position`, once the original is as
    ///   durable (and, under `Durability::Replicated`, as replicated) as
    ///   this node's durability asks;
    /// - with other writes, is `TidalError::IdempotencyConflict`;
    /// - when `Config::idempotency_capacity` keys are held, is
    ///   `TidalError::IdempotencyFull` until keys expire.
    ///
    /// Racing writers with one key apply it once. Content is compared
    /// after the stateless checks (signal types as ids, embeddings
    /// normalized), in order: the same writes in another order are other
    /// content. On a `ShardedDb` each shard's part carries the key, so a
    /// retry completes a batch that was written on some shards only.
    pub fn idempotency_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.idempotency_key = Some(key.as_ref().to_vec());
        self
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no write (writing it is refused).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds a signal.
    // Inlined into the caller's crate: a batch is built by moving it
    // through this call once per signal, and as a call those moves of the
    // whole `WriteBatch` were half the cost of building 1,000 signals (42
    // against 20-21 us a batch, built and dropped, in a loop like
    // `examples/compare`'s W1).
    #[inline]
    pub fn signal(
        mut self,
        signal_type: &str,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
    ) -> Self {
        let signal_type = self.name(signal_type);
        self.ops.push(Op::Signal {
            signal_type,
            entity,
            weight,
            at,
        });
        self
    }

    /// Upserts an item's metadata (and its creator, if given).
    pub fn write_item(
        mut self,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(&str, &str)],
    ) -> Self {
        self.ops.push(Op::Upsert {
            kind: EntityKind::Item,
            id,
            creator,
            fields: owned_fields(fields),
        });
        self
    }

    /// Upserts a creator's metadata.
    pub fn write_creator(mut self, id: EntityId, fields: &[(&str, &str)]) -> Self {
        self.ops.push(Op::Upsert {
            kind: EntityKind::Creator,
            id,
            creator: None,
            fields: owned_fields(fields),
        });
        self
    }

    /// Sets an item's embedding.
    pub fn write_item_embedding(mut self, id: EntityId, vector: &[f32]) -> Self {
        self.ops.push(Op::Embedding {
            kind: EntityKind::Item,
            id,
            vector: vector.to_vec(),
        });
        self
    }

    /// Sets a creator's embedding.
    pub fn write_creator_embedding(mut self, id: EntityId, vector: &[f32]) -> Self {
        self.ops.push(Op::Embedding {
            kind: EntityKind::Creator,
            id,
            vector: vector.to_vec(),
        });
        self
    }

    /// Deletes an item.
    pub fn delete_item(mut self, id: EntityId) -> Self {
        self.ops.push(Op::Delete {
            kind: EntityKind::Item,
            id,
        });
        self
    }

    /// Deletes a creator.
    pub fn delete_creator(mut self, id: EntityId) -> Self {
        self.ops.push(Op::Delete {
            kind: EntityKind::Creator,
            id,
        });
        self
    }

    /// Opens a session.
    pub fn open_session(mut self, session: SessionId, user: UserId, at: Timestamp) -> Self {
        self.ops.push(Op::OpenSession { session, user, at });
        self
    }

    /// Records a session event.
    // Inlined as `signal` is, for the same reason.
    #[inline]
    pub fn record_session_event(
        mut self,
        session: SessionId,
        entity: EntityId,
        signal_type: &str,
        weight: f64,
        at: Timestamp,
    ) -> Self {
        let signal_type = self.name(signal_type);
        self.ops.push(Op::SessionEvent {
            session,
            entity,
            signal_type,
            weight,
            at,
        });
        self
    }

    /// Closes a session.
    pub fn close_session(mut self, session: SessionId, at: Timestamp) -> Self {
        self.ops.push(Op::CloseSession { session, at });
        self
    }

    /// Deletes a user's sessions and hard negatives.
    pub fn delete_user(mut self, user: UserId) -> Self {
        self.ops.push(Op::DeleteUser { user });
        self
    }
}

pub(crate) fn owned_fields(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
