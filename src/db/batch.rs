//! `WriteBatch`: several writes applied atomically, in one log batch or not
//! at all.

use std::sync::Arc;

use crate::types::{EntityId, EntityKind, SessionId, Timestamp, UserId};

/// A signal type name of a batch: its index in the batch's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Name(pub(crate) u32);

/// One write of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Signal {
        signal_type: Name,
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
        signal_type: Name,
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
    /// The signal type names the ops name by index ([`Name`]): a batch of
    /// 1,000 signals of a few types holds a few strings, and validation
    /// resolves each name once per batch, not once per signal (an `Arc`
    /// per op before: its count changed twice per signal, and the name was
    /// looked up per signal; see `Prepare::ops`).
    pub(crate) names: Vec<Arc<str>>,
}

/// The newest distinct names a batch looks through before it adds a name;
/// a batch of more distinct names than this may hold one twice.
const SHARED_NAMES: usize = 16;

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// A batch of `ops` naming signal types in `names` (a shard's part of
    /// a sharded batch).
    pub(crate) fn from_ops(
        ops: Vec<Op>,
        names: Vec<Arc<str>>,
        idempotency_key: Option<Vec<u8>>,
    ) -> WriteBatch {
        WriteBatch {
            ops,
            idempotency_key,
            names,
        }
    }

    /// The index of `name` in the batch's names, added if it is not among
    /// the newest [`SHARED_NAMES`].
    #[inline]
    fn name(&mut self, name: &str) -> Name {
        let from = self.names.len().saturating_sub(SHARED_NAMES);
        let found = self.names[from..]
            .iter()
            .rposition(|n| n.len() == name.len() && **n == *name);
        let i = match found {
            Some(i) => from + i,
            None => {
                self.names.push(Arc::from(name));
                self.names.len() - 1
            }
        };
        // At most one name per op, and ops are counted in `usize`: a batch
        // of 2^32 names is refused as too large long before.
        Name(i as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The name each signal op of `b` holds, read through the batch's names.
    fn names_of(b: &WriteBatch) -> Vec<&str> {
        b.ops
            .iter()
            .map(|op| match op {
                Op::Signal { signal_type, .. } | Op::SessionEvent { signal_type, .. } => {
                    &*b.names[signal_type.0 as usize]
                }
                _ => "-",
            })
            .collect()
    }

    #[test]
    fn a_few_types_are_held_once_each() {
        let at = Timestamp(1);
        let mut b = WriteBatch::new();
        let mut want = Vec::new();
        for i in 0..300u64 {
            let t = ["view", "like", "skip"][(i % 3) as usize];
            b = b.signal(t, EntityId(i), 1.0, at);
            want.push(t);
        }
        b = b.record_session_event(SessionId(1), EntityId(1), "like", 1.0, at);
        want.push("like");
        assert_eq!(b.names.len(), 3);
        assert_eq!(names_of(&b), want);
    }

    #[test]
    fn many_distinct_names_each_resolve_to_their_own() {
        // More names than the batch looks through: 30 new ones, then the
        // newest five again (found past the first names), then the oldest
        // again (held twice), and every op names what it was given.
        let at = Timestamp(1);
        let order = (0..30).chain((0..20).map(|i| 25 + i % 5)).chain(0..3);
        let mut b = WriteBatch::new();
        let mut want = Vec::new();
        for (e, n) in order.enumerate() {
            let t = format!("type-{n}");
            b = b.signal(&t, EntityId(e as u64), 1.0, at);
            want.push(t);
        }
        assert_eq!(b.names.len(), 33);
        assert_eq!(names_of(&b), want);
    }
}
