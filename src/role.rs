//! Roles are types: `TidalDb<Single>`, `TidalDb<Leader>`, `TidalDb<Follower>`.
//!
//! Write methods carry a `where R: Writable` bound, so a write on a follower
//! does not compile, and rustc names the mistake. `Role` is sealed: only
//! these three roles exist, and code outside the crate cannot add one.

use static_assertions::{assert_impl_all, assert_not_impl_any};

use crate::config::NodeRole;
use crate::db::{AnyDb, TidalDb};

mod sealed {
    pub trait Sealed {
        /// True once the role's core was handed to another `TidalDb`
        /// (a promoted follower): its drop must then not close the core.
        fn handed_over(&self) -> bool {
            false
        }
    }
}

/// Whether `role` handed its core over to another `TidalDb` (see `promote`).
pub(crate) fn handed_over<R: Role>(role: &R) -> bool {
    sealed::Sealed::handed_over(role)
}

/// A node's role. Sealed: implemented only by [`Single`], [`Leader`] and
/// [`Follower`].
///
/// ```
/// use tidal::{Follower, NodeRole, Role, Single};
/// fn role_of<R: Role>() -> NodeRole { R::NODE_ROLE }
/// assert_eq!(role_of::<Single>(), NodeRole::Single);
/// assert_eq!(role_of::<Follower>(), NodeRole::Follower);
/// ```
pub trait Role: sealed::Sealed + Send + Sync + 'static {
    /// The run-time name of the role.
    const NODE_ROLE: NodeRole;
}

/// A role that takes writes: [`Single`] and [`Leader`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is a read-only role: writes need a `TidalDb<Single>` or a `TidalDb<Leader>`",
    label = "this database is read-only",
    note = "send writes to the shard's leader, or use `AnyDb` to get `TidalError::ReadOnly` at run time"
)]
///
/// ```
/// use tidal::{Leader, Single, Writable};
/// fn writable<R: Writable>() {}
/// writable::<Single>();
/// writable::<Leader>();
/// // writable::<tidal::Follower>(); // does not compile: a read-only role
/// ```
pub trait Writable: Role {}

/// A writable node without replication: the embedded default.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, Single, TidalDb};
/// # let dir = tempfile::tempdir().unwrap();
/// let db: TidalDb<Single> = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// db.close().unwrap();
/// ```
#[derive(Debug)]
pub struct Single;

/// The writable node of a shard; it ships its log to followers.
///
/// ```
/// use tidal::{Leader, NodeRole, Role};
/// assert_eq!(Leader::NODE_ROLE, NodeRole::Leader);
/// ```
#[derive(Debug)]
pub struct Leader {
    pub(crate) tasks: crate::replication::node::ReplicationTasks,
}

/// A read-only replica that receives its leader's log.
///
/// ```
/// use tidal::{EntityId, Follower, TidalDb, Timestamp};
/// // Reads compile on a follower; writes do not.
/// fn score(db: &TidalDb<Follower>) -> f64 {
///     db.read_decay_score(EntityId(1), "like", Timestamp::now()).unwrap_or(0.0)
/// }
/// ```
pub struct Follower {
    /// Held for its `Drop`, which stops the receiver.
    pub(crate) _tasks: crate::replication::node::ReplicationTasks,
    /// The transport the receiver runs on; `promote` starts the shipper on it.
    pub(crate) transport: Option<std::sync::Arc<dyn crate::replication::transport::Transport>>,
    /// Set by `promote` once the core belongs to the new leader.
    pub(crate) handed_over: bool,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("tasks", &self._tasks)
            .field("handed_over", &self.handed_over)
            .finish_non_exhaustive()
    }
}

impl sealed::Sealed for Single {}
impl sealed::Sealed for Leader {}
impl sealed::Sealed for Follower {
    fn handed_over(&self) -> bool {
        self.handed_over
    }
}

impl Role for Single {
    const NODE_ROLE: NodeRole = NodeRole::Single;
}
impl Role for Leader {
    const NODE_ROLE: NodeRole = NodeRole::Leader;
}
impl Role for Follower {
    const NODE_ROLE: NodeRole = NodeRole::Follower;
}

impl Writable for Single {}
impl Writable for Leader {}

assert_impl_all!(TidalDb<Single>: Send, Sync);
assert_impl_all!(TidalDb<Leader>: Send, Sync);
assert_impl_all!(TidalDb<Follower>: Send, Sync);
assert_impl_all!(AnyDb: Send, Sync);
assert_impl_all!(Single: Writable);
assert_impl_all!(Leader: Writable);
assert_not_impl_any!(Follower: Writable);
