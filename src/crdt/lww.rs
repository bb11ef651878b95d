//! Last-writer-wins registers.
//!
//! # Order
//!
//! A [`Stamp`] is `(hlc, node, seqno)`, compared in that order: the hybrid
//! logical clock first, the node id as the tie-break between nodes whose
//! clocks read the same, and the record's SeqNo last (two records of one
//! batch share its HLC). A stamp names one record, so two different values
//! under one stamp mean a bug or a forged record somewhere; the merge does
//! not trust either side but detects it ([`MergeOutcome::Conflict`]) and
//! resolves it the same way on every replica: the larger value by `T: Ord`
//! is kept. That makes merge a join in the lexicographic order of
//! `(stamp, value)`, hence commutative, associative and idempotent.
//!
//! # Tombstones
//!
//! A delete is a write of `None` into an `LWWRegister<Option<T>>`
//! ([`LWWRegister::delete`]): it is stamped like a set and takes part in
//! the same order, so a delete with a larger stamp wins over a set and a set
//! with a larger stamp wins over a delete (the entity comes back). On equal
//! stamps the tie-break applies as for any value: `None < Some(_)`, so the
//! set is kept, and the conflict is reported.

use crate::crdt::hlc::Hlc;
use crate::types::{NodeId, SeqNo};

/// When and where a value was written; ordered by `(hlc, node, seqno)`.
///
/// ```
/// use tidal::{Hlc, NodeId, SeqNo, Stamp};
/// let a = Stamp::new(Hlc::new(5, 0), NodeId(9), SeqNo(1));
/// let b = Stamp::new(Hlc::new(5, 1), NodeId(1), SeqNo(1));
/// assert!(a < b); // the clock decides first
/// assert!(Stamp::new(Hlc::new(5, 0), NodeId(2), SeqNo(0)) > Stamp::new(Hlc::new(5, 0), NodeId(1), SeqNo(7)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    /// The HLC of the batch that carried the write (compared first).
    pub hlc: Hlc,
    /// The node that took the write (compared second).
    pub node: NodeId,
    /// The record's position in that node's log (compared last).
    pub seqno: SeqNo,
}

impl Stamp {
    /// A stamp from its parts.
    pub const fn new(hlc: Hlc, node: NodeId, seqno: SeqNo) -> Stamp {
        Stamp { hlc, node, seqno }
    }
}

/// What a merge (or a set) did to a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MergeOutcome {
    /// The register kept its value and stamp: the other stamp was smaller,
    /// or the same stamp with the same value.
    Unchanged,
    /// The other side had a larger stamp; the register took its value and
    /// stamp.
    Updated,
    /// The same stamp with a different value. The register now holds the
    /// larger of the two values by `T: Ord` (possibly the one it had), which
    /// is what every replica ends with.
    Conflict,
}

/// A value with the [`Stamp`] of the write that set it; merge keeps the
/// larger stamp (see the module docs for ties and tombstones).
///
/// ```
/// use tidal::{Hlc, LWWRegister, MergeOutcome, NodeId, SeqNo, Stamp};
/// let s = |ms, node| Stamp::new(Hlc::new(ms, 0), NodeId(node), SeqNo(1));
/// let mut a = LWWRegister::new(Some("red"), s(10, 1));
/// let b = LWWRegister::tombstone(s(11, 2));
/// assert_eq!(a.merge(&b), MergeOutcome::Updated);
/// assert_eq!(a.value(), &None); // the later delete wins
/// assert_eq!(a.set(Some("blue"), s(12, 1)), MergeOutcome::Updated);
/// assert_eq!(a.set(Some("green"), s(12, 1)), MergeOutcome::Conflict);
/// assert_eq!(a.value(), &Some("green")); // equal stamps: the larger value
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LWWRegister<T> {
    value: T,
    stamp: Stamp,
}

impl<T> LWWRegister<T> {
    /// A register holding `value` written at `stamp`.
    pub const fn new(value: T, stamp: Stamp) -> LWWRegister<T> {
        LWWRegister { value, stamp }
    }

    /// The current value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The stamp of the current value.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// The value, consuming the register.
    pub fn into_value(self) -> T {
        self.value
    }
}

impl<T: Ord + Clone> LWWRegister<T> {
    /// Writes `value` at `stamp`, exactly as merging
    /// `LWWRegister::new(value, stamp)` would: an older stamp changes
    /// nothing.
    pub fn set(&mut self, value: T, stamp: Stamp) -> MergeOutcome {
        self.join(value, stamp)
    }

    /// Merges `other` in: the larger stamp wins; on equal stamps the larger
    /// value wins and a difference is reported as
    /// [`MergeOutcome::Conflict`].
    pub fn merge(&mut self, other: &LWWRegister<T>) -> MergeOutcome {
        match other.stamp.cmp(&self.stamp) {
            std::cmp::Ordering::Less => MergeOutcome::Unchanged,
            _ => self.join(other.value.clone(), other.stamp),
        }
    }

    fn join(&mut self, value: T, stamp: Stamp) -> MergeOutcome {
        match stamp.cmp(&self.stamp) {
            std::cmp::Ordering::Less => MergeOutcome::Unchanged,
            std::cmp::Ordering::Greater => {
                self.value = value;
                self.stamp = stamp;
                MergeOutcome::Updated
            }
            std::cmp::Ordering::Equal => {
                if value == self.value {
                    MergeOutcome::Unchanged
                } else {
                    if value > self.value {
                        self.value = value;
                    }
                    MergeOutcome::Conflict
                }
            }
        }
    }
}

impl<T> LWWRegister<Option<T>> {
    /// A register holding a tombstone written at `stamp`.
    pub const fn tombstone(stamp: Stamp) -> LWWRegister<Option<T>> {
        LWWRegister { value: None, stamp }
    }

    /// Whether the current value is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.value.is_none()
    }
}

impl<T: Ord + Clone> LWWRegister<Option<T>> {
    /// Deletes at `stamp`: a tombstone that wins over every older write and
    /// loses to every newer one.
    pub fn delete(&mut self, stamp: Stamp) -> MergeOutcome {
        self.set(None, stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, node: u64, seq: u64) -> Stamp {
        Stamp::new(Hlc::new(ms, 0), NodeId(node), SeqNo(seq))
    }

    #[test]
    fn larger_stamp_wins_in_both_directions() {
        let mut a = LWWRegister::new(1, s(10, 1, 1));
        let b = LWWRegister::new(0, s(10, 1, 2));
        assert_eq!(a.merge(&b), MergeOutcome::Updated);
        assert_eq!((*a.value(), a.stamp()), (0, s(10, 1, 2)));
        let old = LWWRegister::new(9, s(9, 9, 9));
        assert_eq!(a.merge(&old), MergeOutcome::Unchanged);
        assert_eq!(a, b);
    }

    #[test]
    fn equal_stamps_keep_the_larger_value_on_both_sides() {
        let x = LWWRegister::new(3, s(1, 1, 1));
        let y = LWWRegister::new(7, s(1, 1, 1));
        let (mut xy, mut yx) = (x.clone(), y.clone());
        assert_eq!(xy.merge(&y), MergeOutcome::Conflict);
        assert_eq!(yx.merge(&x), MergeOutcome::Conflict);
        assert_eq!(xy, yx);
        assert_eq!(*xy.value(), 7);
        assert_eq!(xy.merge(&y), MergeOutcome::Unchanged);
    }

    #[test]
    fn tombstones_take_part_in_the_order() {
        let mut r = LWWRegister::new(Some(1), s(5, 1, 1));
        assert_eq!(r.delete(s(4, 1, 1)), MergeOutcome::Unchanged);
        assert!(!r.is_deleted());
        assert_eq!(r.delete(s(6, 1, 1)), MergeOutcome::Updated);
        assert!(r.is_deleted());
        assert_eq!(r.set(Some(2), s(5, 9, 9)), MergeOutcome::Unchanged);
        assert_eq!(r.set(Some(2), s(7, 1, 1)), MergeOutcome::Updated);
        assert_eq!(r.value(), &Some(2));
        // Same stamp, set against delete: the set (Some > None) is kept.
        let mut t = LWWRegister::<Option<i32>>::tombstone(s(7, 1, 1));
        assert_eq!(t.merge(&r), MergeOutcome::Conflict);
        assert_eq!(t, r);
    }
}
