//! Configuration: identity, durability and every limit, each with a default
//! and the reason for it.
//!
//! Part of the configuration is the database's *identity*, recorded in
//! `META` when the database is created: node id, shard, shard count, the
//! signal types with their half-lives, the embedding dimension, and the
//! parameters of the state machine that replay must reproduce bit for bit
//! (`landmark_half_lives`, `score_floor`, `session_retention`,
//! `idempotency_ttl`). Reopening
//! with a different identity is [`TidalError::ConfigMismatch`], never a
//! silent reinterpretation of the log. DESIGN.md names only the first group;
//! the state-machine parameters are added because changing them between
//! runs would make a replay (or a follower) compute a different state from
//! the same log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::crdt::hlc::{PhysicalClock, SystemClock};
use crate::error::{Result, TidalError};
pub use crate::state::ann::VectorIndex;
use crate::storage::{RealStorage, Storage};
use crate::types::{NodeId, ShardId};

/// The role a node takes, for config-driven opening (`AnyDb`).
///
/// ```
/// use tidal::NodeRole;
/// assert_eq!("follower".parse::<NodeRole>().unwrap(), NodeRole::Follower);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// A writable node without replication (the embedded default).
    Single,
    /// The writable node of a shard, shipping its log.
    Leader,
    /// A read-only replica.
    Follower,
}

impl std::str::FromStr for NodeRole {
    type Err = TidalError;
    fn from_str(s: &str) -> Result<NodeRole> {
        match s.trim().to_ascii_lowercase().as_str() {
            "single" => Ok(NodeRole::Single),
            "leader" => Ok(NodeRole::Leader),
            "follower" => Ok(NodeRole::Follower),
            other => Err(TidalError::InvalidConfig {
                field: "cluster.role",
                reason: format!("{other:?} is not one of single, leader, follower"),
            }),
        }
    }
}

/// When a write is acknowledged.
///
/// ```
/// use std::time::Duration;
/// use tidal::Durability;
/// assert_eq!(Durability::default(), Durability::Sync);
/// let relaxed = Durability::Periodic(Duration::from_millis(100));
/// assert_ne!(relaxed, Durability::Sync);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A write returns after its batch is fdatasync'ed (the default).
    #[default]
    Sync,
    /// A write returns once its batch is written (or, with
    /// `Config::write_behind_bytes`, held in memory to be written with the
    /// next ones); a background thread syncs at this interval, so a crash
    /// loses at most that window.
    Periodic(Duration),
    /// Leaders only: a write returns once its batch is synced locally and
    /// `acks` followers hold it durably (it is at or below the HWM), or
    /// fails with `TidalError::ReplicationTimeout` after `timeout` (the
    /// write may still apply).
    Replicated {
        /// Followers that must hold the batch durably.
        acks: usize,
        /// How long a write waits for them.
        timeout: Duration,
    },
}

impl Durability {
    /// Whether each batch is synced before it is acknowledged.
    pub(crate) fn syncs_each_batch(self) -> bool {
        !matches!(self, Durability::Periodic(_))
    }
}

/// What recovery does with damage before the last segment.
///
/// ```
/// assert_eq!(tidal::RecoveryMode::default(), tidal::RecoveryMode::Strict);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Damage that may hold acknowledged writes is `TidalError::Corruption`.
    #[default]
    Strict,
    /// Stop at the last good batch; later segments are renamed `*.damaged`
    /// (kept as evidence, never read again) and reported.
    PointInTime,
}

/// A registered signal type.
///
/// ```
/// let t = tidal::SignalTypeConfig { name: "like".into(), half_life_ms: 3_600_000 };
/// assert_eq!(t.half_life_ms, 3_600_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalTypeConfig {
    /// The name writes and reads use.
    pub name: String,
    /// Half-life of the decay score, in milliseconds.
    pub half_life_ms: u64,
}

/// Where this node sits in the cluster.
///
/// ```
/// let c = tidal::ClusterConfig::default();
/// assert_eq!(c.shard_count, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The role `AnyDb::open` picks.
    pub role: NodeRole,
    /// The shard this node serves.
    pub shard_id: ShardId,
    /// How many shards the entity space is split into.
    pub shard_count: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            role: NodeRole::Single,
            shard_id: ShardId(0),
            shard_count: 1,
        }
    }
}

/// Size limits on input and queues. Every limit exists so that one bad
/// caller cannot grow memory or the log without bound.
///
/// ```
/// let l = tidal::Limits::default();
/// assert_eq!(l.max_name_bytes, 64);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest signal type name: names are identifiers, not data.
    pub max_name_bytes: usize,
    /// Longest metadata key: keys are identifiers.
    pub max_key_bytes: usize,
    /// Longest metadata value: values are short labels (language, category),
    /// not documents; 1 KiB keeps one entity's metadata small.
    pub max_value_bytes: usize,
    /// Most metadata fields on one entity: bounds memory per entity.
    pub max_metadata_fields: usize,
    /// Most records in one `WriteBatch`: one batch is one log write and is
    /// applied while readers see the previous state.
    pub max_batch_records: usize,
    /// Most requests waiting for the group committer: a full queue makes
    /// writers wait instead of growing memory.
    pub commit_queue_depth: usize,
    /// Most events in one session: a session is one visit, not a history.
    pub max_session_events: u32,
    /// Largest `k` of a retrieve or search: results are built in memory.
    pub max_results: usize,
    /// Longest idempotency key: keys are request ids (a UUID is 16 bytes
    /// raw, 36 as text), and every key is held in memory for
    /// `Config::idempotency_ttl`. At most 1024 (the log codec's bound).
    pub max_idempotency_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 64,
            max_key_bytes: 128,
            max_value_bytes: 1024,
            max_metadata_fields: 64,
            max_batch_records: 100_000,
            commit_queue_depth: 4_096,
            max_session_events: 100_000,
            max_results: 10_000,
            max_idempotency_key_bytes: 128,
        }
    }
}

/// Everything a database needs to open.
///
/// Build one with [`Config::builder`]; `build()` checks it.
///
/// ```
/// use std::time::Duration;
/// use tidal::Config;
/// let config = Config::builder("/tmp/tidal-doc-config")
///     .signal_type("view", Duration::from_secs(3_600))
///     .signal_type("like", Duration::from_secs(86_400))
///     .dimension(64)
///     .build()
///     .unwrap();
/// assert_eq!(config.signal_types.len(), 2);
/// // No signal types is refused.
/// assert!(Config::builder("/tmp/x").build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// This node's id, part of every record's stamp. Default 1.
    pub node_id: NodeId,
    /// Role, shard and shard count.
    pub cluster: ClusterConfig,
    /// The signal types, in registration order (their ids are that order).
    pub signal_types: Vec<SignalTypeConfig>,
    /// Dimension of every embedding. Default 64.
    pub dimension: usize,
    /// When writes are acknowledged. Default `Sync`.
    pub durability: Durability,
    /// Segment size: segments are pre-allocated (zero-filled and synced) at
    /// this size, because a sync into a pre-written file costs half of one
    /// that grows it. Default 64 MiB.
    pub segment_bytes: u64,
    /// Under `Durability::Periodic`, appended batches are held in memory up
    /// to this many bytes and written in one piece (at a sync, a roll, or
    /// when full). Default 0: each batch is written at once, so a process
    /// crash loses nothing written, only a machine crash loses the window.
    /// Above 0 a process crash may lose the window too; single-signal
    /// writes skip a `pwrite` each (BENCHMARKS.md, W3). At most 64 MiB;
    /// ignored under `Sync` and `Replicated`, which sync every batch.
    pub write_behind_bytes: usize,
    /// Log bytes kept beyond what the two newest snapshots need, for
    /// followers that lag. Default 1 GiB.
    pub retention_bytes: u64,
    /// A snapshot is taken after this many log bytes: bounds replay time on
    /// open. Default 256 MiB.
    pub snapshot_every_bytes: u64,
    /// What recovery does with damage before the last segment.
    pub recovery_mode: RecoveryMode,
    /// Input and queue limits.
    pub limits: Limits,
    /// A timestamp further than this ahead of the node's clock is refused:
    /// a far-future signal would dominate every score. Default 1 minute.
    /// It must stay below about `768 - landmark_half_lives` half-lives of
    /// every signal type (`validate` refuses longer), or one valid future
    /// signal would rescale the type's other scores to zero.
    pub max_future_skew: Duration,
    /// Entries whose decayed magnitude is below this when their type's
    /// landmark moves are dropped (with their count). 0 (off) by default:
    /// with it on, the score state is bounded by what is live.
    pub score_floor: f64,
    /// Closed sessions older than this (in log time) are dropped. Default 7 days.
    pub session_retention: Duration,
    /// The landmark of a signal type moves every this many half-lives,
    /// multiplying every score of the type by an exact power of two. 64
    /// keeps fresh contributions below 2^64 (far from f64 overflow) while
    /// moving rarely. Default 64.
    pub landmark_half_lives: u32,
    /// A remote clock further ahead than this is refused (replication). Default 1 minute.
    pub max_clock_drift: Duration,
    /// A leader reconciles a diverged suffix as soon as a follower hands
    /// it over (`reconcile()` also runs it on demand). Default `true`.
    pub auto_reconcile: bool,
    /// How long (in log time: the HLC of the batches, the same on every
    /// replica) an idempotency key is remembered: a retry within it returns
    /// the original `Position`, a later one applies again. Default 24 h.
    /// Pinned by `META`: it changes what replay computes.
    pub idempotency_ttl: Duration,
    /// Most idempotency keys held at once: at this count new keyed writes
    /// are refused with `TidalError::IdempotencyFull` (a key is never
    /// forgotten early) until expiry frees room; unkeyed writes go on.
    /// Default 1,000,000 (about 11 keyed writes a second, sustained over
    /// the default TTL): each key costs about `2 × (2 × key length + 160)`
    /// bytes (the read view holds two copies of the state), measured at
    /// about 440 bytes for a 32-byte key, so about 440 MB when full.
    pub idempotency_capacity: usize,
    /// The approximate vector index: when it starts and how many lists a
    /// search probes.
    pub vector_index: VectorIndex,
    /// The storage seam all file access goes through.
    pub storage: Arc<dyn Storage>,
    /// The physical clock behind the HLC and timestamp validation.
    pub clock: Arc<dyn PhysicalClock>,
}

impl Config {
    /// A builder with every default, storing in `data_dir`.
    pub fn builder(data_dir: impl AsRef<Path>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                data_dir: data_dir.as_ref().to_path_buf(),
                node_id: NodeId(1),
                cluster: ClusterConfig::default(),
                signal_types: Vec::new(),
                dimension: 64,
                durability: Durability::Sync,
                segment_bytes: 64 << 20,
                write_behind_bytes: 0,
                retention_bytes: 1 << 30,
                snapshot_every_bytes: 256 << 20,
                recovery_mode: RecoveryMode::Strict,
                limits: Limits::default(),
                max_future_skew: Duration::from_secs(60),
                score_floor: 0.0,
                session_retention: Duration::from_secs(7 * 24 * 3600),
                landmark_half_lives: 64,
                max_clock_drift: Duration::from_secs(60),
                auto_reconcile: true,
                idempotency_ttl: Duration::from_secs(24 * 3600),
                idempotency_capacity: 1_000_000,
                vector_index: VectorIndex::default(),
                storage: Arc::new(RealStorage),
                clock: Arc::new(SystemClock),
            },
        }
    }

    /// Checks the config: at least one signal type, no duplicates, no zero
    /// half-life, a dimension above zero, limits above zero.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(TidalError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.signal_types.is_empty() {
            return bad("signal_types", "register at least one signal type");
        }
        if self.signal_types.len() > u16::MAX as usize {
            return bad("signal_types", "at most 65535 signal types");
        }
        for (i, t) in self.signal_types.iter().enumerate() {
            if t.name.is_empty() {
                return bad("signal_types", "a signal type name is empty");
            }
            if t.name.len() > self.limits.max_name_bytes {
                return bad("signal_types", "a signal type name is over max_name_bytes");
            }
            if t.half_life_ms == 0 {
                return Err(TidalError::InvalidConfig {
                    field: "signal_types",
                    reason: format!("signal type {:?} has a zero half-life", t.name),
                });
            }
            if self.signal_types[..i].iter().any(|o| o.name == t.name) {
                return Err(TidalError::InvalidConfig {
                    field: "signal_types",
                    reason: format!("signal type {:?} is registered twice", t.name),
                });
            }
        }
        if self.dimension == 0 {
            return bad("dimension", "the embedding dimension must be above zero");
        }
        if self.dimension > 65_536 {
            return bad("dimension", "the embedding dimension must be at most 65536");
        }
        if self.cluster.shard_count == 0 {
            return bad("cluster.shard_count", "must be at least 1");
        }
        if self.cluster.shard_id.0 >= self.cluster.shard_count {
            return bad("cluster.shard_id", "must be below cluster.shard_count");
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", "must be at least 4096");
        }
        if self.write_behind_bytes > MAX_WRITE_BEHIND_BYTES {
            return bad("write_behind_bytes", "must be at most 67108864 (64 MiB)");
        }
        if self.landmark_half_lives == 0 || self.landmark_half_lives > 512 {
            return bad("landmark_half_lives", "must be 1 to 512");
        }
        // A timestamp may lead the landmark by `max_future_skew` plus less
        // than one landmark period; at CATCH_UP_HALF_LIVES half-lives the
        // signal store moves the landmark to it, which rescales every other
        // score of the type to zero. A skew that long is refused, so valid
        // input can never wipe the scores of a type.
        let skew_ms = duration_ms(self.max_future_skew);
        let catch_up = crate::state::signals::CATCH_UP_HALF_LIVES;
        for t in &self.signal_types {
            let half_life_ms = t.half_life_ms.max(1);
            let lead = skew_ms / half_life_ms + u64::from(self.landmark_half_lives);
            if lead >= catch_up {
                return Err(TidalError::InvalidConfig {
                    field: "max_future_skew",
                    reason: format!(
                        "{skew_ms} ms is {} half-lives of signal type {:?}; with \
                         landmark_half_lives {} a timestamp may lead its landmark by \
                         {lead} half-lives, the limit is {}: lower max_future_skew or \
                         lengthen the half-life",
                        skew_ms / half_life_ms,
                        t.name,
                        self.landmark_half_lives,
                        catch_up - 1
                    ),
                });
            }
        }
        if !self.score_floor.is_finite() || self.score_floor < 0.0 {
            return bad("score_floor", "must be a finite number >= 0");
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_name_bytes", l.max_name_bytes),
            ("limits.max_key_bytes", l.max_key_bytes),
            ("limits.max_value_bytes", l.max_value_bytes),
            ("limits.max_metadata_fields", l.max_metadata_fields),
            ("limits.max_batch_records", l.max_batch_records),
            ("limits.commit_queue_depth", l.commit_queue_depth),
            ("limits.max_results", l.max_results),
            (
                "limits.max_idempotency_key_bytes",
                l.max_idempotency_key_bytes,
            ),
            ("idempotency_capacity", self.idempotency_capacity),
        ] {
            if v == 0 {
                return bad(field, "must be above zero");
            }
        }
        if l.max_idempotency_key_bytes > crate::wal::format::MAX_IDEMPOTENCY_KEY_BYTES {
            return bad("limits.max_idempotency_key_bytes", "must be at most 1024");
        }
        if let Some((field, reason)) = self.vector_index.invalid() {
            return bad(field, reason);
        }
        if self.idempotency_ttl.is_zero() {
            return bad("idempotency_ttl", "must be above zero");
        }
        if l.max_session_events == 0 {
            return bad("limits.max_session_events", "must be above zero");
        }
        match self.durability {
            Durability::Periodic(d) if d.is_zero() => {
                return bad("durability", "a Periodic interval must be above zero");
            }
            Durability::Replicated { acks, timeout } => {
                if acks == 0 {
                    return bad("durability", "Replicated needs acks of at least 1");
                }
                if timeout.is_zero() {
                    return bad("durability", "Replicated needs a timeout above zero");
                }
                if self.cluster.role != NodeRole::Leader {
                    return bad("durability", "Replicated durability is for leaders");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The id of a signal type by name.
    pub(crate) fn signal_type_id(&self, name: &str) -> Option<u16> {
        self.signal_types
            .iter()
            .position(|t| t.name == name)
            .map(|i| i as u16)
    }
}

#[path = "config_builder.rs"]
mod builder;
pub use builder::ConfigBuilder;

/// The largest `write_behind_bytes`.
pub const MAX_WRITE_BEHIND_BYTES: usize = 64 << 20;

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
