//! Writes: only for writable roles.
//!
//! Each write method carries its own `where R: Writable` bound (not a bound
//! on the impl block): only then does rustc report a write on a follower as
//! E0277 with `Writable`'s message naming the mistake. The bodies live on
//! `Core`, shared with `AnyDb`'s run-time-checked writes.

use std::sync::Arc;

use crate::db::TidalDb;
use crate::db::batch::{WriteBatch, owned_fields};
use crate::db::core::Core;
use crate::db::idem::content_digest;
use crate::db::sequencer::Request;
use crate::db::validate::Now;
use crate::error::Result;
use crate::role::{Role, Writable};
use crate::types::{EntityId, EntityKind, Position, SessionId, Timestamp, UserId};

impl Core {
    pub(crate) fn signal(
        self: &Arc<Self>,
        signal_type: &str,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position> {
        let r = self
            .prepare
            .signal(signal_type, entity, weight, at, &Now::default())?;
        self.submit(vec![r])
    }

    pub(crate) fn upsert(
        self: &Arc<Self>,
        kind: EntityKind,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(&str, &str)],
    ) -> Result<Position> {
        let r = self
            .prepare
            .upsert(kind, id, creator, owned_fields(fields))?;
        self.submit(vec![r])
    }

    pub(crate) fn embedding(
        self: &Arc<Self>,
        kind: EntityKind,
        id: EntityId,
        v: &[f32],
    ) -> Result<Position> {
        let r = self.prepare.embedding(kind, id, v)?;
        self.submit(vec![r])
    }

    pub(crate) fn delete(self: &Arc<Self>, kind: EntityKind, id: EntityId) -> Result<Position> {
        let r = self.prepare.delete(kind, id)?;
        self.submit(vec![r])
    }

    pub(crate) fn open_session(
        self: &Arc<Self>,
        session: SessionId,
        user: UserId,
        at: Timestamp,
    ) -> Result<Position> {
        let r = self
            .prepare
            .open_session(session, user, at, &Now::default())?;
        self.submit(vec![r])
    }

    pub(crate) fn record_session_event(
        self: &Arc<Self>,
        session: SessionId,
        entity: EntityId,
        signal_type: &str,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position> {
        let r = self.prepare.session_event(
            session,
            entity,
            signal_type,
            weight,
            at,
            &Now::default(),
        )?;
        self.submit(vec![r])
    }

    pub(crate) fn close_session(
        self: &Arc<Self>,
        session: SessionId,
        at: Timestamp,
    ) -> Result<Position> {
        let r = self.prepare.close_session(session, at, &Now::default())?;
        self.submit(vec![r])
    }

    pub(crate) fn delete_user(self: &Arc<Self>, user: UserId) -> Result<Position> {
        let r = self.prepare.delete_user(user)?;
        self.submit(vec![r])
    }

    pub(crate) fn write(self: &Arc<Self>, batch: WriteBatch) -> Result<Position> {
        let records = self.prepare.ops(batch.ops, &batch.names)?;
        let idem = match batch.idempotency_key {
            Some(key) => {
                self.prepare.idempotency_key(&key)?;
                let digest = content_digest(&records);
                Some((key, digest))
            }
            None => None,
        };
        self.submit_request(Request {
            records,
            idem,
            merged_key: false,
        })
    }
}

/// Writes. Every write returns the `Position` of its last record (the
/// read-your-writes token), is validated before it reaches the log, and
/// leaves the database unchanged when refused.
impl<R: Role> TidalDb<R> {
    /// Records a signal: `weight` (finite; negative for skips) of
    /// `signal_type` on `entity` at `at`. The entity need not have metadata.
    pub fn signal(
        &self,
        signal_type: &str,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position>
    where
        R: Writable,
    {
        self.core.signal(signal_type, entity, weight, at)
    }

    /// Upserts an item: the given metadata fields (each last-writer-wins)
    /// and, if given, its creator.
    pub fn write_item(
        &self,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(&str, &str)],
    ) -> Result<Position>
    where
        R: Writable,
    {
        self.core.upsert(EntityKind::Item, id, creator, fields)
    }

    /// Upserts a creator's metadata fields.
    pub fn write_creator(&self, id: EntityId, fields: &[(&str, &str)]) -> Result<Position>
    where
        R: Writable,
    {
        self.core.upsert(EntityKind::Creator, id, None, fields)
    }

    /// Sets an item's embedding (stored normalized; search is cosine).
    pub fn write_item_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position>
    where
        R: Writable,
    {
        self.core.embedding(EntityKind::Item, id, vector)
    }

    /// Sets a creator's embedding.
    pub fn write_creator_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position>
    where
        R: Writable,
    {
        self.core.embedding(EntityKind::Creator, id, vector)
    }

    /// Deletes an item from every read (a stamped tombstone; a newer write
    /// brings it back).
    pub fn delete_item(&self, id: EntityId) -> Result<Position>
    where
        R: Writable,
    {
        self.core.delete(EntityKind::Item, id)
    }

    /// Deletes a creator from every read.
    pub fn delete_creator(&self, id: EntityId) -> Result<Position>
    where
        R: Writable,
    {
        self.core.delete(EntityKind::Creator, id)
    }

    /// Opens a session of `user` (who must live on this shard).
    pub fn open_session(&self, session: SessionId, user: UserId, at: Timestamp) -> Result<Position>
    where
        R: Writable,
    {
        self.core.open_session(session, user, at)
    }

    /// Records the next event of an open session; it is also applied as a
    /// signal when `entity` lives on this shard, and a negative weight makes
    /// `entity` one of the user's hard negatives.
    pub fn record_session_event(
        &self,
        session: SessionId,
        entity: EntityId,
        signal_type: &str,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position>
    where
        R: Writable,
    {
        self.core
            .record_session_event(session, entity, signal_type, weight, at)
    }

    /// Closes an open session.
    pub fn close_session(&self, session: SessionId, at: Timestamp) -> Result<Position>
    where
        R: Writable,
    {
        self.core.close_session(session, at)
    }

    /// Deletes a user's sessions and hard negatives.
    pub fn delete_user(&self, user: UserId) -> Result<Position>
    where
        R: Writable,
    {
        self.core.delete_user(user)
    }

    /// Writes an atomic batch: all of it in one log batch, or none of it.
    /// With an idempotency key, a retry returns the original `Position`
    /// (see [`WriteBatch::idempotency_key`]).
    pub fn write(&self, batch: WriteBatch) -> Result<Position>
    where
        R: Writable,
    {
        self.core.write(batch)
    }
}
