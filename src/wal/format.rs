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
//! Each record is a tag byte and its fields (the record codec lives in
//! `record_codec.rs`).

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::types::{Epoch, SeqNo, ShardId};
use crate::wal::record::Record;

pub use super::record_codec::{decode_records, encode_record};

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

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
