//! Tests of the vector store below the index size: exact top-k, the
//! codec, and the version 1 section.

use std::collections::HashMap;

use proptest::prelude::*;

use super::ann::IndexParams;
use super::vectors::{VectorStore, dot, normalize};
use crate::codec::{Put, Reader};
use crate::types::{EntityId, EntityKind};

fn store(d: usize) -> VectorStore {
    VectorStore::new(d, IndexParams::default())
}

fn brute(s: &VectorStore, kind: EntityKind, q: &[f32], k: usize) -> Vec<(EntityId, f64)> {
    let set = s.set_of(kind);
    let mut all: Vec<(EntityId, f64)> = set
        .lists
        .iter()
        .flat_map(|l| &l.ids)
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
    let d = VectorStore::decode(&mut r, 2, s.dimension(), s.params()).expect("decodes");
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
    let mut s = store(2);
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
    assert_eq!(s.set_of(EntityKind::Item).lists[0].data.len(), 4);
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
    let mut s = store(2);
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
        let mut s = store(3);
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
        for version in [1, 2] {
            let _ = VectorStore::decode(&mut Reader::new(&bytes), version, d, IndexParams::default());
        }
    }
}

#[test]
fn decode_refuses_another_dimension_and_cut_input() {
    let mut s = store(2);
    s.set(EntityKind::Item, EntityId(1), &[1.0, 0.0]);
    s.set(EntityKind::Creator, EntityId(2), &[0.0, 1.0]);
    let mut buf = Vec::new();
    s.encode(&mut buf);
    assert!(VectorStore::decode(&mut Reader::new(&buf), 2, 3, IndexParams::default()).is_err());
    for cut in 0..buf.len() {
        assert!(
            VectorStore::decode(&mut Reader::new(&buf[..cut]), 2, 2, IndexParams::default())
                .is_err()
        );
    }
}

#[test]
fn a_version_1_section_decodes_as_one_untrained_list() {
    let mut v1 = Vec::new();
    v1.put_u32(2);
    v1.put_u32(2);
    for (id, v) in [(1u64, [1.0f32, 0.0]), (2, [0.0, 1.0])] {
        v1.put_u64(id);
        v1.put_f32(v[0]);
        v1.put_f32(v[1]);
    }
    v1.put_u32(1);
    v1.put_u64(3);
    v1.put_f32(0.6);
    v1.put_f32(0.8);
    let s = VectorStore::decode(&mut Reader::new(&v1), 1, 2, IndexParams::default())
        .expect("version 1 decodes");
    assert_eq!(s.len(EntityKind::Item), 2);
    assert_eq!(
        s.get(EntityKind::Creator, EntityId(3)),
        Some(&[0.6, 0.8][..])
    );
    assert!(!s.is_indexed(EntityKind::Item));
    assert_eq!(round_trip(&s), s);
    // Cut anywhere, it is an error.
    for cut in 0..v1.len() {
        assert!(
            VectorStore::decode(&mut Reader::new(&v1[..cut]), 1, 2, IndexParams::default())
                .is_err()
        );
    }
}
