//! The stateful checks of a group: the [`Overlay`] checks what depends on
//! state (an id's kind, a session being open, the number of metadata
//! fields) inside the group committer, against the state *plus the batch
//! being built*, so two racing writers can never both pass a check such
//! as opening the same session. The stateless checks come first, on the
//! caller's thread (`db::validate`).

use std::collections::{HashMap, HashSet};

use crate::config::{Config, duration_ms};
use crate::error::{Result, TidalError};
use crate::state::State;
use crate::state::sessions::SessionStatus;
use crate::types::{EntityId, EntityKind, SessionId, UserId};
use crate::wal::record::Record;

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
