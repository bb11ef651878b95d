//! The shared core of every role: log, state view, group committer, clock,
//! maintenance threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, Durability, NodeRole, duration_ms};
use crate::crdt::hlc::HlcClock;
use crate::db::sequencer::{CommitResult, Committer, Request, process};
use crate::db::validate::Prepare;
use crate::db::view::View;
use crate::error::{Result, TidalError};
use crate::meta::{self, Meta};
use crate::snapshot::{self, Section, SnapshotHeader};
use crate::state::{State, StateParams};
use crate::storage::{Storage, StorageLock, write_file_atomic};
use crate::types::{Epoch, Position, SeqNo};
use crate::wal::commit::GroupCommit;
use crate::wal::format::Schema;
use crate::wal::log::{LogConfig, LogCut, Wal};
use crate::wal::record::Record;

/// What recovery found and did when the database opened.
///
/// ```
/// let r = tidal::RecoveryReport::default();
/// assert!(r.cuts.is_empty() && r.snapshot.is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The snapshot recovery started from, and its SeqNo.
    pub snapshot: Option<(PathBuf, SeqNo)>,
    /// Newer snapshots that were damaged and skipped, with the reason.
    pub skipped_snapshots: Vec<(PathBuf, String)>,
    /// Segments scanned.
    pub segments: usize,
    /// Batches replayed after the snapshot.
    pub batches_replayed: u64,
    /// Records replayed after the snapshot.
    pub records_replayed: u64,
    /// What was cut from the log (torn tail, damage under `Periodic`,
    /// `PointInTime` stops). Nothing is lost silently.
    pub cuts: Vec<LogCut>,
    /// How long recovery took.
    pub duration: Duration,
}

/// Counters for `status()`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_total_ns: AtomicU64,
    pub(crate) fsync_last_ns: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) last_batch_records: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_fsync(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_total_ns.fetch_add(ns, Ordering::Relaxed);
        self.fsync_last_ns.store(ns, Ordering::Relaxed);
    }

    pub(crate) fn record_batch(&self, records: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.last_batch_records
            .store(records as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// Everything a `TidalDb` of any role shares.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) prepare: Prepare,
    pub(crate) view: View,
    pub(crate) commit: GroupCommit<Committer, Request, CommitResult>,
    pub(crate) hlc: HlcClock,
    pub(crate) metrics: Metrics,
    pub(crate) recovery: RecoveryReport,
    pub(crate) meta: Meta,
    pub(crate) snapshot_due: AtomicBool,
    /// Highest SeqNo known synced (equals the last SeqNo under `Sync`).
    pub(crate) durable_seqno: AtomicU64,
    closed: AtomicBool,
    stop: Arc<Stop>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    checkpoint_lock: Mutex<()>,
    storage: Arc<dyn Storage>,
    data_dir: PathBuf,
    _lock: Box<dyn StorageLock>,
}

fn params(config: &Config) -> StateParams {
    StateParams {
        half_lives_ms: config.signal_types.iter().map(|t| t.half_life_ms).collect(),
        landmark_half_lives: config.landmark_half_lives,
        score_floor: config.score_floor,
        session_retention_ms: duration_ms(config.session_retention),
        dimension: config.dimension,
    }
}

impl Core {
    /// Opens (or creates) the database in `config.data_dir` for `role`:
    /// lock, META, newest valid snapshot, log replay, role check, and for a
    /// new database the `EpochStart` of epoch 1.
    pub(crate) fn open(config: Config, role: NodeRole) -> Result<Arc<Core>> {
        config.validate()?;
        let started = Instant::now();
        let storage = config.storage.clone();
        let dir = config.data_dir.clone();
        storage
            .create_dir_all(&dir)
            .map_err(|e| TidalError::io("create dir", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = storage.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                TidalError::Locked {
                    path: lock_path.clone(),
                }
            } else {
                TidalError::io("lock", &lock_path, e)
            }
        })?;
        let meta = meta::load_or_create(storage.as_ref(), &config)?;
        if config.cluster.role != role {
            return Err(TidalError::RoleMismatch {
                reason: format!(
                    "config.cluster.role is {:?} but the open called is for {role:?}",
                    config.cluster.role
                ),
            });
        }
        let shard = config.cluster.shard_id;
        let mut report = RecoveryReport::default();
        let (mut state, after) = match snapshot::load_newest_valid(storage.as_ref(), &dir, shard)? {
            Some(loaded) => {
                let sections: Vec<(u16, u16, &[u8])> = loaded
                    .sections
                    .iter()
                    .map(|s| (s.id, s.version, s.bytes.as_slice()))
                    .collect();
                let state =
                    State::decode_sections(params(&config), &sections).map_err(|(id, e)| {
                        TidalError::corruption(
                            &loaded.path,
                            e.offset as u64,
                            format!("section {id}: {}", e.reason),
                        )
                    })?;
                report.skipped_snapshots = loaded.skipped.clone();
                report.snapshot = Some((loaded.path.clone(), loaded.header.seqno));
                (state, loaded.header.seqno)
            }
            None => (State::new(params(&config)), SeqNo(0)),
        };
        let log_config = LogConfig {
            storage: storage.clone(),
            data_dir: dir.clone(),
            shard,
            segment_bytes: config.segment_bytes,
            strict_tail: config.durability == Durability::Sync,
            recovery_mode: config.recovery_mode,
            schema: Schema {
                signal_type_count: config.signal_types.len() as u16,
                dimension: config.dimension as u32,
            },
        };
        let (wal, log) = Wal::open(log_config, after, &mut |meta, records| {
            state.apply_batch(meta, records)
        })?;
        report.segments = log.segments;
        report.batches_replayed = log.batches_replayed;
        report.records_replayed = log.records_replayed;
        report.cuts = log.cuts;
        report.duration = started.elapsed();
        let epoch = match state.epochs().last() {
            None => Epoch::FIRST,
            Some(e) if e.replicated || e.leader_node != config.node_id => {
                return Err(TidalError::RoleMismatch {
                    reason: format!(
                        "the log's epoch {} is led by node {} ({}), not by this single node {}",
                        e.epoch,
                        e.leader_node,
                        if e.replicated { "replicated" } else { "single" },
                        config.node_id
                    ),
                });
            }
            Some(e) => e.epoch,
        };
        let is_new = state.epochs().is_empty();
        let hlc = HlcClock::new(config.clock.clone(), duration_ms(config.max_clock_drift));
        hlc.advance_to(state.last_hlc());
        let next = wal.next_seqno();
        tracing::info!(
            dir = %dir.display(),
            snapshot = ?report.snapshot,
            batches = report.batches_replayed,
            records = report.records_replayed,
            cuts = report.cuts.len(),
            ms = report.duration.as_millis() as u64,
            "recovered"
        );
        let committer = Committer::new(wal, shard, epoch, config.durability);
        let limits = &config.limits;
        let core = Arc::new(Core {
            prepare: Prepare::new(&config),
            view: View::new(state),
            commit: GroupCommit::new(
                committer,
                limits.commit_queue_depth,
                limits.max_batch_records,
            ),
            hlc,
            metrics: Metrics::default(),
            recovery: report,
            meta,
            snapshot_due: AtomicBool::new(false),
            durable_seqno: AtomicU64::new(next.0.saturating_sub(1)),
            closed: AtomicBool::new(false),
            stop: Arc::new(Stop::default()),
            threads: Mutex::new(Vec::new()),
            checkpoint_lock: Mutex::new(()),
            storage,
            data_dir: dir,
            _lock: lock,
        });
        if is_new {
            let record = Record::EpochStart {
                epoch: Epoch::FIRST,
                leader_node: config.node_id,
                hlc: core.hlc.now(),
                replicated: false,
            };
            core.commit.with_committer(|c| {
                c.commit(&core, core.hlc.now(), std::slice::from_ref(&record), |_| {})?;
                c.sync(&core)
            })?;
        }
        if let Durability::Periodic(interval) = config.durability {
            core.start_flusher(interval);
        }
        Ok(core)
    }

    pub(crate) fn config(&self) -> &Config {
        self.prepare.config()
    }

    /// Submits one request to the group committer.
    pub(crate) fn submit(self: &Arc<Self>, records: Vec<Record>) -> Result<Position> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TidalError::Closed);
        }
        let core = self.as_ref();
        let result = self.commit.submit(
            Request { records },
            &|c, group, publisher| process(core, c, group, publisher),
            &|| Err(TidalError::Closed),
        );
        if let Ok(p) = &result
            && core.config().durability == Durability::Sync
        {
            self.durable_seqno.fetch_max(p.seqno.0, Ordering::AcqRel);
        }
        if self.snapshot_due.swap(false, Ordering::AcqRel) {
            self.spawn_checkpoint();
        }
        result
    }

    /// Forces the log to disk.
    pub(crate) fn flush(&self) -> Result<()> {
        let last = self.commit.with_committer(|c| {
            c.sync(self)?;
            Ok::<_, TidalError>(c.wal.next_seqno().0.saturating_sub(1))
        })?;
        self.durable_seqno.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }

    fn start_flusher(self: &Arc<Self>, interval: Duration) {
        let core = Arc::downgrade(self);
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name("tidal-flusher".into())
            .spawn(move || {
                loop {
                    let stopped = stop.stopped.lock().unwrap_or_else(PoisonError::into_inner);
                    let (stopped, _) = stop
                        .wake
                        .wait_timeout_while(stopped, interval, |s| !*s)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    let Some(core) = core.upgrade() else { return };
                    if let Err(e) = core.flush() {
                        tracing::error!(error = %e, "periodic flush failed");
                    }
                }
            });
        match handle {
            Ok(h) => self
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(h),
            Err(e) => tracing::error!(error = %e, "could not start the flusher thread"),
        }
    }

    fn spawn_checkpoint(self: &Arc<Self>) {
        let core = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tidal-checkpoint".into())
            .spawn(move || {
                if let Some(core) = core.upgrade()
                    && let Err(e) = core.checkpoint()
                {
                    tracing::error!(error = %e, "background checkpoint failed");
                }
            });
        match spawned {
            Ok(h) => self
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(h),
            Err(e) => tracing::error!(error = %e, "could not start a checkpoint thread"),
        }
    }

    /// A consistent copy of the state and the sections of its snapshot.
    fn snapshot_of_state(&self) -> Result<(SnapshotHeader, Vec<Section>)> {
        // Cloning holds a read lock on one copy: the writer waits for it
        // only when it next needs that copy, for the time of the clone.
        let state = self.view.read(|s| s.clone());
        // The snapshot must never be ahead of the durable log.
        self.flush()?;
        let applied = state.applied();
        let header = SnapshotHeader {
            shard: self.config().cluster.shard_id,
            seqno: applied.seqno,
            epoch: applied.epoch,
            hlc: state.last_hlc(),
        };
        let sections = state
            .encode_sections()
            .into_iter()
            .map(|(id, version, bytes)| Section { id, version, bytes })
            .collect();
        Ok((header, sections))
    }

    /// Writes a snapshot, keeps the two newest, and deletes the segments
    /// only older snapshots needed.
    pub(crate) fn checkpoint(&self) -> Result<SeqNo> {
        let _one_at_a_time = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.commit.with_committer(|c| c.bytes_since_snapshot = 0);
        let (header, sections) = self.snapshot_of_state()?;
        let path =
            snapshot::write_snapshot(self.storage.as_ref(), &self.data_dir, &header, &sections)?;
        tracing::info!(path = %path.display(), seqno = header.seqno.0, "snapshot written");
        let shard = self.config().cluster.shard_id;
        if let Some(oldest) =
            snapshot::retain_newest(self.storage.as_ref(), &self.data_dir, shard, 2)?
        {
            self.commit
                .with_committer(|c| c.wal.remove_segments_below(oldest.next()))?;
        }
        Ok(header.seqno)
    }

    /// Writes a consistent copy (META and a snapshot) into `dir`, which must
    /// be missing or empty. Opening it gives the state at the returned Position.
    pub(crate) fn backup(&self, dir: &Path) -> Result<Position> {
        let storage = self.storage.as_ref();
        if let Ok(entries) = storage.list_dir(dir)
            && !entries.is_empty()
        {
            return Err(TidalError::io(
                "backup into",
                dir,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "directory is not empty"),
            ));
        }
        storage
            .create_dir_all(dir)
            .map_err(|e| TidalError::io("create dir", dir, e))?;
        let (header, sections) = self.snapshot_of_state()?;
        write_file_atomic(storage, &dir.join("META"), &self.meta.encode())?;
        snapshot::write_snapshot(storage, dir, &header, &sections)?;
        Ok(Position::new(header.epoch, header.seqno))
    }

    /// Stops the maintenance threads and syncs the log. Idempotent.
    pub(crate) fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        *self
            .stop
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.wake.notify_all();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.flush()
    }
}
