//! `ShardedDb` reads: point reads on the owning shard, top-k merged
//! across shards.

use super::*;

/// Runs a closure on the state of the shard at an index.
pub(super) type WithState<'a> = dyn Fn(usize, &mut dyn FnMut(&State)) + 'a;

/// Reads, for every role.
impl<R: Role> ShardedDb<R> {
    /// The decayed score of `entity`, read on its shard.
    pub fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        self.entity_db(entity)
            .read_decay_score(entity, signal_type, at)
    }

    /// The count of `entity`, read on its shard.
    pub fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        self.entity_db(entity).read_count(entity, signal_type)
    }

    /// An item, read on its shard.
    pub fn get_item(&self, id: EntityId) -> Option<Item> {
        self.entity_db(id).get_item(id)
    }

    /// A creator, read on its shard.
    pub fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.entity_db(id).get_creator(id)
    }

    /// A session, read on the shard holding it.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.session_db(session).ok()?.session(session)
    }

    /// A session's events numbered `from` and after, at most `limit`, read
    /// on the shard holding it.
    pub fn session_events(&self, session: SessionId, from: u32, limit: usize) -> Vec<SessionEvent> {
        match self.session_db(session) {
            Ok(db) => db.session_events(session, from, limit),
            Err(_) => Vec::new(),
        }
    }

    /// Top-k by decay score (or a blend) over every shard, best first, ties
    /// broken by id: exact, equal to a single node's answer.
    pub fn retrieve(&self, query: &Retrieve) -> Result<Vec<Scored>> {
        merge_shards(self.shard_filters(&query.filter), query.k, |i, filter| {
            self.shards[i].retrieve(&Retrieve {
                filter,
                ..query.clone()
            })
        })
    }

    /// Top-k cosine similarity over every shard, best first, ties broken by
    /// id: exact, equal to a single node's answer.
    pub fn search(&self, query: &Search) -> Result<Vec<Scored>> {
        merge_shards(self.shard_filters(&query.filter), query.k, |i, filter| {
            self.shards[i].search(&Search {
                filter,
                ..query.clone()
            })
        })
    }

    /// The filter each shard gets: a session's seen items and a user's hard
    /// negatives are read on the shard holding them, which keeps the filter
    /// as given; every other shard gets the ids among them it owns as
    /// `exclude_ids`.
    fn shard_filters(&self, filter: &Filter) -> Vec<Filter> {
        self.shard_filters_with(filter, &|i, f| self.shards[i].core.view.read(f))
    }

    /// [`shard_filters`](Self::shard_filters) reading each shard's state
    /// through `with_state(shard index, f)`: the newest state, or the one a
    /// read view holds.
    pub(super) fn shard_filters_with(
        &self,
        filter: &Filter,
        with_state: &WithState<'_>,
    ) -> Vec<Filter> {
        let seen = filter.exclude_seen.and_then(|session| {
            let home = (0..self.shards.len()).find(|&i| {
                let mut here = false;
                with_state(i, &mut |s| here = s.sessions.user_of(session).is_some());
                here
            })?;
            let mut ids: Vec<EntityId> = Vec::new();
            with_state(home, &mut |s| {
                ids = s
                    .sessions
                    .events(session, 1, usize::MAX)
                    .into_iter()
                    .map(|e| e.entity)
                    .collect();
            });
            Some((home, ids))
        });
        let negatives = filter.exclude_hard_negatives.map(|user| {
            let home = self.index_of(user.0);
            let mut ids = Vec::new();
            with_state(home, &mut |s| ids = s.sessions.hard_negatives(user));
            (home, ids)
        });
        (0..self.shards.len())
            .map(|i| {
                let mut f = filter.clone();
                match &seen {
                    Some((home, _)) if *home == i => {}
                    Some((_, ids)) => {
                        f.exclude_seen = None;
                        f.exclude_ids.extend(self.owned_by(i, ids));
                    }
                    // An unknown session excludes nothing anywhere.
                    None => f.exclude_seen = None,
                }
                match &negatives {
                    Some((home, _)) if *home == i => {}
                    Some((_, ids)) => {
                        f.exclude_hard_negatives = None;
                        f.exclude_ids.extend(self.owned_by(i, ids));
                    }
                    None => {}
                }
                f
            })
            .collect()
    }

    fn owned_by<'a>(
        &'a self,
        i: usize,
        ids: &'a [EntityId],
    ) -> impl Iterator<Item = EntityId> + 'a {
        ids.iter()
            .copied()
            .filter(move |id| self.index_of(id.0) == i)
    }

    /// The status of every shard, in shard order.
    pub fn status(&self) -> Vec<Status> {
        self.shards.iter().map(TidalDb::status).collect()
    }

    /// Forces every shard's log to disk; the first error wins.
    pub fn flush(&self) -> Result<()> {
        self.shards.iter().try_for_each(TidalDb::flush)
    }

    /// Closes every shard (all of them, also after an error) and returns
    /// the first error.
    pub fn close(self) -> Result<()> {
        let mut first = None;
        for db in self.shards {
            if let Err(e) = db.close() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
