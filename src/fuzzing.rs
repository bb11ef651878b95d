//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! test (`tests/fuzz_corpus_replays.rs`). **Not API**: hidden from the docs,
//! may change or go away at any time, and nothing else should call it.
//!
//! The decoders are crate-private, so each target is a thin function here
//! that feeds any bytes to one decoder and checks an oracle. A function
//! returns [`Outcome`] and panics **only** when the oracle is violated (or
//! when a decoder itself panics, which is the other bug being hunted):
//!
//! - [`batch`]: `decode_header`, `verify_crc`, `decode_records` as recovery
//!   chains them. A batch that decodes whole must re-encode
//!   (`encode_batch`) to exactly its bytes.
//! - [`records`]: `decode_records` under a fixed `Schema` (first input
//!   byte is the record count, the rest the payload). Decoded records must
//!   re-encode to exactly the payload and decode again to equal records; a
//!   refused payload must leave the output vector as it was.
//! - [`snapshot`]: `decode_snapshot`, then `State::decode_sections` with
//!   fixed `StateParams`. A snapshot that decodes must re-encode
//!   (`encode_snapshot`) to exactly its bytes; a state that decodes must
//!   re-encode to sections that decode again and re-encode to the same
//!   bytes (a fixpoint: the section decoders tolerate some non-canonical
//!   input, such as any non-zero byte for `true`, so byte equality with the
//!   input would be too strong).
//! - [`meta`]: `Meta::decode`; what decodes re-encodes to exactly its bytes.
//! - [`message`]: `Message::decode` (replication messages); what decodes
//!   re-encodes to exactly its bytes and decodes again to an equal message,
//!   and a `Batch` message's bytes go through [`batch`] as a follower's
//!   receiver would take them. The TCP frame layer
//!   (`replication/tcp/frame.rs`) parses frames inline in an async reader
//!   with no pure decode function, so it is not fuzzed here.
//!
//! Checksums would stop a mutation-based fuzzer at the first CRC, so the
//! CRC-framed decoders ([`batch`], [`snapshot`], [`meta`]) run twice per
//! input: once on the bytes as given (the CRC check itself is fuzzed) and
//! once on a copy whose CRCs were recomputed where the framing allows, so
//! the structure behind them is reached.
//!
//! `seeds()` builds the seed corpus with the real encoders.

use crate::crdt::ContributionKey;
use crate::crdt::hlc::Hlc;
use crate::meta::Meta;
use crate::replication::message::{Message, PROTOCOL_VERSION, RefuseReason};
use crate::snapshot::{Section, SnapshotHeader, decode_snapshot, encode_snapshot};
use crate::state::{State, StateParams};
use crate::types::{
    EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, SessionId, ShardId, Timestamp, UserId,
};
use crate::wal::format::{
    BATCH_HEADER_LEN, BatchMeta, Schema, decode_header, decode_records, encode_batch,
    encode_record, verify_crc,
};
use crate::wal::record::Record;

/// What a fuzz entry point made of its input.
/// Ordered from least to most decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The decoder refused the input with an error (the expected fate of
    /// most fuzz inputs).
    Refused,
    /// The outer framing decoded and round-tripped, its content was refused
    /// (a snapshot whose state sections do not decode).
    Framed,
    /// The input decoded and the round-trip oracle held.
    Decoded,
}

/// The schema the batch and record targets decode under (and the seeds are
/// written with): three signal types, embeddings of dimension 4.
const SCHEMA: Schema = Schema {
    signal_type_count: 3,
    dimension: 4,
};

/// The state parameters the snapshot target decodes sections with,
/// matching [`SCHEMA`].
fn state_params() -> StateParams {
    StateParams {
        half_lives_ms: vec![3_600_000, 86_400_000, 60_000],
        landmark_half_lives: 64,
        score_floor: 0.0,
        session_retention_ms: 7 * 24 * 3_600_000,
        dimension: SCHEMA.dimension as usize,
        idempotency_ttl_ms: 24 * 3_600_000,
        vector_index: Default::default(),
    }
}

/// Batch target: header, CRC and records, on the bytes as given and with
/// the CRC recomputed.
pub fn batch(bytes: &[u8]) -> Outcome {
    let raw = batch_once(bytes);
    let mut fixed = bytes.to_vec();
    fix_batch_crc(&mut fixed);
    let with_fixed_crc = batch_once(&fixed);
    raw.max(with_fixed_crc)
}

fn batch_once(bytes: &[u8]) -> Outcome {
    let Ok((meta, payload_len, _crc)) = decode_header(bytes) else {
        return Outcome::Refused;
    };
    assert!(
        meta.record_count >= 1
            && meta.first_seqno.0 >= 1
            && meta
                .first_seqno
                .0
                .checked_add(u64::from(meta.record_count) - 1)
                .is_some(),
        "decode_header accepted an invalid header: {meta:?}"
    );
    let end = BATCH_HEADER_LEN.saturating_add(payload_len as usize);
    let Some(framed) = bytes.get(..end) else {
        return Outcome::Refused;
    };
    let (header, payload) = framed.split_at(BATCH_HEADER_LEN);
    if !verify_crc(header, payload) {
        return Outcome::Refused;
    }
    let mut records = Vec::new();
    if decode_records(payload, meta.record_count, &SCHEMA, &mut records).is_err() {
        assert!(records.is_empty(), "a refused batch left records behind");
        return Outcome::Refused;
    }
    assert_eq!(records.len(), meta.record_count as usize, "record count");
    let mut again = Vec::new();
    encode_batch(&meta, &records, &mut again);
    assert!(
        again == framed,
        "batch re-encodes differently:\n in:  {framed:02x?}\n out: {again:02x?}"
    );
    Outcome::Decoded
}

/// Recomputes a batch's CRC over bytes 0..44 and as much of the payload
/// as its header's `payload_len` claims and the input holds.
fn fix_batch_crc(b: &mut [u8]) {
    if b.len() < BATCH_HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes([b[40], b[41], b[42], b[43]]) as usize;
    let end = BATCH_HEADER_LEN.saturating_add(len).min(b.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..44]);
    h.update(&b[BATCH_HEADER_LEN..end]);
    let crc = h.finalize();
    b[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// Record target: the first byte is the record count, the rest the payload.
pub fn records(bytes: &[u8]) -> Outcome {
    let Some((&count, payload)) = bytes.split_first() else {
        return Outcome::Refused;
    };
    // A record already in the vector: a refused payload must leave it so.
    let sentinel = Record::DeleteUser { user: UserId(7) };
    let mut out = vec![sentinel.clone()];
    if decode_records(payload, u32::from(count), &SCHEMA, &mut out).is_err() {
        assert_eq!(out, [sentinel], "a refused payload changed the output");
        return Outcome::Refused;
    }
    assert_eq!(
        out.first(),
        Some(&sentinel),
        "decode dropped what was there"
    );
    let decoded = &out[1..];
    assert_eq!(decoded.len(), usize::from(count), "record count");
    let mut again = Vec::new();
    for r in decoded {
        encode_record(r, &mut again);
    }
    assert!(
        again == payload,
        "records re-encode differently:\n in:  {payload:02x?}\n out: {again:02x?}"
    );
    let mut twice = Vec::new();
    let redecoded = decode_records(&again, u32::from(count), &SCHEMA, &mut twice);
    assert!(
        redecoded.is_ok(),
        "re-encoded records refused: {redecoded:?}"
    );
    assert_eq!(twice, decoded, "records decode differently the second time");
    Outcome::Decoded
}

/// Snapshot target: the file framing, then the state sections, on the
/// bytes as given and with every CRC recomputed.
pub fn snapshot(bytes: &[u8]) -> Outcome {
    let raw = snapshot_once(bytes);
    let mut fixed = bytes.to_vec();
    fix_snapshot_crcs(&mut fixed);
    let with_fixed_crcs = snapshot_once(&fixed);
    raw.max(with_fixed_crcs)
}

fn snapshot_once(bytes: &[u8]) -> Outcome {
    let Ok((header, sections)) = decode_snapshot(bytes) else {
        return Outcome::Refused;
    };
    let again = encode_snapshot(&header, &sections);
    assert!(again == bytes, "snapshot re-encodes differently");
    let parts: Vec<(u16, u16, &[u8])> = sections
        .iter()
        .map(|s| (s.id, s.version, s.bytes.as_slice()))
        .collect();
    let Ok(state) = State::decode_sections(state_params(), &parts) else {
        return Outcome::Framed;
    };
    let first = state.encode_sections();
    let parts: Vec<(u16, u16, &[u8])> = first
        .iter()
        .map(|(id, v, b)| (*id, *v, b.as_slice()))
        .collect();
    let state2 = match State::decode_sections(state_params(), &parts) {
        Ok(s) => s,
        Err((id, e)) => panic!("re-encoded state refused in section {id}: {e}"),
    };
    let second = state2.encode_sections();
    assert!(
        first == second,
        "state re-encodes differently after a second decode"
    );
    Outcome::Decoded
}

/// Recomputes the header CRC, each section CRC the framing reaches, and
/// the file CRC.
fn fix_snapshot_crcs(b: &mut [u8]) {
    let Some(body_len) = b.len().checked_sub(4) else {
        return;
    };
    let (body, tail) = b.split_at_mut(body_len);
    if body.len() >= 44 {
        let crc = crc32fast::hash(&body[..40]);
        body[40..44].copy_from_slice(&crc.to_le_bytes());
        let count = u32::from_le_bytes([body[36], body[37], body[38], body[39]]);
        let mut pos = 44usize;
        for _ in 0..count {
            let Some(len_bytes) = body.get(pos + 4..pos + 12) else {
                break;
            };
            let mut l = [0u8; 8];
            l.copy_from_slice(len_bytes);
            let Some(end) = usize::try_from(u64::from_le_bytes(l))
                .ok()
                .and_then(|len| (pos + 12).checked_add(len))
                .filter(|&end| end.saturating_add(4) <= body.len())
            else {
                break;
            };
            let crc = crc32fast::hash(&body[pos..end]);
            body[end..end + 4].copy_from_slice(&crc.to_le_bytes());
            pos = end + 4;
        }
    }
    tail.copy_from_slice(&crc32fast::hash(body).to_le_bytes());
}

/// META target: on the bytes as given and with the CRC recomputed.
pub fn meta(bytes: &[u8]) -> Outcome {
    let raw = meta_once(bytes);
    let mut fixed = bytes.to_vec();
    if let Some(body_len) = fixed.len().checked_sub(4) {
        let crc = crc32fast::hash(&fixed[..body_len]);
        fixed[body_len..].copy_from_slice(&crc.to_le_bytes());
    }
    raw.max(meta_once(&fixed))
}

fn meta_once(bytes: &[u8]) -> Outcome {
    let Ok(m) = Meta::decode(bytes) else {
        return Outcome::Refused;
    };
    let again = m.encode();
    assert!(
        again == bytes,
        "META re-encodes differently:\n in:  {bytes:02x?}\n out: {again:02x?}"
    );
    let _ = m.fingerprint();
    Outcome::Decoded
}

/// Replication message target.
pub fn message(bytes: &[u8]) -> Outcome {
    let Ok(m) = Message::decode(bytes) else {
        return Outcome::Refused;
    };
    let again = m.encode();
    assert!(
        again.as_ref() == bytes,
        "message re-encodes differently:\n in:  {bytes:02x?}\n out: {again:02x?}"
    );
    assert_eq!(Message::decode(&again).as_ref(), Ok(&m), "second decode");
    if let Message::Batch { bytes, .. } = &m {
        batch(bytes);
    }
    Outcome::Decoded
}

#[path = "fuzzing_seeds.rs"]
mod seeds;
pub use seeds::seeds;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_decodes_under_its_target() {
        for (target, name, bytes) in seeds() {
            let outcome = run(target, &bytes);
            assert_eq!(outcome, Outcome::Decoded, "{target}/{name}");
        }
    }

    #[test]
    fn damaged_seeds_are_refused_not_decoded_wrongly() {
        let mut b = Vec::new();
        let recs = &seeds::record_groups()[0];
        let meta = BatchMeta {
            shard: ShardId(0),
            first_seqno: SeqNo(1),
            epoch: Epoch(1),
            hlc: Hlc(1),
            record_count: recs.len() as u32,
        };
        encode_batch(&meta, recs, &mut b);
        // A bad CRC alone is refused raw, and the CRC fix-up recovers it.
        b[44] ^= 1;
        assert_eq!(batch_once(&b), Outcome::Refused);
        assert_eq!(batch(&b), Outcome::Decoded);
        // An unknown record tag is refused even with a good CRC.
        b[BATCH_HEADER_LEN] = 99;
        assert_eq!(batch(&b), Outcome::Refused);
    }

    /// Dispatches by target name, as the replay test does.
    fn run(target: &str, bytes: &[u8]) -> Outcome {
        match target {
            "batch" => batch(bytes),
            "records" => records(bytes),
            "snapshot" => snapshot(bytes),
            "meta" => meta(bytes),
            "message" => message(bytes),
            other => panic!("unknown target {other}"),
        }
    }
}
