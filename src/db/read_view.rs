//! Consistent multi-reads: several reads of one published state.
//!
//! Every read method of [`TidalDb`] is its own view of the state, so two
//! reads may straddle a batch: a top-k followed by point reads of the
//! entities it returned can disagree. [`TidalDb::read_view`] runs a
//! closure on one published state; every read through its [`ReadView`]
//! sees the same whole batches, up to [`ReadView::position`].
//!
//! Decision: a closure, not a guard object. The view holds the read side
//! of one of the two state copies (see the `view` module's left-right
//! scheme). Readers never wait for the writer, but the writer's second
//! apply of a batch waits until every reader has left the copy it was
//! published in, and the next batch waits for that apply. A closure bounds
//! that time by construction and cannot be stored, sent or leaked; a guard
//! could be held across an `.await` or forgotten in a struct and stall
//! every writer. The price is a closure: take what you need and return it.

use crate::db::TidalDb;
use crate::db::core::Core;
use crate::db::read::SessionEvent;
use crate::error::{Result, TidalError};
use crate::query::{Filter, Retrieve, Scored, Search};
use crate::role::Role;
use crate::state::State;
use crate::state::entities::{Creator, Item};
use crate::state::sessions::SessionInfo;
use crate::types::{EntityId, EntityKind, Position, SessionId, Timestamp};

/// Reads of one published state: every method sees the same whole
/// batches, up to [`position`](ReadView::position). Given to the closure of
/// [`TidalDb::read_view`].
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, Retrieve, TidalDb, Timestamp};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// let now = Timestamp::now();
/// db.signal("like", EntityId(1), 2.0, now).unwrap();
/// db.signal("like", EntityId(2), 1.0, now).unwrap();
/// let (top, scores) = db.read_view(|v| {
///     let top = v.retrieve(&Retrieve::top(10, "like", now)).unwrap();
///     let scores: Vec<f64> = top
///         .iter()
///         .map(|s| v.read_decay_score(s.id, "like", now).unwrap())
///         .collect();
///     (top, scores)
/// });
/// assert_eq!(top[0].id, EntityId(1));
/// assert!(top.iter().zip(&scores).all(|(s, p)| s.score == *p));
/// ```
#[derive(Debug)]
pub struct ReadView<'a> {
    core: &'a Core,
    state: &'a State,
}

impl Core {
    /// Runs `f` on one published state (see [`TidalDb::read_view`]).
    pub(crate) fn read_view<T>(&self, f: impl FnOnce(&ReadView<'_>) -> T) -> T {
        self.view.read(|state| f(&ReadView { core: self, state }))
    }
}

impl<'a> ReadView<'a> {
    /// A view of `state`, a published copy of `core`'s state.
    pub(crate) fn new(core: &'a Core, state: &'a State) -> ReadView<'a> {
        ReadView { core, state }
    }

    /// The state this view reads.
    pub(crate) fn state(&self) -> &'a State {
        self.state
    }
}

impl ReadView<'_> {
    fn type_id(&self, signal_type: &str) -> Result<u16> {
        self.core.prepare.signal_type(signal_type)
    }

    fn check_k(&self, k: usize) -> Result<()> {
        let limit = self.core.config().limits.max_results;
        if k > limit {
            return Err(TidalError::TooLong {
                field: "k",
                len: k,
                limit,
            });
        }
        Ok(())
    }

    fn check_filter(&self, filter: &Filter) -> Result<()> {
        let limit = self.core.config().limits.max_metadata_fields;
        if filter.metadata.len() > limit {
            return Err(TidalError::TooLong {
                field: "filter.metadata",
                len: filter.metadata.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The last record this view holds: every read through it reflects
    /// exactly the records up to here.
    pub fn position(&self) -> Position {
        self.state.applied()
    }

    /// See [`TidalDb::read_decay_score`].
    pub fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        let t = self.type_id(signal_type)?;
        Ok(self.state.signals.score(t, entity, at))
    }

    /// See [`TidalDb::read_count`].
    pub fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        let t = self.type_id(signal_type)?;
        Ok(self.state.signals.count(t, entity))
    }

    /// See [`TidalDb::retrieve`].
    pub fn retrieve(&self, q: &Retrieve) -> Result<Vec<Scored>> {
        self.check_k(q.k)?;
        self.check_filter(&q.filter)?;
        if q.blend.is_empty() {
            return Err(TidalError::Empty { field: "blend" });
        }
        let mut blend = Vec::with_capacity(q.blend.len());
        for (name, w) in &q.blend {
            if !w.is_finite() {
                return Err(TidalError::NonFinite {
                    field: "blend weight",
                    value: *w,
                });
            }
            blend.push((self.type_id(name)?, *w));
        }
        let hits = self.state.retrieve(&blend, q.at, q.k, &q.filter);
        Ok(hits
            .into_iter()
            .map(|(id, score)| Scored { id, score })
            .collect())
    }

    /// See [`TidalDb::search`].
    pub fn search(&self, q: &Search) -> Result<Vec<Scored>> {
        self.check_k(q.k)?;
        self.check_filter(&q.filter)?;
        let unit = self.core.prepare.unit_vector("query", &q.vector)?;
        let kind = q.filter.kind.unwrap_or(EntityKind::Item);
        let hits = self.state.search(kind, &unit, q.k, &q.filter);
        Ok(hits
            .into_iter()
            .map(|(id, score)| Scored { id, score })
            .collect())
    }

    /// See [`TidalDb::get_item`].
    pub fn get_item(&self, id: EntityId) -> Option<Item> {
        self.state.entities.item(id)
    }

    /// See [`TidalDb::get_creator`].
    pub fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.state.entities.creator(id)
    }

    /// See [`TidalDb::session`].
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.state.sessions.info(session)
    }

    /// See [`TidalDb::session_events`].
    pub fn session_events(&self, session: SessionId, from: u32, limit: usize) -> Vec<SessionEvent> {
        let names = &self.core.config().signal_types;
        self.state
            .sessions
            .events(session, from, limit)
            .into_iter()
            .map(|e| SessionEvent {
                seq: e.seq,
                entity: e.entity,
                signal_type: names
                    .get(usize::from(e.signal_type))
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                weight: e.weight,
                at: e.at,
                merged: e.merged,
            })
            .collect()
    }
}

impl<R: Role> TidalDb<R> {
    /// Runs `f` on one published state, so several reads agree: a top-k
    /// and the point reads of the entities it returned see the same
    /// batches, up to [`ReadView::position`]. Returns what `f` returns.
    ///
    /// Readers never wait, but the writer does: a batch's second apply
    /// waits until every view of the copy it replaced has ended, and the
    /// next batch waits for it. Keep `f` short (reads, then return), never
    /// block or sleep in it, and never write to this database from inside
    /// it: the write may have to wait for this very view, a deadlock.
    pub fn read_view<T>(&self, f: impl FnOnce(&ReadView<'_>) -> T) -> T {
        self.core.read_view(f)
    }
}
