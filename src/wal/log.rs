//! The log of one shard: recovery scan, appends, rolls and retention.
//!
//! [`Wal::open`] reads every segment in SeqNo order and replays each valid
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
use std::sync::Arc;

use crate::config::RecoveryMode;
use crate::error::{Result, TidalError};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::types::{SeqNo, ShardId};
use crate::wal::format::{
    BATCH_HEADER_LEN, BATCH_MAGIC, BatchMeta, Schema, decode_header, decode_records, verify_crc,
};
use crate::wal::record::Record;
use crate::wal::segment::{
    SEGMENT_HEADER_LEN, create_segment, decode_segment_header, encode_segment_header,
    parse_segment_name, wal_dir, zero_fill,
};

/// How to open the log of one shard.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The file system every segment is reached through.
    pub storage: Arc<dyn Storage>,
    /// The database directory; segments live under `wal/shard-NNNNN/`.
    pub data_dir: PathBuf,
    /// The shard whose log this is; segments and batches of another are refused.
    pub shard: ShardId,
    /// Segments roll when the next batch would pass this size, and are
    /// pre-allocated to it.
    pub segment_bytes: u64,
    /// Whether every appended batch may have been acknowledged as durable
    /// (`Durability::Sync`), which makes damage before a valid batch an error.
    pub strict_tail: bool,
    /// Whether damage in an earlier segment is an error or a point-in-time stop.
    pub recovery_mode: RecoveryMode,
    /// What the record decoder accepts.
    pub schema: Schema,
}

/// Why recovery cut part of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// A batch cut short or garbled by a crash mid-write, with nothing valid after it.
    TornTail,
    /// A bad batch followed by valid ones, tolerated because writes were
    /// not synced one by one (`Durability::Periodic`).
    MediaDamageUnderPeriodic,
    /// Damage accepted by `RecoveryMode::PointInTime`: the log stops at the
    /// last good batch and later segments are kept as `*.damaged`.
    PointInTime,
}

/// One region of the log that recovery cut off or set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCut {
    /// The segment file (its name before any rename to `*.damaged`).
    pub path: PathBuf,
    /// Where the cut starts in that file; everything from here on is gone
    /// from the log.
    pub offset: u64,
    /// What was found there.
    pub reason: String,
    /// Why the cut was allowed.
    pub kind: CutKind,
}

/// What [`Wal::open`] found, so the caller can report it and nothing is
/// lost silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecoveryReport {
    /// Segment files scanned.
    pub segments: usize,
    /// Batches passed to `replay` (those above the snapshot).
    pub batches_replayed: u64,
    /// Records in those batches.
    pub records_replayed: u64,
    /// The last valid batch of the log, replayed or not: its epoch and HLC
    /// seed the node's epoch and clock.
    pub last: Option<BatchMeta>,
    /// Every cut made, in log order.
    pub cuts: Vec<LogCut>,
}

/// One segment file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// The SeqNo of its first record (from its name and header).
    pub first_seqno: SeqNo,
    /// The file's length in bytes, pre-allocated zeros included.
    pub len: u64,
}

/// The segment being appended to.
#[derive(Debug)]
struct Current {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// Where the next batch goes: right after the last good batch.
    end_offset: u64,
    /// The SeqNo the next batch of this segment must start at.
    seg_next: SeqNo,
    has_batches: bool,
}

/// The write-ahead log of one shard.
#[derive(Debug)]
pub struct Wal {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    shard: ShardId,
    segment_bytes: u64,
    segments: Vec<SegmentInfo>,
    current: Option<Current>,
    next_seqno: SeqNo,
    bytes_since_open: u64,
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
}

impl Wal {
    /// Opens (creating the wal dir if missing) and scans every segment in
    /// SeqNo order. Calls `replay` for every valid batch whose first SeqNo is
    /// above `after` (batches at or below `after` are in the snapshot and
    /// skipped; a batch straddling `after` is `Corruption`). Replayed batches
    /// must be contiguous: the first starts at `after + 1` and each next at
    /// the previous last + 1, else `Corruption` naming file and offset.
    /// Damage is cut, reported or refused as the module docs say; appending
    /// then continues right after the last good batch.
    pub fn open(
        cfg: LogConfig,
        after: SeqNo,
        replay: &mut dyn FnMut(&BatchMeta, &[Record]),
    ) -> Result<(Wal, LogRecoveryReport)> {
        let storage = Arc::clone(&cfg.storage);
        let dir = wal_dir(&cfg.data_dir, cfg.shard);
        ensure_dir(storage.as_ref(), &cfg.data_dir, &dir)?;
        let mut names: Vec<(SeqNo, PathBuf)> = storage
            .list_dir(&dir)
            .map_err(|e| TidalError::io("list", &dir, e))?
            .iter()
            .filter_map(|n| parse_segment_name(n).map(|s| (s, dir.join(n))))
            .collect();
        names.sort();

        let mut st = ScanState {
            cfg: &cfg,
            after,
            expected: after.next(),
            records: Vec::new(),
            report: LogRecoveryReport::default(),
            seg_next: SeqNo(0),
            seg_has_batches: false,
        };
        let mut buf = Vec::new();
        let mut segments = Vec::with_capacity(names.len());
        let mut last_end = None;
        let mut i = 0;
        while i < names.len() {
            let (first, path) = names[i].clone();
            let (first, path) = (&first, &path);
            let is_last = i + 1 == names.len();
            read_into(storage.as_ref(), path, &mut buf)?;
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
                    cut_segment(&cfg, path, *first, offset, buf.len() as u64)?;
                    warn_cut(path, offset, &reason, kind);
                    st.report.cuts.push(LogCut {
                        path: path.clone(),
                        offset,
                        reason,
                        kind,
                    });
                    if !is_last {
                        set_aside(&cfg, &dir, &names[i + 1..], &mut st.report)?;
                        names.truncate(i + 1);
                    }
                    offset.max(SEGMENT_HEADER_LEN as u64)
                }
            };
            segments.push(SegmentInfo {
                path: path.clone(),
                first_seqno: *first,
                len: (buf.len() as u64).max(end),
            });
            last_end = Some(end);
            i += 1;
        }

        let log_end = st.report.last.map_or(SeqNo(0), |m| m.last_seqno());
        let next_seqno = log_end.max(after).next();
        let current = match (segments.last(), last_end) {
            (Some(info), Some(end_offset)) => {
                let file = storage
                    .open(&info.path, OpenMode::ReadWrite)
                    .map_err(|e| TidalError::io("open segment", &info.path, e))?;
                Some(Current {
                    path: info.path.clone(),
                    file,
                    end_offset,
                    seg_next: st.seg_next,
                    has_batches: st.seg_has_batches,
                })
            }
            _ => None,
        };
        let wal = Wal {
            storage,
            dir,
            shard: cfg.shard,
            segment_bytes: cfg.segment_bytes,
            segments,
            current,
            next_seqno,
            bytes_since_open: 0,
        };
        Ok((wal, st.report))
    }

    /// The SeqNo the next appended batch must start at.
    pub fn next_seqno(&self) -> SeqNo {
        self.next_seqno
    }

    /// The directory holding this shard's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one encoded batch, whose `meta.first_seqno` must equal
    /// [`Wal::next_seqno`] (a gap or overlap is refused, never written).
    ///
    /// Rolls first if the batch does not fit the current segment: the
    /// current segment is synced before the next is created, and the new one
    /// is named by the batch's first SeqNo. A batch larger than a whole
    /// segment goes alone into a fresh one and extends it. The first segment
    /// is created lazily. Nothing is synced here beyond a roll: call
    /// [`Wal::sync`].
    pub fn append(&mut self, meta: &BatchMeta, bytes: &[u8]) -> Result<()> {
        self.check_batch(meta, bytes)?;
        let len = bytes.len() as u64;
        let must_roll = match &self.current {
            None => true,
            Some(c) => {
                c.seg_next != meta.first_seqno
                    || (c.has_batches && c.end_offset.saturating_add(len) > self.segment_bytes)
            }
        };
        if must_roll {
            self.roll(meta.first_seqno)?;
        }
        let Some(c) = self.current.as_mut() else {
            return Err(TidalError::corruption(
                &self.dir,
                0,
                "no segment to append to after a roll",
            ));
        };
        c.file
            .write_all_at(bytes, c.end_offset)
            .map_err(|e| TidalError::io("write batch", &c.path, e))?;
        c.end_offset += len;
        c.seg_next = meta.last_seqno().next();
        c.has_batches = true;
        if let Some(info) = self.segments.last_mut() {
            info.len = info.len.max(c.end_offset);
        }
        self.next_seqno = c.seg_next;
        self.bytes_since_open += len;
        Ok(())
    }

    /// Makes every appended batch durable (fdatasync of the current segment;
    /// earlier segments were synced when they rolled).
    pub fn sync(&self) -> Result<()> {
        match &self.current {
            Some(c) => c
                .file
                .sync_data()
                .map_err(|e| TidalError::io("sync segment", &c.path, e)),
            None => Ok(()),
        }
    }

    /// The live segment files, oldest first; the last is the one appended to.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.clone()
    }

    /// Deletes the segments whose records are all below `seqno` (the next
    /// segment starts at or below `seqno`), never the current one, then
    /// syncs the directory. Returns the bytes freed.
    pub fn remove_segments_below(&mut self, seqno: SeqNo) -> Result<u64> {
        let mut freed_bytes = 0;
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first_seqno <= seqno {
            let info = &self.segments[0];
            self.storage
                .remove_file(&info.path)
                .map_err(|e| TidalError::io("remove segment", &info.path, e))?;
            freed_bytes += info.len;
            removed = true;
            self.segments.remove(0);
        }
        if removed {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| TidalError::io("sync dir", &self.dir, e))?;
        }
        Ok(freed_bytes)
    }

    /// Bytes appended since open, for snapshot scheduling.
    pub fn bytes_since_open(&self) -> u64 {
        self.bytes_since_open
    }

    /// Refuses a batch that would leave a gap, an overlap or a foreign
    /// shard in the log, or whose bytes do not match its meta.
    fn check_batch(&self, meta: &BatchMeta, bytes: &[u8]) -> Result<()> {
        let offset = self.current.as_ref().map_or(0, |c| c.end_offset);
        let refuse = |reason: String| Err(TidalError::corruption(&self.dir, offset, reason));
        if meta.first_seqno != self.next_seqno {
            return refuse(format!(
                "refusing to append a batch at SeqNo {}: the log continues at {}",
                meta.first_seqno, self.next_seqno
            ));
        }
        if meta.shard != self.shard {
            return refuse(format!(
                "refusing to append a batch of shard {} to the log of shard {}",
                meta.shard, self.shard
            ));
        }
        match decode_header(bytes) {
            Ok((m, payload_len, _))
                if m == *meta && payload_len as usize + BATCH_HEADER_LEN == bytes.len() =>
            {
                Ok(())
            }
            Ok(_) => refuse("refusing to append bytes whose header differs from the batch".into()),
            Err(e) => refuse(format!("refusing to append a bad batch: {e}")),
        }
    }

    /// Syncs the current segment, then creates the next, named `first`.
    fn roll(&mut self, first: SeqNo) -> Result<()> {
        if let Some(c) = &self.current {
            c.file
                .sync_data()
                .map_err(|e| TidalError::io("sync segment", &c.path, e))?;
        }
        let (path, file) = create_segment(
            self.storage.as_ref(),
            &self.dir,
            self.shard,
            first,
            self.segment_bytes,
        )?;
        self.segments.push(SegmentInfo {
            path: path.clone(),
            first_seqno: first,
            len: self.segment_bytes.max(SEGMENT_HEADER_LEN as u64),
        });
        self.current = Some(Current {
            path,
            file,
            end_offset: SEGMENT_HEADER_LEN as u64,
            seg_next: first,
            has_batches: false,
        });
        Ok(())
    }
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
            return Err(TidalError::corruption(
                path,
                0,
                format!(
                    "gap in the log: segment starts at SeqNo {first}, the log continues at {}",
                    self.expected
                ),
            ));
        }
        let mut o = SEGMENT_HEADER_LEN;
        loop {
            let rest = &buf[o..];
            // Zeros are checked only where no batch header decodes, so a
            // segment is scanned in one pass.
            let clean = || rest.iter().all(|&b| b == 0);
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
                return at(format!(
                    "SeqNos not contiguous in the segment: batch starts at {}, expected {}",
                    meta.first_seqno, self.seg_next
                ));
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

/// Creates the shard's wal directory if missing, syncing its parents so
/// the new entries are durable.
fn ensure_dir(storage: &dyn Storage, data_dir: &Path, dir: &Path) -> Result<()> {
    if storage.exists(dir) {
        return Ok(());
    }
    storage
        .create_dir_all(dir)
        .map_err(|e| TidalError::io("create dir", dir, e))?;
    for d in [dir.parent().unwrap_or(data_dir), data_dir] {
        storage
            .sync_dir(d)
            .map_err(|e| TidalError::io("sync dir", d, e))?;
    }
    Ok(())
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
    file.sync_data()
        .map_err(|e| TidalError::io("sync segment", path, e))
}

/// Renames every segment after a point-in-time stop to `<name>.damaged`
/// (kept as evidence, ignored by listing), reporting each, then syncs the
/// directory.
fn set_aside(
    cfg: &LogConfig,
    dir: &Path,
    later: &[(SeqNo, PathBuf)],
    report: &mut LogRecoveryReport,
) -> Result<()> {
    for (_, path) in later {
        let mut to = path.with_extension("seg.damaged");
        let mut k = 1;
        while cfg.storage.exists(&to) {
            to = path.with_extension(format!("seg.damaged.{k}"));
            k += 1;
        }
        cfg.storage
            .rename(path, &to)
            .map_err(|e| TidalError::io("rename damaged segment", path, e))?;
        let reason = format!(
            "after a point-in-time stop in an earlier segment; kept as {}",
            to.display()
        );
        warn_cut(path, 0, &reason, CutKind::PointInTime);
        report.cuts.push(LogCut {
            path: path.clone(),
            offset: 0,
            reason,
            kind: CutKind::PointInTime,
        });
    }
    cfg.storage
        .sync_dir(dir)
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

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
