//! `TidalDb<R>` and `AnyDb`.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use crate::config::{Config, NodeRole};
use crate::error::{Result, TidalError};
use crate::replication::node::{runtime, start_leader};
use crate::replication::node_follower::start_follower;
use crate::replication::protocol::epoch_at;
use crate::replication::transport::Transport;
use crate::role::{Follower, Leader, Role, Single, Writable};
use crate::types::{Epoch, Position, SeqNo};

mod any;
pub(crate) mod batch;
pub(crate) mod core;
mod idem;
mod maintenance;
mod metrics;
pub(crate) mod overlay;
mod read;
mod read_view;
mod restore;
pub(crate) mod sequencer;
pub(crate) mod validate;
pub(crate) mod view;
mod write;

pub use self::core::export::ExportReport;
pub use self::core::reconcile::{ReconcileConflict, ReconcileReport};
pub use self::core::repl::DivergedSuffix;
pub use any::AnyDb;
pub use batch::WriteBatch;
pub use read::{ClockSkew, SessionEvent, Status};
pub use read_view::ReadView;
pub use restore::restore_backup;

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

impl TidalDb<Leader> {
    /// Opens (or creates) the leader of a shard: it takes writes and ships
    /// its durable log to the followers that connect over `transport`.
    /// Must be called inside a multi-threaded Tokio runtime, whose tasks
    /// move the bytes (`TidalError::NoRuntime` otherwise).
    /// `config.cluster.role` must be `Leader`.
    pub fn open_leader(config: Config, transport: Arc<dyn Transport>) -> Result<TidalDb<Leader>> {
        let handle = runtime()?;
        let core = Core::open(config, NodeRole::Leader)?;
        let tasks = start_leader(&core, transport, &handle)?;
        Ok(TidalDb {
            core,
            role: Leader { tasks },
        })
    }

    /// The followers this leader ships to: sent, durable and applied
    /// positions and lag.
    pub fn followers(&self) -> Vec<FollowerInfo> {
        self.role
            .tasks
            .followers()
            .into_iter()
            .map(|f| FollowerInfo {
                node: f.node,
                sent: f.sent,
                durable: f.durable,
                applied: f.applied,
                lag_records: f.lag_records,
                lag_ms: f.lag_ms,
            })
            .collect()
    }
}

impl TidalDb<Follower> {
    /// Opens (or creates) a read-only follower whose `SegmentReceiver`
    /// starts at once: it connects to the leader over `transport`, says
    /// hello with its last position, and appends, syncs and applies what it
    /// is sent. There is no separate start call. Must be called inside a
    /// multi-threaded Tokio runtime. `config.cluster.role` must be `Follower`.
    pub fn open_follower(
        config: Config,
        transport: Arc<dyn Transport>,
    ) -> Result<TidalDb<Follower>> {
        let handle = runtime()?;
        let core = Core::open(config, NodeRole::Follower)?;
        let tasks = start_follower(&core, transport.clone(), &handle)?;
        Ok(TidalDb {
            core,
            role: Follower {
                _tasks: tasks,
                transport: Some(transport),
                handed_over: false,
            },
        })
    }

    /// Turns this follower into the shard's leader at `epoch`, handed in by
    /// the external coordinator. `epoch` must be above every epoch in this
    /// node's history, else `TidalError::StaleEpoch`.
    ///
    /// The receiver stops; an `EpochStart` of `epoch` led by this node is
    /// logged and synced (that is the persisted role: the node reopens with
    /// `open_leader`); the clock starts above the highest HLC in the log;
    /// a shipper starts on the follower's transport, and writes are
    /// accepted. Consumes the follower: it cannot be used afterwards. On
    /// error the follower is closed (nothing was logged) and may be
    /// reopened with `open_follower`. Must be called inside a
    /// multi-threaded Tokio runtime.
    ///
    /// The shipper runs on the follower's own transport, which must be
    /// able to listen: an `InProcessTransport` can; a TCP follower's
    /// `TcpTransport::connector` cannot, so promote it with
    /// [`promote_on`](TidalDb::promote_on) and a listener.
    pub fn promote(mut self, epoch: Epoch) -> Result<TidalDb<Leader>> {
        let transport = self.role.transport.take().ok_or(TidalError::Closed)?;
        self.promote_on(epoch, transport)
    }

    /// [`promote`](TidalDb::promote), with the shipper on `transport`
    /// (e.g. a `TcpTransport::listener` where the follower had a
    /// `connector`).
    pub fn promote_on(
        mut self,
        epoch: Epoch,
        transport: Arc<dyn Transport>,
    ) -> Result<TidalDb<Leader>> {
        let handle = runtime()?;
        self.core.promote(epoch)?;
        // Stop the receiver at once; the core now belongs to the leader.
        drop(std::mem::take(&mut self.role._tasks));
        let core = Arc::clone(&self.core);
        self.role.handed_over = true;
        drop(self);
        let tasks = match start_leader(&core, transport, &handle) {
            Ok(tasks) => tasks,
            Err(e) => {
                if let Err(closing) = core.shutdown() {
                    tracing::error!(error = %closing, "closing after a failed promotion failed");
                }
                return Err(e);
            }
        };
        Ok(TidalDb {
            core,
            role: Leader { tasks },
        })
    }
}

/// One follower as its leader sees it.
///
/// ```
/// let f = tidal::FollowerInfo::default();
/// assert_eq!(f.lag_records, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowerInfo {
    /// The follower's node id, once it said hello.
    pub node: Option<crate::types::NodeId>,
    /// The last position sent to it.
    pub sent: Position,
    /// The last position it acknowledged as durable.
    pub durable: Position,
    /// The last position it acknowledged as applied.
    pub applied: Position,
    /// Records between the leader's last durable one and its applied one.
    pub lag_records: u64,
    /// Milliseconds since the leader committed the oldest record it has
    /// not applied (0 when caught up).
    pub lag_ms: u64,
}

impl<R: Role> TidalDb<R> {
    /// Waits until the record at `position` is applied on this node
    /// (read-your-writes across nodes). Fails with `TidalError::Diverged`
    /// if this node's history holds another epoch at that SeqNo, and with
    /// `TidalError::WaitTimeout` after `timeout`. Never blocks a Tokio worker.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        let mut applied = self.core.applied_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = *applied.borrow_and_update();
            if now.seqno >= position.seqno {
                let held = self.core.view.read(|s| {
                    let h: Vec<_> = s.epochs().iter().map(|e| (e.epoch, e.start)).collect();
                    epoch_at(&h, position.seqno)
                });
                return match held {
                    Some(e) if e == position.epoch => Ok(()),
                    Some(e) => Err(TidalError::Diverged {
                        wanted: position,
                        held: e,
                    }),
                    None => Err(TidalError::Diverged {
                        wanted: position,
                        held: crate::types::Epoch(0),
                    }),
                };
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TidalError::Closed),
                Err(_) => {
                    return Err(TidalError::WaitTimeout {
                        wanted: position,
                        applied: now,
                        timeout_ms: crate::config::duration_ms(timeout),
                    });
                }
            }
        }
    }

    /// Writes a batch without blocking a Tokio worker: the commit (and
    /// under `Durability::Replicated` the wait for acknowledgements) runs on
    /// the blocking pool.
    pub async fn write_async(&self, batch: WriteBatch) -> Result<Position>
    where
        R: Writable,
    {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || core.write(batch))
            .await
            .map_err(|_| TidalError::Closed)?
    }

    /// Forces the log to disk (useful under `Durability::Periodic`).
    pub fn flush(&self) -> Result<()> {
        self.core.flush()
    }

    /// Merges every diverged suffix this node holds and has not merged yet
    /// (DESIGN.md section 7): their records are logged here again (signals
    /// as `Merge` contributions, metadata last-writer-wins by their first
    /// stamps, session events appended, idempotency keys brought over) and
    /// replicated, each counted once however often a suffix arrives. A
    /// leader also runs it when a suffix arrives (`Config::auto_reconcile`).
    /// See [`ReconcileReport`] for what it reports.
    pub fn reconcile(&self) -> Result<ReconcileReport>
    where
        R: Writable,
    {
        self.core.reconcile()
    }

    /// Writes a snapshot now; returns its SeqNo. The two newest snapshots
    /// are kept, with every segment since the older one.
    pub fn checkpoint(&self) -> Result<SeqNo> {
        self.core.checkpoint()
    }

    /// Writes a consistent copy of the database into `dir` (missing or
    /// empty) while writes go on; opening it gives the state at the
    /// returned Position. To seed another node (a follower) from it, use
    /// [`restore_backup`] into that node's data
    /// directory: the backup's `META` names this node.
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
        if crate::role::handed_over(&self.role) {
            return;
        }
        if let Err(e) = self.core.shutdown() {
            tracing::error!(error = %e, "closing the database on drop failed");
        }
    }
}
