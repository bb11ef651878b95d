//! Reads: every role. Reads never wait for a batch being applied and see
//! whole batches only. Each read is one view of the state; the reads
//! themselves live on [`ReadView`](crate::db::ReadView), which
//! `TidalDb::read_view` offers for several reads of one state.

use std::sync::atomic::Ordering;

use crate::config::NodeRole;
use crate::db::TidalDb;
use crate::db::core::export::ExportReport;
use crate::db::core::reconcile::ReconcileReport;
use crate::db::core::repl::DivergedSuffix;
use crate::db::core::{Core, RecoveryReport};
use crate::error::Result;
use crate::query::{Retrieve, Scored, Search};
use crate::role::Role;
use crate::state::entities::{Creator, Item};
use crate::state::sessions::SessionInfo;
use crate::types::{EntityId, Epoch, NodeId, Position, SeqNo, SessionId, ShardId, Timestamp};

/// One event of a session, as `session_events` returns it.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, SessionId, TidalDb, Timestamp, UserId};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// let now = Timestamp::now();
/// db.open_session(SessionId(1), UserId(1), now).unwrap();
/// db.record_session_event(SessionId(1), EntityId(5), "like", 1.0, now).unwrap();
/// let events = db.session_events(SessionId(1), 1, 10);
/// assert_eq!((events[0].seq, events[0].entity, events[0].signal_type.as_str()), (1, EntityId(5), "like"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SessionEvent {
    /// Its number in the session (1, 2, 3 ...).
    pub seq: u32,
    /// The entity it is about.
    pub entity: EntityId,
    /// The signal type's name.
    pub signal_type: String,
    /// Its weight.
    pub weight: f64,
    /// When it happened.
    pub at: Timestamp,
    /// Appended by a reconciliation from a diverged suffix (the old
    /// leader's lineage), after the events this lineage had then.
    pub merged: bool,
}

/// What a node reports about itself.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, NodeRole, TidalDb, Timestamp};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// let pos = db.signal("like", EntityId(1), 1.0, Timestamp::now()).unwrap();
/// let status = db.status();
/// assert_eq!(status.role, NodeRole::Single);
/// assert_eq!(status.applied, pos);
/// assert_eq!(status.hwm, pos.seqno); // synced under Durability::Sync
/// assert!(status.poisoned.is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Status {
    /// The node's role.
    pub role: NodeRole,
    /// This node.
    pub node: NodeId,
    /// The shard it serves.
    pub shard: ShardId,
    /// The replicated identity (META without the node id): a follower must
    /// share it with its leader.
    pub fingerprint: u64,
    /// The current epoch.
    pub epoch: Epoch,
    /// The last record applied (visible to reads).
    pub applied: Position,
    /// The highest SeqNo known durable on this node (for a single node,
    /// the high-water mark).
    pub hwm: SeqNo,
    /// Duration of the last fsync of the log, in microseconds.
    pub fsync_last_us: u64,
    /// Mean fsync duration since open, in microseconds.
    pub fsync_mean_us: u64,
    /// Batches committed since open.
    pub batches: u64,
    /// Records committed since open.
    pub records: u64,
    /// Records in the last batch (group commit at work when above 1).
    pub last_batch_records: u64,
    /// Requests waiting for the group committer now.
    pub commit_queue_depth: usize,
    /// Why writes are refused, if a write or sync failed.
    pub poisoned: Option<String>,
    /// Estimated heap bytes of the in-memory state. The read view keeps two
    /// copies (readers never wait for an apply), so the process holds about
    /// twice this.
    pub state_bytes: usize,
    /// Idempotency keys held (expired ones leave with the next batch).
    pub idempotency_keys: usize,
    /// Log segments on disk.
    pub segments: usize,
    /// Bytes of those segments (pre-allocated size included).
    pub log_bytes: u64,
    /// What recovery did when the database opened.
    pub recovery: RecoveryReport,
    /// The highest epoch this node has seen: logged, or told by a leader or
    /// follower (persisted in `EPOCH`). A follower refuses leaders below it;
    /// a leader below it is fenced.
    pub highest_epoch_seen: Epoch,
    /// The first SeqNo of the retained log: a follower needing older
    /// records is sent a snapshot.
    pub first_retained: SeqNo,
    /// Diverged suffixes held in `diverged/` for reconciliation (cut from
    /// this node's log, or sent to this leader by followers).
    pub diverged: Vec<DivergedSuffix>,
    /// Replication peers' clocks minus this node's, in ms: the last
    /// observed and the largest magnitude since open; `None` before any
    /// peer message. Replication never halts on skew; a follower applies
    /// the leader's log whatever its clock says and reports it here.
    pub clock_skew_ms: Option<ClockSkew>,
    /// What the last reconciliation on this node did, if one ran since open.
    /// A run publishes its report so far as it marks each suffix merged, so
    /// a suffix `diverged` lists as merged is counted here.
    pub last_reconcile: Option<ReconcileReport>,
}

/// Clock skew observed against replication peers (see
/// [`Status::clock_skew_ms`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    /// The last peer message's HLC minus this node's clock, in ms
    /// (positive: the peer is ahead).
    pub last_ms: i64,
    /// The largest `|skew|` seen since open, in ms.
    pub max_abs_ms: i64,
    /// Whether that exceeds `Config::max_clock_drift`.
    pub beyond_max_drift: bool,
}

impl Core {
    pub(crate) fn retrieve(&self, q: &Retrieve) -> Result<Vec<Scored>> {
        self.read_view(|v| v.retrieve(q))
    }

    pub(crate) fn search(&self, q: &Search) -> Result<Vec<Scored>> {
        self.read_view(|v| v.search(q))
    }

    pub(crate) fn status(&self, role: NodeRole) -> Status {
        let m = &self.metrics;
        let fsyncs = m.fsyncs.load(Ordering::Relaxed);
        let (applied, epoch) = self.view.read(|s| {
            (
                s.applied(),
                s.epochs().last().map(|e| e.epoch).unwrap_or_default(),
            )
        });
        let (state_bytes, idempotency_keys) = self
            .view
            .read(|s| (s.approx_bytes(), s.idempotency().len()));
        let (poisoned, segments) = self
            .commit
            .with_committer(|c| (c.poisoned.clone(), c.wal.segments()));
        Status {
            role,
            node: self.config().node_id,
            shard: self.config().cluster.shard_id,
            fingerprint: self.meta.fingerprint(),
            epoch,
            applied,
            hwm: self.hwm(),
            fsync_last_us: m.fsync_last_ns.load(Ordering::Relaxed) / 1_000,
            fsync_mean_us: m.fsync_total_ns.load(Ordering::Relaxed) / fsyncs.max(1) / 1_000,
            batches: m.batches.load(Ordering::Relaxed),
            records: m.records.load(Ordering::Relaxed),
            last_batch_records: m.last_batch_records.load(Ordering::Relaxed),
            commit_queue_depth: self.commit.queue_depth(),
            poisoned,
            state_bytes,
            idempotency_keys,
            segments: segments.len(),
            log_bytes: segments.iter().map(|s| s.len).sum(),
            recovery: self.recovery.clone(),
            highest_epoch_seen: self.seen_epoch(),
            first_retained: SeqNo(self.marks.first_retained.load(Ordering::Acquire)),
            // Listed before `last_reconcile` is locked (fields are
            // evaluated in order): a suffix listed merged is counted in
            // the report read (see `Core::mark_merged`).
            diverged: self.diverged(),
            clock_skew_ms: self.marks.skew().map(|(last_ms, max_abs_ms)| ClockSkew {
                last_ms,
                max_abs_ms,
                beyond_max_drift: max_abs_ms as u128 > self.config().max_clock_drift.as_millis(),
            }),
            last_reconcile: self
                .marks
                .last_reconcile
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

impl Core {
    pub(crate) fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        self.read_view(|v| v.read_decay_score(entity, signal_type, at))
    }

    pub(crate) fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        self.read_view(|v| v.read_count(entity, signal_type))
    }

    pub(crate) fn get_item(&self, id: EntityId) -> Option<Item> {
        self.read_view(|v| v.get_item(id))
    }

    pub(crate) fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.read_view(|v| v.get_creator(id))
    }

    pub(crate) fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.read_view(|v| v.session(session))
    }

    pub(crate) fn session_events(
        &self,
        session: SessionId,
        from: u32,
        limit: usize,
    ) -> Vec<SessionEvent> {
        self.read_view(|v| v.session_events(session, from, limit))
    }

    pub(crate) fn last_position(&self) -> Position {
        self.read_view(|v| v.position())
    }
}

/// Reads, for every role.
impl<R: Role> TidalDb<R> {
    /// The decayed score of `entity` for `signal_type` at `at`: 0.0 when it
    /// has no signal of that type.
    pub fn read_decay_score(
        &self,
        entity: EntityId,
        signal_type: &str,
        at: Timestamp,
    ) -> Result<f64> {
        self.core.read_decay_score(entity, signal_type, at)
    }

    /// Signals of `signal_type` on `entity` with positive weight minus those
    /// with negative weight (undecayed).
    pub fn read_count(&self, entity: EntityId, signal_type: &str) -> Result<i64> {
        self.core.read_count(entity, signal_type)
    }

    /// Top-k by decay score (or a blend), best first, ties broken by id.
    /// Ranks the entities that have a signal of at least one blended type.
    pub fn retrieve(&self, query: &Retrieve) -> Result<Vec<Scored>> {
        self.core.retrieve(query)
    }

    /// Top-k cosine similarity over item embeddings (creator embeddings
    /// with `kind(EntityKind::Creator)`), best first, ties broken by id.
    pub fn search(&self, query: &Search) -> Result<Vec<Scored>> {
        self.core.search(query)
    }

    /// An item's metadata and creator, or `None` (unknown, deleted, or a creator).
    pub fn get_item(&self, id: EntityId) -> Option<Item> {
        self.core.get_item(id)
    }

    /// A creator's metadata, or `None` (unknown, deleted, or an item).
    pub fn get_creator(&self, id: EntityId) -> Option<Creator> {
        self.core.get_creator(id)
    }

    /// A session's user, times and event count.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.core.session(session)
    }

    /// Writes the sessions closed after `since` as JSON Lines of
    /// preference pairs (`user`, `session`, `chosen`, `rejected`,
    /// `closed_seqno`) to `out`; the format is documented in
    /// [`ExportReport`]'s module. Pass the report's `through` as the next
    /// call's `since` to continue.
    pub fn export_preferences(
        &self,
        since: Position,
        out: &mut dyn std::io::Write,
    ) -> Result<ExportReport> {
        self.core.export_preferences(since, out)
    }

    /// A session's events numbered `from` and after, at most `limit`.
    pub fn session_events(&self, session: SessionId, from: u32, limit: usize) -> Vec<SessionEvent> {
        self.core.session_events(session, from, limit)
    }

    /// The position of the last record applied (visible to reads).
    pub fn last_position(&self) -> Position {
        self.core.last_position()
    }

    /// Role, positions, durability and commit figures, recovery report.
    pub fn status(&self) -> Status {
        self.core.status(R::NODE_ROLE)
    }
}
