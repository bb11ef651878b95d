//! 8-bit codes of a trained set's vectors, the list scan over them, and
//! the exact rerank of its candidates (module docs of `ann`: search).
//!
//! # The code
//!
//! Each stored unit vector `v` of a trained set also has a code: one `i8`
//! per component and one `f32` scale per vector, `s = max |v_i| / 127` and
//! `c_i = round(v_i / s)`, so `v_i` is within `s / 2` of `s c_i`. The
//! scale is per vector, not per set or per dimension, because then the
//! code is a function of the vector's bits alone: an insert, a remove (the
//! code moves with its slot), a training (lists rebuilt) and a snapshot
//! decode (codes rebuilt from the decoded vectors; the snapshot format is
//! unchanged) all give the same codes without any fitted state to keep in
//! step, and a vector with a large component (a one-hot direction) costs
//! its own precision, never the others'. A per-vector scale also uses the
//! whole range: the components of a unit vector of 128 dimensions rarely
//! exceed 0.3 in size, where a fixed `1 / 127` step would leave them 40
//! levels. Cost: `dimension + 4` bytes per vector (132 at 128 dimensions),
//! in each of the two read-view copies; an untrained set (one list, an
//! exact search) keeps no codes.
//!
//! The query is quantized to `i16` the same way (`max |q_i| / 32767`): the
//! integer dot of an `i8` code and an `i16` query widens both to 16 bits
//! either way (`pmaddwd` on x86), so the finer query costs nothing and its
//! rounding error is negligible next to the code's. The approximate score
//! `s_v s_q sum c_i p_i` is within `error_bound` of the exact dot (the
//! tests use it to prove when the rerank pool holds the exact answer).
//!
//! # Rerank
//!
//! The scan keeps the best [`RERANK`] `* k` candidates by approximate
//! score ([`RERANK_FILTERED`] `* k` accepted ones with a filter, which is
//! asked only about those that would enter), and
//! the exact f32 dot of each picks the top `k`: returned scores are exact
//! dot products, ties to the lower id, as without codes. A candidate the
//! pool left out is lost, so the recall over the probed lists is below 1
//! when the approximation reorders the k-th best past the pool's end.

use std::collections::BinaryHeap;

use super::ann::List;
use super::ann_scan::Candidate;
use super::vectors::dot;
use crate::types::EntityId;

/// The rerank pool holds this many times `k` candidates. In
/// `state::ann_measure` at 300k vectors, 32 probes, recall@10 was 0.945
/// with a pool of `k`, 0.961 with `2 k`, `4 k` and `8 k` (0.961 without
/// codes): 4 leaves a margin at the cost of a few more exact dots.
pub const RERANK: usize = 4;
/// The rerank pool of a plain scan with a filter (one that took some of
/// the sampled ids but not all) holds this many times `k`: the filter is
/// asked about every candidate that would enter the pool, at about 1 us a
/// question. In `state::ann_measure` (1M, 32 probes, a 1% filter) a pool
/// of `2 k` asked 3,106 questions a query against 1,527 for `k`, for
/// recall 0.933 against 0.932 (0.967 against 0.966 widened), and ran at
/// 419 q/s against 553: `k`, so the filter alone picks.
pub const RERANK_FILTERED: usize = 1;

/// The codes of one list, slot-aligned with its ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Codes {
    /// `dimension` codes per slot.
    pub codes: Vec<i8>,
    /// One scale per slot.
    pub scales: Vec<f32>,
}

/// The scale `max |x| / levels` of `v` and its codes, appended to `out`
/// (a zero vector: scale 0, codes 0).
fn quantize<T>(v: &[f32], levels: f32, out: &mut Vec<T>, cast: fn(f32) -> T) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max > 0.0 && max.is_finite()) {
        out.extend(v.iter().map(|_| cast(0.0)));
        return 0.0;
    }
    let inv = levels / max;
    out.extend(
        v.iter()
            .map(|&x| cast((x * inv).round().clamp(-levels, levels))),
    );
    max / levels
}

impl Codes {
    /// The codes of `data` (`d` floats per slot).
    pub fn build(data: &[f32], d: usize) -> Codes {
        let mut c = Codes {
            codes: Vec::with_capacity(data.len()),
            scales: Vec::with_capacity(data.len() / d.max(1)),
        };
        for v in data.chunks_exact(d.max(1)) {
            c.push(v);
        }
        c
    }

    /// Appends the code of `v`.
    pub fn push(&mut self, v: &[f32]) {
        let s = quantize(v, 127.0, &mut self.codes, |x| x as i8);
        self.scales.push(s);
    }

    /// Moves the code of slot `last` into `slot` and drops the last one:
    /// the same swap-remove as the list's ids and vectors. No codes (an
    /// untrained set): nothing to move.
    pub fn swap_remove(&mut self, slot: usize, last: usize, d: usize) {
        if self.scales.is_empty() {
            return;
        }
        if slot != last && last < self.scales.len() {
            self.scales.swap(slot, last);
            let (head, tail) = self.codes.split_at_mut(last * d);
            if let (Some(dst), Some(src)) = (head.get_mut(slot * d..(slot + 1) * d), tail.get(..d))
            {
                dst.copy_from_slice(src);
            }
        }
        self.scales.truncate(last);
        self.codes.truncate(last * d);
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.codes.capacity() + self.scales.capacity() * 4
    }
}

/// A query quantized to `i16` for the code scan.
pub(super) struct QueryCode {
    q: Vec<i16>,
    scale: f32,
}

impl QueryCode {
    /// The `i16` code of a unit query.
    /// Its levels are 32767, fewer above 516 dimensions so that
    /// `127 * levels * d`, the largest integer dot, fits an i32.
    pub fn new(query: &[f32]) -> QueryCode {
        let mut q = Vec::with_capacity(query.len());
        let most = i32::MAX as usize / (127 * query.len().max(1));
        let levels = most.min(32767) as f32;
        let scale = quantize(query, levels, &mut q, |x| x as i16);
        QueryCode { q, scale }
    }

    /// Its scale: a step of its `i16` levels.
    #[cfg(test)]
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The approximate dot with a stored code of scale `s`.
    pub fn score(&self, code: &[i8], s: f32) -> f32 {
        idot(code, &self.q) as f32 * (s * self.scale)
    }
}

/// The integer dot, written so the compiler vectorizes it: 16 lanes of
/// i32, each product of two values that fit 16 bits. [`QueryCode::new`]
/// picks the query's levels so the sum cannot overflow. Not inlined: in
/// the scan's loop the compiler kept the 16 lanes in scalar registers (a
/// third of the speed, in `perf annotate`); on its own it uses `pmaddwd`.
#[inline(never)]
pub(super) fn idot(c: &[i8], q: &[i16]) -> i32 {
    let (cc, cr) = c.as_chunks::<16>();
    let (qc, qr) = q.as_chunks::<16>();
    let mut acc = [0i32; 16];
    for (x, y) in cc.iter().zip(qc) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s = s.wrapping_add(i32::from(x) * i32::from(y));
        }
    }
    let tail = cr.iter().zip(qr).fold(0i32, |t, (&x, &y)| {
        t.wrapping_add(i32::from(x) * i32::from(y))
    });
    acc.iter().fold(tail, |t, &x| t.wrapping_add(x))
}

/// A bound on `|approx - exact|` for a code of scale `s_v` and a query
/// code of scale `s_q`, for unit vectors of `d` components: each rounding
/// is at most half a step, so the error is at most
/// `s_v / 2 |q|_1 + s_q / 2 |v|_1 + d s_v s_q / 4` with `|x|_1 <= sqrt(d)`,
/// plus f32 rounding of both dots.
#[cfg(test)]
pub(super) fn error_bound(s_v: f32, s_q: f32, d: usize) -> f64 {
    let (sv, sq, d) = (f64::from(s_v), f64::from(s_q), d as f64);
    (sv + sq) / 2.0 * d.sqrt() + d * sv * sq / 4.0 + 1e-5
}

/// One approximate search over a trained set's lists: the query, exact
/// and coded.
pub(super) struct CodeSearch<'a> {
    pub lists: &'a [List],
    pub query: &'a [f32],
    pub code: QueryCode,
    pub d: usize,
}

impl<'a> CodeSearch<'a> {
    /// A search of `query` (unit, `d` floats) over `lists`.
    pub fn new(lists: &'a [List], query: &'a [f32], d: usize) -> Self {
        CodeSearch {
            lists,
            query,
            code: QueryCode::new(query),
            d,
        }
    }

    /// The vectors in list `l`.
    pub fn held(&self, l: u32) -> usize {
        self.lists.get(l as usize).map_or(0, |list| list.ids.len())
    }

    /// Scans list `l` by its codes into the bounded heap of approximate
    /// candidates (`at` set to the slot), asking `accept` only about those
    /// that would enter; whether one entered.
    pub fn scan(
        &self,
        l: u32,
        cap: usize,
        heap: &mut BinaryHeap<Candidate>,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> bool {
        let Some(list) = self.lists.get(l as usize) else {
            return false;
        };
        let mut entered = false;
        let codes = &list.codes;
        for (slot, ((c, &s), &id)) in codes
            .codes
            .chunks_exact(self.d)
            .zip(&codes.scales)
            .zip(&list.ids)
            .enumerate()
        {
            let c = Candidate {
                score: f64::from(self.code.score(c, s)),
                id,
                at: (l, slot as u32),
            };
            let enters = heap.len() < cap || heap.peek().is_some_and(|worst| c < *worst);
            if enters && accept(id) {
                if heap.len() == cap {
                    heap.pop();
                }
                heap.push(c);
                entered = true;
            }
        }
        entered
    }

    /// The exact score of a candidate found by [`CodeSearch::scan`].
    pub fn exact(&self, c: &Candidate) -> Candidate {
        let (l, s, d) = (c.at.0 as usize, c.at.1 as usize, self.d);
        let score = self
            .lists
            .get(l)
            .and_then(|list| list.data.get(s * d..(s + 1) * d))
            .map_or(f64::NEG_INFINITY, |v| f64::from(dot(v, self.query)));
        Candidate { score, ..*c }
    }

    /// The best `k` of `pool` by exact score, ties to the lower id.
    pub fn rerank(&self, pool: BinaryHeap<Candidate>, k: usize) -> BinaryHeap<Candidate> {
        let mut heap = BinaryHeap::with_capacity(k + 1);
        for c in pool {
            let c = self.exact(&c);
            if heap.len() < k {
                heap.push(c);
            } else if heap.peek().is_some_and(|worst| c < *worst) {
                heap.pop();
                heap.push(c);
            }
        }
        heap
    }
}
