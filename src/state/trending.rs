//! The ordered index behind trending reads: entities of one signal type by
//! forward-decayed sum `S`, largest first, ties by id ascending.
//!
//! The index itself is the bucketed open-addressing table of
//! `score_table.rs`; its buckets are keyed by [`order_key`], an
//! order-preserving `u64` encoding of `S` (inverted here so that ascending
//! keys are `S` descending).
//!
//! The exact top-k queries over these indexes (a walk of one index, Fagin's
//! threshold algorithm over several, a scan of the union) live here too.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use crate::state::decay::{Pow2, saturate};
use crate::state::signals::TypeState;
use foldhash::fast::RandomState as EntityHashState;

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
/// values); the tests use it to show the encoding loses nothing.
#[cfg(test)]
pub(crate) fn key_value(key: u64) -> f64 {
    let ascending = !key;
    let bits = if ascending >> 63 == 1 {
        ascending & !(1 << 63)
    } else {
        !ascending
    };
    f64::from_bits(bits)
}

// Top-k queries over the per-type indexes, used by `SignalStore::top_k`.

/// One type of a blend, with its weight and its read factor at the query
/// time.
pub(crate) struct Lane<'a> {
    pub(crate) ty: &'a TypeState,
    pub(crate) weight: f64,
    pub(crate) factor: Pow2,
}

impl Lane<'_> {
    /// The weighted score of an entity whose sum is `s` in this lane.
    fn term(&self, s: f64) -> f64 {
        saturate(self.weight * self.factor.apply(s))
    }

    /// The weighted score of an entity in this lane, 0 when absent.
    fn term_of(&self, entity: EntityId) -> f64 {
        saturate(self.weight * self.ty.score_with(self.factor, entity))
    }
}

/// The blended score: terms added in blend order with saturation. Every
/// step is monotone in each term, which the threshold algorithm relies on.
fn blend_score(lanes: &[Lane<'_>], entity: EntityId) -> f64 {
    lanes
        .iter()
        .fold(0.0, |acc, l| saturate(acc + l.term_of(entity)))
}

/// A candidate ordered by rank: `a < b` when `a` ranks before `b` (higher
/// score, then lower id). A max-heap of them holds the worst on top.
#[derive(Clone, Copy, Debug)]
struct Ranked(EntityId, f64);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other.1.total_cmp(&self.1).then(self.0.cmp(&other.0))
    }
}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}

/// The best `k` candidates seen so far.
struct Best {
    k: usize,
    heap: BinaryHeap<Ranked>,
}

impl Best {
    fn new(k: usize) -> Best {
        Best {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    fn push(&mut self, entity: EntityId, score: f64) {
        let candidate = Ranked(entity, score);
        if self.heap.len() >= self.k {
            // Full: only a candidate ranking before the current k-th gets in.
            match self.heap.peek() {
                Some(worst) if candidate < *worst => {}
                _ => return,
            }
        }
        self.heap.push(candidate);
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The k-th best score once `k` candidates are held.
    fn kth_score(&self) -> Option<f64> {
        if self.heap.len() < self.k {
            return None;
        }
        self.heap.peek().map(|r| r.1)
    }

    /// The candidates by rank: a sort of the heap's array, which took the
    /// blend of three types from 14.7-15.0 to 13.6-14.1 us at p50 against
    /// the heap's own `into_sorted_vec`, a pop per candidate
    /// (`examples/topk_probe 3 blend`, alternating builds).
    fn into_sorted(self) -> Vec<(EntityId, f64)> {
        let mut held = self.heap.into_vec();
        held.sort_unstable();
        held.into_iter().map(|Ranked(id, s)| (id, s)).collect()
    }
}

/// One type: walk the index in the direction of decreasing weighted score.
///
/// The walk meets candidates best first (the weighted score is monotone in
/// `S`), so it keeps no heap: it takes the first `k` accepted, and those
/// that tie the k-th (a tie with a lower id ranks first), then sorts them
/// by rank and keeps `k`. A heap's `into_sorted_vec` was a sixth of a
/// top-100 read under perf; without the heap, top-100 of one type over the
/// full fixture went from p50 6.2-8.4 / p99 9.9-11.0 us to p50 2.9-5.0 /
/// p99 5.3-5.7 us (`examples/topk_probe 3`, alternating builds).
pub(crate) fn top_k_walk(
    lane: &Lane<'_>,
    k: usize,
    accept: &mut dyn FnMut(EntityId) -> bool,
) -> Vec<(EntityId, f64)> {
    if k == 0 {
        return Vec::new();
    }
    // Ties past the k-th are cut back now and then, so that a walk of
    // equal scores (a zero weight) holds O(k), not the whole table.
    let cut_at = k.saturating_mul(2).max(64);
    let mut out: Vec<Ranked> = Vec::with_capacity(k.min(4096) + 1);
    let mut visit = |(s, id): (f64, EntityId)| -> bool {
        // Same operations as blend_score over one lane.
        let score = saturate(0.0 + lane.term(s));
        if out.len() >= k && score < out[k - 1].1 {
            return false;
        }
        if accept(id) {
            out.push(Ranked(id, score));
            if out.len() >= cut_at {
                out.sort_unstable();
                out.truncate(k);
            }
        }
        true
    };
    if lane.weight < 0.0 {
        for e in lane.ty.table.iter_rev() {
            if !visit(e) {
                break;
            }
        }
    } else {
        for e in lane.ty.table.iter() {
            if !visit(e) {
                break;
            }
        }
    }
    out.sort_unstable();
    out.truncate(k);
    out.into_iter().map(|Ranked(id, s)| (id, s)).collect()
}

/// Any negative weight: score every entity of the union.
pub(crate) fn top_k_scan(
    lanes: &[Lane<'_>],
    k: usize,
    accept: &mut dyn FnMut(EntityId) -> bool,
) -> Vec<(EntityId, f64)> {
    let mut best = Best::new(k);
    for (i, lane) in lanes.iter().enumerate() {
        for id in lane.ty.table.ids() {
            // Each entity once: in the first lane whose type holds it. This
            // costs a lookup per earlier lane, and no set of seen ids.
            let earlier = lanes[..i].iter().any(|l| l.ty.table.contains(id));
            if !earlier && accept(id) {
                best.push(id, blend_score(lanes, id));
            }
        }
    }
    best.into_sorted()
}

/// Fagin's threshold algorithm (Fagin, Lotem and Naor, PODS 2001): sorted
/// access to every lane in turn, random access for the full blended score,
/// and a stop once the k-th best score is strictly above the best score an
/// unseen entity could still reach (strictly, since an equal score with a
/// lower id would rank first).
///
/// The bound refines `sum_j weight_j * max(next_j, 0)`: an unseen entity
/// is absent from every exhausted lane and present in at least one other
/// lane `j*`, where it scores at most `next_j*` (not 0). Its terms are
/// replaced by their upper bounds in the same order and with the same
/// operations as [`blend_score`], which is monotone, so the bound holds
/// bit for bit.
pub(crate) fn top_k_threshold(
    lanes: &[Lane<'_>],
    k: usize,
    accept: &mut dyn FnMut(EntityId) -> bool,
) -> Vec<(EntityId, f64)> {
    let mut best = Best::new(k);
    let mut seen: HashSet<EntityId, EntityHashState> = HashSet::default();
    let mut cursors: Vec<_> = lanes.iter().map(|l| l.ty.table.iter().peekable()).collect();
    let mut next: Vec<Option<f64>> = Vec::with_capacity(lanes.len());
    loop {
        let mut progressed = false;
        for cursor in &mut cursors {
            if let Some((_, id)) = cursor.next() {
                progressed = true;
                if seen.insert(id) && accept(id) {
                    best.push(id, blend_score(lanes, id));
                }
            }
        }
        if !progressed {
            break;
        }
        let Some(kth) = best.kth_score() else {
            continue;
        };
        next.clear();
        next.extend(
            cursors
                .iter_mut()
                .zip(lanes)
                .map(|(c, l)| c.peek().map(|&(s, _)| l.term(s))),
        );
        let mut bound: Option<f64> = None;
        for (star, next_star) in next.iter().enumerate() {
            let Some(star_term) = *next_star else {
                continue;
            };
            let b = next.iter().enumerate().fold(0.0, |acc, (j, n)| {
                let term = match n {
                    _ if j == star => star_term,
                    Some(t) => t.max(0.0),
                    None => 0.0,
                };
                saturate(acc + term)
            });
            bound = Some(bound.map_or(b, |x: f64| x.max(b)));
        }
        match bound {
            None => break,
            Some(b) if kth > b => break,
            Some(_) => {}
        }
    }
    best.into_sorted()
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
}
