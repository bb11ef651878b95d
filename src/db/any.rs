//! `AnyDb`: the role picked at run time, for config-driven opening.
//!
//! Like stm32f4xx-hal's `DynamicPin` or sqlx's `AnyPool`: every read and
//! write of `TidalDb`, same names; a write on a follower returns
//! `TidalError::ReadOnly` and changes nothing. One place, [`AnyDb::writer`],
//! decides whether a write may proceed.

use std::sync::Arc;

use crate::config::{Config, NodeRole};
use crate::db::core::Core;
use crate::db::{SessionEvent, Status, TidalDb, WriteBatch};
use crate::error::{Result, TidalError};
use crate::query::{Retrieve, Scored, Search};
use crate::replication::transport::Transport;
use crate::role::{Follower, Leader, Single};
use crate::state::entities::{Creator, Item};
use crate::state::sessions::SessionInfo;
use crate::types::{EntityId, EntityKind, Position, SessionId, Timestamp, UserId};

/// A node whose role is known only at run time.
///
/// ```
/// use std::time::Duration;
/// use tidal::{AnyDb, Config, EntityId, NodeRole, TidalDb, Timestamp};
/// let dir = tempfile::tempdir().unwrap();
/// let config = Config::builder(dir.path())
///     .signal_type("like", Duration::from_secs(60))
///     .build()
///     .unwrap();
/// let db: AnyDb = TidalDb::open(config).unwrap().into();
/// assert_eq!(db.role(), NodeRole::Single);
/// db.signal("like", EntityId(1), 1.0, Timestamp::now()).unwrap();
/// let single = db.into_single().unwrap();
/// single.close().unwrap();
/// ```
#[derive(Debug)]
pub enum AnyDb {
    /// A single node.
    Single(TidalDb<Single>),
    /// A shard's leader.
    Leader(TidalDb<Leader>),
    /// A read-only follower.
    Follower(TidalDb<Follower>),
}

impl From<TidalDb<Single>> for AnyDb {
    fn from(db: TidalDb<Single>) -> Self {
        AnyDb::Single(db)
    }
}
impl From<TidalDb<Leader>> for AnyDb {
    fn from(db: TidalDb<Leader>) -> Self {
        AnyDb::Leader(db)
    }
}
impl From<TidalDb<Follower>> for AnyDb {
    fn from(db: TidalDb<Follower>) -> Self {
        AnyDb::Follower(db)
    }
}

impl AnyDb {
    /// Opens a node in the role `config.cluster.role` names: `Single`
    /// through [`TidalDb::open`] (no transport, no runtime needed),
    /// `Leader` and `Follower` through [`TidalDb::open_leader`] and
    /// [`TidalDb::open_follower`] on `transport`, which they need (else
    /// `TidalError::InvalidConfig` naming `transport`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidal::{AnyDb, Config, NodeRole};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Config::builder(dir.path())
    ///     .signal_type("like", Duration::from_secs(60))
    ///     .build()
    ///     .unwrap();
    /// let db = AnyDb::open(config, None).unwrap();
    /// assert_eq!(db.role(), NodeRole::Single);
    /// db.close().unwrap();
    /// ```
    pub fn open(config: Config, transport: Option<Arc<dyn Transport>>) -> Result<AnyDb> {
        let role = config.cluster.role;
        let needs = |transport: Option<Arc<dyn Transport>>| {
            transport.ok_or_else(|| TidalError::InvalidConfig {
                field: "transport",
                reason: format!(
                    "config.cluster.role is {role:?}, which replicates: pass Some(transport)"
                ),
            })
        };
        match role {
            NodeRole::Single => Ok(AnyDb::Single(TidalDb::open(config)?)),
            NodeRole::Leader => Ok(AnyDb::Leader(TidalDb::open_leader(
                config,
                needs(transport)?,
            )?)),
            NodeRole::Follower => Ok(AnyDb::Follower(TidalDb::open_follower(
                config,
                needs(transport)?,
            )?)),
        }
    }

    /// The role of this node.
    pub fn role(&self) -> NodeRole {
        match self {
            AnyDb::Single(_) => NodeRole::Single,
            AnyDb::Leader(_) => NodeRole::Leader,
            AnyDb::Follower(_) => NodeRole::Follower,
        }
    }

    fn core(&self) -> &Arc<Core> {
        match self {
            AnyDb::Single(db) => &db.core,
            AnyDb::Leader(db) => &db.core,
            AnyDb::Follower(db) => &db.core,
        }
    }

    /// The one dispatch point for writes: the core of a writable role, or
    /// `ReadOnly` for a follower.
    fn writer(&self) -> Result<&Arc<Core>> {
        match self {
            AnyDb::Single(db) => Ok(&db.core),
            AnyDb::Leader(db) => Ok(&db.core),
            AnyDb::Follower(_) => Err(TidalError::ReadOnly),
        }
    }

    /// The typed single node, if this is one.
    pub fn as_single(&self) -> Option<&TidalDb<Single>> {
        match self {
            AnyDb::Single(db) => Some(db),
            _ => None,
        }
    }
    /// The typed leader, if this is one.
    pub fn as_leader(&self) -> Option<&TidalDb<Leader>> {
        match self {
            AnyDb::Leader(db) => Some(db),
            _ => None,
        }
    }
    /// The typed follower, if this is one.
    pub fn as_follower(&self) -> Option<&TidalDb<Follower>> {
        match self {
            AnyDb::Follower(db) => Some(db),
            _ => None,
        }
    }
    /// The typed single node, or `self` back.
    pub fn into_single(self) -> std::result::Result<TidalDb<Single>, AnyDb> {
        match self {
            AnyDb::Single(db) => Ok(db),
            other => Err(other),
        }
    }
    /// The typed leader, or `self` back.
    pub fn into_leader(self) -> std::result::Result<TidalDb<Leader>, AnyDb> {
        match self {
            AnyDb::Leader(db) => Ok(db),
            other => Err(other),
        }
    }
    /// The typed follower, or `self` back.
    pub fn into_follower(self) -> std::result::Result<TidalDb<Follower>, AnyDb> {
        match self {
            AnyDb::Follower(db) => Ok(db),
            other => Err(other),
        }
    }

    // ----- writes: `ReadOnly` on a follower -----

    /// See [`TidalDb::signal`].
    pub fn signal(
        &self,
        signal_type: &str,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position> {
        self.writer()?.signal(signal_type, entity, weight, at)
    }
    /// See [`TidalDb::write_item`].
    pub fn write_item(
        &self,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(&str, &str)],
    ) -> Result<Position> {
        self.writer()?.upsert(EntityKind::Item, id, creator, fields)
    }
    /// See [`TidalDb::write_creator`].
    pub fn write_creator(&self, id: EntityId, fields: &[(&str, &str)]) -> Result<Position> {
        self.writer()?.upsert(EntityKind::Creator, id, None, fields)
    }
    /// See [`TidalDb::write_item_embedding`].
    pub fn write_item_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position> {
        self.writer()?.embedding(EntityKind::Item, id, vector)
    }
    /// See [`TidalDb::write_creator_embedding`].
    pub fn write_creator_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position> {
        self.writer()?.embedding(EntityKind::Creator, id, vector)
    }
    /// See [`TidalDb::delete_item`].
    pub fn delete_item(&self, id: EntityId) -> Result<Position> {
        self.writer()?.delete(EntityKind::Item, id)
    }
    /// See [`TidalDb::delete_creator`].
    pub fn delete_creator(&self, id: EntityId) -> Result<Position> {
        self.writer()?.delete(EntityKind::Creator, id)
    }
    /// See [`TidalDb::open_session`].
    pub fn open_session(
        &self,
        session: SessionId,
        user: UserId,
        at: Timestamp,
    ) -> Result<Position> {
        self.writer()?.open_session(session, user, at)
    }
    /// See [`TidalDb::record_session_event`].
    pub fn record_session_event(
        &self,
        session: SessionId,
        entity: EntityId,
        signal_type: &str,
        weight: f64,
        at: Timestamp,
    ) -> Result<Position> {
        self.writer()?
            .record_session_event(session, entity, signal_type, weight, at)
    }
    /// See [`TidalDb::close_session`].
    pub fn close_session(&self, session: SessionId, at: Timestamp) -> Result<Position> {
        self.writer()?.close_session(session, at)
    }
    /// See [`TidalDb::delete_user`].
    pub fn delete_user(&self, user: UserId) -> Result<Position> {
        self.writer()?.delete_user(user)
    }
    /// See [`TidalDb::write`].
    pub fn write(&self, batch: WriteBatch) -> Result<Position> {
        self.writer()?.write(batch)
    }

    // ----- reads: every role -----

    /// See [`TidalDb::read_decay_score`].
    pub fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        self.core().read_decay_score(entity, signal_type, at)
    }
    /// See [`TidalDb::read_count`].
    pub fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        self.core().read_count(entity, signal_type)
    }
    /// See [`TidalDb::retrieve`].
    pub fn retrieve(&self, query: &Retrieve) -> Result<Vec<Scored>> {
        self.core().retrieve(query)
    }
    /// See [`TidalDb::search`].
    pub fn search(&self, query: &Search) -> Result<Vec<Scored>> {
        self.core().search(query)
    }
    /// See [`TidalDb::get_item`].
    pub fn get_item(&self, id: EntityId) -> Option<Item> {
        self.core().get_item(id)
    }
    /// See [`TidalDb::get_creator`].
    pub fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.core().get_creator(id)
    }
    /// See [`TidalDb::session`].
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.core().session(session)
    }
    /// See [`TidalDb::session_events`].
    pub fn session_events(&self, session: SessionId, from: u32, limit: usize) -> Vec<SessionEvent> {
        self.core().session_events(session, from, limit)
    }
    /// See [`TidalDb::read_view`].
    pub fn read_view<T>(&self, f: impl FnOnce(&crate::db::ReadView<'_>) -> T) -> T {
        self.core().read_view(f)
    }
    /// See [`TidalDb::last_position`].
    pub fn last_position(&self) -> Position {
        self.core().last_position()
    }
    /// See [`TidalDb::status`].
    pub fn status(&self) -> Status {
        self.core().status(self.role())
    }
    /// See [`TidalDb::flush`].
    pub fn flush(&self) -> Result<()> {
        self.core().flush()
    }
    /// See [`TidalDb::checkpoint`].
    pub fn checkpoint(&self) -> Result<crate::types::SeqNo> {
        self.core().checkpoint()
    }
    /// See [`TidalDb::reconcile`]; `ReadOnly` on a follower.
    pub fn reconcile(&self) -> Result<crate::db::ReconcileReport> {
        self.writer()?.reconcile()
    }
    /// See [`TidalDb::close`].
    pub fn close(self) -> Result<()> {
        self.core().shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;
    use std::time::Duration;

    /// A follower over an opened core. Followers get their real open (with
    /// its receiver) from the replication work; this one only proves the
    /// run-time write gate.
    fn follower() -> AnyDb {
        let config = Config::builder("/db")
            .signal_type("like", Duration::from_secs(60))
            .dimension(2)
            .storage(Arc::new(SimStorage::default()))
            .build()
            .expect("config");
        let core = Core::open(config, NodeRole::Single).expect("open");
        AnyDb::Follower(TidalDb {
            core,
            role: Follower {
                _tasks: Default::default(),
                transport: None,
                handed_over: false,
            },
        })
    }

    #[test]
    fn every_write_on_a_follower_is_read_only_and_changes_nothing() {
        let db = follower();
        let before = db.last_position();
        let (e, s, u, t) = (EntityId(1), SessionId(1), UserId(1), Timestamp(0));
        let results = [
            db.signal("like", e, 1.0, t),
            db.write_item(e, None, &[("k", "v")]),
            db.write_creator(EntityId(2), &[("k", "v")]),
            db.write_item_embedding(e, &[1.0, 0.0]),
            db.write_creator_embedding(EntityId(2), &[1.0, 0.0]),
            db.delete_item(e),
            db.delete_creator(EntityId(2)),
            db.open_session(s, u, t),
            db.record_session_event(s, e, "like", 1.0, t),
            db.close_session(s, t),
            db.delete_user(u),
            db.write(WriteBatch::new().signal("like", e, 1.0, t)),
        ];
        for r in results {
            assert!(matches!(r, Err(TidalError::ReadOnly)), "{r:?}");
        }
        assert_eq!(db.last_position(), before);
        assert_eq!(db.read_count(e, "like").expect("read"), 0);
        assert!(db.get_item(e).is_none());
        assert_eq!(db.role(), NodeRole::Follower);
    }
}
