//! The key under which a lineage's contribution is kept.

use std::fmt;

use crate::types::{Epoch, NodeId};

/// Names one lineage of writes: the node that took them and the epoch
/// (leader term) it took them in.
///
/// Keys are ordered by `(epoch, node)`, epoch first: contributions of older
/// terms sort before those of newer ones, and every replica iterates (and
/// sums) them in that one order. [`ContributionKey::HOT`], epoch 0, sorts
/// before every real key.
///
/// Exactly-once merging rests on one rule: a key is written by a single
/// lineage, in order, so two states holding the same key hold prefixes of
/// the same sequence of writes, and the longer prefix is pointwise larger.
///
/// ```
/// use tidal::{ContributionKey, Epoch, NodeId};
/// let a = ContributionKey::new(NodeId(9), Epoch(1));
/// let b = ContributionKey::new(NodeId(1), Epoch(2));
/// assert!(ContributionKey::HOT < a && a < b);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContributionKey {
    /// The leader term the writes were taken in (compared first).
    pub epoch: Epoch,
    /// The node that took them (compared second).
    pub node: NodeId,
}

impl ContributionKey {
    /// The hot lineage of a [`CrdtSignalState`](crate::CrdtSignalState):
    /// the writes of the log the state is replayed from. Epoch 0 is never a
    /// leader's term (a database starts at [`Epoch::FIRST`]), so no origin
    /// of a diverged suffix can collide with it.
    pub const HOT: ContributionKey = ContributionKey {
        epoch: Epoch(0),
        node: NodeId(0),
    };

    /// The key of the writes `node` took in `epoch`.
    pub const fn new(node: NodeId, epoch: Epoch) -> ContributionKey {
        ContributionKey { epoch, node }
    }
}

impl fmt::Display for ContributionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} epoch {}", self.node, self.epoch)
    }
}
