//! What the core keeps for replication beyond the log: where the retained
//! log starts, how far known followers hold it, the highest epoch seen
//! (persisted), clock skew observed, snapshot installation and the diverged
//! suffixes held for reconciliation; and the follower's append of batches
//! received from its leader.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::reconcile::ReconcileReport;
use super::{Core, state_from_snapshot};
use crate::codec::{Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::error::{Result, TidalError};
use crate::snapshot::{self, LoadedSnapshot};
use crate::state::mirror::Batches;
use crate::storage::{AtomicPoints, Storage, SyncPoint, read_file, write_file_atomic};
use crate::types::{Epoch, NodeId, Position, SeqNo};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, Schema, decode_records};
use crate::wal::log::SegmentInfo;
use crate::wal::record::Record;

/// Name of the file holding the highest epoch this node has seen.
pub(crate) const EPOCH_FILE: &str = "EPOCH";
const EPOCH_MAGIC: [u8; 4] = *b"TDBE";
const EPOCH_VERSION: u16 = 1;

/// The directory diverged suffixes are kept in.
pub(crate) const DIVERGED_DIR: &str = "diverged";

/// Replication bookkeeping shared by the core and the replication tasks.
#[derive(Debug)]
pub(crate) struct ReplMarks {
    /// First SeqNo of the contiguous retained log; a follower behind it
    /// gets a snapshot.
    pub(crate) first_retained: AtomicU64,
    /// The lowest SeqNo a known follower still needs (its durable + 1);
    /// `u64::MAX` when none is known. Retention keeps segments for it up to
    /// `retention_bytes`.
    pub(crate) replica_floor: AtomicU64,
    /// The highest epoch seen (logged, persisted in `EPOCH`, or told).
    pub(crate) seen_epoch: AtomicU64,
    /// Last observed remote clock minus local clock, in ms.
    skew_last_ms: AtomicI64,
    /// The largest `|skew|` observed since open, in ms.
    skew_max_ms: AtomicI64,
    skew_seen: AtomicBool,
    /// Set once this process synced the data directory with `diverged/`
    /// in it: from then on `diverged/`'s entry is durable.
    diverged_dir_durable: AtomicBool,
    /// One reconciliation at a time.
    pub(crate) reconcile_lock: Mutex<()>,
    /// Held to store a suffix in `diverged/` or mark one merged: a follower
    /// sends a suffix twice on one connection (after its cut, and in the
    /// hand-over), each stored on its own task. Unserialized, two stores
    /// shared a temporary file (one failed; the follower was dropped), and
    /// a store racing a merge's rename could keep the suffix again unmerged.
    pub(crate) diverged_lock: Mutex<()>,
    /// What the last reconciliation did.
    pub(crate) last_reconcile: Mutex<Option<ReconcileReport>>,
}

impl ReplMarks {
    pub(crate) fn new(first_retained: SeqNo, seen_epoch: Epoch) -> ReplMarks {
        ReplMarks {
            first_retained: AtomicU64::new(first_retained.0),
            replica_floor: AtomicU64::new(u64::MAX),
            seen_epoch: AtomicU64::new(seen_epoch.0),
            skew_last_ms: AtomicI64::new(0),
            skew_max_ms: AtomicI64::new(0),
            skew_seen: AtomicBool::new(false),
            diverged_dir_durable: AtomicBool::new(false),
            reconcile_lock: Mutex::new(()),
            diverged_lock: Mutex::new(()),
            last_reconcile: Mutex::new(None),
        }
    }

    /// Records the skew of a remote clock reading against ours.
    pub(crate) fn observe_skew(&self, remote: Hlc, local_ms: u64) {
        let skew = i64::try_from(i128::from(remote.physical_ms()) - i128::from(local_ms))
            .unwrap_or(i64::MAX);
        self.skew_last_ms.store(skew, Ordering::Relaxed);
        self.skew_max_ms
            .fetch_max(skew.saturating_abs(), Ordering::Relaxed);
        self.skew_seen.store(true, Ordering::Relaxed);
    }

    /// `(last, largest |skew|)` in ms, once a remote clock was seen.
    pub(crate) fn skew(&self) -> Option<(i64, i64)> {
        self.skew_seen.load(Ordering::Relaxed).then(|| {
            (
                self.skew_last_ms.load(Ordering::Relaxed),
                self.skew_max_ms.load(Ordering::Relaxed),
            )
        })
    }
}

/// A diverged suffix held in `diverged/`, as `status()` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergedSuffix {
    /// The file holding its batches, exactly as they were logged.
    pub path: PathBuf,
    /// Epoch of its first record.
    pub epoch: Epoch,
    /// SeqNo of its first record.
    pub first: SeqNo,
    /// The node it came from, when a follower sent it to this leader
    /// (`None`: cut from this node's own log).
    pub origin: Option<NodeId>,
    /// Bytes held.
    pub bytes: u64,
    /// Whether a reconciliation has merged it (the file is then renamed
    /// `.merged` and kept as evidence).
    pub merged: bool,
}

/// Parses `<epoch>-<first>[-n<node>][.<k>].batches` (or `.merged`, once
/// reconciled).
fn parse_diverged_name(name: &str) -> Option<(Epoch, SeqNo, Option<NodeId>)> {
    let stem = name
        .strip_suffix(".batches")
        .or_else(|| name.strip_suffix(".merged"))?;
    let stem = stem.split('.').next()?;
    let mut parts = stem.split('-');
    let epoch = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let origin = match parts.next() {
        None => None,
        Some(n) => Some(NodeId(n.strip_prefix('n')?.parse().ok()?)),
    };
    if parts.next().is_some() {
        return None;
    }
    Some((Epoch(epoch), SeqNo(first), origin))
}

/// A free name for a suffix in `dir`; `None` if a file with the same name
/// already holds exactly `bytes` (the same suffix sent again).
fn free_diverged_path(
    storage: &dyn Storage,
    dir: &Path,
    base: &str,
    bytes: &[u8],
) -> Result<Option<PathBuf>> {
    // A suffix held already, merged or not, is not stored again.
    let mut k = 0u32;
    loop {
        let stem = if k == 0 {
            base.to_owned()
        } else {
            format!("{base}.{k}")
        };
        let path = dir.join(format!("{stem}.batches"));
        let merged = dir.join(format!("{stem}.merged"));
        let mut free = true;
        for p in [&path, &merged] {
            if storage.exists(p) {
                free = false;
                if read_file(storage, p)? == bytes {
                    return Ok(None);
                }
            }
        }
        if free {
            return Ok(Some(path));
        }
        k += 1;
    }
}

/// Encodes the `EPOCH` file: magic, version, epoch, CRC of the rest.
fn encode_epoch(epoch: Epoch) -> Vec<u8> {
    let mut v = Vec::with_capacity(18);
    v.extend_from_slice(&EPOCH_MAGIC);
    v.put_u16(EPOCH_VERSION);
    v.put_u64(epoch.0);
    let crc = crc32fast::hash(&v);
    v.put_u32(crc);
    v
}

fn decode_epoch(bytes: &[u8]) -> std::result::Result<Epoch, String> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4).map_err(|e| e.to_string())?;
    if magic != EPOCH_MAGIC {
        return Err("bad magic".into());
    }
    let version = r.u16().map_err(|e| e.to_string())?;
    if version != EPOCH_VERSION {
        return Err(format!("unknown version {version}"));
    }
    let epoch = r.u64().map_err(|e| e.to_string())?;
    let crc = r.u32().map_err(|e| e.to_string())?;
    if crc != crc32fast::hash(&bytes[..14]) || !r.is_empty() {
        return Err("checksum mismatch or trailing bytes".into());
    }
    Ok(Epoch(epoch))
}

/// The persisted highest epoch seen, 0 if none was ever written.
pub(crate) fn load_seen_epoch(storage: &dyn Storage, data_dir: &Path) -> Result<Epoch> {
    let path = data_dir.join(EPOCH_FILE);
    if !storage.exists(&path) {
        return Ok(Epoch(0));
    }
    let bytes = read_file(storage, &path)?;
    decode_epoch(&bytes).map_err(|reason| TidalError::corruption(&path, 0, reason))
}

/// Where to retire the log up to: below `wanted` (what the snapshots no
/// longer need), but keeping the newest removable segments that still hold
/// records at or above `floor` (a known follower's next SeqNo), as long as
/// they add up to at most `retention_bytes`. `segments` are oldest first.
pub(crate) fn retention_point(
    segments: &[SegmentInfo],
    wanted: SeqNo,
    floor: SeqNo,
    retention_bytes: u64,
) -> SeqNo {
    if floor >= wanted {
        return wanted;
    }
    let mut below = wanted;
    let mut kept = 0u64;
    // Segment i is removable when the next one starts at or below `wanted`;
    // its records end just before the next one starts.
    for i in (0..segments.len().saturating_sub(1)).rev() {
        let next_first = segments[i + 1].first_seqno;
        if next_first > wanted {
            continue;
        }
        if next_first <= floor {
            break; // all its records are below what any follower needs
        }
        kept = kept.saturating_add(segments[i].len);
        if kept > retention_bytes {
            break;
        }
        below = segments[i].first_seqno;
    }
    below
}

impl Core {
    /// The highest epoch seen: logged, persisted or told.
    pub(crate) fn seen_epoch(&self) -> Epoch {
        Epoch(self.marks.seen_epoch.load(Ordering::Acquire))
    }

    /// Persists `epoch` as the highest seen (synced), if it is higher.
    pub(crate) fn persist_seen_epoch(&self, epoch: Epoch) -> Result<()> {
        let _one_writer = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if epoch <= self.seen_epoch() {
            return Ok(());
        }
        let path = self.data_dir.join(EPOCH_FILE);
        write_file_atomic(
            self.storage.as_ref(),
            AtomicPoints::EPOCH,
            &path,
            &encode_epoch(epoch),
        )?;
        self.marks.seen_epoch.fetch_max(epoch.0, Ordering::AcqRel);
        Ok(())
    }

    /// Keeps a diverged suffix (batches exactly as logged) durably in
    /// `diverged/`, named by its first record's epoch and SeqNo and, when a
    /// follower sent it, that node. The same suffix sent again is stored
    /// once; another suffix with the same name gets a numbered one, so
    /// nothing held is ever overwritten.
    pub(crate) fn keep_diverged(
        &self,
        epoch: Epoch,
        first: SeqNo,
        origin: Option<NodeId>,
        batches: &[u8],
    ) -> Result<PathBuf> {
        let storage = self.storage.as_ref();
        let dir = self.data_dir.join(DIVERGED_DIR);
        // `diverged/` existing does not make its entry durable: an earlier
        // try may have created it and failed (or the process died) before
        // the sync. So the data directory is synced once per process
        // whether or not the directory was there, before anything is kept
        // in it: a cut trusts the suffix to survive a crash.
        if !self.marks.diverged_dir_durable.load(Ordering::Acquire) {
            if !storage.exists(&dir) {
                storage
                    .create_dir_all(&dir)
                    .map_err(|e| TidalError::io("create dir", &dir, e))?;
            }
            storage
                .sync_dir_at(SyncPoint::DivergedCreateDir, &self.data_dir)
                .map_err(|e| TidalError::io("sync dir", &self.data_dir, e))?;
            self.marks
                .diverged_dir_durable
                .store(true, Ordering::Release);
        }
        let mut base = format!("{:020}-{:020}", epoch.0, first.0);
        if let Some(node) = origin {
            base.push_str(&format!("-n{}", node.0));
        }
        let _one_at_a_time = self
            .marks
            .diverged_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match free_diverged_path(storage, &dir, &base, batches)? {
            Some(path) => {
                write_file_atomic(storage, AtomicPoints::DIVERGED, &path, batches)?;
                Ok(path)
            }
            None => Ok(dir.join(format!("{base}.batches"))),
        }
    }

    /// The unmerged diverged suffixes held, with their bytes (a file that
    /// cannot be read is logged and left out).
    pub(crate) fn unmerged_suffixes(&self) -> Vec<(Epoch, SeqNo, bytes::Bytes)> {
        self.diverged()
            .into_iter()
            .filter(|d| !d.merged)
            .filter_map(|d| match read_file(self.storage.as_ref(), &d.path) {
                Ok(b) => Some((d.epoch, d.first, bytes::Bytes::from(b))),
                Err(e) => {
                    tracing::error!(path = %d.path.display(), error = %e, "cannot read a held diverged suffix");
                    None
                }
            })
            .collect()
    }

    /// The diverged suffixes held, by file name.
    pub(crate) fn diverged(&self) -> Vec<DivergedSuffix> {
        let storage = self.storage.as_ref();
        let dir = self.data_dir.join(DIVERGED_DIR);
        let Ok(mut names) = storage.list_dir(&dir) else {
            return Vec::new();
        };
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                let (epoch, first, origin) = parse_diverged_name(&name)?;
                let path = dir.join(&name);
                let bytes = storage
                    .open(&path, crate::storage::OpenMode::Read)
                    .and_then(|f| f.len())
                    .unwrap_or(0);
                Some(DivergedSuffix {
                    path,
                    epoch,
                    first,
                    origin,
                    bytes,
                    merged: name.ends_with(".merged"),
                })
            })
            .collect()
    }

    /// Installs a snapshot received from the leader (this follower was
    /// behind its retained log): checks it decodes, is of this shard and
    /// ahead of the log, writes it durably, restarts the log after it and
    /// publishes its state. Returns its position.
    ///
    /// Crash-safe order: the snapshot file is durable before any segment is
    /// deleted; a crash in between reopens from the snapshot and drops the
    /// stale segments then. Nothing changes if the checks fail; a failure
    /// after the snapshot is written poisons the database until reopened.
    pub(crate) fn install_snapshot(&self, bytes: &[u8]) -> Result<Position> {
        let _no_checkpoint = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let what = "snapshot from the leader";
        let (header, sections) = snapshot::decode_snapshot(bytes)
            .map_err(|e| TidalError::corruption(what, e.offset as u64, e.reason))?;
        let shard = self.config().cluster.shard_id;
        if header.shard != shard {
            return Err(TidalError::corruption(
                what,
                0,
                format!("it is of shard {}, this node serves {shard}", header.shard),
            ));
        }
        let path = snapshot::snapshot_path(&self.data_dir, shard, header.seqno);
        let loaded = LoadedSnapshot {
            path: path.clone(),
            header,
            sections,
            skipped: Vec::new(),
        };
        let state = state_from_snapshot(self.config(), &loaded)?;
        let pos = Position::new(header.epoch, header.seqno);
        if state.applied() != pos {
            return Err(TidalError::corruption(
                what,
                0,
                format!("its header says {pos}, its state {}", state.applied()),
            ));
        }
        self.commit.with_committer(|c| {
            c.check_writable()?;
            if !self.receiving.load(Ordering::Acquire) {
                return Err(TidalError::Closed);
            }
            if header.seqno < c.wal.next_seqno() {
                return Err(TidalError::corruption(
                    what,
                    0,
                    format!(
                        "it ends at SeqNo {}, but the log already continues at {}",
                        header.seqno,
                        c.wal.next_seqno()
                    ),
                ));
            }
            snapshot::write_snapshot_bytes(
                self.storage.as_ref(),
                &self.data_dir,
                shard,
                header.seqno,
                bytes,
            )?;
            if let Err(e) = c.wal.restart_after(header.seqno) {
                let cause = format!("restarting the log after an installed snapshot: {e}");
                c.poisoned = Some(cause);
                return Err(e);
            }
            self.marks
                .first_retained
                .store(c.wal.first_retained().0, Ordering::Release);
            c.last_appended = pos;
            if let Some(e) = state.epochs().last() {
                c.epoch = e.epoch;
                self.marks.seen_epoch.fetch_max(e.epoch.0, Ordering::AcqRel);
            }
            self.hlc.advance_to(state.last_hlc());
            self.view.replace(state);
            self.applied_tx.send_replace(pos);
            self.raise_hwm(header.seqno);
            tracing::info!(path = %path.display(), seqno = header.seqno.0, "installed a snapshot from the leader");
            Ok(pos)
        })
    }
}

impl Core {
    /// Appends and applies batches received from the leader, exactly as
    /// logged there: each decoded (refusing anything apply could not take),
    /// all appended, synced once, and applied through the function recovery
    /// uses. Returns how many were applied: all of them, or the prefix
    /// before the first one refused, with the error.
    ///
    /// One sync for a run of batches is the follower's group commit: a
    /// follower catching up receives many batches back to back, and a sync
    /// each binds it to the disk's fsync rate. Nothing is acknowledged to
    /// the leader before the sync, and readers see whole batches. The I/O
    /// loop (`replication::node_follower`) hands it the batches of every
    /// frame already received (up to 64).
    pub(crate) fn append_replicated(&self, batches: &[(BatchMeta, Bytes)]) -> (usize, Result<()>) {
        let config = self.config();
        let schema = Schema {
            signal_type_count: config.signal_types.len() as u16,
            dimension: config.dimension as u32,
        };
        let mut decoded = Vec::with_capacity(batches.len());
        let mut refused = Ok(());
        for (meta, bytes) in batches {
            let mut records = Vec::with_capacity(meta.record_count as usize);
            let payload = bytes.get(BATCH_HEADER_LEN..).unwrap_or_default();
            if let Err(e) = decode_records(payload, meta.record_count, &schema, &mut records) {
                refused = Err(TidalError::corruption(
                    "replicated batch",
                    e.offset as u64,
                    e.reason,
                ));
                break;
            }
            // A follower applies whatever the leader's clock says and never
            // halts on skew; its own clock only moves forward past it.
            self.hlc.advance_to(meta.hlc);
            decoded.push((meta, bytes, records));
        }
        if decoded.is_empty() {
            return (0, refused);
        }
        let appended = decoded.len();
        let logged = self.commit.with_committer(|c| {
            if !self.receiving.load(Ordering::Acquire) {
                return Err(TidalError::Closed);
            }
            for (meta, bytes, _) in &decoded {
                c.append_received(meta, bytes)?;
            }
            c.sync(self)?;
            let (last, _, _) = decoded[decoded.len() - 1];
            let pos = Position::new(last.epoch, last.last_seqno());
            let counts: Vec<usize> = decoded.iter().map(|(_, _, r)| r.len()).collect();
            let batches: Vec<(BatchMeta, Vec<Record>)> =
                decoded.drain(..).map(|(m, _, r)| (*m, r)).collect();
            self.view
                .apply(counts.iter().sum(), Arc::new(Batches::new(batches)), || {
                    self.applied_tx.send_replace(pos);
                });
            for n in counts {
                self.metrics.record_batch(n);
            }
            Ok(())
        });
        match logged {
            Ok(()) => (appended, refused),
            Err(e) => (0, Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: u64, len: u64) -> SegmentInfo {
        SegmentInfo {
            path: PathBuf::from(format!("{first}")),
            first_seqno: SeqNo(first),
            len,
        }
    }

    #[test]
    fn retention_keeps_what_a_follower_needs_up_to_the_budget() {
        let segs = [seg(1, 10), seg(100, 10), seg(200, 10), seg(300, 10)];
        // No follower behind: retire up to what the snapshots need.
        assert_eq!(
            retention_point(&segs, SeqNo(250), SeqNo(u64::MAX), 0),
            SeqNo(250)
        );
        // A follower needing 150: keep the segment starting at 100.
        assert_eq!(
            retention_point(&segs, SeqNo(250), SeqNo(150), 100),
            SeqNo(100)
        );
        // A follower needing 50: keep both older ones, within budget.
        assert_eq!(retention_point(&segs, SeqNo(250), SeqNo(50), 100), SeqNo(1));
        // The budget allows one segment only: the newest is kept.
        assert_eq!(
            retention_point(&segs, SeqNo(250), SeqNo(50), 15),
            SeqNo(100)
        );
        // No budget: retire as the snapshots allow.
        assert_eq!(retention_point(&segs, SeqNo(250), SeqNo(50), 0), SeqNo(250));
    }

    #[test]
    fn the_epoch_file_round_trips_and_refuses_damage() {
        let bytes = encode_epoch(Epoch(7));
        assert_eq!(decode_epoch(&bytes), Ok(Epoch(7)));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode_epoch(&b).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(decode_epoch(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn diverged_names_parse() {
        assert_eq!(
            parse_diverged_name("00000000000000000002-00000000000000000010.batches"),
            Some((Epoch(2), SeqNo(10), None))
        );
        assert_eq!(
            parse_diverged_name("00000000000000000002-00000000000000000010-n7.1.batches"),
            Some((Epoch(2), SeqNo(10), Some(NodeId(7))))
        );
        assert_eq!(parse_diverged_name("x.batches"), None);
        assert_eq!(parse_diverged_name("2-10.tmp"), None);
    }
}
