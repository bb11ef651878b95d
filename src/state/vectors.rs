//! Normalized embeddings and cosine top-k, exact below a size and
//! approximate (an inverted file) above it.
//!
//! Each kind has one set ([`super::ann`]): ids and vectors stored list-major
//! and contiguous, so a search streams through memory without a pointer
//! chase per vector; a remove moves a list's last slot into the hole
//! (swap-remove), so deletes free their space and the data stays dense.
//! Vectors are stored at unit length, which makes cosine a plain dot
//! product. Below [`IndexParams::min_vectors`] a set is one list and a
//! search is an exact scan; above it the set is an IVF index and a search
//! scans the `probes` best lists (see `ann` for the design and figures).
//!
//! The layout depends only on the sequence of calls, and snapshots keep it
//! (centroids and lists slot by slot), so replicas fed the same calls, or
//! seeded by a snapshot, hold the same layout and answer alike.
//!
//! # Snapshot section, version 2 (version 1 is read too)
//!
//! `dimension u32`, then per kind (items, creators): `trained u8`; if 1,
//! `trained_at u64`, `groups u32`, per group the end of its fine centroids
//! (`u32`, increasing), the group centroids and the fine centroids
//! (`dimension` f32 each); then `lists u32` (at most 1 untrained, the fine
//! centroid count trained) and per list `count u32` and `count` times
//! `id u64` + `dimension` f32 (a trained set's 8-bit codes are not
//! stored: decode rebuilds them from the vectors). Version 1 is `dimension`, then per kind
//! `count u32` and the slots: one untrained list. A set decoded from
//! version 1 trains at its next insert if it is large enough, so replicas
//! seeded from version 1 snapshots taken at different points may index
//! differently until their next training; version 2 has no such gap.

use crate::codec::{DecodeError, Put, Reader};
use crate::types::{EntityId, EntityKind};

use super::ann::{IndexParams, KindSet, List, MAX_LISTS, Quantizer};
use super::ann_codes::Codes;

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
///
/// The accumulators are summed in order at the end. That order decides the
/// loop's code: a pairwise sum (`(acc[0] + acc[4]) + ...`) led LLVM to
/// shuffle every chunk into the pairs' lanes inside the loop, and a scan of
/// 100k x 128 took 2.2-2.4 ms against 1.6-1.7 ms summed in order (a
/// standalone loop over the same data, `rustc -C opt-level=3`, three rounds
/// each); W6's exact search read 1.29x the harness's plain scan before.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
    acc.iter().sum::<f32>() + tail
}

/// Embeddings of items and creators, one dimension per database.
#[derive(Clone, Debug)]
pub struct VectorStore {
    dimension: usize,
    params: IndexParams,
    /// Indexed by `EntityKind::to_byte`.
    sets: [KindSet; 2],
}

impl PartialEq for VectorStore {
    /// Equal contents (the same id maps to the same bits), whatever the slot
    /// layout: what "two stores hold the same embeddings" means.
    fn eq(&self, other: &Self) -> bool {
        let d = self.dimension;
        self.dimension == other.dimension
            && self.sets.iter().zip(&other.sets).all(|(a, b)| {
                a.len() == b.len()
                    && a.lists.iter().flat_map(|l| &l.ids).all(|&id| {
                        matches!((a.get(id, d), b.get(id, d)), (Some(x), Some(y))
                            if x.iter().map(|f| f.to_bits()).eq(y.iter().map(|f| f.to_bits())))
                    })
            })
    }
}

fn index(kind: EntityKind) -> usize {
    match kind {
        EntityKind::Item => 0,
        EntityKind::Creator => 1,
    }
}

impl VectorStore {
    /// An empty store for vectors of `dimension` floats.
    pub fn new(dimension: usize, params: IndexParams) -> Self {
        VectorStore {
            dimension,
            params,
            sets: [KindSet::default(), KindSet::default()],
        }
    }

    pub(super) fn set_of(&self, kind: EntityKind) -> &KindSet {
        &self.sets[index(kind)]
    }

    /// The floats per vector.
    #[cfg(test)]
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The index knobs.
    #[cfg(test)]
    pub fn params(&self) -> IndexParams {
        self.params
    }

    /// Whether `kind`'s set is an approximate index (trained).
    #[cfg(test)]
    pub fn is_indexed(&self, kind: EntityKind) -> bool {
        self.set_of(kind).quant.is_some()
    }

    /// Layout equality: the same centroids, lists and slots. Replicas fed
    /// the same calls, and a decoded copy, are equal in this sense.
    #[cfg(test)]
    pub fn same_layout(&self, other: &Self) -> bool {
        self.dimension == other.dimension && self.sets == other.sets
    }

    /// Stores a unit vector for `id`, replacing an existing one. A vector
    /// of the wrong length is ignored (validation refuses it upstream;
    /// applying never fails), and an id held under the other kind moves,
    /// so an id has at most one vector. May train the kind's index.
    pub fn set(&mut self, kind: EntityKind, id: EntityId, unit: &[f32]) {
        let d = self.dimension;
        if unit.len() != d || d == 0 {
            return;
        }
        let mine = index(kind);
        self.sets[1 - mine].remove(id, d);
        self.sets[mine].set(id, unit, d, &self.params);
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
        self.set_of(kind).len()
    }

    /// Cosine top-k over one kind (query already unit length): best first,
    /// ties by id ascending, only ids for which `accept` returns true. The
    /// score is the f32 dot product as f64. Exact below the index size;
    /// above it, the configured probes of the IVF index, and never fewer
    /// results than the exact answer holds. `accept` is asked only about
    /// candidates that would enter the current top-k (above the index
    /// size: the rerank pool, up to `4 k` when it took every sampled id)
    /// and, above the index size, a sample of the best list (`ann`:
    /// filtered search). A query of the wrong length finds nothing.
    pub fn top_k(
        &self,
        kind: EntityKind,
        query: &[f32],
        k: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        self.top_k_probes(kind, query, k, self.params.probes as usize, accept)
    }

    /// [`VectorStore::top_k`] with `probes` lists (`usize::MAX`: exact).
    pub fn top_k_probes(
        &self,
        kind: EntityKind,
        query: &[f32],
        k: usize,
        probes: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        let d = self.dimension;
        if k == 0 || d == 0 || query.len() != d {
            return Vec::new();
        }
        self.set_of(kind).top_k(query, k, probes, d, accept)
    }

    /// Approximate heap bytes held, for memory accounting in `status()`.
    pub fn approx_bytes(&self) -> usize {
        self.sets.iter().map(KindSet::approx_bytes).sum()
    }

    /// Appends the snapshot section (version 2, module docs).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let d = self.dimension;
        out.put_u32(d as u32);
        for set in &self.sets {
            match &set.quant {
                None => out.put_u8(0),
                Some(q) => {
                    out.put_u8(1);
                    out.put_u64(q.trained_at);
                    out.put_u32(q.group_ends.len() as u32);
                    for &e in &q.group_ends {
                        out.put_u32(e);
                    }
                    for &x in q.groups.iter().chain(&q.fine) {
                        out.put_f32(x);
                    }
                }
            }
            out.put_u32(set.lists.len() as u32);
            for list in &set.lists {
                out.put_u32(list.ids.len() as u32);
                if d == 0 {
                    continue;
                }
                for (v, id) in list.data.chunks_exact(d).zip(&list.ids) {
                    out.put_u64(id.0);
                    for &x in v {
                        out.put_f32(x);
                    }
                }
            }
        }
    }

    /// Reads a section written by [`VectorStore::encode`] (`version` 2) or
    /// by the builds before the index (`version` 1); refuses a dimension
    /// other than `dimension` (the database's, from `META`), an id stored
    /// twice, and a quantizer that does not match its lists.
    pub fn decode(
        r: &mut Reader<'_>,
        version: u16,
        dimension: usize,
        params: IndexParams,
    ) -> Result<Self, DecodeError> {
        let at = r.position();
        let found = r.u32()? as usize;
        if found != dimension {
            return Err(DecodeError {
                offset: at,
                reason: format!("vector dimension {found}, expected {dimension}"),
            });
        }
        let d = dimension;
        let mut store = VectorStore::new(d, params);
        for kind in [EntityKind::Item, EntityKind::Creator] {
            let mut set = KindSet::default();
            let lists = if version == 1 {
                1
            } else {
                set.quant = decode_quantizer(r, d)?;
                let lists = r.count(4)?;
                let want = set.quant.as_ref().map_or(1, |q| q.lists(d));
                if (set.quant.is_some() && lists != want) || lists > want {
                    return Err(r.error(format!("{lists} vector lists, expected {want}")));
                }
                lists
            };
            for l in 0..lists {
                let n = r.count(d.saturating_mul(4).saturating_add(8))?;
                if n > 0 && d == 0 {
                    return Err(r.error("vectors of dimension 0"));
                }
                let mut list = List {
                    ids: Vec::with_capacity(n),
                    data: Vec::with_capacity(n * d),
                    codes: Codes::default(),
                };
                for _ in 0..n {
                    let id = EntityId(r.u64()?);
                    if set.slots.contains_key(&id) || store.sets[0].slots.contains_key(&id) {
                        return Err(r.error(format!("vector of {id} stored twice")));
                    }
                    set.slots.insert(id, (l as u32, list.ids.len() as u32));
                    list.ids.push(id);
                    for _ in 0..d {
                        list.data.push(r.f32()?);
                    }
                }
                // A trained set's codes are a function of its vectors:
                // rebuilt, not stored.
                if set.quant.is_some() {
                    list.codes = Codes::build(&list.data, d);
                }
                set.lists.push(list);
            }
            store.sets[index(kind)] = set;
        }
        Ok(store)
    }
}

/// Reads the `trained` flag and, if set, the quantizer.
fn decode_quantizer(r: &mut Reader<'_>, d: usize) -> Result<Option<Quantizer>, DecodeError> {
    match r.u8()? {
        0 => return Ok(None),
        1 => {}
        b => return Err(r.error(format!("trained flag {b}"))),
    }
    if d == 0 {
        return Err(r.error("an index of dimension 0"));
    }
    let trained_at = r.u64()?;
    let g = r.count(4 + 4 * d)?;
    if g == 0 || g > MAX_LISTS {
        return Err(r.error(format!("{g} centroid groups, expected 1..={MAX_LISTS}")));
    }
    let mut group_ends = Vec::with_capacity(g);
    let mut prev = 0u32;
    for _ in 0..g {
        let e = r.u32()?;
        if e <= prev || e as usize > 2 * MAX_LISTS {
            return Err(r.error(format!("centroid group end {e} after {prev}")));
        }
        group_ends.push(e);
        prev = e;
    }
    let nlist = prev as usize;
    if r.remaining() / 4 / d < g + nlist {
        return Err(r.error(format!(
            "{g} + {nlist} centroids exceed the remaining bytes"
        )));
    }
    let mut read = |count: usize| -> Result<Vec<f32>, DecodeError> {
        (0..count * d).map(|_| r.f32()).collect()
    };
    let groups = read(g)?;
    let fine = read(nlist)?;
    Ok(Some(Quantizer {
        trained_at,
        groups,
        group_ends,
        fine,
    }))
}
