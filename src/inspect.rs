//! Read-only verification of a data directory: the API behind
//! `examples/inspect.rs` (a `pg_waldump` for TidalDb).
//!
//! [`inspect_dir`] walks `META`, every shard's log segments and snapshots
//! and the suffixes kept in `diverged/`, through the decoders the database
//! itself uses (segment header, `BatchHeader` v2 and its CRC, the record
//! codec, the snapshot framing and its sections, `META`): there is no
//! second decoder here to drift from the first. It returns a [`DirReport`]
//! listing what it found and every [`Damage`] (file, offset, what).
//!
//! ```
//! use std::time::Duration;
//! use tidal::inspect::{InspectOptions, inspect_dir};
//! use tidal::{Config, EntityId, TidalDb, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let db = TidalDb::open(
//!     Config::builder(dir.path())
//!         .signal_type("like", Duration::from_secs(3_600))
//!         .build()?,
//! )?;
//! let last = db.signal("like", EntityId(1), 1.0, Timestamp::now())?;
//! db.close()?;
//!
//! let report = inspect_dir(dir.path(), InspectOptions::default());
//! assert!(report.is_clean(), "{:?}", report.damage);
//! assert_eq!(report.shards[0].last, Some(last));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Decisions:
//!
//! - **Read-only.** Files are opened with [`OpenMode::Read`]; nothing is
//!   created, renamed, cut or synced, and `LOCK` is not taken, so a
//!   directory can be inspected while a database has it open. A live
//!   directory changes under the walk, though: what a writer is appending
//!   may show as a torn tail, and a segment a checkpoint deletes meanwhile
//!   as a file that cannot be read. Inspect a stopped database for a
//!   verdict.
//! - **Judged as recovery judges.** A bad or cut batch in the last segment
//!   of a shard with no valid batch after it is a [`TornTail`] (recovery
//!   cuts it and reports `CutKind::TornTail`), not damage. Anything recovery
//!   would refuse under `Durability::Sync` is damage: a valid batch after a
//!   bad one, damage in an earlier segment, SeqNo gaps above the newest
//!   valid snapshot, a CRC-valid batch whose records do not decode. (Under
//!   `Periodic`, recovery cuts media damage in the last segment instead.)
//!   A damaged snapshot is damage even though recovery falls back to the
//!   previous one: the file is bad and an operator should know.
//! - **Offsets** are byte offsets in the named file: a batch's damage is
//!   reported at the batch's first byte, as recovery's `Corruption` names
//!   it; a snapshot whose whole-file CRC fails is checked again with that
//!   CRC set aside, so the header or section CRC that fails names where.
//! - **After damage** the walk goes on from the next valid batch, so one
//!   run lists every damaged place, not only the first.
//! - **Replication positions** (follower acknowledgements, the HWM) are
//!   kept in memory by this build, never on disk; the report gives each
//!   shard's last logged [`Position`], which is what a follower announces
//!   when it connects.

use std::path::{Path, PathBuf};

use crate::crdt::hlc::Hlc;
use crate::db::core::repl::{EPOCH_FILE, load_seen_epoch};
use crate::meta::{META_FILE_NAME, Meta};
use crate::snapshot::{self, decode_snapshot};
use crate::state::{State, StateParams};
use crate::storage::{OpenMode, RealStorage, Storage};
use crate::types::{Epoch, NodeId, Position, SeqNo, ShardId};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, Schema, decode_header, verify_crc};
use crate::wal::record::Record;

#[path = "inspect_walk.rs"]
mod walk;

/// What to keep besides the verification: batch listings cost memory in
/// proportion to the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectOptions {
    /// Keep a [`BatchReport`] for every batch (segments and `diverged/`).
    pub batches: bool,
    /// Also render every batch's decoded records (implies `batches`).
    pub records: bool,
}

/// Everything found in a data directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirReport {
    /// The directory inspected.
    pub dir: PathBuf,
    /// `META`, if present and intact.
    pub meta: Option<MetaReport>,
    /// One entry per shard directory under `wal/` or `snapshots/`.
    pub shards: Vec<ShardReport>,
    /// The suffixes kept in `diverged/` after divergence cuts.
    pub diverged: Vec<DivergedReport>,
    /// The epoch history: the newest valid snapshot's, then the log's
    /// `EpochStart` records above it.
    pub epochs: Vec<EpochReport>,
    /// Files the database does not read (temporary files, `*.damaged`
    /// evidence, the pre-allocated spare segment, `LOCK`).
    pub other_files: Vec<PathBuf>,
    /// The highest epoch this node has seen, from `EPOCH` (absent until a
    /// replication peer told it of a higher epoch than its log holds).
    pub highest_epoch_seen: Option<Epoch>,
    /// Torn tails: what recovery would cut and report, not damage.
    pub torn_tails: Vec<TornTail>,
    /// Damage: what recovery would refuse, or a file that fails its checks.
    pub damage: Vec<Damage>,
    /// Observations that are neither (a gap below the snapshot, ...).
    pub notes: Vec<String>,
}

impl DirReport {
    /// Whether no damage was found (a torn tail is not damage).
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    fn damage(&mut self, file: &Path, offset: u64, what: impl Into<String>) {
        self.damage.push(Damage {
            file: file.to_path_buf(),
            offset,
            what: what.into(),
        });
    }
}

/// A damaged place: the file, the byte offset in it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset in the file (a batch's first byte for batch damage).
    pub offset: u64,
    /// What was found.
    pub what: String,
}

/// A bad or cut batch at the end of a shard's last segment with nothing
/// valid after it: the write in flight when the node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the complete batches end (recovery cuts from here).
    pub offset: u64,
    /// What the bytes there look like.
    pub what: String,
}

/// The decoded fields of `META`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaReport {
    /// The `META` format version.
    pub format_version: u16,
    /// The node owning the directory.
    pub node_id: NodeId,
    /// The shard it holds.
    pub shard_id: ShardId,
    /// How many shards the entity space is split into.
    pub shard_count: u32,
    /// Signal types in id order with their half-lives in milliseconds.
    pub signal_types: Vec<(String, u64)>,
    /// The embedding dimension.
    pub dimension: u32,
    /// Half-lives between landmark moves.
    pub landmark_half_lives: u32,
    /// Decayed magnitude below which entries are dropped.
    pub score_floor: f64,
    /// Retention of closed sessions in log time, in milliseconds.
    pub session_retention_ms: u64,
    /// How long idempotency keys are kept in log time, in milliseconds
    /// (24 h for a format 1 `META`).
    pub idempotency_ttl_ms: u64,
    /// The vector index's `min_vectors` (the default for a format 1 or 2
    /// `META`).
    pub vector_min_vectors: u64,
    /// The replicated identity a follower must share with its leader.
    pub fingerprint: u64,
}

/// One shard's log and snapshots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardReport {
    /// The shard.
    pub shard: ShardId,
    /// Its segments in SeqNo order.
    pub segments: Vec<SegmentReport>,
    /// Its snapshots, newest first.
    pub snapshots: Vec<SnapshotReport>,
    /// The last valid batch's last record, if the log holds any.
    pub last: Option<Position>,
}

/// One log segment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentReport {
    /// The file.
    pub file: PathBuf,
    /// The first SeqNo its name gives.
    pub first_seqno: SeqNo,
    /// The file's size (pre-allocated zeros included).
    pub size_bytes: u64,
    /// Where its valid batches end.
    pub end_offset: u64,
    /// How many valid batches it holds.
    pub batch_count: u64,
    /// How many records they hold.
    pub record_count: u64,
    /// The last valid batch's last record.
    pub last: Option<Position>,
    /// Its batches, if [`InspectOptions::batches`] asked for them.
    pub batches: Vec<BatchReport>,
}

/// One batch, as its header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchReport {
    /// Byte offset of the batch in its file.
    pub offset: u64,
    /// The SeqNo of its first record.
    pub first_seqno: SeqNo,
    /// The SeqNo of its last record.
    pub last_seqno: SeqNo,
    /// The epoch of the leader that logged it.
    pub epoch: Epoch,
    /// The leader's HLC at commit.
    pub hlc: Hlc,
    /// How many records it holds.
    pub record_count: u32,
    /// Its payload length in bytes (the header is 48 more).
    pub payload_bytes: u32,
    /// Its records, `(SeqNo, rendering)`, if [`InspectOptions::records`].
    pub records: Vec<(SeqNo, String)>,
}

/// One snapshot file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotReport {
    /// The file.
    pub file: PathBuf,
    /// The last SeqNo its name says it includes.
    pub seqno: SeqNo,
    /// The file's size.
    pub size_bytes: u64,
    /// Its header's epoch, if it decoded.
    pub epoch: Option<Epoch>,
    /// The HLC of its last record, if it decoded.
    pub hlc: Option<Hlc>,
    /// Its sections `(id, version, payload bytes)`, if it decoded.
    pub sections: Vec<(u16, u16, u64)>,
    /// Whether every CRC held and every known section decoded (the
    /// sections are decoded only when `META` gives the parameters).
    pub ok: bool,
}

/// One suffix kept in `diverged/`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DivergedReport {
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub size_bytes: u64,
    /// The SeqNo of its first record.
    pub first_seqno: Option<SeqNo>,
    /// The SeqNo of its last record.
    pub last_seqno: Option<SeqNo>,
    /// The epoch of its first batch.
    pub epoch: Option<Epoch>,
    /// Whether a reconciliation merged it (its name ends in `.merged`).
    pub merged: bool,
    /// How many valid batches it holds.
    pub batch_count: u64,
    /// How many records they hold.
    pub record_count: u64,
    /// Its batches, if [`InspectOptions::batches`] asked for them.
    pub batches: Vec<BatchReport>,
}

/// One epoch of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: Epoch,
    /// The SeqNo of its `EpochStart` record.
    pub start: SeqNo,
    /// The node that led it.
    pub leader_node: NodeId,
    /// Led by a replicating leader (`true`) or a Single node.
    pub replicated: bool,
    /// Where it was found: a snapshot file or a segment file.
    pub source: PathBuf,
}

/// Inspects the data directory `dir` on the real file system.
pub fn inspect_dir(dir: &Path, options: InspectOptions) -> DirReport {
    inspect_with(&RealStorage, dir, options)
}

/// Inspects `dir` through `storage` (tests pass a `SimStorage`). Never
/// writes; never panics on file contents. A file that cannot be read is
/// reported as damage at offset 0 with the I/O error.
pub fn inspect_with(storage: &dyn Storage, dir: &Path, options: InspectOptions) -> DirReport {
    let mut report = DirReport {
        dir: dir.to_path_buf(),
        ..DirReport::default()
    };
    let meta = read_meta(storage, dir, &mut report);
    let schema = meta.as_ref().map(|m| Schema {
        signal_type_count: u16::try_from(m.signal_types.len()).unwrap_or(u16::MAX),
        dimension: m.dimension,
    });
    if meta.is_none() && storage.exists(&dir.join(META_FILE_NAME)) {
        report
            .notes
            .push("META is unreadable: records and snapshot sections are not decoded".into());
    }
    let params = meta.as_ref().map(|m| StateParams {
        half_lives_ms: m.signal_types.iter().map(|t| t.1).collect(),
        landmark_half_lives: m.landmark_half_lives,
        score_floor: m.score_floor,
        session_retention_ms: m.session_retention_ms,
        dimension: m.dimension as usize,
        idempotency_ttl_ms: m.idempotency_ttl_ms,
        // Probes are not pinned (a read option); decoding needs neither.
        vector_index: crate::config::VectorIndex {
            min_vectors: m.vector_min_vectors,
            ..Default::default()
        },
    });
    let mut shards = shard_dirs(storage, dir, &mut report);
    if let Some(m) = &meta {
        if !shards.contains(&m.shard_id) && !shards.is_empty() {
            report.notes.push(format!(
                "META names shard {}, but the directory holds only other shards' files",
                m.shard_id
            ));
        }
        if shards.is_empty() {
            shards.push(m.shard_id);
        }
    }
    let mut walker = walk::Walker {
        storage,
        options,
        schema,
        report: &mut report,
        buf: Vec::new(),
        epochs: Vec::new(),
    };
    for shard in shards {
        let mut s = ShardReport {
            shard,
            ..ShardReport::default()
        };
        let newest = walker.snapshots(dir, shard, params.as_ref(), &mut s);
        walker.segments(dir, shard, newest, &mut s);
        walker.report.shards.push(s);
    }
    walker.diverged(&dir.join("diverged"));
    let mut epochs = std::mem::take(&mut walker.epochs);
    epochs.sort_by_key(|e| (e.start, e.epoch));
    report.epochs = epochs;
    if storage.exists(&dir.join(EPOCH_FILE)) {
        match load_seen_epoch(storage, dir) {
            Ok(e) => report.highest_epoch_seen = Some(e),
            Err(e) => report.damage(&dir.join(EPOCH_FILE), 0, e.to_string()),
        }
    }
    report
        .damage
        .sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    if let Some(m) = meta {
        report.meta = Some(m);
    }
    report
}

/// Reads and decodes `META`; damage and a missing `META` beside data are
/// reported.
fn read_meta(storage: &dyn Storage, dir: &Path, report: &mut DirReport) -> Option<MetaReport> {
    let path = dir.join(META_FILE_NAME);
    if !storage.exists(&path) {
        // As `META`'s loader decides: a file in any shard directory of
        // `wal/` or `snapshots/` is data (an entry that is not a listable
        // directory counts as one).
        let holds_data = ["wal", "snapshots"].iter().find_map(|sub| {
            let top = dir.join(sub);
            storage.list_dir(&top).ok()?.into_iter().find_map(|shard| {
                let d = top.join(shard);
                match storage.list_dir(&d) {
                    Ok(files) => files.first().map(|f| d.join(f)),
                    Err(_) => Some(d),
                }
            })
        });
        if let Some(found) = holds_data {
            let what = format!(
                "META is missing but the directory holds {}",
                found.display()
            );
            report.damage(&path, 0, what);
        } else {
            report.notes.push("no META: not a data directory".into());
        }
        return None;
    }
    let bytes = read_file(storage, &path, report)?;
    match Meta::decode(&bytes) {
        Ok(m) => Some(MetaReport {
            format_version: m.format_version,
            node_id: m.node_id,
            shard_id: m.shard_id,
            shard_count: m.shard_count,
            fingerprint: m.fingerprint(),
            signal_types: m.signal_types,
            dimension: m.dimension,
            landmark_half_lives: m.landmark_half_lives,
            score_floor: m.score_floor,
            session_retention_ms: m.session_retention_ms,
            idempotency_ttl_ms: m.idempotency_ttl_ms,
            vector_min_vectors: m.vector_min_vectors,
        }),
        Err(e) => {
            report.damage(&path, e.offset as u64, e.reason);
            None
        }
    }
}

/// The shards that have a directory under `wal/` or `snapshots/`, sorted.
/// Anything else there is listed as another file.
fn shard_dirs(storage: &dyn Storage, dir: &Path, report: &mut DirReport) -> Vec<ShardId> {
    let mut shards = Vec::new();
    for sub in ["wal", "snapshots"] {
        let Ok(names) = storage.list_dir(&dir.join(sub)) else {
            continue;
        };
        for name in names {
            let id = name
                .strip_prefix("shard-")
                .filter(|d| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok());
            match id {
                Some(id) => shards.push(ShardId(id)),
                None => report.other_files.push(dir.join(sub).join(name)),
            }
        }
    }
    if let Ok(names) = storage.list_dir(dir) {
        for name in names {
            if ![META_FILE_NAME, "wal", "snapshots", "diverged", EPOCH_FILE]
                .contains(&name.as_str())
            {
                report.other_files.push(dir.join(name));
            }
        }
    }
    shards.sort();
    shards.dedup();
    shards
}

/// Reads a whole file read-only; an I/O error is reported as damage.
fn read_file(storage: &dyn Storage, path: &Path, report: &mut DirReport) -> Option<Vec<u8>> {
    let read = storage
        .open(path, OpenMode::Read)
        .and_then(|f| f.read_all());
    match read {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            report.damage(path, 0, format!("cannot read: {e}"));
            None
        }
    }
}

/// The first offset at or after `from` where a valid batch (header that
/// decodes, payload inside the buffer, CRC that holds) starts. The same
/// test recovery applies to decide between a torn tail and media damage.
fn next_valid_batch(buf: &[u8], from: usize) -> Option<usize> {
    let mut p = from;
    while p + BATCH_HEADER_LEN <= buf.len() {
        let header = &buf[p..p + BATCH_HEADER_LEN];
        let start = p + BATCH_HEADER_LEN;
        if let Ok((_, len, _)) = decode_header(header)
            && let Some(payload) = buf.get(start..start + len as usize)
            && verify_crc(header, payload)
        {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// The SeqNo of a batch's `i`-th record (decoded headers are checked not
/// to overflow; saturating all the same, so no input can panic here).
fn seqno_at(meta: &BatchMeta, i: usize) -> SeqNo {
    SeqNo(meta.first_seqno.0.saturating_add(i as u64))
}

/// A batch's report, with its records rendered if asked.
fn batch_report(
    offset: usize,
    meta: &BatchMeta,
    payload_len: u32,
    records: &[Record],
    render: bool,
) -> BatchReport {
    let rendered = if render {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| (seqno_at(meta, i), format!("{r:?}")))
            .collect()
    } else {
        Vec::new()
    };
    BatchReport {
        offset: offset as u64,
        first_seqno: meta.first_seqno,
        last_seqno: meta.last_seqno(),
        epoch: meta.epoch,
        hlc: meta.hlc,
        record_count: meta.record_count,
        payload_bytes: payload_len,
        records: rendered,
    }
}

/// Decodes `bytes` as a snapshot; on failure of the whole-file CRC, decodes
/// again with that CRC recomputed so the header or section CRC names where
/// the damage is. Returns the damage `(offset, what)`.
fn snapshot_damage(bytes: &[u8]) -> Option<(u64, String)> {
    let e = decode_snapshot(bytes).err()?;
    let body = bytes.len().saturating_sub(4);
    if e.offset != body || body == 0 {
        return Some((e.offset as u64, e.reason));
    }
    let mut patched = bytes.to_vec();
    let crc = crc32fast::hash(&patched[..body]);
    patched[body..].copy_from_slice(&crc.to_le_bytes());
    match decode_snapshot(&patched) {
        Ok(_) => Some((e.offset as u64, e.reason)),
        Err(inner) => Some((
            inner.offset as u64,
            format!("{}; with it set aside: {}", e.reason, inner.reason),
        )),
    }
}

/// Offsets in the file of each section's payload, from the documented
/// framing (a 44-byte header, then id u16, version u16, length u64,
/// payload, crc u32 per section), to turn a section decoder's offset into
/// a file offset.
fn section_payload_offsets(sections: &[(u16, u16, u64)]) -> Vec<u64> {
    let mut at = 44u64;
    sections
        .iter()
        .map(|s| {
            let payload = at + 12;
            at = payload + s.2 + 4;
            payload
        })
        .collect()
}

/// Decodes a snapshot's sections into a state, as recovery would.
fn decode_state(
    params: &StateParams,
    sections: &[snapshot::Section],
) -> Result<State, (u16, crate::codec::DecodeError)> {
    let parts: Vec<(u16, u16, &[u8])> = sections
        .iter()
        .map(|s| (s.id, s.version, s.bytes.as_slice()))
        .collect();
    State::decode_sections(params.clone(), &parts)
}

/// Reads a whole file into `buf` (reusing its allocation), read-only.
fn read_into(storage: &dyn Storage, path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let f = storage.open(path, OpenMode::Read)?;
    let len = usize::try_from(f.len()?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "file too large"))?;
    buf.clear();
    buf.resize(len, 0);
    f.read_exact_at(buf, 0)
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
