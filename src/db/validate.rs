//! Validation: every input is checked before it can reach the log.
//!
//! Two stages. [`Prepare`] checks what needs no state (finite weights,
//! known signal types, lengths, dimensions, timestamps, shard) on the
//! caller's thread and turns an operation into a [`Record`]. The
//! `Overlay` (`db::overlay`) then checks what depends on state inside the
//! group committer, against the state plus the batch being built.

use std::sync::Arc;

use crate::config::{Config, duration_ms};
use crate::db::batch::{Name, Op};
use crate::error::{Result, TidalError};
use crate::shard::ShardRouter;
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
        self.check_signal(entity, weight, at, now)?;
        Ok(Record::Signal {
            signal_type,
            entity,
            weight,
            at,
        })
    }

    /// The checks of a signal other than its type's.
    #[inline]
    fn check_signal(&self, entity: EntityId, weight: f64, at: Timestamp, now: &Now) -> Result<()> {
        self.weight(weight)?;
        self.timestamp("at", at, now)?;
        self.owned("entity", entity.0)
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
        self.typed_session_event(session, entity, signal_type, weight, at, now)
    }

    /// [`Prepare::session_event`] of a known signal type id.
    fn typed_session_event(
        &self,
        session: SessionId,
        entity: EntityId,
        signal_type: u16,
        weight: f64,
        at: Timestamp,
        now: &Now,
    ) -> Result<Record> {
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

    /// Prepares every op of a batch whose ops name signal types in `names`
    /// (the first error wins). Each name is resolved once per batch; a
    /// name that does not resolve gets its error at the first op using it.
    pub(crate) fn ops(&self, ops: Vec<Op>, names: &[Arc<str>]) -> Result<Vec<Record>> {
        let limit = self.config.limits.max_batch_records;
        if ops.is_empty() || ops.len() > limit {
            return Err(TidalError::BatchSize {
                records: ops.len(),
                limit,
            });
        }
        let ids: Vec<Option<u16>> = names.iter().map(|n| self.signal_type(n).ok()).collect();
        let type_of = |name: Name| match ids.get(name.0 as usize) {
            Some(Some(id)) => Ok(*id),
            // A name no op of this batch can hold reads as empty.
            _ => self.signal_type(names.get(name.0 as usize).map_or("", |n| n)),
        };
        // One reading of the clock for the whole batch.
        let now = Now::default();
        let mut records = Vec::with_capacity(ops.len());
        for op in ops {
            records.push(match op {
                Op::Signal {
                    signal_type,
                    entity,
                    weight,
                    at,
                } => {
                    // Checked, then built in place: a `Result<Record>` per
                    // op, moved into the vector, cost a stalled load (a
                    // store-forwarding miss) per signal. A batch of 1,000
                    // took 55-58 us (names resolved once or not), 28-31
                    // pushed in a loop, 14-17 built in place.
                    let signal_type = type_of(signal_type)?;
                    self.check_signal(entity, weight, at, &now)?;
                    Record::Signal {
                        signal_type,
                        entity,
                        weight,
                        at,
                    }
                }
                Op::Upsert {
                    kind,
                    id,
                    creator,
                    fields,
                } => self.upsert(kind, id, creator, fields)?,
                Op::Embedding { kind, id, vector } => self.embedding(kind, id, &vector)?,
                Op::Delete { kind, id } => self.delete(kind, id)?,
                Op::OpenSession { session, user, at } => {
                    self.open_session(session, user, at, &now)?
                }
                Op::SessionEvent {
                    session,
                    entity,
                    signal_type,
                    weight,
                    at,
                } => {
                    let signal_type = type_of(signal_type)?;
                    self.typed_session_event(session, entity, signal_type, weight, at, &now)?
                }
                Op::CloseSession { session, at } => self.close_session(session, at, &now)?,
                Op::DeleteUser { user } => self.delete_user(user)?,
            });
        }
        Ok(records)
    }
}

/// The clock's reading that `max_future_skew` is checked against, taken at
/// most once per write: a batch of 1,000 signals read the clock 1,000 times
/// before (4% of W1's time, in `clock_gettime`).
#[derive(Debug, Default)]
pub(crate) struct Now(std::cell::OnceCell<u64>);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::db::batch::WriteBatch;

    fn prepare() -> Prepare {
        let config = Config::builder("/tmp/tidal-validate-unit")
            .signal_type("view", Duration::from_secs(60))
            .signal_type("like", Duration::from_secs(60))
            .build()
            .unwrap();
        Prepare::new(&config)
    }

    fn ops(p: &Prepare, b: WriteBatch) -> Result<Vec<Record>> {
        p.ops(b.ops, &b.names)
    }

    #[test]
    fn each_op_gets_its_own_types_id() {
        let (p, at) = (prepare(), Timestamp(1));
        let b = WriteBatch::new()
            .signal("like", EntityId(1), 1.0, at)
            .signal("view", EntityId(2), 2.0, at)
            .record_session_event(SessionId(3), EntityId(4), "like", -1.0, at);
        let records = ops(&p, b).unwrap();
        let types: Vec<u16> = records
            .iter()
            .map(|r| match r {
                Record::Signal { signal_type, .. } | Record::SessionEvent { signal_type, .. } => {
                    *signal_type
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(types, [1, 0, 1]);
    }

    #[test]
    fn the_first_bad_op_names_the_error() {
        let (p, at) = (prepare(), Timestamp(1));
        let unknown_second = WriteBatch::new()
            .signal("view", EntityId(1), f64::NAN, at)
            .signal("share", EntityId(2), 1.0, at);
        assert!(matches!(
            ops(&p, unknown_second),
            Err(TidalError::NonFinite {
                field: "weight",
                ..
            })
        ));
        let unknown_first = WriteBatch::new()
            .signal("view", EntityId(1), 1.0, at)
            .signal("share", EntityId(2), 1.0, at)
            .signal("view", EntityId(1), f64::NAN, at);
        assert!(matches!(
            ops(&p, unknown_first),
            Err(TidalError::UnknownSignalType { name }) if name == "share"
        ));
        let empty = WriteBatch::new()
            .signal("view", EntityId(1), 1.0, at)
            .record_session_event(SessionId(1), EntityId(2), "", 1.0, at);
        assert!(matches!(
            ops(&p, empty),
            Err(TidalError::Empty {
                field: "signal_type"
            })
        ));
    }
}
