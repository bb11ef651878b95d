//! One kind's embeddings, stored list-major for an inverted-file (IVF)
//! approximate cosine search.
//!
//! # Layout
//!
//! A [`KindSet`] holds its vectors in *lists*: per list, the ids and the
//! unit vectors in one contiguous `Vec<f32>` (`dimension` floats per slot),
//! and an `id -> (list, slot)` map. A remove moves the list's last slot into
//! the hole (swap-remove), so the data stays dense. Until the set is trained
//! there is one list and a search scans it all: the exact answer. A trained
//! set's lists also hold an 8-bit code per vector, slot-aligned
//! (`ann_codes`: `dimension + 4` bytes a vector, a function of the vector
//! alone, moved with its slot and rebuilt on decode).
//!
//! # Training
//!
//! Once a set holds [`IndexParams::min_vectors`] vectors it is *trained*:
//! `nlist = LISTS_PER_SQRT * sqrt(n)` coarse centroids (2 sqrt(n), at most
//! [`MAX_LISTS`]) are fitted by spherical k-means (k-means++ seeding from a
//! fixed seed, at most 8 rounds, `ann_train`) on a strided sample of about
//! 40 stored vectors per list, and every vector is moved to the list of its
//! centroid. It is trained again, the same way, each time the set has grown
//! [`GROWTH`]-fold since its last training, so lists stay short and training
//! costs O(1) amortized per insert. The coarse quantizer has two levels
//! (about `sqrt(nlist)` groups, each with its own fine centroids), so an
//! insert scores the groups and the fine centroids of the best
//! [`ASSIGN_GROUPS`] groups: about 180 dot products at a million vectors
//! instead of 1,265. Trainings run on the writer's path, in both read-view
//! copies: the write that triggers one waits for it (below).
//!
//! # Search
//!
//! A search scores every fine centroid (1,265 dot products at a million
//! vectors), then scans the lists of the best [`IndexParams::probes`]
//! centroids, streaming each list's contiguous 8-bit codes through a
//! vectorized integer dot into a bounded heap of the best `4 k`
//! approximate candidates ([`super::ann_codes::RERANK`]), then scores
//! those exactly (the f32 `dot` of the stored vector) and keeps the best
//! `k`: a quarter of the bytes of the f32 vectors streamed, and scores
//! that are still exact dot products, ties to the lower id. If the probed
//! lists still hold fewer than `k` accepted vectors, the next lists are
//! scanned, up to all of them: a search never returns fewer results than
//! the exact answer holds. An untrained set, or a search probing every
//! list, scans the f32 vectors: exact.
//!
//! # Filtered search
//!
//! A filter (an entity lookup and a string compare, about 1 us at a
//! million entities, cache and TLB misses included) costs more than a dot
//! product, so it is asked as little as possible. The search first asks it
//! about the first [`SAMPLE`] ids of the best list. If it took all of them
//! (no filter), or none (a very selective one), the probed lists are
//! scanned plainly, the filter asked only about candidates that would
//! enter the heap. Otherwise, with an observed selectivity `s`, the probed
//! lists are scanned *unfiltered* by their codes into a pool of the best
//! `3 k / s` candidates, the pool is scored exactly, and the filter is
//! asked about it best first, only while a candidate would enter the
//! top-k: about `k / s` questions instead of several times that. The
//! pool's answer is the filtered top-k of the probed lists (as far as the
//! codes' error lets the pool tell) when the top-k is full and no worse
//! than the pool's worst approximate score; otherwise (the sample
//! misjudged the filter) the lists are scanned again plainly, keeping
//! the best `k` accepted candidates by approximate score for the exact
//! scores (the filter is asked about each that would enter, so a larger
//! pool costs questions: `RERANK_FILTERED`).
//!
//! A filter that takes at least 1 in [`SELECTIVE`] (5%) of the sampled
//! ids probes the same lists as an unfiltered search; a more selective one
//! widens the probe by `0.05 / s`, at most [`FILTER_PROBES`] (4) times.
//! The search used to widen every filter by `1 / s` (up to 4 times). In
//! `state::ann_measure` (ignored; 1M x 128, 32 probes, filters through a
//! map of strings), on the W6 mixture that bought a 10% filter recall
//! above the unfiltered one (0.996 against 0.990) for a 4x slower query,
//! and on uniform data 0.41 against 0.21 at 5x. Without widening, a 10%
//! filter's recall tracks the unfiltered recall at the same probes (0.987
//! against 0.990 on the mixture, 0.19 against 0.21 uniform), so `probes`
//! is the one recall knob for both. A very selective filter's accepted
//! neighbours lie deeper, though: unwidened, a 1% filter got 0.933 at 32
//! probes (528 q/s); widened by the rule above, 0.967 (237 q/s, 96 lists);
//! the 10% filter with the rule: 0.987 at 829 q/s (33.0 lists on average,
//! as a sample of 64 ids sometimes reads it below 5%). A rule that widens
//! only while the last probed lists still held results ("widen while the
//! tail is productive") was tried in its simple form (stop after `w`
//! lists in a row added nothing to the heap): it stopped at once on both
//! the mixture and uniform data, so it was no better than not widening.
//!
//! # Determinism
//!
//! The structure is a function of the sequence of inserts and removes only:
//! the sample is strided over the lists in order, the k-means++ seed is a
//! constant, sums run in a fixed order in f64, and the id map is never
//! iterated; a code is a function of its vector's bits. Replicas applying
//! the same records hold the same lists and codes, and a
//! snapshot stores the centroids and the lists slot by slot, so a decoded
//! set is the same structure, not a retrained one (reopen reads it; it
//! never runs k-means; it rebuilds the codes from the vectors).
//!
//! # Why IVF, and the figures
//!
//! IVF over HNSW: a delete is a swap-remove inside one list (HNSW needs
//! tombstones or graph repair), the structure is a deterministic function of
//! the writes (HNSW draws random levels and its graph depends on insertion
//! races), it costs no memory beyond the vectors, ids and centroids (HNSW
//! adds 2 x M links per vector, in both read-view copies), and it snapshots
//! as the same dense runs the exact store wrote.
//!
//! Measured with `cargo run --release --example compare -- --only W6
//! --no-peers` on the shared 2-vCPU machine (load average 3 to 3.5 from
//! other jobs; two runs, the second slower all round: its plain f32 scan
//! in the harness took 4.27 ms against 3.44), 1M x 128, a seeded mixture of 1,000 Gaussians
//! (noise as long as the centre; `examples/compare/ann.rs`), defaults
//! (100k, 32), the 10% metadata filter pooled; "f32 scan": the build
//! before the codes (commit 2334bfc, the BENCHMARKS run of that commit,
//! a quieter machine: its exact W6 took 3.42 ms against 4.07-4.70 here):
//!
//! | probes | recall@10 | queries/s | 10% filter | f32 scan |
//! |---:|---:|---:|---|---|
//! | 16 | 0.981 | 2,714-3,166 | 0.978, 1,452-1,703/s | 2,021/s; filtered 1,452/s |
//! | 32 | 0.986 | 1,555-1,774 | 0.986, 919-1,001/s | 1,123/s; filtered 853/s |
//! | 64 | 0.992 | 717-872 | 0.992, 573-655/s | 552/s; filtered 474/s |
//!
//! Every recall equals the f32 scan's to four digits (uniform data too:
//! 0.2157): the pool of `4 k` loses nothing measurable. In
//! `state::ann_measure` (1M, the same mixture, filters through a map of
//! strings; old and new test binaries alternated, two runs each, load
//! average 2.4 to 2.9), 32 probes: unfiltered 1,486-1,809 q/s against
//! 748-949, the 10% filter 1,084-1,254 against 717-791; 16 probes:
//! 2,879-3,047 against 995-1,985, filtered 1,506-1,582 against 954-1,510;
//! every recall the same. A filtered query gains less: it still asks
//! about 100 filter questions and scores its pool of `3 k / s` candidates
//! exactly (random reads of 512 bytes each). A 1% filter (the plain
//! scan when the sample takes none, its pool `k`), one run each at 32
//! probes: 553 q/s at 0.932 against 453-456 at 0.933 before, widened 4x
//! (the default) 288 at 0.966 against 199-232 at 0.967; a pool of `2 k`
//! for it asked twice the questions (3,106 a query) and ran at 383-453.
//!
//! Memory: the codes add 132 bytes per vector (128 + a 4-byte scale) in
//! each of the two read-view copies, 264 in all; the whole process
//! measured 2,666-2,675 B per vector RSS delta (2,138-2,350 before: the
//! delta is noisy, list growth slack and the training's transient copy).
//! Reopening the indexed snapshot took 3.98-6.14 s (the same vectors
//! exact: 4.29-5.28 s in the same runs; 2.59 s indexed before, a quieter
//! machine): decode rebuilds the codes.
//!
//! At 100k (`--quick`, 632 lists) 32 probes gave 0.959, 0.958 filtered
//! (the f32 scan; not rerun).
//! Uniformly random vectors, the adversarial case, reach only 0.22 at 32
//! probes. Loading 1M embeddings: 26.6k-35.1k/s indexed against
//! 84k-125k/s exact in the runs above (an insert scores about 180
//! centroids, twice, and the trainings at 100k and 400k stall one write:
//! 3.6-4.2 s here); RSS about
//! 1,600 B per vector exact. Reopen never refits.

use std::collections::{BinaryHeap, HashMap};

use super::ann_codes::{CodeSearch, Codes, RERANK, RERANK_FILTERED};
use super::ann_scan::{Candidate, by_score, into_hits, pooled, scan};
use super::ann_train::train;
use super::vectors::dot;
use crate::types::EntityId;

/// A trained set is trained again when it holds this many times the
/// vectors it was last trained with.
pub const GROWTH: u64 = 4;
/// The most lists (fine centroids) a set has.
pub const MAX_LISTS: usize = 4096;
/// A set of `n` vectors is trained into `LISTS_PER_SQRT * sqrt(n)` lists.
pub const LISTS_PER_SQRT: f64 = 2.0;
/// An insert goes to the best fine centroid of this many best groups.
pub const ASSIGN_GROUPS: usize = 4;
/// A selective filter's search probes up to this many times `probes`
/// lists (then more only while it holds fewer than `k` results).
pub const FILTER_PROBES: usize = 4;
/// A filter is selective when it takes fewer than 1 in this many of the
/// sampled ids; it widens the probe by `(1 / SELECTIVE) / s` for an
/// observed selectivity `s` (module docs: a 10% filter does not widen, a
/// 1% one widens 4x).
pub const SELECTIVE: usize = 20;
/// A search asks its filter about this many ids of the best list first,
/// to estimate its selectivity.
pub const SAMPLE: usize = 64;

/// The approximate vector index (`search` over large embedding sets).
///
/// A kind's embeddings are searched exactly until the kind holds
/// `min_vectors` of them; from then on they are an inverted-file index of
/// about `sqrt(n)` lists, and a search scans the `probes` lists nearest the
/// query (more lists, when a filter leaves fewer than `k` results). Higher
/// `probes`: higher recall, slower queries. `min_vectors` is pinned by
/// `META` (replay must rebuild the same index); `probes` is not, and must
/// be equal on every replica for replicas to answer alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorIndex {
    /// A kind is indexed once it holds this many vectors; below it a search
    /// is exact. Default 100,000; at least 64; `u64::MAX`: always exact.
    pub min_vectors: u64,
    /// Lists scanned per approximate search. Default 32; 1 to 4096.
    pub probes: u32,
}

impl Default for VectorIndex {
    fn default() -> Self {
        VectorIndex {
            min_vectors: 100_000,
            probes: 32,
        }
    }
}

impl VectorIndex {
    /// The first invalid field and why: `min_vectors` at least 64 (the
    /// index is fitted on the stored vectors), `probes` 1 to [`MAX_LISTS`].
    pub(crate) fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if self.min_vectors < 64 {
            return Some((
                "vector_index.min_vectors",
                "must be at least 64 (the index is fitted on the stored vectors)",
            ));
        }
        if !(1..=MAX_LISTS as u64).contains(&u64::from(self.probes)) {
            return Some(("vector_index.probes", "must be between 1 and 4096"));
        }
        None
    }
}

/// The knobs under the name the state uses.
pub type IndexParams = VectorIndex;

/// One list: ids, their vectors and, trained, their codes, slot-aligned.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct List {
    pub ids: Vec<EntityId>,
    pub data: Vec<f32>,
    /// Empty until the set is trained (`ann_codes`).
    pub codes: Codes,
}

/// The two-level coarse quantizer of a trained set.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Quantizer {
    /// The set's size when it was trained.
    pub trained_at: u64,
    /// Group centroids, `dimension` floats each.
    pub groups: Vec<f32>,
    /// Per group, the end (exclusive) of its fine centroids; the start is
    /// the previous group's end.
    pub group_ends: Vec<u32>,
    /// Fine centroids, one per list, `dimension` floats each.
    pub fine: Vec<f32>,
}

impl Quantizer {
    /// The list a unit vector belongs to: the best fine centroid among
    /// those of the [`ASSIGN_GROUPS`] best groups (ties to the lower index).
    pub fn assign(&self, v: &[f32], d: usize) -> u32 {
        let mut best_groups: [(f32, usize); ASSIGN_GROUPS] =
            [(f32::NEG_INFINITY, 0); ASSIGN_GROUPS];
        for (g, c) in self.groups.chunks_exact(d).enumerate() {
            let s = dot(v, c);
            if let Some(at) = best_groups.iter().position(|b| s > b.0) {
                best_groups[at..].rotate_right(1);
                best_groups[at] = (s, g);
            }
        }
        let mut best = (f32::NEG_INFINITY, 0u32);
        let mut groups: Vec<usize> = best_groups
            .iter()
            .filter(|b| b.0 > f32::NEG_INFINITY)
            .map(|b| b.1)
            .collect();
        groups.sort_unstable();
        for g in groups {
            let start = if g == 0 {
                0
            } else {
                self.group_ends[g - 1] as usize
            };
            let end = self.group_ends[g] as usize;
            for l in start..end {
                let s = self
                    .fine
                    .get(l * d..(l + 1) * d)
                    .map_or(f32::NEG_INFINITY, |c| dot(v, c));
                if s > best.0 {
                    best = (s, l as u32);
                }
            }
        }
        best.1
    }

    /// The number of lists.
    pub fn lists(&self, d: usize) -> usize {
        self.fine.len() / d.max(1)
    }
}

/// One kind's vectors, list-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct KindSet {
    pub lists: Vec<List>,
    pub slots: HashMap<EntityId, (u32, u32)>,
    pub quant: Option<Quantizer>,
}

impl KindSet {
    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The stored vector of `id`.
    pub fn get(&self, id: EntityId, d: usize) -> Option<&[f32]> {
        let (l, s) = *self.slots.get(&id)?;
        let s = s as usize;
        self.lists.get(l as usize)?.data.get(s * d..(s + 1) * d)
    }

    /// Stores `unit` for `id` (of length `d`), replacing its vector, then
    /// trains the set if it reached its next training size.
    pub fn set(&mut self, id: EntityId, unit: &[f32], d: usize, params: &IndexParams) {
        match (&self.quant, self.slots.get(&id)) {
            // Untrained: one list, replace in place.
            (None, Some(&(l, s))) => {
                let s = s as usize;
                if let Some(dst) = self
                    .lists
                    .get_mut(l as usize)
                    .and_then(|list| list.data.get_mut(s * d..(s + 1) * d))
                {
                    dst.copy_from_slice(unit);
                }
                return;
            }
            // Trained: the new vector may belong to another list.
            (Some(_), Some(_)) => {
                self.remove(id, d);
            }
            _ => {}
        }
        let l = self.quant.as_ref().map_or(0, |q| q.assign(unit, d));
        self.push(l, id, unit);
        self.maybe_train(d, params);
    }

    fn push(&mut self, l: u32, id: EntityId, unit: &[f32]) {
        let at = l as usize;
        if self.lists.len() <= at {
            self.lists.resize_with(at + 1, List::default);
        }
        let list = &mut self.lists[at];
        self.slots.insert(id, (l, list.ids.len() as u32));
        list.ids.push(id);
        list.data.extend_from_slice(unit);
        if self.quant.is_some() {
            list.codes.push(unit);
        }
    }

    /// Removes `id`'s vector; whether it held one.
    pub fn remove(&mut self, id: EntityId, d: usize) -> bool {
        let Some((l, slot)) = self.slots.remove(&id) else {
            return false;
        };
        let Some(list) = self.lists.get_mut(l as usize) else {
            return true;
        };
        let slot = slot as usize;
        let last = list.ids.len().saturating_sub(1);
        if slot != last {
            list.ids.swap(slot, last);
            if let Some(&moved) = list.ids.get(slot) {
                self.slots.insert(moved, (l, slot as u32));
            }
            let (head, tail) = list.data.split_at_mut(last * d);
            if let Some(dst) = head.get_mut(slot * d..(slot + 1) * d) {
                dst.copy_from_slice(tail);
            }
        }
        list.ids.truncate(last);
        list.data.truncate(last * d);
        list.codes.swap_remove(slot, last, d);
        true
    }

    /// Trains when the set reaches `min_vectors` untrained, or
    /// [`GROWTH`] times its last training size.
    fn maybe_train(&mut self, d: usize, params: &IndexParams) {
        let n = self.len() as u64;
        let due = match &self.quant {
            None => n >= params.min_vectors.max(1),
            Some(q) => n >= q.trained_at.saturating_mul(GROWTH),
        };
        if due {
            self.train(d);
        }
    }

    /// Fits the quantizer on a strided sample and moves every vector to
    /// its list, in the old (list, slot) order.
    pub fn train(&mut self, d: usize) {
        let n = self.len();
        if n == 0 || d == 0 {
            return;
        }
        let nlist = ((n as f64).sqrt() * LISTS_PER_SQRT)
            .round()
            .clamp(1.0, MAX_LISTS as f64) as usize;
        let quant = train(&self.lists, n, d, nlist);
        let lists = quant.lists(d);
        let old = std::mem::take(&mut self.lists);
        // Assign first, then copy into lists of exact capacity.
        let mut target = Vec::with_capacity(n);
        let mut counts = vec![0usize; lists];
        for list in &old {
            for v in list.data.chunks_exact(d) {
                let l = quant.assign(v, d);
                counts[l as usize] += 1;
                target.push(l);
            }
        }
        self.lists = counts
            .iter()
            .map(|&c| List {
                ids: Vec::with_capacity(c),
                data: Vec::with_capacity(c * d),
                codes: Codes {
                    codes: Vec::with_capacity(c * d),
                    scales: Vec::with_capacity(c),
                },
            })
            .collect();
        // Trained before the pushes, so that they code the vectors.
        self.quant = Some(Quantizer {
            trained_at: n as u64,
            ..quant
        });
        let mut target = target.into_iter();
        for list in old {
            for (v, &id) in list.data.chunks_exact(d).zip(&list.ids) {
                let l = target.next().unwrap_or(0);
                self.push(l, id, v);
            }
        }
    }

    /// Cosine top-k (query of unit length `d`), best first, ties by id,
    /// only ids `accept` takes. Untrained, or with `probes` at least the
    /// list count, it scans everything: exact. Trained, it scans the
    /// `probes` best lists (module docs: how a filter is asked), then
    /// further lists only while it holds fewer than `k` results.
    pub fn top_k(
        &self,
        query: &[f32],
        k: usize,
        probes: usize,
        d: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        self.top_k_with(query, k, probes, d, FILTER_PROBES, accept)
            .0
    }

    /// [`KindSet::top_k`] widening a filtered probe up to `cap` times
    /// `probes` lists by the filter's selectivity (1: never); also the
    /// number of lists scanned.
    pub fn top_k_with(
        &self,
        query: &[f32],
        k: usize,
        probes: usize,
        d: usize,
        cap: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> (Vec<(EntityId, f64)>, usize) {
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k.min(self.len()) + 1);
        let Some(q) = self.quant.as_ref().filter(|q| probes < q.lists(d)) else {
            for list in &self.lists {
                scan(list, query, d, k, &mut heap, accept);
            }
            return (into_hits(heap), self.lists.len());
        };
        let mut order: Vec<(f32, u32)> = q
            .fine
            .chunks_exact(d)
            .enumerate()
            .map(|(l, c)| (dot(c, query), l as u32))
            .collect();
        let probes = probes.max(1);
        order.select_nth_unstable_by(probes - 1, by_score);
        let (head, rest) = order.split_at_mut(probes);
        head.sort_unstable_by(by_score);
        let list = |l: u32| self.lists.get(l as usize);
        // The filter's selectivity, estimated on the first ids of the
        // best list.
        let (mut asked, mut taken) = (0usize, 0usize);
        for &id in list(head[0].1)
            .map_or(&[][..], |l| &l.ids[..])
            .iter()
            .take(SAMPLE)
        {
            asked += 1;
            taken += usize::from(accept(id));
        }
        // Only a selective filter widens: by `s0 / s`, s0 = 1 / SELECTIVE.
        let extra = if taken < asked {
            let want = (probes * asked).div_ceil(taken.max(1) * SELECTIVE);
            want.clamp(probes, probes * cap.max(1)) - probes
        } else {
            0
        };
        if extra > 0 {
            rest.sort_unstable_by(by_score);
        }
        let (more, rest) = rest.split_at_mut(extra.min(rest.len()));
        let wanted: Vec<u32> = head.iter().chain(more.iter()).map(|c| c.1).collect();
        let search = CodeSearch::new(&self.lists, query, d);
        let pool = (taken < asked && taken > 0)
            .then(|| pooled(&search, &wanted, k, (asked, taken), &mut heap, accept));
        // The approximate candidates kept for the exact rerank.
        // (fewer with a filter: it is asked about each candidate that
        // would enter).
        let cap = k.saturating_mul(if taken < asked {
            RERANK_FILTERED
        } else {
            RERANK
        });
        if pool != Some(true) {
            // No filter, a very selective one, or too few accepted
            // candidates in the pool: the plain scan.
            heap.clear();
            for &l in &wanted {
                search.scan(l, cap, &mut heap, accept);
            }
        }
        let mut scanned = wanted.len();
        if heap.len() < k {
            rest.sort_unstable_by(by_score);
            for c in rest.iter() {
                if heap.len() >= k {
                    break;
                }
                scanned += 1;
                search.scan(c.1, cap, &mut heap, accept);
            }
        }
        (into_hits(search.rerank(heap, k)), scanned)
    }

    /// Approximate heap bytes held.
    pub fn approx_bytes(&self) -> usize {
        let lists: usize = self
            .lists
            .iter()
            .map(|l| {
                l.ids.capacity() * std::mem::size_of::<EntityId>()
                    + l.data.capacity() * std::mem::size_of::<f32>()
                    + l.codes.bytes()
                    + std::mem::size_of::<List>()
            })
            .sum();
        let quant = self.quant.as_ref().map_or(0, |q| {
            (q.groups.capacity() + q.fine.capacity() + q.group_ends.capacity()) * 4
        });
        lists + quant + self.slots.capacity() * (std::mem::size_of::<(EntityId, (u32, u32))>() + 1)
    }
}
