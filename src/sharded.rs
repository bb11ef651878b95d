//! `ShardedDb`: one database per shard in one process, writes routed with
//! [`ShardRouter`] and top-k reads merged.
//!
//! DESIGN.md section 5: a node serves one shard and refuses a write naming
//! an entity of another shard (`TidalError::WrongShard`). `ShardedDb` holds
//! one node per shard and sends every call to the node that owns it, so the
//! caller sees one database over the whole entity space.
//!
//! # Routing
//!
//! - Entity writes and reads (`signal`, `write_item`, `write_creator`,
//!   embeddings, deletes, `read_decay_score`, `read_count`, `get_item`,
//!   `get_creator`) go to `router.route(entity)`.
//! - `open_session` and `delete_user` go to `router.route(user)`: a session
//!   lives on the shard of its user (DESIGN.md section 3).
//! - Calls naming only a session (`record_session_event`, `close_session`,
//!   `session`, `session_events`, `Filter::exclude_seen`) find the
//!   session's shard by asking every shard whether it holds the session: a
//!   hash lookup per shard, and no map to keep in step with the shards or to
//!   rebuild on open. So that the answer is unambiguous, `open_session`
//!   refuses (`TidalError::SessionExists`) a session id already known on
//!   any shard; opens of one id are serialized by a striped lock.
//! - `record_session_event` records the event on the user's shard (where it
//!   is also applied as a signal when the entity lives there, in the same
//!   batch). When the entity lives on another shard, `ShardedDb` then sends
//!   the same signal (type, weight, time) to the entity's shard, as DESIGN.md
//!   section 3 asks. The two writes are not atomic: if the second fails
//!   (the first one already validated the same input, so only I/O or a
//!   poisoned shard can fail it) the error is returned and the session holds
//!   the event without the score.
//!
//! # Batches: atomic per shard
//!
//! [`ShardedDb::write`] splits a [`WriteBatch`] by shard (session events
//! with a foreign entity add their signal to the entity's part) and writes
//! each part as one atomic batch on its shard, in shard order. Atomicity is
//! per shard, not across shards: if the part of one shard is refused, the
//! parts of the shards before it are already written, and those after it
//! are not. A batch touching one shard is exactly as atomic as on a single
//! node.
//!
//! # Reads: exact merged top-k
//!
//! `retrieve` and `search` ask every shard for its top-k and merge them best
//! first, ties broken by id. Every entity lives on exactly one shard and
//! each shard's top-k is exact, so the merged top-k is exact: it equals a
//! single node's answer over the same writes.
//!
//! Exclusions by session or user need state that lives on the user's shard
//! (the session's seen items, the user's hard negatives), while the
//! excluded entities may live anywhere. `ShardedDb` reads them on the
//! user's shard first and passes each other shard the ids among them it
//! owns as `exclude_ids`; the user's shard applies the filter itself.
//!
//! # Replicated deployments and resharding
//!
//! [`ShardedDb::open`] opens one [`TidalDb<Single>`](TidalDb) per shard.
//! A replicated deployment does the same with leaders: open one
//! `TidalDb<Leader>` per shard (each on its own transport, its followers
//! elsewhere) and hand them to [`ShardedDb::from_shards`]; followers of
//! every shard make a read-only `ShardedDb<Follower>` the same way. Moving
//! data when the shard count changes is future work: `META` pins the shard
//! count, so reopening with another count is `TidalError::ConfigMismatch`;
//! the jump consistent hash is ready for it (adding a shard moves only
//! `1/n` of the ids, all to the new shard).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::config::{Config, NodeRole};
use crate::db::batch::Op;
use crate::db::{SessionEvent, Status, TidalDb, WriteBatch};
use crate::error::{Result, TidalError};
use crate::query::{Filter, Retrieve, Scored, Search};
use crate::role::{Role, Single, Writable};
use crate::shard::ShardRouter;
use crate::state::State;
use crate::state::entities::{Creator, Item};
use crate::state::sessions::SessionInfo;
use crate::types::{EntityId, Position, SessionId, ShardId, Timestamp, UserId};

/// Stripes of the lock that serializes opens of one session id.
const OPEN_STRIPES: usize = 64;

/// One database per shard in one process: writes routed by entity (or by
/// user for sessions), top-k reads merged exactly. See the
/// [module documentation](crate::sharded) for every routing decision.
///
/// ```
/// use std::time::Duration;
/// use tidal::{Config, EntityId, Retrieve, SessionId, ShardedDb, Timestamp, UserId};
///
/// let dir = tempfile::tempdir()?;
/// let base = Config::builder(dir.path())
///     .signal_type("like", Duration::from_secs(3_600))
///     .build()?;
/// let db = ShardedDb::open(base, 4)?; // <dir>/shard-0 ... <dir>/shard-3
/// let now = Timestamp::now();
/// for id in 1..=20u64 {
///     db.signal("like", EntityId(id), id as f64, now)?;
/// }
/// db.open_session(SessionId(1), UserId(7), now)?;
/// // Recorded on user 7's shard, counted on entity 3's shard.
/// db.record_session_event(SessionId(1), EntityId(3), "like", 1.0, now)?;
/// assert_eq!(db.read_count(EntityId(3), "like")?, 2);
///
/// let top = db.retrieve(&Retrieve::top(3, "like", now))?;
/// let ids: Vec<u64> = top.iter().map(|s| s.id.0).collect();
/// assert_eq!(ids, vec![20, 19, 18]);
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShardedDb<R: Role = Single> {
    router: ShardRouter,
    shards: Vec<TidalDb<R>>,
    opening: Vec<Mutex<()>>,
}

impl<R: Role> fmt::Debug for ShardedDb<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedDb")
            .field("role", &R::NODE_ROLE)
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl ShardedDb<Single> {
    /// Opens (or creates) `shard_count` single nodes, shard `N` in
    /// `<base.data_dir>/shard-N` with `cluster.shard_id = N` and
    /// `cluster.shard_count = shard_count` (both overriding `base`), role
    /// `Single`. Every other setting is `base`'s. Reopening with another
    /// shard count is `TidalError::ConfigMismatch` (moving data between
    /// shards is future work). On error the shards already opened are
    /// closed.
    pub fn open(base: Config, shard_count: u32) -> Result<ShardedDb<Single>> {
        if shard_count == 0 {
            return Err(TidalError::InvalidConfig {
                field: "shard_count",
                reason: "must be at least 1".to_string(),
            });
        }
        let mut shards = Vec::with_capacity(shard_count as usize);
        for n in 0..shard_count {
            let mut config = base.clone();
            config.data_dir = base.data_dir.join(format!("shard-{n}"));
            config.cluster.role = NodeRole::Single;
            config.cluster.shard_id = ShardId(n);
            config.cluster.shard_count = shard_count;
            shards.push(TidalDb::open(config)?);
        }
        ShardedDb::from_shards(shards)
    }
}

impl<R: Role> ShardedDb<R> {
    /// Wraps nodes already open, one per shard in shard order: node `N`
    /// must serve `ShardId(N)` of `shards.len()` shards
    /// (`TidalError::InvalidConfig` otherwise). This is how a process runs
    /// one `TidalDb<Leader>` per shard (or a read-only set of followers).
    pub fn from_shards(shards: Vec<TidalDb<R>>) -> Result<ShardedDb<R>> {
        if shards.is_empty() {
            return Err(TidalError::InvalidConfig {
                field: "shards",
                reason: "at least one shard is needed".to_string(),
            });
        }
        let count = u32::try_from(shards.len()).map_err(|_| TidalError::InvalidConfig {
            field: "shards",
            reason: format!("{} shards do not fit a u32", shards.len()),
        })?;
        for (n, db) in shards.iter().enumerate() {
            let c = &db.config().cluster;
            if c.shard_id.0 as usize != n || c.shard_count != count {
                return Err(TidalError::InvalidConfig {
                    field: "cluster",
                    reason: format!(
                        "node {n} serves shard {} of {}, expected shard {n} of {count}",
                        c.shard_id, c.shard_count
                    ),
                });
            }
        }
        Ok(ShardedDb {
            router: ShardRouter::new(count),
            shards,
            opening: (0..OPEN_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.router.shard_count()
    }

    /// The router that places entities and users.
    pub fn router(&self) -> ShardRouter {
        self.router
    }

    /// The shard that owns `entity`.
    pub fn shard_of(&self, entity: EntityId) -> ShardId {
        self.router.route(entity.0)
    }

    /// The shard that owns `user` (and their sessions).
    pub fn shard_of_user(&self, user: UserId) -> ShardId {
        self.router.route(user.0)
    }

    /// The shard holding `session`, if any shard does (asks each shard).
    pub fn session_shard(&self, session: SessionId) -> Option<ShardId> {
        self.session_index(session).map(shard_id)
    }

    /// The node of one shard.
    pub fn shard(&self, shard: ShardId) -> Option<&TidalDb<R>> {
        self.shards.get(shard.0 as usize)
    }

    /// Every node, in shard order.
    pub fn shards(&self) -> &[TidalDb<R>] {
        &self.shards
    }

    fn entity_db(&self, entity: EntityId) -> &TidalDb<R> {
        &self.shards[self.index_of(entity.0)]
    }

    fn index_of(&self, id: u64) -> usize {
        self.router.route(id).0 as usize
    }

    fn session_index(&self, session: SessionId) -> Option<usize> {
        self.shards
            .iter()
            .position(|db| db.core.view.read(|s| s.sessions.user_of(session).is_some()))
    }

    fn session_db(&self, session: SessionId) -> Result<&TidalDb<R>> {
        self.session_index(session)
            .map(|i| &self.shards[i])
            .ok_or(TidalError::UnknownSession { session })
    }

    fn stripe(&self, session: SessionId) -> MutexGuard<'_, ()> {
        let i = (session.0 % OPEN_STRIPES as u64) as usize;
        self.opening[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes, routed to the owning shard. Each returns the `Position` in the
/// log of the shard that took it (positions of different shards are not
/// comparable).
impl<R: Role> ShardedDb<R> {
    /// Records a signal on `entity`'s shard.
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
        self.entity_db(entity)
            .signal(signal_type, entity, weight, at)
    }

    /// Upserts an item on its shard (its creator may live elsewhere).
    pub fn write_item(
        &self,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(&str, &str)],
    ) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).write_item(id, creator, fields)
    }

    /// Upserts a creator on its shard.
    pub fn write_creator(&self, id: EntityId, fields: &[(&str, &str)]) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).write_creator(id, fields)
    }

    /// Sets an item's embedding on its shard.
    pub fn write_item_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).write_item_embedding(id, vector)
    }

    /// Sets a creator's embedding on its shard.
    pub fn write_creator_embedding(&self, id: EntityId, vector: &[f32]) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).write_creator_embedding(id, vector)
    }

    /// Deletes an item on its shard.
    pub fn delete_item(&self, id: EntityId) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).delete_item(id)
    }

    /// Deletes a creator on its shard.
    pub fn delete_creator(&self, id: EntityId) -> Result<Position>
    where
        R: Writable,
    {
        self.entity_db(id).delete_creator(id)
    }

    /// Opens a session on `user`'s shard. A session id already known on
    /// any shard is `TidalError::SessionExists`, so that a session id names
    /// one session across the shards.
    pub fn open_session(&self, session: SessionId, user: UserId, at: Timestamp) -> Result<Position>
    where
        R: Writable,
    {
        let _guard = self.stripe(session);
        if self.session_index(session).is_some() {
            return Err(TidalError::SessionExists { session });
        }
        self.shards[self.index_of(user.0)].open_session(session, user, at)
    }

    /// Records the next event of a session on its user's shard, and, when
    /// `entity` lives on another shard, sends the same signal there. Returns
    /// the position of the event on the user's shard. Not atomic across
    /// the two shards (see the module documentation).
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
        let home = self
            .session_index(session)
            .ok_or(TidalError::UnknownSession { session })?;
        let pos =
            self.shards[home].record_session_event(session, entity, signal_type, weight, at)?;
        let owner = self.index_of(entity.0);
        if owner != home {
            self.shards[owner].signal(signal_type, entity, weight, at)?;
        }
        Ok(pos)
    }

    /// Closes a session on the shard holding it.
    pub fn close_session(&self, session: SessionId, at: Timestamp) -> Result<Position>
    where
        R: Writable,
    {
        self.session_db(session)?.close_session(session, at)
    }

    /// Deletes a user's sessions and hard negatives on the user's shard.
    pub fn delete_user(&self, user: UserId) -> Result<Position>
    where
        R: Writable,
    {
        self.shards[self.index_of(user.0)].delete_user(user)
    }

    /// Splits `batch` by shard and writes each part as one atomic batch on
    /// its shard, in shard order; returns `(shard, position)` for each
    /// shard written. Atomic per shard only: when a part is refused, the
    /// parts of earlier shards stay written (see the module documentation).
    /// A session event or close whose session is neither on a shard nor
    /// opened earlier in the batch is `TidalError::UnknownSession`, and an
    /// open of a session id known on another shard is
    /// `TidalError::SessionExists`, both before anything is written.
    pub fn write(&self, batch: WriteBatch) -> Result<Vec<(ShardId, Position)>>
    where
        R: Writable,
    {
        if batch.is_empty() {
            return Err(TidalError::BatchSize {
                records: 0,
                limit: self.shards[0].config().limits.max_batch_records,
            });
        }
        // Serialize with racing opens of the same session ids.
        let mut stripes: Vec<usize> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::OpenSession { session, .. } => Some((session.0 % OPEN_STRIPES as u64) as usize),
                _ => None,
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<MutexGuard<'_, ()>> = stripes
            .iter()
            .map(|&i| {
                self.opening[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();

        let (key, names) = (batch.idempotency_key, batch.names);
        let mut opened: HashMap<SessionId, usize> = HashMap::new();
        let mut parts: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
        for op in batch.ops {
            let home = match &op {
                Op::Signal { entity, .. } => self.index_of(entity.0),
                Op::Upsert { id, .. } | Op::Embedding { id, .. } | Op::Delete { id, .. } => {
                    self.index_of(id.0)
                }
                Op::OpenSession { session, user, .. } => {
                    let home = self.index_of(user.0);
                    if let Some(i) = self.session_index(*session)
                        && i != home
                    {
                        return Err(TidalError::SessionExists { session: *session });
                    }
                    opened.entry(*session).or_insert(home);
                    home
                }
                Op::SessionEvent { session, .. } | Op::CloseSession { session, .. } => opened
                    .get(session)
                    .copied()
                    .or_else(|| self.session_index(*session))
                    .ok_or(TidalError::UnknownSession { session: *session })?,
                Op::DeleteUser { user } => self.index_of(user.0),
            };
            if let Op::SessionEvent {
                entity,
                signal_type,
                weight,
                at,
                ..
            } = &op
            {
                let owner = self.index_of(entity.0);
                if owner != home {
                    parts.entry(owner).or_default().push(Op::Signal {
                        signal_type: *signal_type,
                        entity: *entity,
                        weight: *weight,
                        at: *at,
                    });
                }
            }
            parts.entry(home).or_default().push(op);
        }
        let mut written = Vec::with_capacity(parts.len());
        for (i, ops) in parts {
            let pos =
                self.shards[i].write(WriteBatch::from_ops(ops, names.clone(), key.clone()))?;
            written.push((shard_id(i), pos));
        }
        Ok(written)
    }
}

fn shard_id(index: usize) -> ShardId {
    ShardId(u32::try_from(index).unwrap_or(u32::MAX))
}

/// The best `k` of the shards' answers: best first, ties broken by id (the
/// order every shard uses).
fn merge(mut all: Vec<Scored>, k: usize) -> Vec<Scored> {
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    all.truncate(k);
    all
}

/// Asks every shard (by index, with the filter it gets) for its top-k and
/// merges the answers best first: the one loop behind every sharded
/// `retrieve` and `search`, of the database and of a read view.
fn merge_shards(
    filters: Vec<Filter>,
    k: usize,
    mut ask: impl FnMut(usize, Filter) -> Result<Vec<Scored>>,
) -> Result<Vec<Scored>> {
    let mut all = Vec::new();
    for (i, filter) in filters.into_iter().enumerate() {
        all.extend(ask(i, filter)?);
    }
    Ok(merge(all, k))
}

#[path = "sharded_read.rs"]
mod read;
#[path = "sharded_view.rs"]
mod view;
pub use view::ShardedReadView;
