//! A positive-negative counter keyed by lineage.
//!
//! Each [`ContributionKey`] holds two `u64` counts, increments and
//! decrements, which only grow. Merge takes the maximum per key and per
//! count: commutative, associative and idempotent, and a longer prefix of a
//! key's lineage supersedes a shorter one, so receiving the same state
//! twice, or a stale one, never counts a write twice.
//!
//! Counts saturate at `u64::MAX` instead of wrapping (a wrap would make a
//! longer lineage look smaller and break the merge). [`PNCounter::value`]
//! sums exactly in `i128` and clamps the result to the `i64` range, so it
//! does not depend on the order of the keys.

use std::collections::BTreeMap;

use crate::crdt::key::ContributionKey;

/// The two counts of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Counts {
    increments: u64,
    decrements: u64,
}

/// A grow-only pair of counts per [`ContributionKey`]; its value is the
/// sum of increments minus the sum of decrements.
///
/// ```
/// use tidal::{ContributionKey, Epoch, NodeId, PNCounter};
/// let k1 = ContributionKey::new(NodeId(1), Epoch(1));
/// let k2 = ContributionKey::new(NodeId(2), Epoch(1));
/// let mut a = PNCounter::new();
/// a.increment(k1, 5);
/// let mut b = a.clone();
/// b.decrement(k1, 2); // b extends a's lineage of k1
/// b.increment(k2, 1);
/// a.merge(&b);
/// a.merge(&b); // idempotent
/// assert_eq!(a.value(), 4);
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PNCounter {
    counts: BTreeMap<ContributionKey, Counts>,
}

impl PNCounter {
    /// An empty counter (value 0).
    pub fn new() -> PNCounter {
        PNCounter::default()
    }

    /// Adds `n` increments to `key` (saturating at `u64::MAX`).
    pub fn increment(&mut self, key: ContributionKey, n: u64) {
        let c = self.counts.entry(key).or_default();
        c.increments = c.increments.saturating_add(n);
    }

    /// Adds `n` decrements to `key` (saturating at `u64::MAX`).
    pub fn decrement(&mut self, key: ContributionKey, n: u64) {
        let c = self.counts.entry(key).or_default();
        c.decrements = c.decrements.saturating_add(n);
    }

    /// Raises `key`'s counts to at least the given ones (the pointwise
    /// maximum); used to build a counter from another structure's counts.
    pub fn observe(&mut self, key: ContributionKey, increments: u64, decrements: u64) {
        let c = self.counts.entry(key).or_default();
        c.increments = c.increments.max(increments);
        c.decrements = c.decrements.max(decrements);
    }

    /// Total increments minus total decrements, computed exactly and then
    /// clamped to `i64::MIN..=i64::MAX`.
    pub fn value(&self) -> i64 {
        // Each key adds at most 2^64 in magnitude, so i128 cannot overflow
        // below 2^63 keys; saturating_add keeps even that case defined.
        let total = self.counts.values().fold(0i128, |acc, c| {
            acc.saturating_add(i128::from(c.increments) - i128::from(c.decrements))
        });
        i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
    }

    /// `(increments, decrements)` of `key`; `None` when the key was never
    /// touched.
    pub fn get(&self, key: ContributionKey) -> Option<(u64, u64)> {
        self.counts.get(&key).map(|c| (c.increments, c.decrements))
    }

    /// Every key with its `(increments, decrements)`, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (ContributionKey, u64, u64)> + '_ {
        self.counts
            .iter()
            .map(|(k, c)| (*k, c.increments, c.decrements))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no key was ever touched.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Merges `other` in: per key and per count, the maximum. Keys only in
    /// `other` are copied.
    pub fn merge(&mut self, other: &PNCounter) {
        for (k, c) in &other.counts {
            self.observe(*k, c.increments, c.decrements);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Epoch, NodeId};

    fn key(node: u64, epoch: u64) -> ContributionKey {
        ContributionKey::new(NodeId(node), Epoch(epoch))
    }

    #[test]
    fn value_is_increments_minus_decrements_over_keys() {
        let mut c = PNCounter::new();
        c.increment(key(1, 1), 3);
        c.decrement(key(2, 1), 5);
        c.increment(key(2, 1), 1);
        assert_eq!(c.value(), -1);
        assert_eq!(c.get(key(2, 1)), Some((1, 5)));
        assert_eq!(c.get(key(3, 1)), None);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn counts_saturate_and_value_clamps() {
        let mut c = PNCounter::new();
        c.increment(key(1, 1), u64::MAX);
        c.increment(key(1, 1), 7);
        assert_eq!(c.get(key(1, 1)), Some((u64::MAX, 0)));
        assert_eq!(c.value(), i64::MAX);
        c.decrement(key(2, 1), u64::MAX);
        c.decrement(key(3, 1), u64::MAX);
        assert_eq!(c.value(), i64::MIN);
        c.increment(key(4, 1), u64::MAX);
        // u64::MAX - 2 u64::MAX + u64::MAX = 0, exactly, in any key order.
        assert_eq!(c.value(), 0);
    }

    #[test]
    fn merge_is_pointwise_max_so_a_stale_copy_changes_nothing() {
        let mut old = PNCounter::new();
        old.increment(key(1, 1), 2);
        let mut new = old.clone();
        new.increment(key(1, 1), 3);
        new.decrement(key(1, 1), 1);
        let mut m = new.clone();
        m.merge(&old);
        assert_eq!(m, new);
        let mut m = old.clone();
        m.merge(&new);
        assert_eq!(m, new);
        assert_eq!(m.value(), 4);
    }
}
