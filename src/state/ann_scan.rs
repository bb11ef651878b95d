//! The scans of a search (`ann`): one list's f32 vectors into a bounded
//! heap (the exact search), and the pooled scan a filtered approximate
//! search uses over the lists' codes (module docs of `ann`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::ann::List;
use super::ann_codes::CodeSearch;
use super::vectors::dot;
use crate::types::EntityId;

/// A top-k candidate ordered so that the heap's greatest is the worst
/// kept: lower score is greater, and on equal scores the larger id.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub score: f64,
    pub id: EntityId,
    /// Its (list, slot), for the rerank of a code scan; not compared.
    pub at: (u32, u32),
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// Scans one list into the bounded heap; whether a candidate entered it.
pub(super) fn scan(
    list: &List,
    query: &[f32],
    d: usize,
    k: usize,
    heap: &mut BinaryHeap<Candidate>,
    accept: &mut dyn FnMut(EntityId) -> bool,
) -> bool {
    let mut entered = false;
    for (v, &id) in list.data.chunks_exact(d).zip(&list.ids) {
        let c = Candidate {
            score: f64::from(dot(v, query)),
            id,
            at: (0, 0),
        };
        let enters = heap.len() < k || heap.peek().is_some_and(|worst| c < *worst);
        if enters && accept(id) {
            if heap.len() == k {
                heap.pop();
            }
            heap.push(c);
            entered = true;
        }
    }
    entered
}

/// Scans the lists `wanted` by their codes keeping the unfiltered best
/// `pool` candidates, `pool` being three times `k` over the selectivity
/// `taken / asked` observed so far, scores the pool exactly, then asks
/// `accept` about it best first, only while a candidate would enter
/// `heap` (exact scores). Whether the heap is the filtered top-k of the
/// pool's lists as far as the codes can tell: the pool held every
/// candidate, or the heap is full and its worst is no worse than the
/// pool's worst approximate score (every candidate outside the pool scored
/// lower still; within the codes' error).
pub(super) fn pooled(
    search: &CodeSearch<'_>,
    wanted: &[u32],
    k: usize,
    (asked, taken): (usize, usize),
    heap: &mut BinaryHeap<Candidate>,
    accept: &mut dyn FnMut(EntityId) -> bool,
) -> bool {
    let held: usize = wanted.iter().map(|&l| search.held(l)).sum();
    let size = k
        .saturating_mul(asked)
        .div_ceil(taken.max(1))
        .saturating_mul(3)
        .min(held);
    let mut pool = BinaryHeap::with_capacity(size + 1);
    for &l in wanted {
        search.scan(l, size, &mut pool, &mut |_| true);
    }
    let floor = (pool.len() < held).then(|| pool.peek().copied()).flatten();
    let mut ranked: Vec<Candidate> = pool.iter().map(|c| search.exact(c)).collect();
    // Best first (the greatest candidate is the worst).
    ranked.sort_unstable();
    for c in ranked {
        let enters = heap.len() < k || heap.peek().is_some_and(|worst| c < *worst);
        if !enters {
            break;
        }
        if accept(c.id) {
            if heap.len() == k {
                heap.pop();
            }
            heap.push(c);
        }
    }
    match floor {
        None => true,
        Some(floor) => heap.len() == k && heap.peek().is_some_and(|worst| *worst <= floor),
    }
}

/// The heap's candidates, best first.
pub(super) fn into_hits(heap: BinaryHeap<Candidate>) -> Vec<(EntityId, f64)> {
    heap.into_sorted_vec()
        .into_iter()
        .map(|c| (c.id, c.score))
        .collect()
}

/// Best first, ties to the lower list index.
pub(super) fn by_score(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}
