//! Snapshot files: the framing around the state's sections.
//!
//! A snapshot captures a shard's whole state at a SeqNo so recovery replays
//! only the log after it. The state is produced elsewhere as opaque,
//! versioned sections; this module frames, checks, writes, lists, loads and
//! prunes them.
//!
//! Path: `<data_dir>/snapshots/shard-00007/00000000000000123456.snap`
//! (shard in 5 digits, last included SeqNo in 20, so names sort by SeqNo).
//!
//! Format, little-endian:
//!
//! | field | type |
//! |---|---|
//! | magic `b"TDBP"` | [u8; 4] |
//! | format version = 1 | u16 |
//! | flags = 0 (unknown bits refused) | u16 |
//! | shard | u32 |
//! | seqno (last SeqNo included) | u64 |
//! | epoch | u64 |
//! | hlc | u64 |
//! | section count | u32 |
//! | crc32 of the 40 header bytes above | u32 |
//! | per section: id u16, version u16, length u64, payload, crc32 of (id, version, length, payload) | |
//! | crc32 of every byte before it | u32 |
//!
//! Every CRC is checked on decode; a reader that finds a section id it does
//! not know gets it back like any other and ignores it, so later versions add
//! sections without breaking older files. Sections come back in file order.

use std::path::{Path, PathBuf};

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::error::{Result, TidalError};
use crate::storage::{self, Storage};
use crate::types::{Epoch, SeqNo, ShardId};

/// Magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TDBP";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
/// File name extension of a finished snapshot (temporary files use `.tmp`).
pub const SNAPSHOT_EXTENSION: &str = "snap";

/// Header bytes before the header CRC.
const HEADER_BYTES: usize = 40;
/// Framing bytes of one section besides its payload: id, version, length, crc.
const SECTION_OVERHEAD_BYTES: usize = 2 + 2 + 8 + 4;

/// Where a snapshot sits in the log and in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The shard whose state this is; checked against the file's directory
    /// so a misplaced file is never loaded into the wrong shard.
    pub shard: ShardId,
    /// The last SeqNo whose effect the state includes: replay resumes after it.
    pub seqno: SeqNo,
    /// The epoch of the record at `seqno`.
    pub epoch: Epoch,
    /// The HLC of the record at `seqno`, so the clock restarts past it.
    pub hlc: Hlc,
}

/// One versioned part of the state (state, sessions, idempotency keys, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// What the section holds; unknown ids are returned to the caller, who
    /// ignores them.
    pub id: u16,
    /// The encoding version of the payload, so a section can evolve on its own.
    pub version: u16,
    /// The opaque payload.
    pub bytes: Vec<u8>,
}

/// The directory holding a shard's snapshots.
pub fn snapshot_dir(data_dir: &Path, shard: ShardId) -> PathBuf {
    data_dir
        .join("snapshots")
        .join(format!("shard-{:05}", shard.0))
}

/// The path of the snapshot of `shard` at `seqno`.
pub fn snapshot_path(data_dir: &Path, shard: ShardId, seqno: SeqNo) -> PathBuf {
    snapshot_dir(data_dir, shard).join(format!("{:020}.{SNAPSHOT_EXTENSION}", seqno.0))
}

/// Encodes a snapshot file, every CRC included.
pub fn encode_snapshot(header: &SnapshotHeader, sections: &[Section]) -> Vec<u8> {
    let payload: usize = sections.iter().map(|s| s.bytes.len()).sum();
    let mut b =
        Vec::with_capacity(HEADER_BYTES + 8 + sections.len() * SECTION_OVERHEAD_BYTES + payload);
    b.extend_from_slice(&SNAPSHOT_MAGIC);
    b.put_u16(SNAPSHOT_FORMAT_VERSION);
    b.put_u16(0);
    b.put_u32(header.shard.0);
    b.put_u64(header.seqno.0);
    b.put_u64(header.epoch.0);
    b.put_u64(header.hlc.0);
    // Section counts are a handful; u32 is the format's bound.
    b.put_u32(sections.len() as u32);
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    for s in sections {
        let start = b.len();
        b.put_u16(s.id);
        b.put_u16(s.version);
        b.put_u64(s.bytes.len() as u64);
        b.extend_from_slice(&s.bytes);
        let crc = crc32fast::hash(&b[start..]);
        b.put_u32(crc);
    }
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    b
}

fn check_crc(r: &mut Reader<'_>, covered: &[u8], what: &str) -> Result<(), DecodeError> {
    let at = r.position();
    let stored = r.u32()?;
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(DecodeError {
            offset: at,
            reason: format!(
                "{what} crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        });
    }
    Ok(())
}

/// Decodes a snapshot file, checking every CRC; never panics.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<Section>), DecodeError> {
    // The whole-file CRC first: one pass catches any damage, and the
    // structural checks below then only ever see intact bytes.
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(DecodeError {
            offset: 0,
            reason: format!("{} bytes is too short for a snapshot", bytes.len()),
        });
    };
    let mut tail = Reader::new(&bytes[body_len..]);
    check_crc(&mut tail, &bytes[..body_len], "snapshot file").map_err(|e| DecodeError {
        offset: body_len,
        ..e
    })?;
    let body = &bytes[..body_len];
    let mut r = Reader::new(body);
    if r.take(4)? != SNAPSHOT_MAGIC {
        return Err(DecodeError {
            offset: 0,
            reason: "bad magic: not a snapshot file".into(),
        });
    }
    let version = r.u16()?;
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(DecodeError {
            offset: 4,
            reason: format!("unsupported snapshot format version {version}"),
        });
    }
    let flags = r.u16()?;
    if flags != 0 {
        return Err(DecodeError {
            offset: 6,
            reason: format!("unknown snapshot flags {flags:#06x}"),
        });
    }
    let header = SnapshotHeader {
        shard: ShardId(r.u32()?),
        seqno: SeqNo(r.u64()?),
        epoch: Epoch(r.u64()?),
        hlc: Hlc(r.u64()?),
    };
    let count_at = r.position();
    let count = r.u32()? as usize;
    check_crc(&mut r, &body[..HEADER_BYTES], "snapshot header")?;
    if count.saturating_mul(SECTION_OVERHEAD_BYTES) > r.remaining() {
        return Err(DecodeError {
            offset: count_at,
            reason: format!("section count {count} exceeds the file"),
        });
    }
    let mut sections = Vec::with_capacity(count);
    for _ in 0..count {
        let start = r.position();
        let id = r.u16()?;
        let version = r.u16()?;
        let len_at = r.position();
        let len = r.u64()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= r.remaining())
            .ok_or_else(|| DecodeError {
                offset: len_at,
                reason: format!("section {id} length {len} exceeds the file"),
            })?;
        let payload = r.take(len)?;
        let end = r.position();
        check_crc(&mut r, &body[start..end], &format!("section {id}"))?;
        sections.push(Section {
            id,
            version,
            bytes: payload.to_vec(),
        });
    }
    if !r.is_empty() {
        return Err(r.error(format!("{} bytes after the last section", r.remaining())));
    }
    Ok((header, sections))
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TidalError + 'a {
    move |e| TidalError::io(op, path, e)
}

/// Writes a snapshot atomically and durably (temporary file, write, sync,
/// rename, directory sync) and returns its path. A crash at any point leaves
/// either the previous set of snapshots or the new one, never a torn file
/// under a `.snap` name.
pub fn write_snapshot(
    storage: &dyn Storage,
    data_dir: &Path,
    header: &SnapshotHeader,
    sections: &[Section],
) -> Result<PathBuf> {
    let bytes = encode_snapshot(header, sections);
    write_snapshot_bytes(storage, data_dir, header.shard, header.seqno, &bytes)
}

/// Writes an encoded snapshot (checked by the caller, e.g. one received
/// from a leader) atomically and durably, as [`write_snapshot`] does.
pub fn write_snapshot_bytes(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
    seqno: SeqNo,
    bytes: &[u8],
) -> Result<PathBuf> {
    let dir = snapshot_dir(data_dir, shard);
    if !storage.exists(&dir) {
        storage
            .create_dir_all(&dir)
            .map_err(io_err("create dir", &dir))?;
        // A new directory's own entry must be durable before files in it
        // can be relied on.
        for d in [data_dir.join("snapshots"), data_dir.to_path_buf()] {
            (storage.sync_dir_at(storage::SyncPoint::SnapshotCreateDirs, &d))
                .map_err(io_err("sync dir", &d))?;
        }
    }
    let path = snapshot_path(data_dir, shard, seqno);
    storage::write_file_atomic(storage, storage::AtomicPoints::SNAPSHOT, &path, bytes)?;
    Ok(path)
}

/// The SeqNo a snapshot file name stands for, if it is one (20 digits and
/// `.snap`); temporary and foreign files are not.
fn parse_name(name: &str) -> Option<SeqNo> {
    let stem = name.strip_suffix(".snap")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(SeqNo)
}

/// The snapshots of a shard on disk, newest (highest SeqNo) first; temporary
/// files are ignored. A missing directory is no snapshots.
pub fn list_snapshots(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
) -> Result<Vec<(SeqNo, PathBuf)>> {
    let dir = snapshot_dir(data_dir, shard);
    if !storage.exists(&dir) {
        return Ok(Vec::new());
    }
    let names = storage.list_dir(&dir).map_err(io_err("list", &dir))?;
    let mut out: Vec<(SeqNo, PathBuf)> = names
        .iter()
        .filter_map(|n| parse_name(n).map(|s| (s, dir.join(n))))
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// A snapshot loaded by [`load_newest_valid`].
#[derive(Clone, Debug)]
pub struct LoadedSnapshot {
    /// The file it came from.
    pub path: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
    /// Its sections, unknown ids included, in file order.
    pub sections: Vec<Section>,
    /// Newer snapshots that were damaged and skipped, with why: recovery
    /// reports them so nothing is passed over silently.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Loads the newest snapshot that decodes cleanly. Damaged newer ones are
/// skipped, logged and reported in [`LoadedSnapshot::skipped`]; a header
/// whose shard or SeqNo disagrees with the file's place counts as damage.
///
/// No snapshot at all is `Ok(None)` (replay from the start of the log). If
/// snapshots exist but none is valid, the result is
/// `TidalError::Corruption` naming the newest: the log older than them may
/// already be deleted, so starting empty could lose state silently.
/// An I/O error reading a file is returned as is, since it is not evidence
/// of damage.
pub fn load_newest_valid(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
) -> Result<Option<LoadedSnapshot>> {
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    for (seqno, path) in list_snapshots(storage, data_dir, shard)? {
        let bytes = storage::read_file(storage, &path)?;
        let reason = match decode_snapshot(&bytes) {
            Ok((header, _)) if header.shard != shard => {
                format!("header names shard {}, expected {shard}", header.shard)
            }
            Ok((header, _)) if header.seqno != seqno => {
                format!("header names SeqNo {}, file name {seqno}", header.seqno)
            }
            Ok((header, sections)) => {
                return Ok(Some(LoadedSnapshot {
                    path,
                    header,
                    sections,
                    skipped,
                }));
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(path = %path.display(), %reason, "skipping damaged snapshot");
        skipped.push((path, reason));
    }
    match skipped.into_iter().next() {
        None => Ok(None),
        Some((path, reason)) => Err(TidalError::corruption(
            path,
            0,
            format!("no snapshot is valid; the newest: {reason}"),
        )),
    }
}

/// Deletes all but the `keep` newest snapshots of a shard (then syncs the
/// directory) and returns the SeqNo of the oldest one kept, which bounds the
/// log segments still needed; `None` if none is kept.
pub fn retain_newest(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
    keep: usize,
) -> Result<Option<SeqNo>> {
    let all = list_snapshots(storage, data_dir, shard)?;
    let oldest_kept = all
        .get(..keep.min(all.len()))
        .and_then(|k| k.last())
        .map(|k| k.0);
    if all.len() > keep {
        for (_, path) in &all[keep..] {
            storage.remove_file(path).map_err(io_err("remove", path))?;
        }
        let dir = snapshot_dir(data_dir, shard);
        (storage.sync_dir_at(storage::SyncPoint::SnapshotRetireDir, &dir))
            .map_err(io_err("sync dir", &dir))?;
    }
    Ok(oldest_kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CrashMode, SimStorage};

    /// A sim holding `/db`, durably, as an opened database's data directory is.
    fn db_dir() -> std::sync::Arc<SimStorage> {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/db")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        sim
    }

    fn header(seqno: u64) -> SnapshotHeader {
        SnapshotHeader {
            shard: ShardId(7),
            seqno: SeqNo(seqno),
            epoch: Epoch(2),
            hlc: Hlc::new(1_000, 3),
        }
    }

    fn sections(tag: u8) -> Vec<Section> {
        vec![
            Section {
                id: 1,
                version: 1,
                bytes: vec![tag; 5],
            },
            Section {
                id: 2,
                version: 3,
                bytes: Vec::new(),
            },
            // An id this build does not know: returned, not refused.
            Section {
                id: 900,
                version: 1,
                bytes: b"future".to_vec(),
            },
        ]
    }

    #[test]
    fn round_trip_keeps_unknown_sections() {
        let bytes = encode_snapshot(&header(123_456), &sections(9));
        let (h, s) = decode_snapshot(&bytes).unwrap();
        assert_eq!(h, header(123_456));
        assert_eq!(s, sections(9));
        let empty = encode_snapshot(&header(1), &[]);
        assert_eq!(decode_snapshot(&empty).unwrap(), (header(1), Vec::new()));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = encode_snapshot(&header(5), &sections(1)[..2]);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_snapshot(&b).is_err(),
                "flip of bit {bit} not detected"
            );
        }
    }

    #[test]
    fn header_and_section_crcs_catch_damage_behind_a_valid_file_crc() {
        let bytes = encode_snapshot(&header(5), &sections(1));
        // A header byte, then a section payload byte (header 44 + framing 12).
        for at in [10, 44 + 12 + 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            let body = b.len() - 4;
            let crc = crc32fast::hash(&b[..body]);
            b[body..].copy_from_slice(&crc.to_le_bytes());
            let e = decode_snapshot(&b).unwrap_err();
            assert!(e.reason.contains("crc"), "{e}");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode_snapshot(&header(5), &sections(1));
        for len in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
    }

    #[test]
    fn path_layout() {
        let p = snapshot_path(Path::new("/data"), ShardId(7), SeqNo(123_456));
        assert_eq!(
            p,
            Path::new("/data/snapshots/shard-00007/00000000000000123456.snap")
        );
    }

    #[test]
    fn write_is_durable_and_list_ignores_temp_files() {
        let sim = db_dir();
        let dir = Path::new("/db");
        write_snapshot(&*sim, dir, &header(10), &sections(1)).unwrap();
        write_snapshot(&*sim, dir, &header(30), &sections(3)).unwrap();
        let sdir = snapshot_dir(dir, ShardId(7));
        sim.write_raw(sdir.join("00000000000000000040.tmp"), b"partial");
        sim.write_raw(sdir.join("notes.txt"), b"x");
        sim.crash(CrashMode::DropUnsynced);
        let list = list_snapshots(&*sim, dir, ShardId(7)).unwrap();
        let seqnos: Vec<u64> = list.iter().map(|(s, _)| s.0).collect();
        assert_eq!(seqnos, vec![30, 10]);
        assert!(list_snapshots(&*sim, dir, ShardId(8)).unwrap().is_empty());
        let loaded = load_newest_valid(&*sim, dir, ShardId(7)).unwrap().unwrap();
        assert_eq!(loaded.header.seqno, SeqNo(30));
        assert_eq!(loaded.sections, sections(3));
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn damaged_newest_falls_back_to_the_previous() {
        let sim = db_dir();
        let dir = Path::new("/db");
        write_snapshot(&*sim, dir, &header(10), &sections(1)).unwrap();
        let newest = write_snapshot(&*sim, dir, &header(20), &sections(2)).unwrap();
        let mut bytes = sim.read(&newest).unwrap();
        bytes[50] ^= 0x10;
        sim.write_raw(&newest, &bytes);
        let loaded = load_newest_valid(&*sim, dir, ShardId(7)).unwrap().unwrap();
        assert_eq!(loaded.header.seqno, SeqNo(10));
        assert_eq!(loaded.skipped.len(), 1);
        assert_eq!(loaded.skipped[0].0, newest);

        // A valid file under the wrong name is damage too.
        let misnamed = snapshot_path(dir, ShardId(7), SeqNo(30));
        sim.write_raw(&misnamed, &encode_snapshot(&header(25), &[]));
        let loaded = load_newest_valid(&*sim, dir, ShardId(7)).unwrap().unwrap();
        assert_eq!(loaded.header.seqno, SeqNo(10));
        assert_eq!(loaded.skipped.len(), 2);

        // Every snapshot damaged: an error, not a silent empty start.
        sim.write_raw(snapshot_path(dir, ShardId(7), SeqNo(10)), b"junk");
        let e = load_newest_valid(&*sim, dir, ShardId(7)).unwrap_err();
        assert!(matches!(e, TidalError::Corruption { .. }), "{e}");
        assert!(load_newest_valid(&*sim, dir, ShardId(1)).unwrap().is_none());
    }

    #[test]
    fn retain_newest_deletes_the_oldest_durably() {
        let sim = db_dir();
        let dir = Path::new("/db");
        for s in [5, 10, 15, 20] {
            write_snapshot(&*sim, dir, &header(s), &[]).unwrap();
        }
        assert_eq!(
            retain_newest(&*sim, dir, ShardId(7), 2).unwrap(),
            Some(SeqNo(15))
        );
        sim.crash(CrashMode::DropUnsynced);
        let left: Vec<u64> = list_snapshots(&*sim, dir, ShardId(7))
            .unwrap()
            .iter()
            .map(|(s, _)| s.0)
            .collect();
        assert_eq!(left, vec![20, 15]);
        assert_eq!(
            retain_newest(&*sim, dir, ShardId(7), 5).unwrap(),
            Some(SeqNo(15))
        );
        assert_eq!(retain_newest(&*sim, dir, ShardId(7), 0).unwrap(), None);
        assert!(list_snapshots(&*sim, dir, ShardId(7)).unwrap().is_empty());
    }

    #[test]
    fn a_failed_write_leaves_the_old_snapshots() {
        let sim = db_dir();
        let dir = Path::new("/db");
        write_snapshot(&*sim, dir, &header(10), &sections(1)).unwrap();
        sim.fail_next(crate::storage::FaultKind::SyncData, ".tmp");
        assert!(write_snapshot(&*sim, dir, &header(20), &sections(2)).is_err());
        sim.crash(CrashMode::TornPrefix { seed: 7 });
        let loaded = load_newest_valid(&*sim, dir, ShardId(7)).unwrap().unwrap();
        assert_eq!(loaded.header.seqno, SeqNo(10));
    }
}
