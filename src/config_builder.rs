//! The [`ConfigBuilder`]: a setter per [`Config`] field, then `build`,
//! which validates.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Builds a [`Config`].
///
/// ```
/// use std::time::Duration;
/// use tidal::{Config, Durability};
/// let c = Config::builder("/tmp/tidal-doc-builder")
///     .signal_type("like", Duration::from_secs(86_400))
///     .durability(Durability::Periodic(Duration::from_millis(100)))
///     .build()
///     .unwrap();
/// assert_eq!(c.durability, Durability::Periodic(Duration::from_millis(100)));
/// ```
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    pub(crate) config: Config,
}

impl ConfigBuilder {
    /// Registers a signal type with its half-life (ids follow registration order).
    pub fn signal_type(mut self, name: impl Into<String>, half_life: Duration) -> Self {
        self.config.signal_types.push(SignalTypeConfig {
            name: name.into(),
            half_life_ms: u64::try_from(half_life.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }
    /// This node's id.
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.config.node_id = id;
        self
    }
    /// Role, shard and shard count.
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.config.cluster = cluster;
        self
    }
    /// The embedding dimension.
    pub fn dimension(mut self, dimension: usize) -> Self {
        self.config.dimension = dimension;
        self
    }
    /// When writes are acknowledged.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }
    /// Segment size in bytes.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.config.segment_bytes = bytes;
        self
    }
    /// Log bytes held in memory before they are written under
    /// `Durability::Periodic` (0, the default, writes each batch at once).
    pub fn write_behind_bytes(mut self, bytes: usize) -> Self {
        self.config.write_behind_bytes = bytes;
        self
    }
    /// Log bytes kept for lagging followers.
    pub fn retention_bytes(mut self, bytes: u64) -> Self {
        self.config.retention_bytes = bytes;
        self
    }
    /// Log bytes between automatic snapshots.
    pub fn snapshot_every_bytes(mut self, bytes: u64) -> Self {
        self.config.snapshot_every_bytes = bytes;
        self
    }
    /// What recovery does with damage before the last segment.
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.config.recovery_mode = mode;
        self
    }
    /// Input and queue limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }
    /// Largest accepted lead of a timestamp over the clock.
    pub fn max_future_skew(mut self, skew: Duration) -> Self {
        self.config.max_future_skew = skew;
        self
    }
    /// Drop entries below this decayed magnitude when the landmark moves.
    pub fn score_floor(mut self, floor: f64) -> Self {
        self.config.score_floor = floor;
        self
    }
    /// How long closed sessions are kept (log time).
    pub fn session_retention(mut self, retention: Duration) -> Self {
        self.config.session_retention = retention;
        self
    }
    /// Half-lives between landmark moves.
    pub fn landmark_half_lives(mut self, n: u32) -> Self {
        self.config.landmark_half_lives = n;
        self
    }
    /// How long idempotency keys are remembered (log time; pinned by `META`).
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.config.idempotency_ttl = ttl;
        self
    }
    /// Most idempotency keys held at once.
    pub fn idempotency_capacity(mut self, capacity: usize) -> Self {
        self.config.idempotency_capacity = capacity;
        self
    }
    /// The approximate vector index's knobs ([`VectorIndex`]).
    pub fn vector_index(mut self, index: VectorIndex) -> Self {
        self.config.vector_index = index;
        self
    }
    /// Largest accepted lead of a remote clock.
    pub fn max_clock_drift(mut self, drift: Duration) -> Self {
        self.config.max_clock_drift = drift;
        self
    }
    /// Whether a leader reconciles diverged suffixes as they arrive.
    pub fn auto_reconcile(mut self, on: bool) -> Self {
        self.config.auto_reconcile = on;
        self
    }
    /// The storage seam (tests pass a `SimStorage`).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.config.storage = storage;
        self
    }
    /// The physical clock (tests pass a `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn PhysicalClock>) -> Self {
        self.config.clock = clock;
        self
    }
    /// Checks and returns the config.
    pub fn build(self) -> Result<Config> {
        self.config.validate()?;
        Ok(self.config)
    }
}
