//! The one-type walk (`trending::top_k_walk`) keeps no heap: it relies on
//! meeting candidates best first and breaks ties itself. These tests read
//! where distinct sums give equal scores (a weight of zero, or a read so
//! far ahead that every decayed score underflows to zero), so that the
//! walk's order (by sum) and the answer's (by id among equal scores)
//! differ, over more entities than the walk holds before it cuts back.

use super::SignalStore;
use crate::types::{EntityId, Timestamp};

const ENTITIES: u64 = 500;

/// A store of one type whose entities have distinct sums, in an order
/// unrelated to their ids: the `i`-th gets weight `i + 1` and id
/// `i * 7919 mod 1009` (distinct, as 1009 is prime).
fn store() -> SignalStore {
    let mut store = SignalStore::new(&[1000], 2, 0.0);
    for i in 0..ENTITIES {
        let id = (i * 7919) % 1009;
        store.add(0, EntityId(id), (i + 1) as f64, Timestamp(1_000));
    }
    store
}

/// The answer computed the obvious way: every entity's weighted score,
/// sorted by score descending then id ascending, cut to `k`.
fn brute(store: &SignalStore, weight: f64, at: Timestamp, k: usize) -> Vec<(u64, u64)> {
    let mut all: Vec<(EntityId, f64)> = store.types[0]
        .table
        .ids()
        .map(|id| (id, weight * store.score(0, id, at) + 0.0))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all.iter().map(|(id, s)| (id.0, s.to_bits())).collect()
}

fn walk(store: &SignalStore, weight: f64, at: Timestamp, k: usize) -> Vec<(u64, u64)> {
    store
        .top_k(&[(0, weight)], at, k, &mut |_| true)
        .iter()
        .map(|(id, s)| (id.0, s.to_bits()))
        .collect()
}

#[test]
fn equal_scores_of_distinct_sums_rank_by_id_at_every_k() {
    let store = store();
    // Now: distinct scores. Far ahead: every score underflows to 0.
    let now = Timestamp(1_000);
    let far = Timestamp(5_000_000);
    for (weight, at) in [(1.0, now), (-1.0, now), (0.0, now), (1.0, far), (-1.0, far)] {
        for k in [1, 10, 31, 32, 33, 64, 100, 499, 500, 600] {
            let got = walk(&store, weight, at, k);
            assert_eq!(got.len(), k.min(ENTITIES as usize));
            assert_eq!(
                got,
                brute(&store, weight, at, k),
                "weight {weight}, at {at:?}, k {k}"
            );
        }
    }
    // The far read really does tie every entity at zero.
    assert!(brute(&store, 1.0, far, 500).iter().all(|&(_, s)| s == 0));
}

#[test]
fn a_filter_applies_before_the_cut() {
    let store = store();
    let far = Timestamp(5_000_000);
    let got: Vec<u64> = store
        .top_k(&[(0, 1.0)], far, 40, &mut |id| id.0 % 2 == 1)
        .iter()
        .map(|(id, _)| id.0)
        .collect();
    let mut want: Vec<u64> = store.types[0]
        .table
        .ids()
        .map(|id| id.0)
        .filter(|id| id % 2 == 1)
        .collect();
    want.sort_unstable();
    want.truncate(40);
    assert_eq!(got, want);
}
