//! The ordered index behind trending reads: entities of one signal type by
//! forward-decayed sum `S`, largest first, ties by id ascending.
//!
//! It is a `BTreeSet` of `(key, id)` today, where `key` is an
//! order-preserving `u64` encoding of `S` inverted so that ascending
//! iteration is `S` descending. The type is private to the state machine and
//! offers only insert, remove, rebuild and ordered iteration, so the bucketed
//! open-addressing table measured in PERFORMANCE-NOTES.md (about 20x the
//! update rate at half the memory) can replace it without touching callers.

use std::collections::BTreeSet;

use crate::types::EntityId;

/// The key of `s`: ascending keys are descending `s`. `-0.0` and `0.0` map
/// to one key so keys are canonical; NaN never reaches here (the store keeps
/// every `S` finite).
pub(crate) fn order_key(s: f64) -> u64 {
    let bits = (s + 0.0).to_bits();
    // The classic total-order trick: flip all bits of negatives, the sign
    // bit of positives; then invert for descending order.
    let ascending = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    !ascending
}

/// The `s` whose key is `key` (the inverse of [`order_key`] on canonical
/// values).
pub(crate) fn key_value(key: u64) -> f64 {
    let ascending = !key;
    let bits = if ascending >> 63 == 1 {
        ascending & !(1 << 63)
    } else {
        !ascending
    };
    f64::from_bits(bits)
}

/// Entities of one type ordered by `S` descending, then id ascending.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrendingIndex {
    set: BTreeSet<(u64, EntityId)>,
}

impl TrendingIndex {
    /// Adds `id` at `s`. The caller removes the entity's previous key first.
    pub(crate) fn insert(&mut self, s: f64, id: EntityId) {
        self.set.insert((order_key(s), id));
    }

    /// Removes `id` at `s`; false when it was not there (a caller bug that
    /// the store's tests would catch).
    pub(crate) fn remove(&mut self, s: f64, id: EntityId) -> bool {
        self.set.remove(&(order_key(s), id))
    }

    /// Replaces the whole index, in O(n log n) at worst and O(n) when the
    /// entries come nearly in order (a landmark move keeps the order).
    pub(crate) fn rebuild(&mut self, entries: impl Iterator<Item = (f64, EntityId)>) {
        let mut keys: Vec<(u64, EntityId)> = entries.map(|(s, id)| (order_key(s), id)).collect();
        keys.sort_unstable();
        self.set = keys.into_iter().collect();
    }

    /// Entries best first: `S` descending, then id ascending; reversed it is
    /// `S` ascending, then id descending.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (f64, EntityId)> + '_ {
        self.set.iter().map(|&(k, id)| (key_value(k), id))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Estimated heap bytes: 16 per key in B-tree nodes that are about two
    /// thirds full, plus node headers.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.set.len().saturating_mul(16 * 3 / 2 + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_descending_and_invert() {
        let values = [
            f64::MAX,
            1e10,
            1.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            0.0,
            -f64::from_bits(1),
            -1.0,
            -1e10,
            -f64::MAX,
        ];
        for w in values.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for v in values {
            assert_eq!(key_value(order_key(v)).to_bits(), v.to_bits());
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
    }

    #[test]
    fn iteration_is_s_descending_then_id_ascending() {
        let mut ix = TrendingIndex::default();
        ix.insert(1.0, EntityId(5));
        ix.insert(2.0, EntityId(9));
        ix.insert(1.0, EntityId(3));
        ix.insert(-1.0, EntityId(1));
        let order: Vec<_> = ix.iter().map(|(_, id)| id.0).collect();
        assert_eq!(order, vec![9, 3, 5, 1]);
        assert!(ix.remove(1.0, EntityId(3)));
        assert!(!ix.remove(1.0, EntityId(3)));
        ix.rebuild([(0.5, EntityId(2)), (4.0, EntityId(7))].into_iter());
        let order: Vec<_> = ix.iter().rev().map(|(_, id)| id.0).collect();
        assert_eq!(order, vec![2, 7]);
        assert_eq!(ix.len(), 2);
    }
}
