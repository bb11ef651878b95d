//! TidalDb: an embedded, replicated database for real-time recommendation signals.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod codec;
pub mod config;
pub mod crdt;
pub mod db;
pub mod error;
pub mod meta;
pub mod role;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod types;
pub mod wal;

pub use config::{ClusterConfig, Config, ConfigBuilder, Durability, Limits, NodeRole, RecoveryMode, SignalTypeConfig};
pub use crdt::hlc::{Hlc, HlcClock, ManualClock, PhysicalClock, SystemClock};
pub use db::{AnyDb, TidalDb};
pub use error::{Result, TidalError};
pub use role::{Follower, Leader, Role, Single, Writable};
pub use types::{EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, SessionId, ShardId, Timestamp, UserId};
