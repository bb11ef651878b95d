//! The on-disk format of a batch: `BatchHeader` v2 and the record codec.
//!
//! One codec is used by the log, recovery and replication, so the checksum
//! computed before a write is the one verified after every read. A batch is
//! a 48-byte little-endian header followed by `payload_len` bytes holding
//! `record_count` records:
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | magic `b"TDB2"` | [u8; 4] |
//! | 4 | version = 2 | u16 |
//! | 6 | flags (0; unknown bits refused) | u16 |
//! | 8 | shard_id | u32 |
//! | 12 | record_count | u32 |
//! | 16 | first_seqno | u64 |
//! | 24 | epoch | u64 |
//! | 32 | hlc (commit time) | u64 |
//! | 40 | payload_len | u32 |
//! | 44 | crc32 over bytes 0..44 and the payload | u32 |
//!
//! Each record is a tag byte and its fields. The decoder never panics and
//! refuses anything that applying could not take (an unknown tag or kind, a
//! signal type out of range, a non-finite weight, an embedding of the wrong
//! dimension), because applying a logged record must never fail.

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::ContributionKey;
use crate::crdt::hlc::Hlc;
use crate::types::{
    EntityId, EntityKind, Epoch, NodeId, SeqNo, SessionId, ShardId, Timestamp, UserId,
};
use crate::wal::record::Record;

/// Length of a batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 48;

/// The magic that starts every batch (and lets recovery find one).
pub const BATCH_MAGIC: [u8; 4] = *b"TDB2";

/// The batch header version this code writes and reads.
pub const BATCH_VERSION: u16 = 2;

/// The smallest record on the wire (`DeleteUser`: a tag and a u64), used to
/// refuse counts that could not fit before allocating for them.
pub const MIN_RECORD_BYTES: usize = 9;

/// Length in bytes of an encoded `Signal` record, the hot record.
pub const SIGNAL_RECORD_BYTES: usize = 27;

const CRC_OFFSET: usize = 44;
const PAYLOAD_LEN_OFFSET: usize = 40;

const TAG_EPOCH_START: u8 = 1;
const TAG_SIGNAL: u8 = 2;
const TAG_UPSERT: u8 = 3;
const TAG_EMBEDDING: u8 = 4;
const TAG_DELETE: u8 = 5;
const TAG_OPEN_SESSION: u8 = 6;
const TAG_SESSION_EVENT: u8 = 7;
const TAG_CLOSE_SESSION: u8 = 8;
const TAG_DELETE_USER: u8 = 9;
/// Reconciliation merges; numbered apart from the user records.
const TAG_MERGE: u8 = 20;
const TAG_IDEMPOTENCY_KEY: u8 = 10;

/// The longest idempotency key the codec accepts, whatever the configured
/// limit (`Config::validate` keeps `Limits::max_idempotency_key_bytes`
/// at or below it), so a damaged length never drives a large allocation.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1024;

/// What a batch header says about its batch, besides its length and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// The shard whose log holds the batch.
    pub shard: ShardId,
    /// The SeqNo of the batch's first record; its records are numbered on from here.
    pub first_seqno: SeqNo,
    /// The epoch of the leader that logged the batch.
    pub epoch: Epoch,
    /// The leader's HLC at commit: the time part of every record's stamp.
    pub hlc: Hlc,
    /// How many records the batch holds (at least 1).
    pub record_count: u32,
}

impl BatchMeta {
    /// The SeqNo of the batch's last record (saturating, so a damaged header
    /// cannot overflow; decoded headers are checked not to).
    pub fn last_seqno(&self) -> SeqNo {
        SeqNo(
            self.first_seqno
                .0
                .saturating_add(u64::from(self.record_count.saturating_sub(1))),
        )
    }
}

/// What the decoder needs to refuse records that applying could not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Registered signal types; ids at or above this are refused.
    pub signal_type_count: u16,
    /// The database's embedding dimension; other lengths are refused.
    pub dimension: u32,
}

/// Appends one batch (header and payload) to `out`.
///
/// The header is reserved first, the records are encoded straight into
/// `out`, then the payload length and CRC are patched in, so nothing is
/// allocated per record beyond the growth of `out`. The header's record
/// count is `records.len()`, which callers keep equal to `meta.record_count`.
pub fn encode_batch(meta: &BatchMeta, records: &[Record], out: &mut Vec<u8>) {
    debug_assert_eq!(meta.record_count as usize, records.len());
    let start = out.len();
    // One reservation sized for signals, the common record, so a batch
    // of signals grows `out` once.
    out.reserve(BATCH_HEADER_LEN + records.len() * SIGNAL_RECORD_BYTES);
    out.extend_from_slice(&BATCH_MAGIC);
    out.put_u16(BATCH_VERSION);
    out.put_u16(0);
    out.put_u32(meta.shard.0);
    // Batches are bounded by `Config` limits far below u32::MAX records.
    out.put_u32(records.len() as u32);
    out.put_u64(meta.first_seqno.0);
    out.put_u64(meta.epoch.0);
    out.put_u64(meta.hlc.0);
    out.put_u32(0);
    out.put_u32(0);
    let payload_start = out.len();
    for r in records {
        encode_record(r, out);
    }
    // Payloads are bounded by `Config` batch limits far below 4 GiB.
    let payload_len = (out.len() - payload_start) as u32;
    out[start + PAYLOAD_LEN_OFFSET..start + PAYLOAD_LEN_OFFSET + 4]
        .copy_from_slice(&payload_len.to_le_bytes());
    let crc = batch_crc(&out[start..payload_start], &out[payload_start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a batch: bytes 0..44 of its header, then its payload.
fn batch_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..CRC_OFFSET.min(header.len())]);
    h.update(payload);
    h.finalize()
}

/// Decodes a batch header, returning its meta, payload length and CRC.
///
/// Refuses a short buffer, a bad magic, another version, any flag bit, a
/// batch of no records, a first SeqNo of 0, SeqNos that would overflow and
/// a payload too short for its record count. The CRC is checked separately
/// by [`verify_crc`] once the payload is read.
pub fn decode_header(bytes: &[u8]) -> Result<(BatchMeta, u32, u32), DecodeError> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4)?;
    if magic != BATCH_MAGIC {
        return Err(DecodeError {
            offset: 0,
            reason: format!("bad batch magic {magic:02x?}"),
        });
    }
    let version = r.u16()?;
    if version != BATCH_VERSION {
        return Err(DecodeError {
            offset: 4,
            reason: format!("unknown batch version {version}"),
        });
    }
    let flags = r.u16()?;
    if flags != 0 {
        return Err(DecodeError {
            offset: 6,
            reason: format!("unknown batch flags {flags:#06x}"),
        });
    }
    let shard = ShardId(r.u32()?);
    let record_count = r.u32()?;
    let first_seqno = SeqNo(r.u64()?);
    let epoch = Epoch(r.u64()?);
    let hlc = Hlc(r.u64()?);
    let payload_len = r.u32()?;
    let crc = r.u32()?;
    if record_count == 0 {
        return Err(DecodeError {
            offset: 12,
            reason: "batch holds no records".into(),
        });
    }
    if first_seqno.0 == 0
        || first_seqno
            .0
            .checked_add(u64::from(record_count) - 1)
            .is_none()
    {
        return Err(DecodeError {
            offset: 16,
            reason: format!("invalid first SeqNo {first_seqno} for {record_count} records"),
        });
    }
    if (payload_len as u64) < u64::from(record_count) * MIN_RECORD_BYTES as u64 {
        return Err(DecodeError {
            offset: 40,
            reason: format!("payload of {payload_len} bytes cannot hold {record_count} records"),
        });
    }
    let meta = BatchMeta {
        shard,
        first_seqno,
        epoch,
        hlc,
        record_count,
    };
    Ok((meta, payload_len, crc))
}

/// Whether the CRC stored in `header` matches the header's first 44 bytes
/// and `payload`. A header shorter than [`BATCH_HEADER_LEN`] never matches.
pub fn verify_crc(header: &[u8], payload: &[u8]) -> bool {
    if header.len() < BATCH_HEADER_LEN {
        return false;
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&header[CRC_OFFSET..CRC_OFFSET + 4]);
    u32::from_le_bytes(stored) == batch_crc(header, payload)
}

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
        Record::IdempotencyKey { key, digest } => {
            out.put_u8(TAG_IDEMPOTENCY_KEY);
            out.put_bytes(key);
            out.extend_from_slice(digest);
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
            Record::IdempotencyKey { key, digest }
        }
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

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
