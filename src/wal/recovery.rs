//! Recovery of one shard's log: the scan behind [`super::log::Wal::open`].
//!
//! `Wal::open` reads every segment in SeqNo order and replays each valid
//! batch above the snapshot's SeqNo. What it cannot read is never skipped
//! silently (DESIGN.md section 4):
//!
//! - In the last segment, a bad or cut batch with no valid batch anywhere
//!   after it is a torn tail: the write that was in flight when the node
//!   stopped. It is cut off (zero-filled to the end of the file and synced)
//!   and reported as [`CutKind::TornTail`].
//! - A valid batch after a bad one is media damage: `Corruption` under
//!   `strict_tail` (`Durability::Sync`: the later batches may have been
//!   acknowledged), a reported cut otherwise (under `Periodic` unsynced
//!   pages reach the disk out of order).
//! - Damage in an earlier segment is `Corruption`, unless
//!   `RecoveryMode::PointInTime` asks to stop at the last good batch: that
//!   segment is cut and every later one renamed `*.damaged`.
//!
//! A batch whose CRC holds but whose records cannot be decoded was written
//! whole, so it counts as a valid batch (media damage, never a torn tail).
//! `RecoveryMode::PointInTime` also turns media damage in the last segment
//! into a cut, since the operator asked to keep what precedes any damage.
//! SeqNo gaps, a batch straddling the snapshot, and a segment of another
//! shard are always `Corruption`: no torn write produces them.

use std::path::{Path, PathBuf};

use crate::config::RecoveryMode;
use crate::error::{Result, TidalError};
use crate::storage::{OpenMode, Storage, SyncPoint};
use crate::types::SeqNo;
use crate::wal::format::{
    BATCH_HEADER_LEN, BATCH_MAGIC, BatchMeta, decode_header, decode_records, verify_crc,
};
use crate::wal::log::{CutKind, LogConfig, LogCut, LogRecoveryReport, SegmentInfo};
use crate::wal::record::Record;
use crate::wal::segment::{
    SEGMENT_HEADER_LEN, decode_segment_header, encode_segment_header, is_zero, parse_segment_name,
    segment_gap, seqno_jump_in_segment, zero_fill,
};

/// Where appending continues in the last segment after recovery.
#[derive(Debug)]
pub(super) struct Tail {
    /// Right after the last good batch.
    pub(super) end_offset: u64,
    /// The SeqNo the segment's next batch must start at.
    pub(super) seg_next: SeqNo,
    /// Whether the segment holds a good batch.
    pub(super) has_batches: bool,
}

/// What recovery leaves behind.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The live segments, oldest first.
    pub(super) segments: Vec<SegmentInfo>,
    /// What was replayed and cut.
    pub(super) report: LogRecoveryReport,
    /// Where appending continues, if there is a segment.
    pub(super) tail: Option<Tail>,
}

/// How the scan of one segment ended.
enum Scan {
    /// Every byte after `end` is zero (or there is none).
    Clean { end: u64 },
    /// A bad batch (or header) at `offset`.
    Damaged {
        offset: u64,
        reason: String,
        valid_after: bool,
    },
}

/// What recovery carries from one segment to the next.
struct ScanState<'a> {
    cfg: &'a LogConfig,
    after: SeqNo,
    /// The SeqNo the next replayed batch must start at.
    expected: SeqNo,
    records: Vec<Record>,
    report: LogRecoveryReport,
    /// The SeqNo the next batch of the segment being scanned must start at.
    seg_next: SeqNo,
    /// Whether the segment being scanned holds a good batch.
    seg_has_batches: bool,
    /// The previous segment and the clean end of its batches: a gap
    /// before the next segment is reported there, where the log breaks.
    prev_end: Option<(PathBuf, u64)>,
}

/// Scans every segment of `dir` in SeqNo order, replaying, cutting or
/// refusing as the module docs say.
pub(super) fn recover(
    cfg: &LogConfig,
    dir: &Path,
    after: SeqNo,
    replay: &mut dyn FnMut(&BatchMeta, &[Record]),
) -> Result<Recovered> {
    let storage = cfg.storage.as_ref();
    let mut names: Vec<(SeqNo, PathBuf)> = storage
        .list_dir(dir)
        .map_err(|e| TidalError::io("list", dir, e))?
        .iter()
        .filter_map(|n| parse_segment_name(n).map(|s| (s, dir.join(n))))
        .collect();
    names.sort();

    let mut st = ScanState {
        cfg,
        after,
        expected: after.next(),
        records: Vec::new(),
        report: LogRecoveryReport::default(),
        seg_next: SeqNo(0),
        seg_has_batches: false,
        prev_end: None,
    };
    let mut buf = Vec::new();
    let mut segments = Vec::with_capacity(names.len());
    let mut last_end = None;
    let mut i = 0;
    while i < names.len() {
        let (first, path) = names[i].clone();
        let (first, path) = (&first, &path);
        let is_last = i + 1 == names.len();
        read_into(storage, path, &mut buf)?;
        st.report.segments += 1;
        let end = match st.scan(path, *first, &buf, replay)? {
            Scan::Clean { end } => end,
            Scan::Damaged {
                offset,
                reason,
                valid_after,
            } => {
                let point_in_time = cfg.recovery_mode == RecoveryMode::PointInTime;
                let kind = if !is_last || valid_after {
                    if point_in_time {
                        CutKind::PointInTime
                    } else if is_last && !cfg.strict_tail {
                        CutKind::MediaDamageUnderPeriodic
                    } else {
                        let why = if is_last {
                            "a valid batch follows it, so this is media damage, not a torn write"
                        } else {
                            "damage before the last segment"
                        };
                        return Err(TidalError::corruption(
                            path,
                            offset,
                            format!("{reason}; {why}"),
                        ));
                    }
                } else {
                    CutKind::TornTail
                };
                // Later segments are set aside before the cut: a crash in
                // between leaves the damaged segment last, and the next
                // open makes the same decision again.
                let mut set_aside_cuts = Vec::new();
                if !is_last {
                    set_aside(cfg, dir, &names[i + 1..], &mut set_aside_cuts)?;
                    names.truncate(i + 1);
                }
                cut_segment(cfg, path, *first, offset, buf.len() as u64)?;
                warn_cut(path, offset, &reason, kind);
                st.report.cuts.push(LogCut {
                    path: path.clone(),
                    offset,
                    reason,
                    kind,
                });
                st.report.cuts.append(&mut set_aside_cuts);
                offset.max(SEGMENT_HEADER_LEN as u64)
            }
        };
        st.prev_end = Some((path.clone(), end));
        segments.push(SegmentInfo {
            path: path.clone(),
            first_seqno: *first,
            len: (buf.len() as u64).max(end),
        });
        last_end = Some(end);
        i += 1;
    }

    let tail = last_end.map(|end_offset| Tail {
        end_offset,
        seg_next: st.seg_next,
        has_batches: st.seg_has_batches,
    });
    Ok(Recovered {
        segments,
        report: st.report,
        tail,
    })
}

impl ScanState<'_> {
    /// Scans one segment held in `buf`, replaying its good batches, until
    /// its clean end or its first bad batch.
    fn scan(
        &mut self,
        path: &Path,
        first: SeqNo,
        buf: &[u8],
        replay: &mut dyn FnMut(&BatchMeta, &[Record]),
    ) -> Result<Scan> {
        self.seg_next = first;
        self.seg_has_batches = false;
        let damaged = |offset: usize, reason: String| Scan::Damaged {
            offset: offset as u64,
            reason,
            valid_after: find_valid_batch(buf, offset + 1),
        };
        match decode_segment_header(buf) {
            Err(e) => return Ok(damaged(0, format!("bad segment header: {e}"))),
            Ok((shard, _)) if shard != self.cfg.shard => {
                return Err(TidalError::corruption(
                    path,
                    8,
                    format!(
                        "segment belongs to shard {shard}, this log is shard {}",
                        self.cfg.shard
                    ),
                ));
            }
            Ok((_, header_first)) if header_first != first => {
                return Ok(damaged(
                    0,
                    format!(
                        "segment header names first SeqNo {header_first}, the file name {first}"
                    ),
                ));
            }
            Ok(_) => {}
        }
        if first > self.expected {
            // The previous segment was cut short (or one after it is
            // missing): name the file and offset where the log breaks.
            let prev = self.prev_end.as_ref().map(|(p, end)| (p.as_path(), *end));
            let (file, offset, what) = segment_gap(path, first, self.expected, prev);
            return Err(TidalError::corruption(file, offset, what));
        }
        let mut o = SEGMENT_HEADER_LEN;
        loop {
            let rest = &buf[o..];
            // Zeros are checked only where no batch header decodes, so a
            // segment is scanned in one pass.
            let clean = || is_zero(rest);
            if rest.len() < BATCH_HEADER_LEN {
                if clean() {
                    return Ok(Scan::Clean { end: o as u64 });
                }
                return Ok(damaged(
                    o,
                    "batch header cut short by the end of the file".into(),
                ));
            }
            let header = &rest[..BATCH_HEADER_LEN];
            let (meta, payload_len, _) = match decode_header(header) {
                Ok(h) => h,
                Err(_) if clean() => return Ok(Scan::Clean { end: o as u64 }),
                Err(e) => return Ok(damaged(o, format!("bad batch header: {e}"))),
            };
            let Some(payload) = rest.get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + payload_len as usize)
            else {
                return Ok(damaged(
                    o,
                    format!(
                        "batch payload of {payload_len} bytes cut short by the end of the file"
                    ),
                ));
            };
            if !verify_crc(header, payload) {
                return Ok(damaged(o, "batch CRC mismatch".into()));
            }
            if meta.shard != self.cfg.shard {
                return Ok(Scan::Damaged {
                    offset: o as u64,
                    reason: format!(
                        "batch of shard {} in the log of shard {}",
                        meta.shard, self.cfg.shard
                    ),
                    valid_after: true,
                });
            }
            let at = |reason: String| Err(TidalError::corruption(path, o as u64, reason));
            if meta.first_seqno != self.seg_next {
                return at(seqno_jump_in_segment(meta.first_seqno, self.seg_next));
            }
            let last = meta.last_seqno();
            if last > self.after {
                if meta.first_seqno <= self.after {
                    return at(format!(
                        "batch {}..={last} straddles the snapshot at SeqNo {}",
                        meta.first_seqno, self.after
                    ));
                }
                if meta.first_seqno != self.expected {
                    return at(format!(
                        "SeqNos not contiguous: batch starts at {}, the log continues at {}",
                        meta.first_seqno, self.expected
                    ));
                }
                self.records.clear();
                if let Err(e) = decode_records(
                    payload,
                    meta.record_count,
                    &self.cfg.schema,
                    &mut self.records,
                ) {
                    // Written whole (its CRC holds), so not a torn write.
                    return Ok(Scan::Damaged {
                        offset: o as u64,
                        reason: format!("batch records do not decode: {e}"),
                        valid_after: true,
                    });
                }
                replay(&meta, &self.records);
                self.report.batches_replayed += 1;
                self.report.records_replayed += u64::from(meta.record_count);
                self.expected = last.next();
            }
            self.report.last = Some(meta);
            self.seg_next = last.next();
            self.seg_has_batches = true;
            o += BATCH_HEADER_LEN + payload_len as usize;
        }
    }
}

/// Whether a valid batch (magic, valid header, payload inside the file,
/// matching CRC) starts at any offset at or after `from`.
fn find_valid_batch(buf: &[u8], from: usize) -> bool {
    let mut p = from;
    while p + BATCH_HEADER_LEN <= buf.len() {
        let header = &buf[p..p + BATCH_HEADER_LEN];
        let start = p + BATCH_HEADER_LEN;
        if header[..4] == BATCH_MAGIC
            && let Ok((_, payload_len, _)) = decode_header(header)
            && let Some(payload) = buf.get(start..start + payload_len as usize)
            && verify_crc(header, payload)
        {
            return true;
        }
        p += 1;
    }
    false
}

/// Reads a whole segment into `buf`, reusing its allocation.
fn read_into(storage: &dyn Storage, path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    let io = |e: std::io::Error| TidalError::io("read segment", path, e);
    let file = storage.open(path, OpenMode::Read).map_err(io)?;
    let len = usize::try_from(file.len().map_err(io)?).map_err(|_| {
        TidalError::corruption(path, 0, "segment too large to read on this platform")
    })?;
    buf.clear();
    buf.resize(len, 0);
    file.read_exact_at(buf, 0).map_err(io)
}

/// Cuts a segment at `offset`: zeros from there to `len`, a fresh header
/// if the old one was inside the cut, then a sync, so the next recovery
/// reads the cut as the clean end of the segment.
fn cut_segment(cfg: &LogConfig, path: &Path, first: SeqNo, offset: u64, len: u64) -> Result<()> {
    let file = cfg
        .storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| TidalError::io("open segment", path, e))?;
    zero_fill(file.as_ref(), path, offset, len)?;
    if offset < SEGMENT_HEADER_LEN as u64 {
        file.write_all_at(&encode_segment_header(cfg.shard, first), 0)
            .map_err(|e| TidalError::io("write segment header", path, e))?;
    }
    (cfg.storage)
        .sync_file(SyncPoint::RecoveryCutFile, file.as_ref())
        .map_err(|e| TidalError::io("sync segment", path, e))
}

/// Renames every segment after a point-in-time stop to `<name>.damaged`
/// (kept as evidence, ignored by listing), reporting each, then syncs the
/// directory.
fn set_aside(
    cfg: &LogConfig,
    dir: &Path,
    later: &[(SeqNo, PathBuf)],
    cuts: &mut Vec<LogCut>,
) -> Result<()> {
    for (_, path) in later {
        let mut to = path.with_extension("seg.damaged");
        let mut k = 1;
        while cfg.storage.exists(&to) {
            to = path.with_extension(format!("seg.damaged.{k}"));
            k += 1;
        }
        cfg.storage
            .rename_at(SyncPoint::RecoveryDamagedRename, path, &to)
            .map_err(|e| TidalError::io("rename damaged segment", path, e))?;
        let reason = format!(
            "after a point-in-time stop in an earlier segment; kept as {}",
            to.display()
        );
        warn_cut(path, 0, &reason, CutKind::PointInTime);
        cuts.push(LogCut {
            path: path.clone(),
            offset: 0,
            reason,
            kind: CutKind::PointInTime,
        });
    }
    cfg.storage
        .sync_dir_at(SyncPoint::RecoveryDamagedDir, dir)
        .map_err(|e| TidalError::io("sync dir", dir, e))
}

fn warn_cut(path: &Path, offset: u64, reason: &str, kind: CutKind) {
    tracing::warn!(
        path = %path.display(),
        offset,
        ?kind,
        reason,
        "log recovery cut the log"
    );
}
