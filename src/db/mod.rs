//! `TidalDb<R>` and `AnyDb`.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, NodeRole};
use crate::error::Result;
use crate::role::{Role, Single};
use crate::types::{Position, SeqNo};

mod any;
pub(crate) mod batch;
pub(crate) mod core;
mod read;
pub(crate) mod sequencer;
pub(crate) mod validate;
pub(crate) mod view;
mod write;

pub use any::AnyDb;
pub use batch::WriteBatch;
pub use read::{SessionEvent, Status};

use self::core::Core;

/// A TidalDb node whose role is its type parameter: `TidalDb<Single>` (the
/// default), `TidalDb<Leader>` or `TidalDb<Follower>`.
///
/// Reads exist for every role; writes only where `R: Writable`, so a write
/// on a follower does not compile. All methods take `&self`: share a
/// database across threads in an `Arc`.
///
/// ```
/// use std::time::Duration;
/// use tidal::{Config, EntityId, TidalDb, Timestamp};
/// let dir = tempfile::tempdir().unwrap();
/// let config = Config::builder(dir.path())
///     .signal_type("like", Duration::from_secs(3_600))
///     .build()
///     .unwrap();
/// let db = TidalDb::open(config).unwrap();
/// let now = Timestamp::now();
/// let pos = db.signal("like", EntityId(7), 1.0, now).unwrap();
/// assert!(pos.seqno.0 >= 2); // SeqNo 1 is the EpochStart of epoch 1
/// assert!((db.read_decay_score(EntityId(7), "like", now).unwrap() - 1.0).abs() < 1e-9);
/// db.close().unwrap();
/// ```
#[derive(Debug)]
pub struct TidalDb<R: Role = Single> {
    pub(crate) core: Arc<Core>,
    #[allow(dead_code)] // the role's replication handles arrive with the replication work
    pub(crate) role: R,
}

impl TidalDb<Single> {
    /// Opens (or creates) a single node: no replication, no runtime needed.
    /// `config.cluster.role` must be `Single`; a log led by a replicated
    /// leader or another node is `TidalError::RoleMismatch`.
    pub fn open(config: Config) -> Result<TidalDb<Single>> {
        let core = Core::open(config, NodeRole::Single)?;
        Ok(TidalDb { core, role: Single })
    }
}

impl<R: Role> TidalDb<R> {
    /// Forces the log to disk (useful under `Durability::Periodic`).
    pub fn flush(&self) -> Result<()> {
        self.core.flush()
    }

    /// Writes a snapshot now; returns its SeqNo. The two newest snapshots
    /// are kept, with every segment since the older one.
    pub fn checkpoint(&self) -> Result<SeqNo> {
        self.core.checkpoint()
    }

    /// Writes a consistent copy of the database into `dir` (missing or
    /// empty) while writes go on; opening it gives the state at the
    /// returned Position.
    pub fn backup(&self, dir: impl AsRef<Path>) -> Result<Position> {
        self.core.backup(dir.as_ref())
    }

    /// Flushes, stops the maintenance threads and reports any error.
    pub fn close(self) -> Result<()> {
        self.core.shutdown()
    }

    /// The database's configuration.
    pub fn config(&self) -> &Config {
        self.core.config()
    }
}

impl<R: Role> Drop for TidalDb<R> {
    fn drop(&mut self) {
        if let Err(e) = self.core.shutdown() {
            tracing::error!(error = %e, "closing the database on drop failed");
        }
    }
}
