//! TidalDb: an embedded, replicated database for real-time recommendation
//! signals.
//!
//! A service links it in, records engagement signals (view, like, skip ...)
//! against items and creators, and reads decayed scores, trending top-k,
//! embedding similarity and user sessions.
//!
//! ```
//! use std::time::Duration;
//! use tidal::{Config, EntityId, Retrieve, Search, TidalDb, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let db = TidalDb::open(
//!     Config::builder(dir.path())
//!         .signal_type("view", Duration::from_secs(3_600))
//!         .signal_type("like", Duration::from_secs(86_400))
//!         .dimension(3)
//!         .build()?,
//! )?;
//! let now = Timestamp::now();
//! db.write_creator(EntityId(100), &[("name", "ada")])?;
//! db.write_item(EntityId(1), Some(EntityId(100)), &[("lang", "en")])?;
//! db.write_item_embedding(EntityId(1), &[0.1, 0.9, 0.0])?;
//! db.signal("like", EntityId(1), 1.0, now)?;
//! db.signal("like", EntityId(2), 1.0, now)?;
//! db.signal("like", EntityId(2), 1.0, now)?;
//!
//! let top = db.retrieve(&Retrieve::top(10, "like", now))?;
//! assert_eq!(top[0].id, EntityId(2));
//! let similar = db.search(&Search::new(vec![0.0, 1.0, 0.0], 1))?;
//! assert_eq!(similar[0].id, EntityId(1));
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Roles are types
//!
//! [`TidalDb<Single>`](TidalDb) (the embedded default), `TidalDb<Leader>` and
//! `TidalDb<Follower>` are distinct types. Write methods carry a
//! `where R: Writable` bound, so a write on a follower does not compile and
//! rustc says why ("`Follower` is a read-only role ..."). [`Role`] is
//! sealed. [`AnyDb`] picks the role at run time; a follower write there
//! returns [`TidalError::ReadOnly`].
//!
//! A leader ([`TidalDb::open_leader`]) ships its durable log, as the exact
//! bytes of its batches, to the followers that connect over a
//! [`Transport`]; a follower ([`TidalDb::open_follower`]) receives from the
//! moment it is opened, appends, syncs and applies through the same function
//! recovery uses. `wait_for` gives read-your-writes across nodes,
//! `Durability::Replicated` waits for follower acknowledgements, and
//! `promote(self, epoch)` turns a follower into a leader. The protocol is a
//! sans-I/O state machine; Tokio tasks only move bytes.
//!
//! # Sharding in one process
//!
//! A node serves one shard and refuses entities of another
//! ([`TidalError::WrongShard`]). [`ShardedDb`] runs one node per shard in a
//! process (`<data_dir>/shard-N`, or leaders handed to
//! [`ShardedDb::from_shards`]): writes go to the owning shard
//! ([`ShardRouter`], by entity, or by user for sessions), a `WriteBatch` is
//! split per shard (atomic per shard), and `retrieve`/`search` merge every
//! shard's top-k into the global top-k (exact for `retrieve`, and for
//! `search` while no shard's embeddings are indexed; see below).
//!
//! # Durability and the log
//!
//! Every write is validated, then handed to the group committer: concurrent
//! writers are packed into one log batch (`BatchHeader` v2, CRC-checked) and
//! one fdatasync. Under [`Durability::Sync`] (the default) a write returns
//! after its batch is synced; under [`Durability::Periodic`] after it is
//! written, with a background sync at the interval. Decision: with
//! [`Config::write_behind_bytes`] above 0, `Periodic` holds appended
//! batches in memory up to that size and writes them in one piece (at each
//! sync, roll, full buffer, and before anything reads the log files): a
//! single-signal write then skips a `pwrite`, about half its cost
//! (BENCHMARKS.md, W3), and a process crash may lose what is held, as a
//! machine crash always could. It is off by default, so by default a
//! process crash loses nothing written. A follower syncs a run of received
//! batches once before it applies and acknowledges them (its own group
//! commit). A failed write or sync
//! poisons the database ([`TidalError::Poisoned`]) until it is reopened.
//! Segments are pre-allocated (zero-filled and synced ahead of need);
//! recovery reads zeros as the end of the log, cuts a torn tail and reports
//! it, and refuses to skip damage that may hold acknowledged writes
//! ([`TidalError::Corruption`] naming file and offset). All file access goes
//! through the [`storage::Storage`] seam; [`SimStorage`] simulates crashes
//! that lose unsynced writes and injects faults. [`inspect`] verifies a
//! data directory read-only (every checksum, torn tails, damage by file and
//! offset): the API behind `examples/inspect.rs`. Decision: recovery
//! replays the log after the snapshot on two threads, one reading and
//! decoding, one applying, with runs of signal-only batches applied one
//! thread per signal type; the state is bit for bit the batch-by-batch
//! one (`state::replay`). The open then clones the state into the read
//! view's second copy with a thread per signal type (`state::clone_threads`).
//!
//! A known cost: a signal type's score table grows by 1.5x, at a load of
//! 0.8, in one step (an allocation, and every entry placed again), and
//! writes wait for it while reads go on from the other copy. One growth of
//! a 1.5M-entry table to 3.0M slots took 94-122 ms here, the other copy's
//! catching up 60 ms more (BENCHMARKS.md, the ninth session's run): the
//! longest write stall left, rare (each table size is passed once), and
//! growing with the table. Growing incrementally would remove it.
//!
//! Checkpoints (`checkpoint`, and in the background every
//! `Config::snapshot_every_bytes` of log) keep writes flowing. Decision:
//! the state is copied at one position while the committer goes on: the
//! small parts under one short read lock, the score tables' slots in 1 MiB
//! slices under a lock each, the writer keeping a slot's old value before
//! it first writes it (`state::score_slots`); the snapshot file, like each
//! pre-allocated segment, is synced every 8 MiB as it is written, so the
//! log's own syncs never queue behind a whole file; retired segments are
//! deleted after the committer is released; and under `Periodic` a flush
//! (the background one, a checkpoint's) syncs the log outside it, except on
//! a follower, whose syncs acknowledge received batches. W10 in
//! BENCHMARKS.md has the figures.
//!
//! # Decisions where the design was silent
//!
//! - **Identity.** `META` pins node id, shard, shard count, signal types
//!   (order, names, half-lives) and dimension, and also the state-machine
//!   parameters `landmark_half_lives`, `score_floor`, `session_retention`,
//!   `idempotency_ttl` and `vector_index.min_vectors`: changing any of them would make a replay
//!   compute another state from the same log (for the TTL: which keys are
//!   live, so whether a retry applies again), so a different value on
//!   reopen is [`TidalError::ConfigMismatch`], and a follower must share
//!   them with its leader (they are part of the fingerprint). `META`
//!   format 2 adds the TTL; a format 1 file reads as the default 24 h.
//!   Format 3 adds `min_vectors`; formats 1 and 2 read as the default
//!   100,000, which the fingerprint leaves out (existing clusters keep
//!   theirs).
//!   `idempotency_capacity` is not pinned: it only decides what the
//!   sequencer admits, never what a logged record does.
//! - **Idempotency keys.** [`WriteBatch::idempotency_key`] makes a batch
//!   (or a one-write batch) safe to retry: the key is logged as the
//!   request's last record (`Record::IdempotencyKey`, its SeqNo is the
//!   request's `Position`) with a 16-byte truncated SHA-256 of the
//!   request's encoded records, applied by `State::apply_batch` (recovery
//!   and followers rebuild the same store), snapshotted in its own section
//!   (id 7, version 1; a snapshot without it is an empty store) and
//!   expired by the HLC of the batch being applied, so every replica
//!   forgets a key at the same batch. A retry returns the original
//!   `Position` once it is as durable (and replicated) as the node's
//!   durability asks; other content is [`TidalError::IdempotencyConflict`];
//!   at `Config::idempotency_capacity` (default 1,000,000 keys; about 440
//!   bytes of memory per 32-byte key, both read-view copies counted) new
//!   keys are [`TidalError::IdempotencyFull`], never an early eviction.
//!   Reconciliation does not yet fold keys from a diverged suffix into
//!   the store (it reports them as not merged).
//! - **Vector search is exact below [`VectorIndex::min_vectors`] and an
//!   inverted file (IVF) above it.** A kind's embeddings are scanned
//!   exactly until it holds `min_vectors` of them (default 100,000: an
//!   exact scan of 100k x 128 takes about 4 ms). Then they are split into
//!   `2 * sqrt(n)` lists by a deterministic two-level spherical k-means
//!   (fixed-seed k-means++ on a strided sample; no threads, no time), and
//!   trained again each time the kind has grown fourfold; a search scans
//!   the [`VectorIndex::probes`] lists nearest the query (default 32: the
//!   recall knob), a filtered search up to four times as many by the
//!   filter's selectivity, and any search more lists while it holds fewer
//!   than `k` results, so it never returns fewer than the exact answer.
//!   The centroids and lists are in the snapshot (vectors section version
//!   2), so a reopen or a seeded follower reads the index instead of
//!   refitting it and answers exactly like a replica that built it write
//!   by write. On a seeded 1M x 128 Gaussian mixture: recall@10 0.986 at
//!   32 probes (`examples/compare`, W6-approx; figures in `state/ann.rs`).
//!   The price: a training stalls the write that triggers it (6 to 13 s
//!   at 400k vectors under load, applied to both read-view copies), and an
//!   insert scores about 180 centroids. `META` (format 3) pins
//!   `min_vectors` (it decides the index replay builds); `probes` only
//!   decides what a read scans and is not pinned, so set it equal on every
//!   replica for replicas to answer alike.
//! - **Kinds are sticky.** An id written as an item (metadata, embedding or
//!   delete) stays an item, also after its delete; signals do not bind a
//!   kind (they may arrive before metadata). An entity whose kind is unknown
//!   matches no kind filter.
//! - **Deletes** drop the entity's scores, counts, metadata and embedding
//!   (memory is freed) and keep a small tombstone; any later write brings
//!   the entity back fresh.
//! - **Retrieve** ranks the entities holding a signal of at least one of the
//!   blended types (an entity with none scores 0.0 and is not listed).
//!   Ties are broken by id. A blend with non-negative weights uses Fagin's
//!   threshold algorithm over the per-type indexes; negative weights fall
//!   back to an exact scan.
//! - **Read view.** Readers never wait for a batch being applied: the state
//!   is kept twice (left-right), the writer applies each batch to the copy
//!   readers are not using and then publishes it. The price is twice the
//!   state memory and bringing the second copy up too: for a batch of
//!   signals it copies the score-table slots the first apply wrote instead
//!   of applying the batch again (about a third of an apply's cost;
//!   `state::mirror`), other batches apply twice. For a large batch that
//!   runs on a catch-up thread while the writer goes on (see the `view`
//!   module).
//!   Each read method is one view; [`TidalDb::read_view`] runs a closure
//!   on one published state, so a top-k and the point reads of what it
//!   returned agree ([`ReadView::position`] says where). A closure, not a
//!   guard: holding a view delays the writer's second apply of a batch
//!   (and so the next batch), and a closure cannot be kept or leaked.
//! - **Sessions** are numbered in the sequencer, so two racing writers can
//!   never open the same session or give two events one number. Retention
//!   of closed sessions is counted in log time (the batch HLC), so every
//!   replica expires the same sessions. Hard negatives outlive expired
//!   sessions until `delete_user`.
//! - **Backups** are a snapshot plus `META` (no log): opening one gives the
//!   state at the returned Position, and writes continue from there.
//!   A backup's `META` names the node it was taken from, so another node
//!   cannot open it in place (`ConfigMismatch` on `node_id`, the check that
//!   keeps a node off another node's directory). Seeding a follower is an
//!   explicit step, [`restore_backup`]: it copies the snapshot into the
//!   new node's empty directory and writes `META` with the new node id,
//!   once the rest of the identity matches. The follower then says hello
//!   with the backup's Position and receives only what follows it.
//! - **`RecoveryMode::PointInTime`** renames the segments after the damage
//!   to `*.damaged` rather than deleting them: evidence is kept.
//! - **Followers behind the retained log** get the leader's newest snapshot
//!   (1 MiB chunks), install it durably, drop every segment it covers and
//!   restart their log right after it, then stream the rest. A crash
//!   mid-install reopens from the snapshot and drops the stale segments.
//! - **Retention for followers** holds segments for every follower node the
//!   leader has heard from since it opened (its last durable SeqNo is kept
//!   after it disconnects), up to `retention_bytes` beyond what the two
//!   newest snapshots need; past that the follower catches up through a
//!   snapshot. A leader restart forgets them (in memory only).
//! - **The highest epoch seen** is persisted in `<data_dir>/EPOCH`
//!   (CRC-checked, synced) whenever a follower is welcomed by a higher
//!   epoch or a leader is told of one: a follower restart still refuses
//!   older leaders, a fenced leader reopened as leader stays fenced, and
//!   `promote` must go above it.
//! - **Diverged suffixes** travel in messages of at most 1 MiB of whole
//!   batches (below any frame cap). A leader keeps what a follower sends as
//!   `diverged/<epoch>-<first>-n<node>.batches`; the same suffix sent again
//!   is stored once and a different one with the same name gets a numbered
//!   file, so nothing held is overwritten. `status().diverged` lists them
//!   until reconciliation merges them.
//! - **Reconciliation folds increases into the hot score.** A `Merge`
//!   record raises its key's stored contribution to the pointwise maximum
//!   (kept per touched (entity, type) only, in its own snapshot section)
//!   and adds the increase to the entity's one signed sum and count. The
//!   trending index therefore stays the only index and reads are
//!   unchanged; replicas hold the same bits because they apply the same
//!   merge records in log order. A merged suffix file is renamed
//!   `.merged` and kept as evidence.
//! - **Reconciliation merges every kind of record, each once.** Metadata,
//!   embeddings and deletes are last-writer-wins by the stamp they had in
//!   their own lineage (`Reconciled` records); session events are appended
//!   after the session's last number and marked merged; idempotency keys
//!   are logged before their requests' writes, so a retry during or after
//!   the reconciliation is answered, and a request already retried here is
//!   skipped; records that no longer make sense are dropped and reported.
//!   The rules are in `db/reconcile.rs` and `ReconcileReport`. A follower
//!   sends every unmerged suffix it holds to each leader it joins, so a
//!   second failover before a reconciliation finished loses nothing.
//! - **The contract's `ReconciliationEngine` is `TidalDb::reconcile`** (and
//!   the automatic run when a suffix arrives), not a separate type in
//!   `crdt/`: it has to read the state and log through the commit path, so
//!   it lives with the engine core (`db/reconcile.rs` runs it,
//!   `db/reconcile_plan.rs` turns a suffix and the state into the records
//!   to log), and the CRDT types in `crdt/` stay free of I/O.
//! - **Reconciliation logs three record kinds of its own**: `Merge`
//!   (a contribution), `Reconciled` (a register write with its origin
//!   stamp; the codec allows only an upsert, embedding or delete inside)
//!   and `MergedSessionEvent` (numbered when applied, once per origin
//!   position). An idempotency key record carries its request's record
//!   count and whether a reconciliation logged it, so a suffix's requests
//!   can be told apart and a request retried here after a failover is
//!   skipped instead of counted twice.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub(crate) mod codec;
pub mod config;
pub mod config_file;
pub mod crdt;
pub mod db;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod idempotency;
pub mod inspect;
pub(crate) mod meta;
pub mod query;
pub mod replication;
pub mod role;
pub mod shard;
pub mod sharded;
pub(crate) mod snapshot;
mod splitmix;
pub(crate) mod state;
pub mod storage;
pub mod types;
pub(crate) mod wal;

pub use config::{
    ClusterConfig, Config, ConfigBuilder, Durability, Limits, NodeRole, RecoveryMode,
    SignalTypeConfig, VectorIndex,
};
pub use crdt::hlc::{Hlc, HlcClock, ManualClock, PhysicalClock, SystemClock};
pub use crdt::{
    Contribution, ContributionKey, CrdtSignalState, LWWRegister, MergeOutcome, PNCounter, Stamp,
};
pub use db::core::RecoveryReport;
pub use db::{
    AnyDb, ClockSkew, DivergedSuffix, ExportReport, FollowerInfo, ReadView, ReconcileConflict,
    ReconcileReport, SessionEvent, Status, TidalDb, WriteBatch, restore_backup,
};
pub use error::{Result, TidalError};
pub use query::{Filter, Retrieve, Scored, Search};
pub use replication::in_process::InProcessTransport;
pub use replication::tcp::{TcpOptions, TcpTransport};
pub use replication::transport::{Connection, FrameReceiver, FrameSender, Listener, Transport};
pub use role::{Follower, Leader, Role, Single, Writable};
pub use shard::ShardRouter;
pub use sharded::{ShardedDb, ShardedReadView};
pub use state::entities::{Creator, Item};
pub use state::sessions::SessionInfo;
pub use storage::{RealStorage, SimStorage, Storage};
pub use types::{
    EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, SessionId, ShardId, Timestamp, UserId,
};
pub use wal::log::{CutKind, LogCut};
