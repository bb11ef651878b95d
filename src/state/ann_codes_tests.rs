//! Tests of the 8-bit codes (`ann_codes`): kept in step with the vectors
//! through inserts, removes, trainings and a snapshot decode; their error
//! within its bound; and a search returning the brute-force answer of the
//! probed lists whenever the bound proves the rerank pool holds it.

use proptest::prelude::*;

use super::ann::IndexParams;
use super::ann_codes::{Codes, QueryCode, RERANK, error_bound};
use super::vectors::{VectorStore, dot, normalize};
use crate::codec::Reader;
use crate::splitmix::SplitMix64;
use crate::types::{EntityId, EntityKind};

const ITEM: EntityKind = EntityKind::Item;

fn params(min_vectors: u64, probes: u32) -> IndexParams {
    IndexParams {
        min_vectors,
        probes,
    }
}

/// Seeded clustered unit vectors: `centres` random directions, each point
/// one of them plus uniform noise of `noise` per component.
fn points(seed: u64, d: usize, n: usize, centres: usize, noise: f64) -> Vec<Vec<f32>> {
    let mut r = SplitMix64(seed);
    let mut unit = move || (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let c: Vec<Vec<f64>> = (0..centres)
        .map(|_| (0..d).map(|_| unit()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let v: Vec<f32> = c[i % centres]
                .iter()
                .map(|&x| (x + noise * unit()) as f32)
                .collect();
            normalize(&v).unwrap_or_else(|| vec![1.0; d])
        })
        .collect()
}

/// Every trained list's codes are the codes of its vectors, slot by slot;
/// an untrained set has none.
fn assert_in_step(s: &VectorStore) {
    let d = s.dimension();
    for kind in [ITEM, EntityKind::Creator] {
        let set = s.set_of(kind);
        for (l, list) in set.lists.iter().enumerate() {
            if set.quant.is_some() {
                assert_eq!(list.codes, Codes::build(&list.data, d), "{kind:?} list {l}");
            } else {
                assert_eq!(list.codes, Codes::default(), "{kind:?} untrained");
            }
        }
    }
}

#[test]
fn a_remove_moves_the_last_code_into_the_hole() {
    let d = 16;
    let pts = points(5, d, 2_000, 40, 0.3);
    let mut s = VectorStore::new(d, params(500, 4));
    for (id, v) in pts.iter().enumerate() {
        s.set(ITEM, EntityId(id as u64), v);
    }
    assert!(s.is_indexed(ITEM));
    // Remove the first slot of every list holding at least two: the last
    // vector (and its code) moves into slot 0.
    let firsts: Vec<EntityId> = s
        .set_of(ITEM)
        .lists
        .iter()
        .filter(|l| l.ids.len() > 1)
        .map(|l| l.ids[0])
        .collect();
    assert!(firsts.len() > 10);
    for id in &firsts {
        s.remove(*id);
    }
    assert_in_step(&s);
    // Each moved vector is found by its own direction, with its exact dot.
    for list in &s.set_of(ITEM).lists {
        let Some(&moved) = list.ids.first() else {
            continue;
        };
        let v = s.get(ITEM, moved).expect("stored").to_vec();
        let top = s.top_k(ITEM, &v, 1, &mut |_| true);
        assert_eq!(top, vec![(moved, f64::from(dot(&v, &v)))]);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Set(bool, u64, u16),
    Remove(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..500, 0u16..300).prop_map(|(c, id, v)| Op::Set(c, id, v)),
        1 => (0u64..500).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random sets (replacing, moving ids between kinds), removes and the
    /// trainings they trigger (at 64 vectors, then 4x): the codes stay the
    /// codes of the vectors, and a decoded snapshot rebuilds the same ones.
    #[test]
    fn codes_stay_in_step_through_inserts_removes_trainings_and_decode(
        ops in proptest::collection::vec(op(), 0..900),
    ) {
        let d = 8;
        let pool = points(9, d, 300, 12, 0.4);
        let mut s = VectorStore::new(d, params(64, 2));
        for o in &ops {
            match o {
                Op::Set(c, id, v) => {
                    let kind = if *c { EntityKind::Creator } else { ITEM };
                    s.set(kind, EntityId(*id), &pool[usize::from(*v)]);
                }
                Op::Remove(id) => s.remove(EntityId(*id)),
            }
        }
        assert_in_step(&s);
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let back = VectorStore::decode(&mut Reader::new(&buf), 2, d, s.params()).expect("decodes");
        prop_assert!(back.same_layout(&s));
        assert_in_step(&back);
    }

    /// The approximate score of any vector and query (large components,
    /// up to 700 dimensions) is within `error_bound` of the exact dot.
    #[test]
    fn the_approximate_score_is_within_its_bound(
        seed in any::<u64>(),
        d in 1usize..700,
        spike in any::<bool>(),
    ) {
        let mut r = SplitMix64(seed);
        let mut draw = |spike: bool| {
            let mut v: Vec<f32> = (0..d)
                .map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                .collect();
            if spike {
                v[(r.next_u64() % d as u64) as usize] = 40.0;
            }
            normalize(&v).unwrap_or_else(|| vec![1.0; d])
        };
        let (v, q) = (draw(spike), draw(false));
        let codes = Codes::build(&v, d);
        let qc = QueryCode::new(&q);
        let approx = f64::from(qc.score(&codes.codes, codes.scales[0]));
        let exact = f64::from(dot(&v, &q));
        let bound = error_bound(codes.scales[0], qc.scale(), d);
        prop_assert!((approx - exact).abs() <= bound, "{approx} {exact} {bound}");
    }
}

#[test]
fn the_largest_integer_dot_does_not_overflow() {
    // Every component equal: every code at its largest level, the integer
    // dot at its largest. 5,000 dimensions would overflow with 32767
    // query levels.
    for d in [128, 600, 5_000] {
        let v = normalize(&vec![1.0; d]).expect("not zero");
        let codes = Codes::build(&v, d);
        let approx = QueryCode::new(&v).score(&codes.codes, codes.scales[0]);
        assert!((approx - 1.0).abs() < 1e-3, "{d}: {approx}");
    }
}

/// The unfiltered top-k of the best `probes` lists by brute force, exact
/// scores; and whether the codes prove that the search's rerank pool (the
/// best `RERANK * k` by approximate score) holds it: the pool's first
/// left-out candidate scores below the k-th exact score by more than the
/// largest error bound.
fn brute_force(
    s: &VectorStore,
    q: &[f32],
    k: usize,
    probes: usize,
) -> (Vec<(EntityId, f64)>, bool) {
    let set = s.set_of(ITEM);
    let d = s.dimension();
    let quant = set.quant.as_ref().expect("trained");
    let mut order: Vec<(f32, usize)> = quant
        .fine
        .chunks_exact(d)
        .enumerate()
        .map(|(l, c)| (dot(c, q), l))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let qc = QueryCode::new(q);
    let (mut exact, mut approx, mut worst_bound) = (Vec::new(), Vec::new(), 0f64);
    for &(_, l) in &order[..probes] {
        let list = &set.lists[l];
        for (slot, &id) in list.ids.iter().enumerate() {
            let v = &list.data[slot * d..(slot + 1) * d];
            let sv = list.codes.scales[slot];
            exact.push((id, f64::from(dot(v, q))));
            approx.push(f64::from(
                qc.score(&list.codes.codes[slot * d..(slot + 1) * d], sv),
            ));
            worst_bound = worst_bound.max(error_bound(sv, qc.scale(), d));
        }
    }
    exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    approx.sort_by(|a, b| b.total_cmp(a));
    let proven = match (exact.get(k - 1), approx.get(RERANK * k)) {
        (Some(kth), Some(&out)) => out < kth.1 - 2.0 * worst_bound,
        (Some(_), None) => true,
        (None, _) => false,
    };
    exact.truncate(k);
    (exact, proven)
}

#[test]
fn a_search_is_the_brute_force_top_k_of_its_lists_when_the_bound_proves_the_pool_holds_it() {
    let d = 24;
    let pts = points(13, d, 6_000, 60, 0.5);
    let mut s = VectorStore::new(d, params(1_000, 6));
    for (id, v) in pts.iter().enumerate() {
        s.set(ITEM, EntityId(id as u64), v);
    }
    for id in (0..6_000).step_by(5) {
        s.remove(EntityId(id));
    }
    assert!(s.is_indexed(ITEM));
    let queries = points(14, d, 200, 60, 0.5);
    let mut proven = 0;
    for q in &queries {
        let got = s.top_k(ITEM, q, 5, &mut |_| true);
        let (want, holds) = brute_force(&s, q, 5, 6);
        // Always: exact scores, best first then by id, no removed id, as
        // many results as the lists hold.
        assert_eq!(got.len(), want.len());
        for w in got.windows(2) {
            assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0));
        }
        for (id, score) in &got {
            assert!(id.0 % 5 != 0, "removed {id} returned");
            let v = s.get(ITEM, *id).expect("stored");
            assert_eq!(*score, f64::from(dot(v, q)));
        }
        if holds {
            assert_eq!(got, want);
            proven += 1;
        }
    }
    // The proof is not vacuous on this data.
    assert!(proven >= 50, "{proven} of 200 proven");
}
