//! Validation: every input is checked before it can reach the log.
//!
//! Two stages. [`Prepare`] checks what needs no state (finite weights,
//! known signal types, lengths, dimensions, timestamps, shard) on the
//! caller's thread and turns an operation into a [`Record`]. The
//! [`Overlay`] checks what depends on state (an id's kind, a session being
//! open, the number of metadata fields) inside the group committer, against
//! the state *plus the batch being built*, so two racing writers can never
//! both pass a check such as opening the same session.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, duration_ms};
use crate::db::batch::Op;
use crate::error::{Result, TidalError};
use crate::shard::ShardRouter;
use crate::state::State;
use crate::state::sessions::SessionStatus;
use crate::state::vectors::normalize;
use crate::types::{EntityId, EntityKind, SessionId, ShardId, Timestamp, UserId};
use crate::wal::record::Record;

/// Stateless checks, from the `Config`.
#[derive(Debug)]
pub(crate) struct Prepare {
    config: Config,
    router: ShardRouter,
    shard: ShardId,
}

impl Prepare {
    pub(crate) fn new(config: &Config) -> Prepare {
        Prepare {
            router: ShardRouter::new(config.cluster.shard_count),
            shard: config.cluster.shard_id,
            config: config.clone(),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The id of a signal type, or `UnknownSignalType` (empty and oversized
    /// names get their own variants).
    pub(crate) fn signal_type(&self, name: &str) -> Result<u16> {
        if name.is_empty() {
            return Err(TidalError::Empty {
                field: "signal_type",
            });
        }
        let limit = self.config.limits.max_name_bytes;
        if name.len() > limit {
            return Err(TidalError::TooLong {
                field: "signal_type",
                len: name.len(),
                limit,
            });
        }
        self.config
            .signal_type_id(name)
            .ok_or_else(|| TidalError::UnknownSignalType {
                name: name.to_string(),
            })
    }

    fn weight(&self, weight: f64) -> Result<()> {
        if weight.is_finite() {
            Ok(())
        } else {
            Err(TidalError::NonFinite {
                field: "weight",
                value: weight,
            })
        }
    }

    fn timestamp(&self, field: &'static str, at: Timestamp, now: &Now) -> Result<()> {
        let now_ms = *now.0.get_or_init(|| self.config.clock.now_ms());
        let limit_ms = duration_ms(self.config.max_future_skew);
        let ahead_ms = at.0.saturating_sub(now_ms);
        if ahead_ms > limit_ms {
            return Err(TidalError::TimestampTooFarAhead {
                field,
                at_ms: at.0,
                ahead_ms,
                limit_ms,
            });
        }
        Ok(())
    }

    fn owned(&self, field: &'static str, id: u64) -> Result<()> {
        if self.config.cluster.shard_count <= 1 {
            return Ok(());
        }
        let owner = self.router.route(id);
        if owner != self.shard {
            return Err(TidalError::WrongShard {
                field,
                id,
                owner,
                this: self.shard,
            });
        }
        Ok(())
    }

    fn is_local(&self, id: u64) -> bool {
        self.config.cluster.shard_count <= 1 || self.router.route(id) == self.shard
    }

    fn text(&self, field: &'static str, s: &str, limit: usize) -> Result<()> {
        if s.is_empty() {
            return Err(TidalError::Empty { field });
        }
        if s.len() > limit {
            return Err(TidalError::TooLong {
                field,
                len: s.len(),
                limit,
            });
        }
        Ok(())
    }

    /// A unit-length copy of a vector of the right dimension.
    pub(crate) fn unit_vector(&self, field: &'static str, v: &[f32]) -> Result<Vec<f32>> {
        if v.len() != self.config.dimension {
            return Err(TidalError::DimensionMismatch {
                field,
                expected: self.config.dimension,
                got: v.len(),
            });
        }
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(TidalError::NonFiniteVector { field, index });
        }
        normalize(v).ok_or(TidalError::ZeroVector { field })
    }

    pub(crate) fn signal(
        &self,
        signal_type: &str,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
        now: &Now,
    ) -> Result<Record> {
        let signal_type = self.signal_type(signal_type)?;
        self.weight(weight)?;
        self.timestamp("at", at, now)?;
        self.owned("entity", entity.0)?;
        Ok(Record::Signal {
            signal_type,
            entity,
            weight,
            at,
        })
    }

    pub(crate) fn upsert(
        &self,
        kind: EntityKind,
        id: EntityId,
        creator: Option<EntityId>,
        fields: Vec<(String, String)>,
    ) -> Result<Record> {
        self.owned("id", id.0)?;
        let limits = &self.config.limits;
        if fields.len() > limits.max_metadata_fields {
            return Err(TidalError::TooManyFields {
                id,
                count: fields.len(),
                limit: limits.max_metadata_fields,
            });
        }
        for (k, v) in &fields {
            self.text("metadata key", k, limits.max_key_bytes)?;
            self.text("metadata value", v, limits.max_value_bytes)?;
        }
        Ok(Record::Upsert {
            kind,
            id,
            creator,
            fields,
        })
    }

    pub(crate) fn embedding(&self, kind: EntityKind, id: EntityId, v: &[f32]) -> Result<Record> {
        self.owned("id", id.0)?;
        let vector = self.unit_vector("embedding", v)?;
        Ok(Record::Embedding { kind, id, vector })
    }

    pub(crate) fn delete(&self, kind: EntityKind, id: EntityId) -> Result<Record> {
        self.owned("id", id.0)?;
        Ok(Record::Delete { kind, id })
    }

    pub(crate) fn open_session(
        &self,
        session: SessionId,
        user: UserId,
        at: Timestamp,
        now: &Now,
    ) -> Result<Record> {
        self.timestamp("at", at, now)?;
        self.owned("user", user.0)?;
        Ok(Record::OpenSession { session, user, at })
    }

    pub(crate) fn session_event(
        &self,
        session: SessionId,
        entity: EntityId,
        signal_type: &str,
        weight: f64,
        at: Timestamp,
        now: &Now,
    ) -> Result<Record> {
        let signal_type = self.signal_type(signal_type)?;
        self.weight(weight)?;
        self.timestamp("at", at, now)?;
        Ok(Record::SessionEvent {
            session,
            seq: 0, // numbered by the sequencer
            entity,
            signal_type,
            weight,
            at,
            apply_signal: self.is_local(entity.0),
        })
    }

    pub(crate) fn close_session(
        &self,
        session: SessionId,
        at: Timestamp,
        now: &Now,
    ) -> Result<Record> {
        self.timestamp("at", at, now)?;
        Ok(Record::CloseSession { session, at })
    }

    pub(crate) fn delete_user(&self, user: UserId) -> Result<Record> {
        self.owned("user", user.0)?;
        Ok(Record::DeleteUser { user })
    }

    /// Prepares every op of a batch (the first error wins).
    pub(crate) fn ops(&self, ops: Vec<Op>) -> Result<Vec<Record>> {
        let limit = self.config.limits.max_batch_records;
        if ops.is_empty() || ops.len() > limit {
            return Err(TidalError::BatchSize {
                records: ops.len(),
                limit,
            });
        }
        // One reading of the clock for the whole batch.
        let now = Now::default();
        ops.into_iter()
            .map(|op| match op {
                Op::Signal {
                    signal_type,
                    entity,
                    weight,
                    at,
                } => self.signal(&signal_type, entity, weight, at, &now),
                Op::Upsert {
                    kind,
                    id,
                    creator,
                    fields,
                } => self.upsert(kind, id, creator, fields),
                Op::Embedding { kind, id, vector } => self.embedding(kind, id, &vector),
                Op::Delete { kind, id } => self.delete(kind, id),
                Op::OpenSession { session, user, at } => self.open_session(session, user, at, &now),
                Op::SessionEvent {
                    session,
                    entity,
                    signal_type,
                    weight,
                    at,
                } => self.session_event(session, entity, &signal_type, weight, at, &now),
                Op::CloseSession { session, at } => self.close_session(session, at, &now),
                Op::DeleteUser { user } => self.delete_user(user),
            })
            .collect()
    }
}

/// The clock's reading that `max_future_skew` is checked against, taken at
/// most once per write: a batch of 1,000 signals read the clock 1,000 times
/// before (4% of W1's time, in `clock_gettime`).
#[derive(Debug, Default)]
pub(crate) struct Now(std::cell::OnceCell<u64>);

#[derive(Clone, Debug, Default)]
struct Fields {
    /// The entity was deleted in this layer: lower layers' keys are gone.
    reset: bool,
    /// Keys added in this layer and absent below it (or since the reset).
    added: HashSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sess {
    Unknown,
    Open { user: UserId, events: u32 },
    Closed { user: UserId },
}

/// What a layer of pending writes changes, for stateful checks.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// The log time (HLC physical ms) of the batch being built and the
    /// session retention: closed sessions that batch expires before its
    /// records apply are unknown to its validation too.
    log_ms: u64,
    retention_ms: u64,
    kinds: HashMap<EntityId, EntityKind>,
    fields: HashMap<EntityId, Fields>,
    sessions: HashMap<SessionId, Sess>,
    deleted_users: HashSet<UserId>,
}

impl Overlay {
    /// The overlay of a batch to be logged at `log_ms`.
    pub(crate) fn new(config: &Config, log_ms: u64) -> Overlay {
        Overlay {
            log_ms,
            retention_ms: duration_ms(config.session_retention),
            ..Overlay::default()
        }
    }

    /// Checks one request (an atomic list of records) against `state` plus
    /// this group overlay, numbering session events. On success the
    /// request's changes join the group; on failure nothing changes.
    pub(crate) fn admit(
        &mut self,
        state: &State,
        config: &Config,
        records: &mut [Record],
    ) -> Result<()> {
        let mut req = Overlay::default();
        for r in records.iter_mut() {
            self.check(&mut req, state, config, r)?;
        }
        self.merge(req);
        Ok(())
    }

    fn kind(&self, req: &Overlay, state: &State, id: EntityId) -> Option<EntityKind> {
        req.kinds
            .get(&id)
            .or_else(|| self.kinds.get(&id))
            .copied()
            .or_else(|| state.entities.kind_of(id))
    }

    fn bind_kind(
        &self,
        req: &mut Overlay,
        state: &State,
        id: EntityId,
        kind: EntityKind,
    ) -> Result<()> {
        match self.kind(req, state, id) {
            Some(existing) if existing != kind => Err(TidalError::KindMismatch {
                id,
                existing,
                requested: kind,
            }),
            _ => {
                req.kinds.insert(id, kind);
                Ok(())
            }
        }
    }

    fn has_key(&self, req: &Overlay, state: &State, id: EntityId, key: &str) -> bool {
        for layer in [req, self] {
            if let Some(f) = layer.fields.get(&id) {
                if f.added.contains(key) {
                    return true;
                }
                if f.reset {
                    return false;
                }
            }
        }
        state.entities.has_field(id, key)
    }

    fn field_count(&self, req: &Overlay, state: &State, id: EntityId) -> usize {
        let mut count = 0;
        for layer in [req, self] {
            if let Some(f) = layer.fields.get(&id) {
                count += f.added.len();
                if f.reset {
                    return count;
                }
            }
        }
        count + state.entities.field_count(id)
    }

    fn session(&self, req: &Overlay, state: &State, s: SessionId) -> Sess {
        if let Some(v) = req.sessions.get(&s) {
            return *v;
        }
        let deleted = |u: &UserId| req.deleted_users.contains(u) || self.deleted_users.contains(u);
        if let Some(v) = self.sessions.get(&s) {
            return match v {
                Sess::Open { user, .. } | Sess::Closed { user }
                    if req.deleted_users.contains(user) =>
                {
                    Sess::Unknown
                }
                other => *other,
            };
        }
        let Some(user) = state.sessions.user_of(s) else {
            return Sess::Unknown;
        };
        if deleted(&user) {
            return Sess::Unknown;
        }
        match state.sessions.status(s) {
            SessionStatus::Unknown => Sess::Unknown,
            SessionStatus::Open { events } => Sess::Open { user, events },
            SessionStatus::Closed
                if state.sessions.expires_by(s, self.log_ms, self.retention_ms) =>
            {
                Sess::Unknown
            }
            SessionStatus::Closed => Sess::Closed { user },
        }
    }

    fn check(
        &self,
        req: &mut Overlay,
        state: &State,
        config: &Config,
        r: &mut Record,
    ) -> Result<()> {
        match r {
            // Keys are checked by the sequencer before `admit`, which
            // never sees one (they are added after it). Merge records come
            // from the reconciliation engine only, built from records that
            // were validated when first logged.
            Record::Signal { .. }
            | Record::EpochStart { .. }
            | Record::IdempotencyKey { .. }
            | Record::Merge { .. } => Ok(()),
            // A reconciled register write binds its id's kind like any
            // other, so a client write of the other kind in the same group
            // is refused instead of silently ignored when applied.
            Record::Reconciled { record, .. } => match record.as_ref() {
                Record::Upsert { kind, id, .. }
                | Record::Embedding { kind, id, .. }
                | Record::Delete { kind, id } => self.bind_kind(req, state, *id, *kind),
                _ => Ok(()),
            },
            // A merged event takes the next number when applied; a client
            // event of the same group must come after it.
            Record::MergedSessionEvent { session, .. } => {
                if let Sess::Open { user, events } = self.session(req, state, *session) {
                    req.sessions.insert(
                        *session,
                        Sess::Open {
                            user,
                            events: events + 1,
                        },
                    );
                }
                Ok(())
            }
            Record::Upsert {
                kind,
                id,
                creator,
                fields,
            } => {
                self.bind_kind(req, state, *id, *kind)?;
                if let Some(c) = creator
                    && self.kind(req, state, *c) == Some(EntityKind::Item)
                {
                    return Err(TidalError::KindMismatch {
                        id: *c,
                        existing: EntityKind::Item,
                        requested: EntityKind::Creator,
                    });
                }
                let mut new_keys = Vec::new();
                for (k, _) in fields.iter() {
                    if !self.has_key(req, state, *id, k) && !new_keys.contains(&k) {
                        new_keys.push(k);
                    }
                }
                let count = self.field_count(req, state, *id) + new_keys.len();
                let limit = config.limits.max_metadata_fields;
                if count > limit {
                    return Err(TidalError::TooManyFields {
                        id: *id,
                        count,
                        limit,
                    });
                }
                let entry = req.fields.entry(*id).or_default();
                entry.added.extend(new_keys.into_iter().cloned());
                Ok(())
            }
            Record::Embedding { kind, id, .. } => self.bind_kind(req, state, *id, *kind),
            Record::Delete { kind, id } => {
                self.bind_kind(req, state, *id, *kind)?;
                let entry = req.fields.entry(*id).or_default();
                entry.reset = true;
                entry.added.clear();
                Ok(())
            }
            Record::OpenSession { session, user, .. } => match self.session(req, state, *session) {
                Sess::Unknown => {
                    req.sessions.insert(
                        *session,
                        Sess::Open {
                            user: *user,
                            events: 0,
                        },
                    );
                    Ok(())
                }
                _ => Err(TidalError::SessionExists { session: *session }),
            },
            Record::SessionEvent { session, seq, .. } => match self.session(req, state, *session) {
                Sess::Unknown => Err(TidalError::UnknownSession { session: *session }),
                Sess::Closed { .. } => Err(TidalError::SessionClosed { session: *session }),
                Sess::Open { user, events } => {
                    let limit = config.limits.max_session_events;
                    if events >= limit {
                        return Err(TidalError::SessionFull {
                            session: *session,
                            limit,
                        });
                    }
                    *seq = events + 1;
                    req.sessions.insert(
                        *session,
                        Sess::Open {
                            user,
                            events: events + 1,
                        },
                    );
                    Ok(())
                }
            },
            Record::CloseSession { session, .. } => match self.session(req, state, *session) {
                Sess::Unknown => Err(TidalError::UnknownSession { session: *session }),
                Sess::Closed { .. } => Err(TidalError::SessionClosed { session: *session }),
                Sess::Open { user, .. } => {
                    req.sessions.insert(*session, Sess::Closed { user });
                    Ok(())
                }
            },
            Record::DeleteUser { user } => {
                req.sessions.retain(|_, s| match s {
                    Sess::Open { user: u, .. } | Sess::Closed { user: u } => u != user,
                    Sess::Unknown => true,
                });
                req.deleted_users.insert(*user);
                Ok(())
            }
        }
    }

    fn merge(&mut self, req: Overlay) {
        self.kinds.extend(req.kinds);
        for (id, f) in req.fields {
            if f.reset {
                self.fields.insert(id, f);
            } else {
                self.fields.entry(id).or_default().added.extend(f.added);
            }
        }
        if !req.deleted_users.is_empty() {
            self.sessions.retain(|_, s| match s {
                Sess::Open { user, .. } | Sess::Closed { user } => {
                    !req.deleted_users.contains(user)
                }
                Sess::Unknown => true,
            });
        }
        self.deleted_users.extend(req.deleted_users);
        self.sessions.extend(req.sessions);
    }
}
