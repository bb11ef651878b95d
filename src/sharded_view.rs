//! `ShardedDb::read_view`: one read view per shard, all held at once.
//!
//! Every shard has its own log and its own Positions, so there is no one
//! Position across shards; what a sharded view gives is, per shard, one
//! published state for the whole closure. A merged top-k and point reads of
//! the entities it returned, taken in one view, agree exactly (each entity
//! lives on one shard, read at that shard's one Position), which separate
//! calls cannot promise while writes land.
//!
//! Holding several shards' views at once cannot deadlock: a reader never
//! waits (it takes whichever copy of a shard's state is free, see the
//! `view` module), and a shard's writer waits only for that shard's
//! readers to leave.

use super::*;
use crate::db::ReadView;

/// Reads of one published state per shard, given to the closure of
/// [`ShardedDb::read_view`]. Point reads go to the owning shard's view;
/// `retrieve` and `search` merge every shard's view.
#[derive(Debug)]
pub struct ShardedReadView<'a, R: Role> {
    db: &'a ShardedDb<R>,
    views: Vec<ReadView<'a>>,
}

impl<R: Role> ShardedDb<R> {
    /// Runs `f` with one read view per shard, all held for the closure
    /// (see [`TidalDb::read_view`]: keep it short, the writers' second
    /// apply waits for it).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tidal::{Config, EntityId, Retrieve, ShardedDb, Timestamp};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let base = Config::builder(dir.path())
    ///     .signal_type("like", Duration::from_secs(60))
    ///     .build()
    ///     .unwrap();
    /// let db = ShardedDb::open(base, 3).unwrap();
    /// let now = Timestamp::now();
    /// for e in 1..=20 {
    ///     db.signal("like", EntityId(e), e as f64, now).unwrap();
    /// }
    /// let agree = db.read_view(|v| {
    ///     let top = v.retrieve(&Retrieve::top(5, "like", now)).unwrap();
    ///     top.iter()
    ///         .all(|s| v.read_decay_score(s.id, "like", now).unwrap() == s.score)
    /// });
    /// assert!(agree);
    /// ```
    pub fn read_view<T>(&self, f: impl FnOnce(&ShardedReadView<'_, R>) -> T) -> T {
        let guards: Vec<_> = self
            .shards
            .iter()
            .map(|db| db.core.view.read_guard())
            .collect();
        let views = self
            .shards
            .iter()
            .zip(&guards)
            .map(|(db, state)| ReadView::new(&db.core, state))
            .collect();
        f(&ShardedReadView { db: self, views })
    }
}

impl<R: Role> ShardedReadView<'_, R> {
    /// The view of one shard; None for a shard this database does not have.
    pub fn shard(&self, shard: ShardId) -> Option<&ReadView<'_>> {
        self.views.get(shard.0 as usize)
    }

    /// Each shard's position in this view, in shard order.
    pub fn positions(&self) -> Vec<Position> {
        self.views.iter().map(ReadView::position).collect()
    }

    fn entity_view(&self, entity: EntityId) -> &ReadView<'_> {
        &self.views[self.db.index_of(entity.0)]
    }

    fn session_view(&self, session: SessionId) -> Option<&ReadView<'_>> {
        self.views.iter().find(|v| v.session(session).is_some())
    }

    /// See [`ShardedDb::read_decay_score`].
    pub fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        self.entity_view(entity)
            .read_decay_score(entity, signal_type, at)
    }

    /// See [`ShardedDb::read_count`].
    pub fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        self.entity_view(entity).read_count(entity, signal_type)
    }

    /// See [`ShardedDb::get_item`].
    pub fn get_item(&self, id: EntityId) -> Option<Item> {
        self.entity_view(id).get_item(id)
    }

    /// See [`ShardedDb::get_creator`].
    pub fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.entity_view(id).get_creator(id)
    }

    /// See [`ShardedDb::session`].
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.session_view(session)?.session(session)
    }

    /// See [`ShardedDb::session_events`].
    pub fn session_events(&self, session: SessionId, from: u32, limit: usize) -> Vec<SessionEvent> {
        self.session_view(session)
            .map(|v| v.session_events(session, from, limit))
            .unwrap_or_default()
    }

    /// See [`ShardedDb::retrieve`]: every shard's top-k in this view, merged.
    pub fn retrieve(&self, query: &Retrieve) -> Result<Vec<Scored>> {
        merge_shards(self.filters(&query.filter), query.k, |i, filter| {
            self.views[i].retrieve(&Retrieve {
                filter,
                ..query.clone()
            })
        })
    }

    /// See [`ShardedDb::search`]: every shard's top-k in this view, merged.
    pub fn search(&self, query: &Search) -> Result<Vec<Scored>> {
        merge_shards(self.filters(&query.filter), query.k, |i, filter| {
            self.views[i].search(&Search {
                filter,
                ..query.clone()
            })
        })
    }

    /// The per-shard filters, from the states of this view.
    fn filters(&self, filter: &Filter) -> Vec<Filter> {
        self.db
            .shard_filters_with(filter, &|i, f| f(self.views[i].state()))
    }
}
