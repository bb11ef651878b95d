//! Contributions merged in by reconciliation (DESIGN.md section 7).
//!
//! The hot state keeps one signed sum `S` and a count per entity and type;
//! only entities a reconciliation touched also have an entry here: the
//! [`Contribution`] of each diverged suffix's origin `(epoch, leader node)`
//! merged so far, with the landmark its masses are relative to.
//!
//! Applying a `Record::Merge` rescales the stored and the incoming
//! contribution to the type's current landmark (exact powers of two,
//! exact-or-zero as `CrdtSignalState` does), takes the pointwise maximum,
//! stores it, and adds the increase `(Δpositive - Δnegative, Δcount)` to
//! the hot `S` and count. A contribution merged twice, or a shorter prefix
//! of one already merged, raises nothing: each suffix record counts once
//! however often and in whatever order suffixes arrive. The hot index
//! stays the one index for top-k, so reads need nothing new. Merge records
//! are logged, so every replica applies the same increases in the same
//! order and holds the same bits.

use std::collections::{BTreeMap, HashMap};

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::ContributionKey;
use crate::crdt::signal_state::{flush, scale_down};
use crate::state::decay::saturate;
use crate::state::signals::SignalStore;
use crate::types::{EntityId, Epoch, NodeId};

/// One stored contribution: masses relative to `landmark_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stored {
    pub(crate) landmark_ms: u64,
    pub(crate) positive_mass: f64,
    pub(crate) negative_mass: f64,
    pub(crate) positive_count: u64,
    pub(crate) negative_count: u64,
}

/// `x * 2^((from - to) / h)` for a canonical mass `x` and landmarks on the
/// same grid: exact-or-zero going down; going up (a record computed ahead
/// of this replica's landmark) exact with saturation.
fn rebase(x: f64, from_ms: u64, to_ms: u64, half_life_ms: u64) -> f64 {
    let h = half_life_ms.max(1);
    if to_ms >= from_ms {
        scale_down(flush(x), (to_ms - from_ms) / h)
    } else {
        let up = ((from_ms - to_ms) / h).min(2_100) as i32;
        flush(saturate(
            x * 2f64.powi(up.min(1_000)) * 2f64.powi(up - up.min(1_000)),
        ))
    }
}

/// Every merged contribution, by (type, entity) and origin key.
#[derive(Clone, Debug, Default)]
pub(crate) struct MergedStore {
    by: HashMap<(u16, EntityId), BTreeMap<ContributionKey, Stored>>,
}

impl MergedStore {
    /// Merges one contribution and raises the hot state by the increase.
    pub(crate) fn merge(
        &mut self,
        signals: &mut SignalStore,
        type_id: u16,
        entity: EntityId,
        key: ContributionKey,
        incoming: Stored,
    ) {
        let Some((landmark, h)) = signals.landmark(type_id) else {
            return;
        };
        let slot = self
            .by
            .entry((type_id, entity))
            .or_default()
            .entry(key)
            .or_insert(Stored {
                landmark_ms: landmark,
                positive_mass: 0.0,
                negative_mass: 0.0,
                positive_count: 0,
                negative_count: 0,
            });
        let old_pos = rebase(slot.positive_mass, slot.landmark_ms, landmark, h);
        let old_neg = rebase(slot.negative_mass, slot.landmark_ms, landmark, h);
        let new_pos = old_pos.max(rebase(
            incoming.positive_mass,
            incoming.landmark_ms,
            landmark,
            h,
        ));
        let new_neg = old_neg.max(rebase(
            incoming.negative_mass,
            incoming.landmark_ms,
            landmark,
            h,
        ));
        let new_pc = slot.positive_count.max(incoming.positive_count);
        let new_nc = slot.negative_count.max(incoming.negative_count);
        let d_mass = (new_pos - old_pos) - (new_neg - old_neg);
        let d_count = i64::try_from(new_pc - slot.positive_count)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(new_nc - slot.negative_count).unwrap_or(i64::MAX));
        *slot = Stored {
            landmark_ms: landmark,
            positive_mass: new_pos,
            negative_mass: new_neg,
            positive_count: new_pc,
            negative_count: new_nc,
        };
        if d_mass != 0.0 || d_count != 0 {
            signals.add_mass(type_id, entity, d_mass, d_count);
        }
    }

    /// Forgets a deleted entity's contributions (a later write starts fresh).
    pub(crate) fn remove_entity(&mut self, entity: EntityId) {
        self.by.retain(|(_, e), _| *e != entity);
    }

    /// The contributions of one entity and type, by key.
    #[cfg(test)]
    pub(crate) fn get(
        &self,
        type_id: u16,
        entity: EntityId,
    ) -> Option<&BTreeMap<ContributionKey, Stored>> {
        self.by.get(&(type_id, entity))
    }

    /// Estimated heap bytes.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.by
            .values()
            .map(|m| 64 + m.len() * (16 + std::mem::size_of::<Stored>() + 32))
            .sum()
    }

    /// Encodes in (type, entity) order so equal states give equal bytes.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut cells: Vec<_> = self.by.iter().collect();
        cells.sort_by_key(|(k, _)| **k);
        out.put_u32(cells.len() as u32);
        for ((t, e), m) in cells {
            out.put_u16(*t);
            out.put_u64(e.0);
            out.put_u32(m.len() as u32);
            for (k, s) in m {
                out.put_u64(k.epoch.0);
                out.put_u64(k.node.0);
                out.put_u64(s.landmark_ms);
                out.put_f64(s.positive_mass);
                out.put_f64(s.negative_mass);
                out.put_u64(s.positive_count);
                out.put_u64(s.negative_count);
            }
        }
    }

    /// Decodes what [`MergedStore::encode`] wrote; never panics.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        type_count: usize,
    ) -> Result<MergedStore, DecodeError> {
        let mut by = HashMap::new();
        let n = r.count(14)?;
        for _ in 0..n {
            let t = r.u16()?;
            if usize::from(t) >= type_count {
                return Err(r.error(format!("signal type id {t} is not registered")));
            }
            let e = EntityId(r.u64()?);
            let k = r.count(56)?;
            let mut m = BTreeMap::new();
            for _ in 0..k {
                let key = ContributionKey {
                    epoch: Epoch(r.u64()?),
                    node: NodeId(r.u64()?),
                };
                let landmark_ms = r.u64()?;
                let positive_mass = r.f64()?;
                let negative_mass = r.f64()?;
                let valid = |m: f64| m.is_finite() && m >= 0.0;
                if !valid(positive_mass) || !valid(negative_mass) {
                    return Err(r.error("a merged mass is not finite and >= 0"));
                }
                let stored = Stored {
                    landmark_ms,
                    positive_mass,
                    negative_mass,
                    positive_count: r.u64()?,
                    negative_count: r.u64()?,
                };
                m.insert(key, stored);
            }
            by.insert((t, e), m);
        }
        if !r.is_empty() {
            return Err(r.error("trailing bytes"));
        }
        Ok(MergedStore { by })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;

    fn stored(landmark_ms: u64, pos: f64, neg: f64, pc: u64, nc: u64) -> Stored {
        Stored {
            landmark_ms,
            positive_mass: pos,
            negative_mass: neg,
            positive_count: pc,
            negative_count: nc,
        }
    }

    #[test]
    fn a_contribution_counts_once_however_often_and_prefixes_add_only_the_rest() {
        let mut signals = SignalStore::new(&[1_000], 4, 0.0);
        signals.add(0, EntityId(1), 1.0, Timestamp(0));
        let mut m = MergedStore::default();
        let key = ContributionKey {
            epoch: Epoch(1),
            node: NodeId(7),
        };
        let e = EntityId(1);
        m.merge(&mut signals, 0, e, key, stored(0, 2.0, 0.5, 3, 1));
        assert_eq!(signals.count(0, e), 1 + 2);
        let s = signals.score(0, e, Timestamp(0));
        assert_eq!(s, 1.0 + 2.0 - 0.5);
        // Again, and a shorter prefix: nothing changes.
        m.merge(&mut signals, 0, e, key, stored(0, 2.0, 0.5, 3, 1));
        m.merge(&mut signals, 0, e, key, stored(0, 1.0, 0.5, 2, 1));
        assert_eq!(signals.count(0, e), 3);
        assert_eq!(signals.score(0, e, Timestamp(0)).to_bits(), s.to_bits());
        // A longer prefix adds only what it has more.
        m.merge(&mut signals, 0, e, key, stored(0, 3.0, 0.5, 4, 1));
        assert_eq!(signals.count(0, e), 4);
        assert_eq!(signals.score(0, e, Timestamp(0)), 1.0 + 3.0 - 0.5);
        // Another key is another lineage.
        let other = ContributionKey {
            epoch: Epoch(2),
            node: NodeId(8),
        };
        m.merge(&mut signals, 0, e, other, stored(0, 1.0, 0.0, 1, 0));
        assert_eq!(signals.count(0, e), 5);
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        let back = MergedStore::decode(&mut Reader::new(&bytes), 1).unwrap();
        assert_eq!(back.get(0, e), m.get(0, e));
        for n in 0..bytes.len() {
            assert!(MergedStore::decode(&mut Reader::new(&bytes[..n]), 1).is_err());
        }
    }

    #[test]
    fn contributions_at_other_landmarks_are_compared_at_the_current_one() {
        let mut signals = SignalStore::new(&[1_000], 4, 0.0);
        signals.add(0, EntityId(1), 1.0, Timestamp(0));
        signals.advance_landmarks(8_000); // two periods: landmark 8 s
        let mut m = MergedStore::default();
        let key = ContributionKey {
            epoch: Epoch(1),
            node: NodeId(7),
        };
        let e = EntityId(1);
        // 256 at landmark 0 is 1 at landmark 8 s (8 half-lives).
        m.merge(&mut signals, 0, e, key, stored(0, 256.0, 0.0, 1, 0));
        m.merge(&mut signals, 0, e, key, stored(8_000, 1.0, 0.0, 1, 0));
        assert_eq!(signals.count(0, e), 2);
        assert_eq!(signals.score(0, e, Timestamp(8_000)), 1.0 / 256.0 + 1.0);
    }
}
