//! The shared core of every role: log, state view, group committer, clock,
//! maintenance threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::repl::{ReplMarks, load_seen_epoch};
use crate::config::{Config, Durability, NodeRole, duration_ms};
use crate::crdt::hlc::HlcClock;
pub(crate) use crate::db::metrics::Metrics;
use crate::db::sequencer::{CommitResult, Committer, Request, process};
use crate::db::validate::Prepare;
use crate::db::view::View;
use crate::error::{Result, TidalError};
use crate::meta::{self, Meta};
use crate::snapshot;
use crate::state::replay::replay;
use crate::state::{EpochEntry, State, StateParams};
use crate::storage::{Storage, StorageLock, SyncPoint, create_dir_durable};
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

/// A callback told of every newly durable position.
struct DurableHook(Box<dyn Fn(Position) + Send + Sync>);

impl std::fmt::Debug for DurableHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurableHook")
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
    /// A background checkpoint is spawned and not yet finished: at most one
    /// at a time, however many writes pass the threshold meanwhile.
    pub(super) checkpoint_scheduled: Arc<AtomicBool>,
    /// The high-water mark: durable here, and on a leader acknowledged by
    /// the followers `Durability::Replicated` asks for. Never goes back.
    hwm: Mutex<SeqNo>,
    hwm_changed: Condvar,
    /// Synced here up to this SeqNo (0 after open: the tail read back may
    /// not have reached the disk; see `ensure_durable`).
    pub(super) durable: AtomicU64,
    /// A higher epoch seen by a leader: writes are refused from then on.
    pub(crate) fenced: Mutex<Option<Epoch>>,
    /// Batches from a leader are accepted (cleared by `promote`, under the
    /// committer, so no received batch lands after the new `EpochStart`).
    pub(super) receiving: AtomicBool,
    /// Retained log start, known followers' floor, epochs seen, clock skew.
    pub(crate) marks: ReplMarks,
    /// The last applied position, for `wait_for`.
    pub(crate) applied_tx: tokio::sync::watch::Sender<Position>,
    /// Told of every newly durable position (a leader's shipper).
    durable_hook: std::sync::OnceLock<DurableHook>,
    closed: AtomicBool,
    stop: Arc<Stop>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(super) checkpoint_lock: Mutex<()>,
    /// Serializes the syncs `flush` runs without the committer.
    sync_lock: Mutex<()>,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) data_dir: PathBuf,
    /// The directory lock, released by `shutdown` once the log is closed.
    lock: Mutex<Option<Box<dyn StorageLock>>>,
}

fn params(config: &Config) -> StateParams {
    StateParams {
        half_lives_ms: config.signal_types.iter().map(|t| t.half_life_ms).collect(),
        landmark_half_lives: config.landmark_half_lives,
        score_floor: config.score_floor,
        session_retention_ms: duration_ms(config.session_retention),
        dimension: config.dimension,
        idempotency_ttl_ms: duration_ms(config.idempotency_ttl),
        vector_index: config.vector_index,
    }
}

/// The state a loaded snapshot holds.
fn state_from_snapshot(config: &Config, loaded: &snapshot::LoadedSnapshot) -> Result<State> {
    let sections: Vec<(u16, u16, &[u8])> = loaded
        .sections
        .iter()
        .map(|s| (s.id, s.version, s.bytes.as_slice()))
        .collect();
    State::decode_sections(params(config), &sections).map_err(|(id, e)| {
        TidalError::corruption(
            &loaded.path,
            e.offset as u64,
            format!("section {id}: {}", e.reason),
        )
    })
}

/// The allowed transitions between the role persisted in the log (its last
/// `EpochStart`) and the open called (DESIGN.md section 2): a node reopens
/// in the role it had; a former leader may reopen as a follower (a
/// demotion, logged; the handshake then cuts what it holds past the new
/// leader's history); a follower becomes a leader only through `promote`.
/// Everything else is `RoleMismatch`. Returns the epoch to write in.
fn check_role(role: NodeRole, config: &Config, epochs: &[EpochEntry]) -> Result<Epoch> {
    let Some(e) = epochs.last() else {
        return Ok(Epoch::FIRST);
    };
    let me = config.node_id;
    let persisted = match (e.replicated, e.leader_node == me) {
        (false, true) => NodeRole::Single,
        (false, false) => {
            return Err(TidalError::RoleMismatch {
                reason: format!(
                    "the log's epoch {} was led by single node {}, not by this node {me}",
                    e.epoch, e.leader_node
                ),
            });
        }
        (true, true) => NodeRole::Leader,
        (true, false) => NodeRole::Follower,
    };
    match (persisted, role) {
        (p, r) if p == r => Ok(e.epoch),
        (NodeRole::Leader, NodeRole::Follower) => {
            tracing::warn!(epoch = %e.epoch, node = %me, "a former leader reopens as a follower (demotion)");
            Ok(e.epoch)
        }
        (p, r) => Err(TidalError::RoleMismatch {
            reason: format!(
                "the log says this node is a {p:?} (epoch {} led by node {}); it cannot be opened as a {r:?}{}",
                e.epoch,
                e.leader_node,
                if p == NodeRole::Follower && r == NodeRole::Leader {
                    ": a follower becomes a leader only through promote"
                } else {
                    ""
                }
            ),
        }),
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
        // A new data directory's entry must be durable before anything in
        // it can be: without this sync a crash could take the whole database.
        create_dir_durable(storage.as_ref(), SyncPoint::DataDirCreate, &dir)?;
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
                let state = state_from_snapshot(&config, &loaded)?;
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
            strict_tail: config.durability.syncs_each_batch(),
            recovery_mode: config.recovery_mode,
            schema: Schema {
                signal_type_count: config.signal_types.len() as u16,
                dimension: config.dimension as u32,
            },
        };
        let (mut wal, log) = replay(&mut state, |apply| Wal::open(log_config, after, apply))?;
        if !config.durability.syncs_each_batch() {
            wal.set_write_behind(config.write_behind_bytes);
        }
        report.segments = log.segments;
        report.batches_replayed = log.batches_replayed;
        report.records_replayed = log.records_replayed;
        report.cuts = log.cuts;
        report.duration = started.elapsed();
        let epoch = check_role(role, &config, state.epochs())?;
        let is_new = state.epochs().is_empty();
        let hlc = HlcClock::new(config.clock.clone(), duration_ms(config.max_clock_drift));
        hlc.advance_to(state.last_hlc());
        let next = wal.next_seqno();
        let first_retained = wal.first_retained();
        let logged_epoch = state.epochs().iter().map(|e| e.epoch).max();
        let seen_epoch =
            load_seen_epoch(storage.as_ref(), &dir)?.max(logged_epoch.unwrap_or_default());
        tracing::info!(
            dir = %dir.display(),
            snapshot = ?report.snapshot,
            batches = report.batches_replayed,
            records = report.records_replayed,
            cuts = report.cuts.len(),
            ms = report.duration.as_millis() as u64,
            "recovered"
        );
        let applied = state.applied();
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
            checkpoint_scheduled: Arc::new(AtomicBool::new(false)),
            hwm: Mutex::new(SeqNo(next.0.saturating_sub(1))),
            hwm_changed: Condvar::new(),
            durable: AtomicU64::new(0),
            fenced: Mutex::new(None),
            receiving: AtomicBool::new(true),
            marks: ReplMarks::new(first_retained, seen_epoch),
            applied_tx: tokio::sync::watch::Sender::new(applied),
            durable_hook: std::sync::OnceLock::new(),
            closed: AtomicBool::new(false),
            stop: Arc::new(Stop::default()),
            threads: Mutex::new(Vec::new()),
            checkpoint_lock: Mutex::new(()),
            sync_lock: Mutex::new(()),
            storage,
            data_dir: dir,
            lock: Mutex::new(Some(lock)),
        });
        // A new writable database opens epoch 1; a new follower's history
        // comes from its leader.
        if is_new && role != NodeRole::Follower {
            let record = Record::EpochStart {
                epoch: Epoch::FIRST,
                leader_node: config.node_id,
                hlc: core.hlc.now(),
                replicated: role == NodeRole::Leader,
            };
            core.commit.with_committer(|c| {
                c.commit(&core, core.hlc.now(), vec![record], |_| {})?;
                c.sync(&core)
            })?;
        }
        if role == NodeRole::Leader && seen_epoch > epoch {
            // A leader once told of a newer epoch stays fenced across
            // restarts: its writes could only diverge.
            *core.fenced.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen_epoch);
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
        self.submit_request(Request {
            records,
            idem: None,
            merged_key: false,
        })
    }

    /// Submits a request (with its idempotency key, if any); a keyed
    /// request's answer may be an earlier write's Position, so it is made
    /// as durable as this node's durability asks before it returns.
    pub(crate) fn submit_request(self: &Arc<Self>, request: Request) -> Result<Position> {
        let keyed = request.idem.is_some();
        if self.closed.load(Ordering::Acquire) {
            return Err(TidalError::Closed);
        }
        if let Some(seen) = *self.fenced.lock().unwrap_or_else(PoisonError::into_inner) {
            let ours = self.commit.with_committer(|c| c.epoch);
            return Err(TidalError::Fenced { ours, seen });
        }
        let core = self.as_ref();
        let result = self.commit.submit(
            request,
            &|c, group, publisher| process(core, c, group, publisher),
            &|| Err(TidalError::Closed),
        );
        if self.snapshot_due.swap(false, Ordering::AcqRel)
            && !self.checkpoint_scheduled.swap(true, Ordering::AcqRel)
        {
            self.spawn_checkpoint();
        }
        let position = result?;
        if keyed {
            self.ensure_durable(position.seqno)?;
        }
        if let Durability::Replicated { acks, timeout } = core.config().durability
            && !self.wait_hwm(position.seqno, timeout)
        {
            return Err(TidalError::ReplicationTimeout {
                seqno: position.seqno,
                acks,
                timeout_ms: duration_ms(timeout),
            });
        }
        Ok(position)
    }

    /// Called (under the committer) when the log is durable up to `p`.
    pub(crate) fn on_durable(&self, p: Position) {
        self.durable.fetch_max(p.seqno.0, Ordering::AcqRel);
        match self.durable_hook.get() {
            Some(hook) => (hook.0)(p),
            // Without followers, durable here is the high-water mark.
            None => self.raise_hwm(p.seqno),
        }
    }

    /// Installs the one durable hook (a leader's shipper).
    pub(crate) fn set_durable_hook(&self, hook: Box<dyn Fn(Position) + Send + Sync>) {
        if self.durable_hook.set(DurableHook(hook)).is_err() {
            tracing::error!("a durable hook was installed twice; keeping the first");
        }
    }

    /// Raises the high-water mark (it never goes back) and wakes waiters.
    pub(crate) fn raise_hwm(&self, seqno: SeqNo) {
        let mut hwm = self.hwm.lock().unwrap_or_else(PoisonError::into_inner);
        if seqno > *hwm {
            *hwm = seqno;
            self.hwm_changed.notify_all();
        }
    }

    /// The high-water mark.
    pub(crate) fn hwm(&self) -> SeqNo {
        *self.hwm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the HWM reaches `seqno`; false on timeout.
    fn wait_hwm(&self, seqno: SeqNo, timeout: Duration) -> bool {
        let hwm = self.hwm.lock().unwrap_or_else(PoisonError::into_inner);
        let (hwm, _) = self
            .hwm_changed
            .wait_timeout_while(hwm, timeout, |h| *h < seqno)
            .unwrap_or_else(PoisonError::into_inner);
        *hwm >= seqno
    }

    /// Turns this follower's core into a leader's at `epoch`, which must be
    /// above every epoch of its history: stops taking received batches,
    /// moves the clock above the log's highest HLC, logs and syncs the
    /// `EpochStart` of `epoch` led by this node (the persisted role), and
    /// sets the committer's epoch. All of it under the committer, so no
    /// received batch lands in between. On error nothing was logged.
    pub(crate) fn promote(&self, epoch: Epoch) -> Result<()> {
        self.commit.with_committer(|c| {
            let logged = self
                .view
                .read(|s| s.epochs().iter().map(|e| e.epoch).max())
                .unwrap_or(Epoch(0));
            let highest = logged.max(c.epoch).max(self.seen_epoch());
            if epoch <= highest {
                return Err(TidalError::StaleEpoch {
                    given: epoch,
                    highest,
                });
            }
            self.receiving.store(false, Ordering::Release);
            self.hlc.advance_to(self.view.read(|s| s.last_hlc()));
            let previous = c.epoch;
            c.epoch = epoch;
            let record = Record::EpochStart {
                epoch,
                leader_node: self.config().node_id,
                hlc: self.hlc.now(),
                replicated: true,
            };
            let logged = c
                .commit(self, self.hlc.now(), vec![record], |_| {})
                .and_then(|_| c.sync(self));
            if let Err(e) = logged {
                c.epoch = previous;
                return Err(e);
            }
            tracing::info!(%epoch, node = %self.config().node_id, "promoted to leader");
            Ok(())
        })
    }

    /// Forces the log to disk.
    ///
    /// Decision: under `Periodic` the fdatasync runs without the committer
    /// lock, so writes go on while the background flush (or a checkpoint's)
    /// waits for the disk; under load, and while a checkpoint writes its
    /// snapshot, that wait reached 25-45 ms, and every write waited with it
    /// (W10-periodic). The lock is taken before (to write out what the log
    /// holds) and after (to record what is durable, and to learn whether a
    /// roll's sync of the same file failed meanwhile, which poisons). Such
    /// syncs run one at a time (`sync_lock`). Under `Sync` and `Replicated`
    /// the committer syncs each batch itself and acknowledges writes on its
    /// sync's success, and so does a follower for the batches it receives
    /// (its durable position goes to the leader), so a flush stays under the
    /// lock there: a concurrent sync of the same file could take the error
    /// that sync should see. (A promoted follower keeps this, as its
    /// configured role stays `Follower`.)
    pub(crate) fn flush(&self) -> Result<()> {
        let acks_on_sync = self.config().durability.syncs_each_batch()
            || self.config().cluster.role == NodeRole::Follower;
        if acks_on_sync {
            return self.commit.with_committer(|c| c.sync(self));
        }
        let _one_at_a_time = self
            .sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(open) = self.commit.with_committer(|c| c.begin_sync())? else {
            return Ok(());
        };
        let result = self
            .storage
            .sync_file(SyncPoint::LogAppend, open.file.as_ref());
        self.commit
            .with_committer(|c| c.end_sync(self, open, result))
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
        // Sync, then close the log under the committer: a task still holding
        // the core (a replicated append on the blocking pool) can no longer
        // touch the log, so the directory lock is released now and an
        // immediate reopen does not find it held.
        let synced = self.commit.with_committer(|c| {
            let synced = if c.closed { Ok(()) } else { c.sync(self) };
            c.closed = true;
            synced
        });
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        synced
    }
}

#[path = "core_cut.rs"]
mod cut;

#[path = "core_repl.rs"]
pub(crate) mod repl;

#[path = "reconcile.rs"]
pub(crate) mod reconcile;
#[path = "reconcile_plan.rs"]
mod reconcile_plan;

#[path = "export.rs"]
pub(crate) mod export;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
