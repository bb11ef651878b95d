//! The record codec: each record is a tag byte and its fields (see
//! [`format`](super::format) for the batch around them).
//!
//! The decoder never panics and refuses anything that applying could not
//! take (an unknown tag or kind, a signal type out of range, a non-finite
//! weight, an embedding of the wrong dimension), because applying a logged
//! record must never fail.

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::ContributionKey;
use crate::crdt::hlc::Hlc;
use crate::state::entities::Stamp;
use crate::types::{
    EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, SessionId, Timestamp, UserId,
};
use crate::wal::format::{MAX_IDEMPOTENCY_KEY_BYTES, MIN_RECORD_BYTES, Schema};
use crate::wal::record::Record;

const TAG_EPOCH_START: u8 = 1;
pub(super) const TAG_SIGNAL: u8 = 2;
pub(super) const TAG_UPSERT: u8 = 3;
const TAG_EMBEDDING: u8 = 4;
const TAG_DELETE: u8 = 5;
const TAG_OPEN_SESSION: u8 = 6;
const TAG_SESSION_EVENT: u8 = 7;
const TAG_CLOSE_SESSION: u8 = 8;
const TAG_DELETE_USER: u8 = 9;
/// Reconciliation merges; numbered apart from the user records.
const TAG_MERGE: u8 = 20;
pub(super) const TAG_IDEMPOTENCY_KEY: u8 = 10;
pub(super) const TAG_RECONCILED: u8 = 21;
const TAG_MERGED_SESSION_EVENT: u8 = 22;

/// Appends one record: its tag byte, then its fields.
pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    match r {
        Record::EpochStart {
            epoch,
            leader_node,
            hlc,
            replicated,
        } => {
            out.put_u8(TAG_EPOCH_START);
            out.put_u64(epoch.0);
            out.put_u64(leader_node.0);
            out.put_u64(hlc.0);
            out.put_u8(u8::from(*replicated));
        }
        Record::Signal {
            signal_type,
            entity,
            weight,
            at,
        } => {
            out.put_u8(TAG_SIGNAL);
            out.put_u16(*signal_type);
            out.put_u64(entity.0);
            out.put_f64(*weight);
            out.put_u64(at.0);
        }
        Record::Upsert {
            kind,
            id,
            creator,
            fields,
        } => {
            out.put_u8(TAG_UPSERT);
            out.put_u8(kind.to_byte());
            out.put_u64(id.0);
            match creator {
                Some(c) => {
                    out.put_u8(1);
                    out.put_u64(c.0);
                }
                None => out.put_u8(0),
            }
            // Field counts are bounded by `Config::max_metadata_fields`.
            out.put_u32(fields.len() as u32);
            for (k, v) in fields {
                out.put_str(k);
                out.put_str(v);
            }
        }
        Record::Embedding { kind, id, vector } => {
            out.put_u8(TAG_EMBEDDING);
            out.put_u8(kind.to_byte());
            out.put_u64(id.0);
            // The dimension is a u32 in `Schema`.
            out.put_u32(vector.len() as u32);
            for x in vector {
                out.put_f32(*x);
            }
        }
        Record::Delete { kind, id } => {
            out.put_u8(TAG_DELETE);
            out.put_u8(kind.to_byte());
            out.put_u64(id.0);
        }
        Record::OpenSession { session, user, at } => {
            out.put_u8(TAG_OPEN_SESSION);
            out.put_u64(session.0);
            out.put_u64(user.0);
            out.put_u64(at.0);
        }
        Record::SessionEvent {
            session,
            seq,
            entity,
            signal_type,
            weight,
            at,
            apply_signal,
        } => {
            out.put_u8(TAG_SESSION_EVENT);
            out.put_u64(session.0);
            out.put_u32(*seq);
            out.put_u64(entity.0);
            out.put_u16(*signal_type);
            out.put_f64(*weight);
            out.put_u64(at.0);
            out.put_u8(u8::from(*apply_signal));
        }
        Record::CloseSession { session, at } => {
            out.put_u8(TAG_CLOSE_SESSION);
            out.put_u64(session.0);
            out.put_u64(at.0);
        }
        Record::DeleteUser { user } => {
            out.put_u8(TAG_DELETE_USER);
            out.put_u64(user.0);
        }
        Record::IdempotencyKey {
            key,
            digest,
            span,
            merged,
        } => {
            out.put_u8(TAG_IDEMPOTENCY_KEY);
            out.put_bytes(key);
            out.extend_from_slice(digest);
            out.put_u32(*span);
            out.put_u8(u8::from(*merged));
        }
        Record::Reconciled { stamp, record } => {
            out.put_u8(TAG_RECONCILED);
            out.put_u64(stamp.hlc.0);
            out.put_u64(stamp.node.0);
            out.put_u64(stamp.seqno.0);
            encode_record(record, out);
        }
        Record::MergedSessionEvent {
            session,
            entity,
            signal_type,
            weight,
            at,
            origin,
        } => {
            out.put_u8(TAG_MERGED_SESSION_EVENT);
            out.put_u64(session.0);
            out.put_u64(entity.0);
            out.put_u16(*signal_type);
            out.put_f64(*weight);
            out.put_u64(at.0);
            out.put_u64(origin.epoch.0);
            out.put_u64(origin.seqno.0);
        }
        Record::Merge {
            signal_type,
            entity,
            key,
            landmark_ms,
            positive_mass,
            negative_mass,
            positive_count,
            negative_count,
        } => {
            out.put_u8(TAG_MERGE);
            out.put_u16(*signal_type);
            out.put_u64(entity.0);
            out.put_u64(key.epoch.0);
            out.put_u64(key.node.0);
            out.put_u64(*landmark_ms);
            out.put_f64(*positive_mass);
            out.put_f64(*negative_mass);
            out.put_u64(*positive_count);
            out.put_u64(*negative_count);
        }
    }
}

/// Decodes exactly `count` records from `payload`, appending them to `out`.
///
/// Every byte must be consumed: trailing bytes are refused. On error `out`
/// is left as it was (nothing of a bad batch is ever applied) and the error
/// carries the offset within `payload`.
pub fn decode_records(
    payload: &[u8],
    count: u32,
    schema: &Schema,
    out: &mut Vec<Record>,
) -> Result<(), DecodeError> {
    let before = out.len();
    let result = decode_records_inner(payload, count, schema, out);
    if result.is_err() {
        out.truncate(before);
    }
    result
}

fn decode_records_inner(
    payload: &[u8],
    count: u32,
    schema: &Schema,
    out: &mut Vec<Record>,
) -> Result<(), DecodeError> {
    let n = count as usize;
    if n.saturating_mul(MIN_RECORD_BYTES) > payload.len() {
        return Err(DecodeError {
            offset: 0,
            reason: format!(
                "{count} records cannot fit in a payload of {} bytes",
                payload.len()
            ),
        });
    }
    out.reserve(n);
    let mut r = Reader::new(payload);
    for _ in 0..n {
        out.push(decode_record(&mut r, schema)?);
    }
    if !r.is_empty() {
        return Err(r.error(format!(
            "{} trailing bytes after {count} records",
            r.remaining()
        )));
    }
    Ok(())
}

fn decode_record(r: &mut Reader<'_>, schema: &Schema) -> Result<Record, DecodeError> {
    let at = r.position();
    let tag = r.u8()?;
    let record = match tag {
        TAG_EPOCH_START => Record::EpochStart {
            epoch: Epoch(r.u64()?),
            leader_node: NodeId(r.u64()?),
            hlc: Hlc(r.u64()?),
            replicated: bool_byte(r)?,
        },
        TAG_SIGNAL => Record::Signal {
            signal_type: signal_type(r, schema)?,
            entity: EntityId(r.u64()?),
            weight: finite(r)?,
            at: Timestamp(r.u64()?),
        },
        TAG_UPSERT => {
            let kind = kind(r)?;
            let id = EntityId(r.u64()?);
            let creator = match r.u8()? {
                0 => None,
                1 => Some(EntityId(r.u64()?)),
                b => return Err(back(r, 1, format!("bad creator flag {b}"))),
            };
            // Each field is at least two u32 lengths.
            let n = r.count(8)?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.str()?.to_owned();
                let v = r.str()?.to_owned();
                fields.push((k, v));
            }
            Record::Upsert {
                kind,
                id,
                creator,
                fields,
            }
        }
        TAG_EMBEDDING => {
            let kind = kind(r)?;
            let id = EntityId(r.u64()?);
            let len_at = r.position();
            let n = r.count(4)?;
            if n != schema.dimension as usize {
                return Err(DecodeError {
                    offset: len_at,
                    reason: format!(
                        "embedding has dimension {n}, the database's is {}",
                        schema.dimension
                    ),
                });
            }
            let mut vector = Vec::with_capacity(n);
            for _ in 0..n {
                let x = r.f32()?;
                if !x.is_finite() {
                    return Err(back(r, 4, "embedding component is not finite"));
                }
                vector.push(x);
            }
            Record::Embedding { kind, id, vector }
        }
        TAG_DELETE => Record::Delete {
            kind: kind(r)?,
            id: EntityId(r.u64()?),
        },
        TAG_OPEN_SESSION => Record::OpenSession {
            session: SessionId(r.u64()?),
            user: UserId(r.u64()?),
            at: Timestamp(r.u64()?),
        },
        TAG_SESSION_EVENT => Record::SessionEvent {
            session: SessionId(r.u64()?),
            seq: r.u32()?,
            entity: EntityId(r.u64()?),
            signal_type: signal_type(r, schema)?,
            weight: finite(r)?,
            at: Timestamp(r.u64()?),
            apply_signal: bool_byte(r)?,
        },
        TAG_CLOSE_SESSION => Record::CloseSession {
            session: SessionId(r.u64()?),
            at: Timestamp(r.u64()?),
        },
        TAG_DELETE_USER => Record::DeleteUser {
            user: UserId(r.u64()?),
        },
        TAG_MERGE => Record::Merge {
            signal_type: signal_type(r, schema)?,
            entity: EntityId(r.u64()?),
            key: ContributionKey {
                epoch: Epoch(r.u64()?),
                node: NodeId(r.u64()?),
            },
            landmark_ms: r.u64()?,
            positive_mass: mass(r)?,
            negative_mass: mass(r)?,
            positive_count: r.u64()?,
            negative_count: r.u64()?,
        },
        TAG_IDEMPOTENCY_KEY => {
            let key = idempotency_key(r)?.to_vec();
            let mut digest = [0u8; 16];
            digest.copy_from_slice(r.take(16)?);
            Record::IdempotencyKey {
                key,
                digest,
                span: r.u32()?,
                merged: bool_byte(r)?,
            }
        }
        TAG_RECONCILED => {
            let stamp = Stamp {
                hlc: Hlc(r.u64()?),
                node: NodeId(r.u64()?),
                seqno: SeqNo(r.u64()?),
            };
            let inner_at = r.position();
            // One level only: the inner record is a register write.
            let record = match r.peek_u8()? {
                TAG_UPSERT | TAG_EMBEDDING | TAG_DELETE => decode_record(r, schema)?,
                other => {
                    return Err(DecodeError {
                        offset: inner_at,
                        reason: format!("record tag {other} cannot be reconciled"),
                    });
                }
            };
            Record::Reconciled {
                stamp,
                record: Box::new(record),
            }
        }
        TAG_MERGED_SESSION_EVENT => Record::MergedSessionEvent {
            session: SessionId(r.u64()?),
            entity: EntityId(r.u64()?),
            signal_type: signal_type(r, schema)?,
            weight: finite(r)?,
            at: Timestamp(r.u64()?),
            origin: Position::new(Epoch(r.u64()?), SeqNo(r.u64()?)),
        },
        other => {
            return Err(DecodeError {
                offset: at,
                reason: format!("unknown record tag {other}"),
            });
        }
    };
    Ok(record)
}

/// An error about the value that ended `width` bytes before the cursor.
fn back(r: &Reader<'_>, width: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        offset: r.position().saturating_sub(width),
        reason: reason.into(),
    }
}

/// An idempotency key: a u32 length (1 to [`MAX_IDEMPOTENCY_KEY_BYTES`])
/// and the bytes, checked before anything is taken.
fn idempotency_key<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let at = r.position();
    let n = r.u32()? as usize;
    if n == 0 || n > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(DecodeError {
            offset: at,
            reason: format!(
                "idempotency key of {n} bytes (1 to {MAX_IDEMPOTENCY_KEY_BYTES} allowed)"
            ),
        });
    }
    r.take(n)
}

fn bool_byte(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(back(r, 1, format!("bad boolean byte {b}"))),
    }
}

fn kind(r: &mut Reader<'_>) -> Result<EntityKind, DecodeError> {
    let b = r.u8()?;
    EntityKind::from_byte(b).ok_or_else(|| back(r, 1, format!("unknown entity kind {b}")))
}

fn signal_type(r: &mut Reader<'_>, schema: &Schema) -> Result<u16, DecodeError> {
    let t = r.u16()?;
    if t >= schema.signal_type_count {
        return Err(back(
            r,
            2,
            format!(
                "signal type id {t} is not registered ({} types)",
                schema.signal_type_count
            ),
        ));
    }
    Ok(t)
}

/// A merged mass: finite and not negative.
fn mass(r: &mut Reader<'_>) -> Result<f64, DecodeError> {
    let m = r.f64()?;
    if !(m.is_finite() && m >= 0.0) {
        return Err(back(r, 8, format!("mass {m} is not finite and >= 0")));
    }
    Ok(m)
}

fn finite(r: &mut Reader<'_>) -> Result<f64, DecodeError> {
    let w = r.f64()?;
    if !w.is_finite() {
        return Err(back(r, 8, format!("weight {w} is not finite")));
    }
    Ok(w)
}
