//! The one error type of TidalDb.
//!
//! Every variant is something a caller can act on, and carries the field,
//! limit, path or offset involved. Input errors are raised before anything
//! reaches the log, so a refused write leaves the database unchanged.

use std::path::PathBuf;

use crate::types::{EntityId, EntityKind, Epoch, Position, SessionId, ShardId};

/// Result alias used throughout the crate.
pub type Result<T, E = TidalError> = std::result::Result<T, E>;

/// Everything that can go wrong in TidalDb.
///
/// ```
/// use tidal::TidalError;
/// let e = TidalError::ReadOnly;
/// assert!(e.to_string().contains("read-only"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TidalError {
    // ----- bad input (the database is unchanged) -----
    /// A weight (or another float input) was NaN or infinite.
    #[error("{field} must be a finite number, got {value}")]
    NonFinite {
        /// Which input field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A signal type name not registered in `Config`.
    #[error("unknown signal type {name:?}: register it in Config::signal_type")]
    UnknownSignalType {
        /// The name given.
        name: String,
    },
    /// A name, key or value was empty.
    #[error("{field} must not be empty")]
    Empty {
        /// Which input field (`signal_type`, `metadata key`, `metadata value`, ...).
        field: &'static str,
    },
    /// A name, key or value was longer than its limit.
    #[error("{field} is {len} bytes, over the limit of {limit} bytes")]
    TooLong {
        /// Which input field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes (a `Config` limit).
        limit: usize,
    },
    /// More metadata fields than `Config::max_metadata_fields` on one entity.
    #[error("entity {id} would hold {count} metadata fields, over the limit of {limit}")]
    TooManyFields {
        /// The entity.
        id: EntityId,
        /// Fields it would hold.
        count: usize,
        /// `Config::max_metadata_fields`.
        limit: usize,
    },
    /// An embedding or query vector of the wrong dimension.
    #[error("{field} has dimension {got}, the database's dimension is {expected}")]
    DimensionMismatch {
        /// Which input field.
        field: &'static str,
        /// The configured dimension.
        expected: usize,
        /// The dimension given.
        got: usize,
    },
    /// An embedding or query vector that is all zeros (it has no direction).
    #[error("{field} is all zeros and has no direction for cosine similarity")]
    ZeroVector {
        /// Which input field.
        field: &'static str,
    },
    /// An embedding or query vector holding NaN or infinity.
    #[error("{field}[{index}] is not finite")]
    NonFiniteVector {
        /// Which input field.
        field: &'static str,
        /// The first bad component.
        index: usize,
    },
    /// A timestamp further ahead of the node's clock than `Config::max_future_skew`.
    #[error(
        "{field} {at_ms} ms is {ahead_ms} ms ahead of the clock, over max_future_skew of {limit_ms} ms"
    )]
    TimestampTooFarAhead {
        /// Which input field.
        field: &'static str,
        /// The timestamp given.
        at_ms: u64,
        /// How far ahead of the clock it is.
        ahead_ms: u64,
        /// `Config::max_future_skew` in milliseconds.
        limit_ms: u64,
    },
    /// An id already used by the other kind (items and creators share one id space).
    #[error("entity {id} is a {existing:?} and cannot be written as a {requested:?}")]
    KindMismatch {
        /// The id.
        id: EntityId,
        /// The kind it already has.
        existing: EntityKind,
        /// The kind the write asked for.
        requested: EntityKind,
    },
    /// An event or close naming a session that was never opened (or was dropped).
    #[error("session {session} is unknown")]
    UnknownSession {
        /// The session.
        session: SessionId,
    },
    /// An event or close naming a session that is already closed.
    #[error("session {session} is closed")]
    SessionClosed {
        /// The session.
        session: SessionId,
    },
    /// `open_session` on a session id that already exists.
    #[error("session {session} is already open or was used before")]
    SessionExists {
        /// The session.
        session: SessionId,
    },
    /// A session holding `Config::max_session_events` events.
    #[error("session {session} holds {limit} events, the limit")]
    SessionFull {
        /// The session.
        session: SessionId,
        /// `Config::max_session_events`.
        limit: u32,
    },
    /// A batch with more records than `Config::max_batch_records`, or an empty one.
    #[error("a batch holds {records} records; it must hold 1 to {limit}")]
    BatchSize {
        /// Records in the batch.
        records: usize,
        /// `Config::max_batch_records`.
        limit: usize,
    },
    /// An idempotency key already used, within `Config::idempotency_ttl`,
    /// by a write of other content. Nothing was applied.
    #[error(
        "idempotency key of {key_len} bytes starting {key_prefix:?} was used at {original} by a write of other content"
    )]
    IdempotencyConflict {
        /// The key's length in bytes.
        key_len: usize,
        /// Its first bytes (up to 16, lossily shown as UTF-8), never the whole key.
        key_prefix: String,
        /// The `Position` of the write that holds the key.
        original: Position,
    },
    /// `Config::idempotency_capacity` keys are held: a new keyed write is
    /// refused (no key is forgotten before its TTL) until expiry frees room.
    /// Nothing was applied; writes without a key go on.
    #[error(
        "the idempotency store holds its capacity of {capacity} keys (Config::idempotency_capacity); keys expire after Config::idempotency_ttl"
    )]
    IdempotencyFull {
        /// `Config::idempotency_capacity`.
        capacity: usize,
    },
    /// An entity (or a session's user) that routes to another shard.
    #[error("{field} {id} belongs to shard {owner}, this node serves shard {this}")]
    WrongShard {
        /// Which input field (`entity`, `user`, ...).
        field: &'static str,
        /// The id.
        id: u64,
        /// The shard that owns it.
        owner: ShardId,
        /// The shard this node serves.
        this: ShardId,
    },
    /// A `Config` that cannot describe a database.
    #[error("invalid config: {field}: {reason}")]
    InvalidConfig {
        /// The config field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    // ----- opening -----
    /// The `Config` identity differs from the one in `META`.
    #[error("config {field} is {given} but the database at this path was created with {stored}")]
    ConfigMismatch {
        /// The identity field that differs.
        field: &'static str,
        /// The value stored in `META`.
        stored: String,
        /// The value in the `Config`.
        given: String,
    },
    /// Another process (or another open in this one) holds the data directory.
    #[error("data directory {path} is locked by another open database")]
    Locked {
        /// The `LOCK` file.
        path: PathBuf,
    },
    /// The persisted role, `config.cluster.role` and the open called disagree.
    #[error("role mismatch: {reason}")]
    RoleMismatch {
        /// What disagrees.
        reason: String,
    },

    // ----- storage -----
    /// An I/O error from the storage seam.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`open`, `write`, `sync`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Damaged data on disk that recovery must not skip over.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// An earlier write or sync failed: the database refuses writes until reopened.
    #[error("database poisoned by an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the database.
        cause: String,
    },
    /// A read of the log from a SeqNo older than the retained log (e.g. a
    /// preference export since an old position).
    #[error(
        "{field}: SeqNo {since} is older than the retained log, which starts at {first_retained}"
    )]
    NotRetained {
        /// The argument.
        field: &'static str,
        /// The SeqNo asked for.
        since: crate::types::SeqNo,
        /// The first SeqNo still in the log.
        first_retained: crate::types::SeqNo,
    },
    /// The database is closing or closed.
    #[error("database is closed")]
    Closed,

    // ----- roles and replication -----
    /// A write on a follower opened through `AnyDb`.
    #[error("this node is a follower and read-only; send writes to the shard's leader")]
    ReadOnly,
    /// `promote` was handed an epoch not above every epoch this node has
    /// seen: the coordinator must hand out a fresh, higher one.
    #[error(
        "stale epoch: promote needs an epoch above {highest}, the highest this node has seen; got {given}"
    )]
    StaleEpoch {
        /// The epoch handed to `promote`.
        given: Epoch,
        /// The highest epoch in this node's history.
        highest: Epoch,
    },
    /// A leader that learned of a higher epoch.
    #[error("fenced: epoch {seen} is above this leader's epoch {ours}")]
    Fenced {
        /// This node's epoch.
        ours: Epoch,
        /// The higher epoch seen.
        seen: Epoch,
    },
    /// A write under `Durability::Replicated` was not acknowledged by enough
    /// followers in time. It is durable on the leader and may still apply
    /// on the followers: retry with the same content, or read it back.
    #[error(
        "write at SeqNo {seqno} was not acknowledged by {acks} followers within {timeout_ms} ms; it may still apply"
    )]
    ReplicationTimeout {
        /// The write's last SeqNo.
        seqno: crate::types::SeqNo,
        /// Followers that had to acknowledge it.
        acks: usize,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A leader or follower open needs a multi-threaded Tokio runtime.
    #[error("no usable Tokio runtime: {reason}")]
    NoRuntime {
        /// What is missing.
        reason: &'static str,
    },
    /// `wait_for` named a record this node's history holds in another epoch.
    #[error("position {wanted} diverged: this node holds epoch {held} at that SeqNo")]
    Diverged {
        /// The position waited for.
        wanted: crate::types::Position,
        /// The epoch this node holds at that SeqNo.
        held: Epoch,
    },
    /// `wait_for` timed out before the record was applied here.
    #[error("position {wanted} not applied within {timeout_ms} ms (applied: {applied})")]
    WaitTimeout {
        /// The position waited for.
        wanted: crate::types::Position,
        /// What this node has applied.
        applied: crate::types::Position,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A remote clock further ahead than `max_drift`.
    #[error("remote clock {remote_ms} ms is {ahead_ms} ms ahead, over max drift {limit_ms} ms")]
    ClockSkew {
        /// The remote physical time.
        remote_ms: u64,
        /// How far ahead it is.
        ahead_ms: u64,
        /// The allowed drift.
        limit_ms: u64,
    },

    // ----- transport (replication connections) -----
    /// A replication connection could not be made or broke: refused, reset,
    /// closed mid-frame, not a TidalDb peer, or a transport used in the wrong
    /// role. Reconnecting may help.
    #[error("replication transport with {peer}: {reason}")]
    Transport {
        /// The peer's address or label.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer did not prove the cluster secret, or refused our proof. The
    /// secrets differ (or someone without the secret tried to connect), so
    /// retrying will not help until the configuration is fixed.
    #[error("authentication with {peer} failed: {reason}")]
    AuthFailed {
        /// The peer's address or label.
        peer: String,
        /// Which proof failed.
        reason: String,
    },
    /// A frame whose MAC tag or sequence number is wrong: tampered with,
    /// replayed, reordered or injected. The connection is closed.
    #[error("frame from {peer} refused at sequence {expected_seq}: {reason}; connection closed")]
    FrameRejected {
        /// The peer's address or label.
        peer: String,
        /// The sequence number this side expected next.
        expected_seq: u64,
        /// What was wrong with the frame.
        reason: String,
    },
    /// A frame longer than the transport's frame cap, refused before any
    /// buffer for it was allocated. The connection is closed.
    #[error("frame of {len} bytes with {peer} is over the limit of {limit_bytes} bytes")]
    FrameTooLarge {
        /// The peer's address or label.
        peer: String,
        /// The length announced (received) or given (sent).
        len: u64,
        /// The cap (`TcpOptions::max_frame_bytes`).
        limit_bytes: usize,
    },
    /// A read or write with a peer made no progress within its timeout.
    /// The connection is closed.
    #[error("{op} with {peer} timed out after {timeout_ms} ms")]
    TransportTimeout {
        /// The peer's address or label.
        peer: String,
        /// What was waiting (`handshake`, `read frame`, `write frame`, `connect`).
        op: &'static str,
        /// The timeout that elapsed.
        timeout_ms: u64,
    },
}

impl TidalError {
    /// Wraps an I/O error with the operation and path it came from.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TidalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corruption error.
    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        TidalError::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
