//! The log of one shard: appends, rolls, syncs and retention.
//!
//! [`Wal::open`] recovers the log first (the rules are in the `recovery`
//! module: torn tails are cut, media damage is refused under `strict_tail`
//! and cut otherwise, damage in earlier segments is `Corruption` unless
//! `RecoveryMode::PointInTime`), then appending continues right after the
//! last good batch. Every cut is reported in [`LogRecoveryReport`] and
//! logged: nothing is lost silently.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::RecoveryMode;
use crate::error::{Result, TidalError};
use crate::storage::{OpenMode, Storage, StorageFile, SyncPoint};
use crate::types::{SeqNo, ShardId};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, Schema, decode_header};
use crate::wal::record::Record;
use crate::wal::recovery::recover;
use crate::wal::segment::{
    CUT_CHUNK_BYTES, SEGMENT_HEADER_LEN, SPARE_NAME, adopt_spare, create_segment, create_spare,
    cut_offset, wal_dir, zero_fill,
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
///
/// ```
/// use tidal::CutKind;
/// assert_ne!(CutKind::TornTail, CutKind::PointInTime);
/// ```
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
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, TidalDb};
/// # let dir = tempfile::tempdir().unwrap();
/// let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// // A clean log has nothing to cut.
/// assert!(db.status().recovery.cuts.is_empty());
/// ```
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
    file: Arc<dyn StorageFile>,
    /// Where the next batch goes: right after the last good batch.
    end_offset: u64,
    /// The SeqNo the next batch of this segment must start at.
    seg_next: SeqNo,
    has_batches: bool,
    /// Appended batches not yet written to the file: they start at
    /// `end_offset - pending.len()` (see [`Wal::set_write_behind`]).
    pending: Vec<u8>,
}

/// The write-ahead log of one shard: appends whole encoded batches,
/// rolls pre-allocated segments, and on open replays what survived
/// (exercised by the unit tests beside this file).
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
    spare: Arc<Mutex<Spare>>,
    /// A write of pending bytes failed: nothing more is written, not even
    /// when the log is dropped (the database is poisoned above).
    write_failed: bool,
    /// Appended bytes held in memory before they are written (0: none).
    write_behind: usize,
}

/// The next segment, pre-allocated by a background thread.
#[derive(Debug, Default)]
struct Spare {
    /// A zero-filled, synced spare file ready to become the next segment.
    ready: Option<PathBuf>,
    /// A thread is building one.
    building: bool,
    /// That thread, joined when the log is dropped so no spare is being
    /// written once the database is closed.
    thread: Option<std::thread::JoinHandle<()>>,
}

// The commit path shares the log across threads behind a lock.
static_assertions::assert_impl_all!(Wal: Send, Sync);

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
        let rec = recover(&cfg, &dir, after, replay)?;
        let leftover = dir.join(SPARE_NAME);
        match storage.remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TidalError::io("remove spare segment", &leftover, e)),
        }
        // An earlier process may have failed between creating a segment and
        // syncing the directory (a full disk, say) and then been reopened
        // without a crash: its name is live but not durable. Appending to
        // it would let a power loss take acknowledged batches with the
        // name, so every name recovery adopts is made durable first.
        storage
            .sync_dir_at(SyncPoint::LogOpenDir, &dir)
            .map_err(|e| TidalError::io("sync dir", &dir, e))?;
        let (segments, report) = (rec.segments, rec.report);
        let log_end = report.last.map_or(SeqNo(0), |m| m.last_seqno());
        let next_seqno = log_end.max(after).next();
        let current = match (segments.last(), rec.tail) {
            (Some(info), Some(tail)) => {
                let file = storage
                    .open(&info.path, OpenMode::ReadWrite)
                    .map_err(|e| TidalError::io("open segment", &info.path, e))?;
                Some(Current {
                    path: info.path.clone(),
                    file: Arc::from(file),
                    end_offset: tail.end_offset,
                    seg_next: tail.seg_next,
                    has_batches: tail.has_batches,
                    pending: Vec::new(),
                })
            }
            _ => None,
        };
        let mut wal = Wal {
            storage,
            dir,
            shard: cfg.shard,
            segment_bytes: cfg.segment_bytes,
            segments,
            current,
            next_seqno,
            bytes_since_open: 0,
            spare: Arc::new(Mutex::new(Spare::default())),
            write_failed: false,
            write_behind: 0,
        };
        if log_end < after && !wal.segments.is_empty() {
            // The snapshot is ahead of every record left: a follower crashed
            // while installing a snapshot from its leader (or damage was
            // cut). Those segments hold nothing the snapshot lacks, and
            // keeping them would leave a gap before `after + 1`.
            tracing::info!(
                after = after.0,
                log_end = log_end.0,
                "dropping log segments older than the snapshot"
            );
            wal.restart_after(after)?;
        }
        Ok((wal, report))
    }

    /// The SeqNo the next appended batch must start at.
    pub fn next_seqno(&self) -> SeqNo {
        self.next_seqno
    }

    /// The directory holding this shard's segments.
    #[cfg(test)]
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
        c.pending.extend_from_slice(bytes);
        c.end_offset += len;
        let write_now = c.pending.len() >= self.write_behind;
        c.seg_next = meta.last_seqno().next();
        c.has_batches = true;
        if let Some(info) = self.segments.last_mut() {
            info.len = info.len.max(c.end_offset);
        }
        let half_full = c.end_offset > self.segment_bytes / 2;
        self.next_seqno = c.seg_next;
        self.bytes_since_open += len;
        if half_full {
            // Pre-allocate the next segment while this one fills: a small
            // database never pays for it, a busy one has it ready in time.
            self.prepare_spare();
        }
        if write_now {
            self.write_out()?;
        }
        Ok(())
    }

    /// Makes every appended batch durable (fdatasync of the current segment;
    /// earlier segments were synced when they rolled).
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        match &self.current {
            Some(c) => (self.storage)
                .sync_file(SyncPoint::LogAppend, c.file.as_ref())
                .map_err(|e| TidalError::io("sync segment", &c.path, e)),
            None => Ok(()),
        }
    }

    /// The live segment files, oldest first; the last is the one appended to.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.clone()
    }

    /// Cuts the log after `to` (a divergence cut): every record above `to`
    /// leaves the log and appending continues at `to + 1`. `to` must end a
    /// batch (else `Corruption`, and nothing is changed); a log ending at or
    /// before `to` is left as it is.
    ///
    /// Crash-safe order: later segments are removed newest first (directory
    /// synced), so a crash leaves a shorter but contiguous log; then the
    /// segment holding `to` is zero-filled from the cut to its end, from the
    /// end backwards one synced chunk at a time, so a crash leaves at worst
    /// a torn tail that recovery cuts and reports.
    pub fn truncate_after(&mut self, to: SeqNo) -> Result<()> {
        self.write_out()?;
        if to.next() >= self.next_seqno {
            return Ok(());
        }
        let Some(idx) = self
            .segments
            .iter()
            .rposition(|s| s.first_seqno <= to.next())
        else {
            return Err(TidalError::corruption(
                &self.dir,
                0,
                format!("cannot cut the log after SeqNo {to}: it is older than the retained log"),
            ));
        };
        let path = self.segments[idx].path.clone();
        let file = self
            .storage
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| TidalError::io("open segment", &path, e))?;
        let offset = cut_offset(file.as_ref(), &path, self.segments[idx].first_seqno, to)?;
        let len = file
            .len()
            .map_err(|e| TidalError::io("stat segment", &path, e))?;
        let later: Vec<SegmentInfo> = self.segments.drain(idx + 1..).collect();
        for info in later.iter().rev() {
            self.storage
                .remove_file(&info.path)
                .map_err(|e| TidalError::io("remove segment", &info.path, e))?;
        }
        if !later.is_empty() {
            self.storage
                .sync_dir_at(SyncPoint::LogCutDir, &self.dir)
                .map_err(|e| TidalError::io("sync dir", &self.dir, e))?;
        }
        let mut end = len;
        while end > offset {
            let start = end.saturating_sub(CUT_CHUNK_BYTES).max(offset);
            zero_fill(file.as_ref(), &path, start, end)?;
            (self.storage)
                .sync_file(SyncPoint::LogCutFile, file.as_ref())
                .map_err(|e| TidalError::io("sync segment", &path, e))?;
            end = start;
        }
        self.current = Some(Current {
            path,
            file: Arc::from(file),
            end_offset: offset,
            seg_next: to.next(),
            has_batches: offset > SEGMENT_HEADER_LEN as u64,
            pending: Vec::new(),
        });
        self.next_seqno = to.next();
        Ok(())
    }

    /// Bytes appended since open, for snapshot scheduling.
    #[cfg(test)]
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
        self.write_out()?;
        if let Some(c) = &self.current {
            (self.storage)
                .sync_file(SyncPoint::LogRoll, c.file.as_ref())
                .map_err(|e| TidalError::io("sync segment", &c.path, e))?;
        }
        let ready = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
            .take();
        let (path, file) = match ready {
            Some(spare) => {
                adopt_spare(self.storage.as_ref(), &self.dir, &spare, self.shard, first)?
            }
            // The spare is not ready (rolls faster than zero-filling):
            // pre-allocate on the commit path, as before.
            None => create_segment(
                self.storage.as_ref(),
                &self.dir,
                self.shard,
                first,
                self.segment_bytes,
            )?,
        };
        self.segments.push(SegmentInfo {
            path: path.clone(),
            first_seqno: first,
            len: self.segment_bytes.max(SEGMENT_HEADER_LEN as u64),
        });
        self.current = Some(Current {
            path,
            file: Arc::from(file),
            end_offset: SEGMENT_HEADER_LEN as u64,
            seg_next: first,
            has_batches: false,
            pending: Vec::new(),
        });
        Ok(())
    }
}

impl Wal {
    /// Starts zero-filling the next segment in the background unless one is
    /// ready or being built (cheap to call on every append: one lock). A failure is logged; the next roll then
    /// pre-allocates on the commit path.
    fn prepare_spare(&self) {
        {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            if spare.ready.is_some() || spare.building {
                return;
            }
            spare.building = true;
        }
        let (storage, dir) = (Arc::clone(&self.storage), self.dir.clone());
        let (slot, segment_bytes) = (Arc::clone(&self.spare), self.segment_bytes);
        let build = move || {
            let result = create_spare(storage.as_ref(), &dir, segment_bytes);
            let mut spare = slot.lock().unwrap_or_else(PoisonError::into_inner);
            spare.building = false;
            match result {
                Ok(path) => spare.ready = Some(path),
                Err(e) => tracing::warn!(error = %e, "pre-allocating the next segment failed"),
            }
        };
        let spawned = std::thread::Builder::new()
            .name("tidal-prealloc".into())
            .spawn(build);
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        match spawned {
            Ok(handle) => spare.thread = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the pre-allocation thread");
                spare.building = false;
            }
        }
    }
}

#[cfg(test)]
impl Wal {
    /// A spare is ready or being built.
    fn spare_pending(&self) -> bool {
        let s = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        s.ready.is_some() || s.building
    }

    /// A spare is ready to be adopted.
    fn spare_ready(&self) -> bool {
        let s = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        s.ready.is_some()
    }
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
            .sync_dir_at(SyncPoint::LogCreateDirs, d)
            .map_err(|e| TidalError::io("sync dir", d, e))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "log_model_tests.rs"]
mod model_tests;

#[cfg(test)]
#[path = "log_cut_tests.rs"]
mod cut_tests;

#[cfg(test)]
#[path = "log_spare_tests.rs"]
mod spare_tests;

#[path = "log_restart.rs"]
mod restart;

#[path = "log_write.rs"]
mod write;

#[path = "log_retire.rs"]
mod retire;
