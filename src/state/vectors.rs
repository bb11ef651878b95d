//! Normalized embeddings and exact cosine top-k.
//!
//! Each kind has one dense set: an id per slot and the vectors in one
//! contiguous `Vec<f32>`, `dimension` floats per slot, so a search streams
//! through memory without a pointer chase per vector. A remove moves the
//! last slot into the hole (swap-remove), so deletes free their space and
//! the data stays dense. Vectors are stored at unit length, which makes
//! cosine a plain dot product.
//!
//! The slot layout depends only on the sequence of calls, and snapshots keep
//! it, so replicas fed the same calls hold the same layout; reads never
//! depend on it anyway (top-k orders by score, then id).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::codec::{DecodeError, Put, Reader};
use crate::types::{EntityId, EntityKind};

/// Normalizes to unit length in f64 then stores f32; None for a zero
/// vector, which has no direction (and, defensively, for a non-finite
/// norm; validation of dimension and NaN happens upstream).
pub fn normalize(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return None;
    }
    Some(v.iter().map(|&x| (f64::from(x) / norm) as f32).collect())
}

/// The dot product, written so the compiler vectorizes it: eight
/// independent accumulators over fixed chunks of eight (`as_chunks`, the
/// array form of `chunks_exact`), so the inner loop has no bounds checks and
/// no dependency chain through one sum.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// One kind's dense set.
#[derive(Clone, Debug, Default)]
struct DenseSet {
    ids: Vec<EntityId>,
    data: Vec<f32>,
    slots: HashMap<EntityId, usize>,
}

impl DenseSet {
    fn get(&self, id: EntityId, dimension: usize) -> Option<&[f32]> {
        let slot = *self.slots.get(&id)?;
        self.data.get(slot * dimension..(slot + 1) * dimension)
    }

    fn push(&mut self, id: EntityId, unit: &[f32]) {
        self.slots.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(unit);
    }

    fn remove(&mut self, id: EntityId, dimension: usize) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let last = self.ids.len().saturating_sub(1);
        if slot != last {
            self.ids.swap(slot, last);
            if let Some(&moved) = self.ids.get(slot) {
                self.slots.insert(moved, slot);
            }
            let (head, tail) = self.data.split_at_mut(last * dimension);
            if let Some(dst) = head.get_mut(slot * dimension..(slot + 1) * dimension) {
                dst.copy_from_slice(tail);
            }
        }
        self.ids.truncate(last);
        self.data.truncate(last * dimension);
        true
    }
}

/// A top-k candidate ordered so that the heap's greatest is the worst
/// kept: lower score is greater, and on equal scores the larger id.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f64,
    id: EntityId,
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

/// Embeddings of items and creators, one dimension per database.
#[derive(Clone, Debug)]
pub struct VectorStore {
    dimension: usize,
    /// Indexed by `EntityKind::to_byte`.
    sets: [DenseSet; 2],
}

impl PartialEq for VectorStore {
    /// Equal contents (the same id maps to the same bits), whatever the slot
    /// layout: what "two stores hold the same embeddings" means.
    fn eq(&self, other: &Self) -> bool {
        self.dimension == other.dimension
            && self.sets.iter().zip(&other.sets).all(|(a, b)| {
                a.ids.len() == b.ids.len()
                    && a.ids.iter().all(|&id| {
                        let (x, y) = (a.get(id, self.dimension), b.get(id, self.dimension));
                        matches!((x, y), (Some(x), Some(y))
                            if x.iter().map(|f| f.to_bits()).eq(y.iter().map(|f| f.to_bits())))
                    })
            })
    }
}

impl VectorStore {
    /// An empty store for vectors of `dimension` floats.
    pub fn new(dimension: usize) -> Self {
        VectorStore {
            dimension,
            sets: [DenseSet::default(), DenseSet::default()],
        }
    }

    fn set_of(&self, kind: EntityKind) -> &DenseSet {
        match kind {
            EntityKind::Item => &self.sets[0],
            EntityKind::Creator => &self.sets[1],
        }
    }

    /// The floats per vector.
    #[cfg(test)]
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Stores a unit vector for `id`, replacing an existing one in place.
    /// A vector of the wrong length is ignored (validation refuses it
    /// upstream; applying never fails), and an id held under the other kind
    /// moves, so an id has at most one vector.
    pub fn set(&mut self, kind: EntityKind, id: EntityId, unit: &[f32]) {
        let d = self.dimension;
        if unit.len() != d || d == 0 {
            return;
        }
        let (mine, other) = match kind {
            EntityKind::Item => (0, 1),
            EntityKind::Creator => (1, 0),
        };
        self.sets[other].remove(id, d);
        let set = &mut self.sets[mine];
        match set.slots.get(&id) {
            Some(&slot) => {
                if let Some(dst) = set.data.get_mut(slot * d..(slot + 1) * d) {
                    dst.copy_from_slice(unit);
                }
            }
            None => set.push(id, unit),
        }
    }

    /// Removes the vector of `id`, whichever kind holds it, freeing its slot.
    pub fn remove(&mut self, id: EntityId) {
        let d = self.dimension;
        for set in &mut self.sets {
            set.remove(id, d);
        }
    }

    /// The stored unit vector of `id` under `kind`.
    #[cfg(test)]
    pub fn get(&self, kind: EntityKind, id: EntityId) -> Option<&[f32]> {
        self.set_of(kind).get(id, self.dimension)
    }

    /// The number of vectors of `kind`.
    #[cfg(test)]
    pub fn len(&self, kind: EntityKind) -> usize {
        self.set_of(kind).ids.len()
    }

    /// Exact cosine top-k over one kind (query already unit length): best
    /// first, ties by id ascending, only ids for which `accept` returns
    /// true. The score is the f32 dot product as f64. A bounded heap keeps
    /// the k best, so a search costs O(n log k), not a full sort; `accept`
    /// is asked only about candidates that would enter the current top-k,
    /// so costly filters run rarely. A query of the wrong length finds
    /// nothing.
    pub fn top_k(
        &self,
        kind: EntityKind,
        query: &[f32],
        k: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        let d = self.dimension;
        if k == 0 || d == 0 || query.len() != d {
            return Vec::new();
        }
        let set = self.set_of(kind);
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k.min(set.ids.len()));
        for (v, &id) in set.data.chunks_exact(d).zip(&set.ids) {
            let c = Candidate {
                score: f64::from(dot(v, query)),
                id,
            };
            let enters = heap.len() < k || heap.peek().is_some_and(|worst| c < *worst);
            if enters && accept(id) {
                if heap.len() == k {
                    heap.pop();
                }
                heap.push(c);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|c| (c.id, c.score))
            .collect()
    }

    /// Approximate heap bytes held, for memory accounting in `status()`.
    pub fn approx_bytes(&self) -> usize {
        self.sets
            .iter()
            .map(|s| {
                s.ids.capacity() * std::mem::size_of::<EntityId>()
                    + s.data.capacity() * std::mem::size_of::<f32>()
                    + s.slots.capacity() * (std::mem::size_of::<(EntityId, usize)>() + 1)
            })
            .sum()
    }

    /// Appends the snapshot section: the dimension, then per kind the slots
    /// in order, so a decoded store has the same layout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.dimension as u32);
        for set in &self.sets {
            out.put_u32(set.ids.len() as u32);
            if self.dimension == 0 {
                continue;
            }
            for (v, id) in set.data.chunks_exact(self.dimension).zip(&set.ids) {
                out.put_u64(id.0);
                for &x in v {
                    out.put_f32(x);
                }
            }
        }
    }

    /// Reads a section written by [`VectorStore::encode`]; refuses a
    /// dimension other than `dimension` (the database's, from `META`) and
    /// an id stored twice.
    pub fn decode(r: &mut Reader<'_>, dimension: usize) -> Result<Self, DecodeError> {
        let at = r.position();
        let found = r.u32()? as usize;
        if found != dimension {
            return Err(DecodeError {
                offset: at,
                reason: format!("vector dimension {found}, expected {dimension}"),
            });
        }
        let mut store = VectorStore::new(dimension);
        let elem_bytes = dimension.saturating_mul(4).saturating_add(8);
        for kind in [EntityKind::Item, EntityKind::Creator] {
            let n = r.count(elem_bytes)?;
            if n > 0 && dimension == 0 {
                return Err(r.error("vectors of dimension 0"));
            }
            let mut set = DenseSet {
                ids: Vec::with_capacity(n),
                data: Vec::with_capacity(n * dimension),
                slots: HashMap::with_capacity(n),
            };
            for _ in 0..n {
                let id = EntityId(r.u64()?);
                if set.slots.contains_key(&id) || store.sets[0].slots.contains_key(&id) {
                    return Err(r.error(format!("vector of {id} stored twice")));
                }
                set.slots.insert(id, set.ids.len());
                set.ids.push(id);
                for _ in 0..dimension {
                    set.data.push(r.f32()?);
                }
            }
            store.sets[usize::from(kind.to_byte())] = set;
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(s: &VectorStore, kind: EntityKind, q: &[f32], k: usize) -> Vec<(EntityId, f64)> {
        let set = s.set_of(kind);
        let mut all: Vec<(EntityId, f64)> = set
            .ids
            .iter()
            .map(|&id| (id, f64::from(dot(s.get(kind, id).expect("stored"), q))))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    fn round_trip(s: &VectorStore) -> VectorStore {
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let mut r = Reader::new(&buf);
        let d = VectorStore::decode(&mut r, s.dimension()).expect("decodes");
        assert!(r.is_empty());
        d
    }

    #[test]
    fn normalize_gives_unit_length_and_refuses_zero() {
        assert_eq!(normalize(&[0.0, 0.0, 0.0]), None);
        assert_eq!(normalize(&[]), None);
        let u = normalize(&[3.0, 4.0]).expect("non-zero");
        assert!((u[0] - 0.6).abs() < 1e-7 && (u[1] - 0.8).abs() < 1e-7);
    }

    #[test]
    fn dot_matches_a_plain_sum_on_odd_lengths() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn set_replaces_and_remove_frees_the_slot() {
        let mut s = VectorStore::new(2);
        s.set(EntityKind::Item, EntityId(1), &[1.0, 0.0]);
        s.set(EntityKind::Item, EntityId(2), &[0.0, 1.0]);
        s.set(EntityKind::Item, EntityId(3), &[0.6, 0.8]);
        s.set(EntityKind::Item, EntityId(1), &[0.0, 1.0]);
        assert_eq!(s.len(EntityKind::Item), 3);
        assert_eq!(s.get(EntityKind::Item, EntityId(1)), Some(&[0.0, 1.0][..]));
        s.remove(EntityId(1));
        assert_eq!(s.len(EntityKind::Item), 2);
        assert_eq!(s.get(EntityKind::Item, EntityId(1)), None);
        // The moved slot still reads back its own vector.
        assert_eq!(s.get(EntityKind::Item, EntityId(3)), Some(&[0.6, 0.8][..]));
        assert_eq!(s.set_of(EntityKind::Item).data.len(), 4);
        let hits = s.top_k(EntityKind::Item, &[0.0, 1.0], 10, &mut |_| true);
        assert!(hits.iter().all(|(id, _)| *id != EntityId(1)));
        assert_eq!(hits.len(), 2);
        assert_eq!(
            s.top_k(EntityKind::Creator, &[0.0, 1.0], 10, &mut |_| true),
            vec![]
        );
        // Wrong lengths change and find nothing.
        s.set(EntityKind::Item, EntityId(9), &[1.0]);
        assert_eq!(s.len(EntityKind::Item), 2);
        assert!(
            s.top_k(EntityKind::Item, &[1.0], 10, &mut |_| true)
                .is_empty()
        );
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn ties_are_broken_by_id_and_accept_filters() {
        let mut s = VectorStore::new(2);
        for id in [5, 3, 9, 1] {
            s.set(EntityKind::Creator, EntityId(id), &[1.0, 0.0]);
        }
        let hits = s.top_k(EntityKind::Creator, &[1.0, 0.0], 3, &mut |id| {
            id != EntityId(3)
        });
        let ids: Vec<u64> = hits.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![1, 5, 9]);
        assert_eq!(
            s.top_k(EntityKind::Creator, &[1.0, 0.0], 0, &mut |_| true),
            vec![]
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(bool, u64, [i8; 3]),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<bool>(), 0u64..12, any::<[i8; 3]>()).prop_map(|(c, id, v)| Op::Set(c, id, v)),
            1 => (0u64..12).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn top_k_equals_a_brute_force_sort(
            ops in proptest::collection::vec(op(), 0..40),
            q in any::<[i8; 3]>(),
            k in 0usize..8,
            odd in any::<bool>(),
        ) {
            let mut s = VectorStore::new(3);
            let mut model: HashMap<u64, (EntityKind, Vec<f32>)> = HashMap::new();
            for o in &ops {
                match o {
                    Op::Set(c, id, v) => {
                        let kind = if *c { EntityKind::Creator } else { EntityKind::Item };
                        // Small integers make exact score ties common.
                        let Some(u) = normalize(&v.map(|x| f32::from(x % 3))) else { continue };
                        s.set(kind, EntityId(*id), &u);
                        model.insert(*id, (kind, u));
                    }
                    Op::Remove(id) => {
                        s.remove(EntityId(*id));
                        model.remove(id);
                    }
                }
            }
            for (id, (kind, v)) in &model {
                prop_assert_eq!(s.get(*kind, EntityId(*id)), Some(&v[..]));
            }
            prop_assert_eq!(s.len(EntityKind::Item) + s.len(EntityKind::Creator), model.len());
            let q = normalize(&q.map(|x| f32::from(x % 3))).unwrap_or(vec![1.0, 0.0, 0.0]);
            for kind in [EntityKind::Item, EntityKind::Creator] {
                let keep = |id: EntityId| !odd || id.0 % 2 == 1;
                let got = s.top_k(kind, &q, k, &mut |id| keep(id));
                let mut want = brute(&s, kind, &q, usize::MAX);
                want.retain(|(id, _)| keep(*id));
                want.truncate(k);
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(&round_trip(&s), &s);
        }

        #[test]
        fn decode_never_panics_on_random_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            d in 0usize..4,
        ) {
            let _ = VectorStore::decode(&mut Reader::new(&bytes), d);
        }
    }

    #[test]
    fn decode_refuses_another_dimension_and_cut_input() {
        let mut s = VectorStore::new(2);
        s.set(EntityKind::Item, EntityId(1), &[1.0, 0.0]);
        s.set(EntityKind::Creator, EntityId(2), &[0.0, 1.0]);
        let mut buf = Vec::new();
        s.encode(&mut buf);
        assert!(VectorStore::decode(&mut Reader::new(&buf), 3).is_err());
        for cut in 0..buf.len() {
            assert!(VectorStore::decode(&mut Reader::new(&buf[..cut]), 2).is_err());
        }
    }
}
