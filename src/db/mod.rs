//! `TidalDb<R>` and `AnyDb`.

use crate::role::{Follower, Leader, Role, Single};

/// A TidalDb node whose role is its type parameter.
#[derive(Debug)]
pub struct TidalDb<R: Role = Single> {
    role: R,
}

/// A node whose role is picked at run time.
#[derive(Debug)]
pub enum AnyDb {
    /// A single node.
    Single(TidalDb<Single>),
    /// A leader.
    Leader(TidalDb<Leader>),
    /// A follower.
    Follower(TidalDb<Follower>),
}
