//! Segment files: naming, the 32-byte file header, and pre-allocation.
//!
//! A shard's log lives in `<data_dir>/wal/shard-00007/` as files named by
//! the SeqNo of their first record, `00000000000000000001.seg`, so listing
//! the directory sorts them. Each starts with a 32-byte header:
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | magic `b"TDBS"` | [u8; 4] |
//! | 4 | version = 1 | u16 |
//! | 6 | flags = 0 | u16 |
//! | 8 | shard | u32 |
//! | 12 | reserved = 0 | u32 |
//! | 16 | first_seqno | u64 |
//! | 24 | crc32 of bytes 0..24 | u32 |
//! | 28 | reserved = 0 | u32 |
//!
//! Segments are pre-allocated: creating one writes the header, zero-fills
//! the file to `segment_bytes` and syncs it and its directory, so appends
//! overwrite zeros. On these machines a sync into a pre-written file costs
//! about half of one that grows the file (`PERFORMANCE-NOTES.md`). Recovery
//! reads zeros after the last batch as the end of the log.

use std::path::{Path, PathBuf};

use crate::codec::{DecodeError, Put, Reader};
use crate::error::{Result, TidalError};
use crate::storage::{OpenMode, SYNC_STEP_BYTES, Storage, StorageFile, SyncPoint};
use crate::types::{SeqNo, ShardId};
use crate::wal::format::{BATCH_HEADER_LEN, decode_header};

/// Length of a segment file header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;

/// The magic that starts every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"TDBS";

/// The segment header version this code writes and reads.
pub const SEGMENT_VERSION: u16 = 1;

/// The extension of a live segment file.
pub const SEGMENT_EXTENSION: &str = "seg";

/// Zero-filling writes at most this many bytes per call, so creating a large
/// segment never holds a buffer of its full size.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// The directory holding a shard's segments: `<data_dir>/wal/shard-00007`.
pub fn wal_dir(data_dir: &Path, shard: ShardId) -> PathBuf {
    data_dir.join("wal").join(format!("shard-{:05}", shard.0))
}

/// The file name of the segment whose first record is `first`:
/// 20 digits, so names sort as SeqNos do.
pub fn segment_name(first: SeqNo) -> String {
    format!("{:020}.{SEGMENT_EXTENSION}", first.0)
}

/// The first SeqNo named by a segment file name, or `None` for any other
/// file (temporary files, `.damaged` evidence), which listing ignores.
pub fn parse_segment_name(name: &str) -> Option<SeqNo> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SeqNo)
}

/// Encodes a segment file header.
pub fn encode_segment_header(shard: ShardId, first: SeqNo) -> [u8; SEGMENT_HEADER_LEN] {
    let mut v = Vec::with_capacity(SEGMENT_HEADER_LEN);
    v.extend_from_slice(&SEGMENT_MAGIC);
    v.put_u16(SEGMENT_VERSION);
    v.put_u16(0);
    v.put_u32(shard.0);
    v.put_u32(0);
    v.put_u64(first.0);
    let crc = crc32fast::hash(&v);
    v.put_u32(crc);
    v.put_u32(0);
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out.copy_from_slice(&v);
    out
}

/// Decodes a segment file header into its shard and first SeqNo, refusing
/// a short buffer, a bad magic, another version, flags, non-zero reserved
/// fields and a bad CRC.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(ShardId, SeqNo), DecodeError> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4)?;
    if magic != SEGMENT_MAGIC {
        return Err(DecodeError {
            offset: 0,
            reason: format!("bad segment magic {magic:02x?}"),
        });
    }
    let version = r.u16()?;
    if version != SEGMENT_VERSION {
        return Err(DecodeError {
            offset: 4,
            reason: format!("unknown segment version {version}"),
        });
    }
    let flags = r.u16()?;
    let shard = ShardId(r.u32()?);
    let reserved = r.u32()?;
    let first = SeqNo(r.u64()?);
    let crc = r.u32()?;
    let reserved2 = r.u32()?;
    if crc != crc32fast::hash(&bytes[..24]) {
        return Err(DecodeError {
            offset: 24,
            reason: "segment header CRC mismatch".into(),
        });
    }
    if flags != 0 || reserved != 0 || reserved2 != 0 {
        return Err(DecodeError {
            offset: 6,
            reason: "unknown segment header flags or reserved bits".into(),
        });
    }
    Ok((shard, first))
}

/// Creates a pre-allocated segment: header, zeros up to `segment_bytes`,
/// data synced, then the directory synced, so the file and its zeros are
/// durable before any batch is written into it.
pub fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    shard: ShardId,
    first: SeqNo,
    segment_bytes: u64,
) -> Result<(PathBuf, Box<dyn StorageFile>)> {
    let path = dir.join(segment_name(first));
    let file = storage
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| TidalError::io("create segment", &path, e))?;
    file.write_all_at(&encode_segment_header(shard, first), 0)
        .map_err(|e| TidalError::io("write segment header", &path, e))?;
    let header_len = SEGMENT_HEADER_LEN as u64;
    zero_fill(
        file.as_ref(),
        &path,
        header_len,
        segment_bytes.max(header_len),
    )?;
    storage
        .sync_file(SyncPoint::SegmentFile, file.as_ref())
        .map_err(|e| TidalError::io("sync segment", &path, e))?;
    storage
        .sync_dir_at(SyncPoint::SegmentDir, dir)
        .map_err(|e| TidalError::io("sync dir", dir, e))?;
    Ok((path, file))
}

/// A segment starting past the SeqNo the log continues at, as recovery
/// reports it and `inspect` must too: `(file, offset, what)`. With a
/// previous segment (`prev`: its path and the end of its valid batches) the
/// damage is named where the log breaks, at that end (it was cut short, or
/// a segment after it is missing); else at the start of this one.
pub(crate) fn segment_gap(
    path: &Path,
    first: SeqNo,
    continues: SeqNo,
    prev: Option<(&Path, u64)>,
) -> (PathBuf, u64, String) {
    let gap = format!(
        "gap in the log: segment {} starts at SeqNo {first}, the log continues at {continues}",
        path.display()
    );
    match prev {
        Some((prev, end)) => (
            prev.to_path_buf(),
            end,
            format!("{gap}: this segment ends early at offset {end}"),
        ),
        None => (path.to_path_buf(), 0, gap),
    }
}

/// A batch inside a segment that does not start where the one before it
/// ended, as recovery reports it and `inspect` must too.
pub(crate) fn seqno_jump_in_segment(first: SeqNo, expected: SeqNo) -> String {
    format!("SeqNos not contiguous in the segment: batch starts at {first}, expected {expected}")
}

/// Name of the spare segment pre-allocated in the background. It is not a
/// segment name, so recovery never reads it; a leftover one (a crash while
/// it was being zero-filled) is removed when the log opens.
pub const SPARE_NAME: &str = "spare.prealloc";

/// Creates the spare segment: zero-filled to `segment_bytes` and synced.
/// Runs off the commit path, so a roll costs a
/// rename and a header write instead of zero-filling a whole segment.
pub fn create_spare(storage: &dyn Storage, dir: &Path, segment_bytes: u64) -> Result<PathBuf> {
    let path = dir.join(SPARE_NAME);
    match storage.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TidalError::io("remove spare segment", &path, e)),
    }
    let file = storage
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| TidalError::io("create spare segment", &path, e))?;
    // Synced step by step, like a snapshot (`SYNC_STEP_BYTES`): the
    // committer's syncs never queue behind a whole segment of zeros.
    let end = segment_bytes.max(SEGMENT_HEADER_LEN as u64);
    let mut from = 0;
    while from < end {
        let to = end.min(from + SYNC_STEP_BYTES as u64);
        zero_fill(file.as_ref(), &path, from, to)?;
        storage
            .sync_file(SyncPoint::SpareFile, file.as_ref())
            .map_err(|e| TidalError::io("sync spare segment", &path, e))?;
        from = to;
    }
    // Its directory entry is not synced: a spare that a crash takes is
    // never missed (the log removes a leftover one when it opens, and
    // builds a new one), and `adopt_spare` syncs the directory after the
    // rename that gives it a segment name.
    Ok(path)
}

/// Turns the spare into segment `first`: rename, header write, sync of the
/// directory. A crash in between leaves either the spare (ignored) or a
/// segment whose header is zeros, which recovery treats as a torn tail at
/// offset 0 and rewrites.
///
/// The header is not synced here: the first `Wal::sync` of the segment
/// (the fdatasync that acknowledges its first batch) carries it, and
/// nothing in the segment is acknowledged before that sync. An own sync
/// cost one fdatasync per roll on the commit path and guarded nothing
/// (`tests/lost_write_needs_every_sync_point.rs` showed it harmless when
/// disabled, before it was removed).
pub fn adopt_spare(
    storage: &dyn Storage,
    dir: &Path,
    spare: &Path,
    shard: ShardId,
    first: SeqNo,
) -> Result<(PathBuf, Box<dyn StorageFile>)> {
    let path = dir.join(segment_name(first));
    storage
        .rename_at(SyncPoint::SpareRename, spare, &path)
        .map_err(|e| TidalError::io("rename spare segment", spare, e))?;
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| TidalError::io("open segment", &path, e))?;
    file.write_all_at(&encode_segment_header(shard, first), 0)
        .map_err(|e| TidalError::io("write segment header", &path, e))?;
    storage
        .sync_dir_at(SyncPoint::SpareAdoptDir, dir)
        .map_err(|e| TidalError::io("sync dir", dir, e))?;
    Ok((path, file))
}

/// Writes zeros over `[from, to)`, in chunks of at most 1 MiB. Used to
/// pre-allocate segments and to cut a damaged tail, so a later recovery
/// reads the cut region as the clean end of the log.
pub fn zero_fill(file: &dyn StorageFile, path: &Path, from: u64, to: u64) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let total = to - from;
    let chunk =
        vec![0u8; usize::try_from(total).map_or(ZERO_CHUNK_BYTES, |t| t.min(ZERO_CHUNK_BYTES))];
    let mut offset = from;
    while offset < to {
        let n = usize::try_from(to - offset).map_or(chunk.len(), |left| left.min(chunk.len()));
        file.write_all_at(&chunk[..n], offset)
            .map_err(|e| TidalError::io("zero-fill segment", path, e))?;
        offset += n as u64;
    }
    Ok(())
}

/// Bytes zero-filled (and synced) per step when the log is cut.
pub const CUT_CHUNK_BYTES: u64 = 1 << 20;

/// Where the batch starting at `to + 1` begins in the segment at `path`
/// (whose first SeqNo is `first`): a batch boundary, else `Corruption`.
pub fn cut_offset(file: &dyn StorageFile, path: &Path, first: SeqNo, to: SeqNo) -> Result<u64> {
    let len = file
        .len()
        .map_err(|e| TidalError::io("stat segment", path, e))?;
    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut next = first;
    let mut header = [0u8; BATCH_HEADER_LEN];
    while next <= to {
        let missing = || {
            TidalError::corruption(
                path,
                offset,
                format!("cannot cut after SeqNo {to}: the segment ends at SeqNo {next} - 1"),
            )
        };
        if offset + BATCH_HEADER_LEN as u64 > len {
            return Err(missing());
        }
        file.read_exact_at(&mut header, offset)
            .map_err(|e| TidalError::io("read segment", path, e))?;
        if header.iter().all(|&b| b == 0) {
            return Err(missing());
        }
        let (meta, payload_len, _) =
            decode_header(&header).map_err(|e| TidalError::corruption(path, offset, e.reason))?;
        if meta.first_seqno != next {
            return Err(TidalError::corruption(
                path,
                offset,
                format!(
                    "batch starts at SeqNo {}, expected {next}",
                    meta.first_seqno
                ),
            ));
        }
        if meta.last_seqno() > to {
            return Err(TidalError::corruption(
                path,
                offset,
                format!(
                    "cannot cut after SeqNo {to}: batch {}..={} holds it (not a batch boundary)",
                    meta.first_seqno,
                    meta.last_seqno()
                ),
            ));
        }
        offset += BATCH_HEADER_LEN as u64 + u64::from(payload_len);
        next = meta.last_seqno().next();
    }
    Ok(offset)
}

/// Whether every byte is zero: the pre-allocated end of a segment.
///
/// Recovery checks the zero-filled rest of a 64 MiB segment on every open;
/// a byte-at-a-time `all` with its early exit does not vectorize and cost
/// about a third of recovery (perf, the compare harness's W7). OR-folding
/// 64-byte blocks of `u64` words does, and still stops at the first block
/// holding a non-zero byte.
pub fn is_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        let mut acc = 0u64;
        for w in block.chunks_exact(8) {
            acc |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RealStorage;

    #[test]
    fn names_and_paths() {
        let d = wal_dir(Path::new("/data"), ShardId(7));
        assert_eq!(d, Path::new("/data/wal/shard-00007"));
        assert_eq!(segment_name(SeqNo(1)), "00000000000000000001.seg");
        assert_eq!(
            parse_segment_name("00000000000000000001.seg"),
            Some(SeqNo(1))
        );
        let max = segment_name(SeqNo(u64::MAX));
        assert_eq!(parse_segment_name(&max), Some(SeqNo(u64::MAX)));
        for bad in [
            "00000000000000000001.seg.damaged",
            "0000000000000000001.seg",
            "+0000000000000000001.seg",
            "99999999999999999999.seg",
            "00000000000000000001.tmp",
            "",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_refuses_damage() {
        let h = encode_segment_header(ShardId(3), SeqNo(42));
        assert_eq!(&h[0..4], b"TDBS");
        assert_eq!(decode_segment_header(&h).unwrap(), (ShardId(3), SeqNo(42)));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(decode_segment_header(&bad).is_err(), "byte {i}");
        }
        assert!(decode_segment_header(&h[..31]).is_err());
    }

    #[test]
    fn create_pre_allocates_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = RealStorage;
        let (path, file) =
            create_segment(&storage, tmp.path(), ShardId(1), SeqNo(5), 3 << 20).unwrap();
        assert_eq!(path, tmp.path().join("00000000000000000005.seg"));
        let bytes = file.read_all().unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert_eq!(
            decode_segment_header(&bytes).unwrap(),
            (ShardId(1), SeqNo(5))
        );
        assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0));
        // A second create of the same name is refused, never overwritten.
        assert!(create_segment(&storage, tmp.path(), ShardId(1), SeqNo(5), 4096).is_err());
    }
}
