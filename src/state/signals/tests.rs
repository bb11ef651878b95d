//! Tests of the signal store against a naive model that keeps every signal
//! and evaluates `sum w_i * 2^(-(t - t_i)/h)` directly.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

/// A signal as the model keeps it.
#[derive(Clone, Copy, Debug)]
struct Sig {
    ty: u16,
    id: u64,
    w: f64,
    t: u64,
}

/// Every signal not deleted since, in order.
#[derive(Default, Debug)]
struct Model {
    sigs: Vec<Sig>,
}

impl Model {
    fn add(&mut self, s: Sig) {
        self.sigs.push(s);
    }
    fn remove(&mut self, id: u64) {
        self.sigs.retain(|s| s.id != id);
    }
    /// (exact score, allowed error) at `at`.
    fn score(&self, ty: u16, id: u64, h: u64, at: u64) -> (f64, f64) {
        let mut exact = 0.0;
        let mut mass = 0.0;
        for s in self.sigs.iter().filter(|s| s.ty == ty && s.id == id) {
            let f = ((s.t as f64 - at as f64) / h as f64).exp2();
            exact += s.w * f;
            mass += s.w.abs() * f;
        }
        (exact, 1e-9 * mass + 1e-300)
    }
    fn count(&self, ty: u16, id: u64) -> i64 {
        self.sigs
            .iter()
            .filter(|s| s.ty == ty && s.id == id)
            .map(|s| {
                if s.w > 0.0 {
                    1
                } else if s.w < 0.0 {
                    -1
                } else {
                    0
                }
            })
            .sum()
    }
    fn ids(&self, ty: u16) -> BTreeSet<u64> {
        self.sigs
            .iter()
            .filter(|s| s.ty == ty)
            .map(|s| s.id)
            .collect()
    }
}

fn accept_all() -> impl FnMut(EntityId) -> bool {
    |_| true
}

/// A blend computed the obvious way over the union, with the store's own
/// point reads; the store's `top_k` must return exactly this.
fn brute_blend(
    store: &SignalStore,
    blend: &[(u16, f64)],
    at: Timestamp,
    k: usize,
    accept: &dyn Fn(EntityId) -> bool,
) -> Vec<(EntityId, f64)> {
    let mut union = BTreeSet::new();
    for &(ty, _) in blend {
        if let Some(t) = store.types.get(usize::from(ty)) {
            union.extend(t.table.ids());
        }
    }
    let mut all: Vec<(EntityId, f64)> = union
        .into_iter()
        .filter(|&id| accept(id))
        .map(|id| {
            let s = blend
                .iter()
                .filter(|&&(ty, _)| usize::from(ty) < store.type_count())
                .fold(0.0, |acc, &(ty, w)| acc + w * store.score(ty, id, at) + 0.0);
            (id, s + 0.0)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn bits(v: &[(EntityId, f64)]) -> Vec<(u64, u64)> {
    v.iter().map(|(id, s)| (id.0, s.to_bits())).collect()
}

/// One batch of operations at a log time.
#[derive(Clone, Debug)]
enum Op {
    Add {
        ty: u16,
        id: u64,
        w: f64,
        jitter_ms: i64,
    },
    Remove {
        id: u64,
    },
}

fn op_strategy(types: u16, ids: u64, h: i64) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..types, 0..ids, -5.0f64..5.0, -3 * h..h).prop_map(|(ty, id, w, jitter_ms)| {
            Op::Add { ty, id, w, jitter_ms }
        }),
        // Repeated weights make exact ties between entities.
        3 => (0..types, 0..ids, prop::sample::select(vec![-1.0, 0.0, 1.0, 2.0]), -3 * h..h)
            .prop_map(|(ty, id, w, jitter_ms)| Op::Add { ty, id, w, jitter_ms }),
        1 => (0..ids).prop_map(|id| Op::Remove { id }),
    ]
}

/// Batches: (log time step in ms, operations).
fn batches(types: u16, ids: u64, h: i64, n: usize) -> impl Strategy<Value = Vec<(u64, Vec<Op>)>> {
    prop::collection::vec(
        (
            (h as u64 / 2)..(2 * h as u64),
            prop::collection::vec(op_strategy(types, ids, h), 1..5),
        ),
        n..n + 20,
    )
}

/// Applies the batches to a store and a model as a log would; returns the
/// last log time.
fn run(store: &mut SignalStore, model: &mut Model, batches: &[(u64, Vec<Op>)]) -> u64 {
    let mut log_time = 0u64;
    for (step, ops) in batches {
        log_time += step;
        store.advance_landmarks(log_time);
        for op in ops {
            match *op {
                Op::Add {
                    ty,
                    id,
                    w,
                    jitter_ms,
                } => {
                    let t = log_time.saturating_add_signed(jitter_ms);
                    store.add(ty, EntityId(id), w, Timestamp(t));
                    model.add(Sig { ty, id, w, t });
                }
                Op::Remove { id } => {
                    store.remove_entity(EntityId(id));
                    model.remove(id);
                }
            }
        }
    }
    log_time
}

const HALF_LIVES_MS: [u64; 2] = [1000, 1700];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// (a) Scores within the error bound of the naive formula before and
    /// after landmark moves, counts exact, trending order equal to the order
    /// of naive scores.
    #[test]
    fn scores_counts_and_order_match_the_naive_model(
        landmark_half_lives in 1u32..=3,
        batches in batches(2, 12, 1000, 30),
        read_offsets in prop::collection::vec(0.0f64..1.0, 4),
    ) {
        let mut store = SignalStore::new(&HALF_LIVES_MS, landmark_half_lives, 0.0);
        let mut model = Model::default();
        let end_ms = run(&mut store, &mut model, &batches);
        // At least three landmark moves happened on the faster type.
        prop_assert!(store.landmark_ms(0) >= 3 * u64::from(landmark_half_lives) * 1000);
        for (ty, &h) in HALF_LIVES_MS.iter().enumerate() {
            let ty = ty as u16;
            prop_assert_eq!(store.len(ty), model.ids(ty).len());
            // Times from the start (far before the landmark) to past the end.
            for &f in &read_offsets {
                let at = (f * (end_ms + 3000) as f64) as u64;
                check_reads(&store, &model, ty, h, at)?;
            }
            check_reads(&store, &model, ty, h, store.landmark_ms(ty))?;
        }
    }

    /// (c) Blend top-k equals a brute force over the union, with positive,
    /// zero and negative weights, unknown types and a filter.
    #[test]
    fn blend_top_k_equals_brute_force(
        batches in batches(3, 40, 1000, 8),
        blend in prop::collection::vec(
            (prop::sample::select(vec![0u16, 1, 2, 2, 7]),
             prop::sample::select(vec![-1.0, 0.0, 0.5, 1.0, 1.0, 2.0])),
            1..4),
        nonneg in any::<bool>(),
        k in 0usize..45,
        filter in any::<bool>(),
        read_after_ms in prop_oneof![
            0u64..5000,
            // Far enough ahead that S * factor becomes subnormal or zero for
            // some types: distinct S then tie after rounding, and ties must
            // still be broken by id.
            1_050_000u64..1_080_000,
            Just(5_000_000u64),
        ],
    ) {
        let mut store = SignalStore::new(&[1000, 1700, 600], 2, 0.0);
        let mut model = Model::default();
        let end_ms = run(&mut store, &mut model, &batches);
        let blend: Vec<(u16, f64)> = blend
            .into_iter()
            .map(|(ty, w): (u16, f64)| (ty, if nonneg { w.abs() } else { w }))
            .collect();
        let at = Timestamp(end_ms + read_after_ms);
        let accept = |id: EntityId| !filter || !id.0.is_multiple_of(3);
        let mut calls: HashMap<EntityId, u32> = HashMap::new();
        let got = store.top_k(&blend, at, k, &mut |id| {
            *calls.entry(id).or_default() += 1;
            accept(id)
        });
        let want = brute_blend(&store, &blend, at, k, &accept);
        prop_assert_eq!(bits(&got), bits(&want));
        prop_assert!(calls.values().all(|&c| c == 1));
    }

    /// (e) Encode and decode give identical bits and identical top-k; the
    /// encoding of the decoded store is byte-identical. (f) Two stores fed
    /// the same sequence hold identical bits.
    #[test]
    fn round_trip_and_replay_are_bit_identical(
        floor in prop::sample::select(vec![0.0, 0.01]),
        batches in batches(2, 30, 1000, 10),
    ) {
        let mut a = SignalStore::new(&HALF_LIVES_MS, 2, floor);
        let mut b = SignalStore::new(&HALF_LIVES_MS, 2, floor);
        let end_ms = run(&mut a, &mut Model::default(), &batches);
        run(&mut b, &mut Model::default(), &batches);
        let mut bytes_a = Vec::new();
        a.encode(&mut bytes_a);
        let mut bytes_b = Vec::new();
        b.encode(&mut bytes_b);
        prop_assert_eq!(&bytes_a, &bytes_b);

        let mut r = Reader::new(&bytes_a);
        let c = SignalStore::decode(&mut r, &HALF_LIVES_MS, 2, floor).unwrap();
        prop_assert!(r.is_empty());
        let mut bytes_c = Vec::new();
        c.encode(&mut bytes_c);
        prop_assert_eq!(&bytes_a, &bytes_c);
        let at = Timestamp(end_ms);
        for ty in 0..2u16 {
            prop_assert_eq!(a.landmark_ms(ty), c.landmark_ms(ty));
            prop_assert_eq!(a.len(ty), c.len(ty));
            for id in 0..30 {
                let id = EntityId(id);
                prop_assert_eq!(a.score(ty, id, at).to_bits(), c.score(ty, id, at).to_bits());
                prop_assert_eq!(a.count(ty, id), c.count(ty, id));
                prop_assert_eq!(a.count(ty, id), b.count(ty, id));
            }
            let blend = [(ty, 1.0)];
            prop_assert_eq!(
                bits(&a.top_k(&blend, at, 10, &mut accept_all())),
                bits(&c.top_k(&blend, at, 10, &mut accept_all()))
            );
        }
        let blend = [(0, 1.0), (1, 0.5)];
        prop_assert_eq!(
            bits(&a.top_k(&blend, at, 10, &mut accept_all())),
            bits(&c.top_k(&blend, at, 10, &mut accept_all()))
        );
    }

    /// (e) Decoding random bytes, or a damaged valid encoding, never panics.
    #[test]
    fn decode_of_random_or_damaged_bytes_never_panics(
        random in prop::collection::vec(any::<u8>(), 0..200),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let _ = SignalStore::decode(&mut Reader::new(&random), &HALF_LIVES_MS, 2, 0.0);
        let mut valid = Vec::new();
        let mut store = SignalStore::new(&HALF_LIVES_MS, 2, 0.0);
        for i in 0..5 {
            store.add(i % 2, EntityId(u64::from(i)), f64::from(i) - 2.0, Timestamp(100));
        }
        store.encode(&mut valid);
        for (at, byte) in damage {
            let i = at.index(valid.len());
            valid[i] = byte;
        }
        if let Ok(s) = SignalStore::decode(&mut Reader::new(&valid), &HALF_LIVES_MS, 2, 0.0) {
            // Whatever decodes is usable.
            let _ = s.top_k(&[(0, 1.0), (1, 1.0)], Timestamp(0), 3, &mut accept_all());
        }
        let short = &valid[..cut.index(valid.len())];
        prop_assert!(SignalStore::decode(&mut Reader::new(short), &HALF_LIVES_MS, 2, 0.0).is_err());
    }
}

/// Point reads and the trending order of one type at one time.
fn check_reads(
    store: &SignalStore,
    model: &Model,
    ty: u16,
    h: u64,
    at: u64,
) -> Result<(), TestCaseError> {
    let ids = model.ids(ty);
    for id in 0..12u64 {
        let got = store.score(ty, EntityId(id), Timestamp(at));
        let (exact, err) = model.score(ty, id, h, at);
        prop_assert!(got.is_finite());
        prop_assert!(
            (got - exact).abs() <= err,
            "type {ty} id {id} at {at}: got {got}, exact {exact}, allowed {err}"
        );
        prop_assert_eq!(store.count(ty, EntityId(id)), model.count(ty, id));
        prop_assert_eq!(store.contains(ty, EntityId(id)), ids.contains(&id));
    }
    let blend = [(ty, 1.0)];
    let full = store.top_k(&blend, Timestamp(at), usize::MAX, &mut accept_all());
    let listed: BTreeSet<u64> = full.iter().map(|(id, _)| id.0).collect();
    prop_assert_eq!(&listed, &ids);
    for w in full.windows(2) {
        let ((a, sa), (b, sb)) = (w[0], w[1]);
        // Exactly sorted by computed score, ties by id.
        prop_assert!(sa > sb || (sa == sb && a < b));
        // And in the order of the exact scores, up to their error bounds.
        let (ea, da) = model.score(ty, a.0, h, at);
        let (eb, db) = model.score(ty, b.0, h, at);
        prop_assert!(ea + da + db >= eb, "{a}:{ea} listed before {b}:{eb}");
    }
    for (id, s) in &full {
        prop_assert_eq!(s.to_bits(), store.score(ty, *id, Timestamp(at)).to_bits());
    }
    // Every k is a prefix of the full order; negative weights reverse it.
    for k in [0, 1, 3, 7] {
        let top = store.top_k(&blend, Timestamp(at), k, &mut accept_all());
        prop_assert_eq!(bits(&top), bits(&full[..k.min(full.len())]));
        let neg = [(ty, -1.0)];
        let top = store.top_k(&neg, Timestamp(at), k, &mut accept_all());
        let want = brute_blend(store, &neg, Timestamp(at), k, &|_| true);
        prop_assert_eq!(bits(&top), bits(&want));
    }
    Ok(())
}

/// (b) Signals 10,000 half-lives apart stay finite and within the bound,
/// with the landmark advanced as a log would and without it.
#[test]
fn ten_thousand_half_lives_stay_finite_and_precise() {
    let h = 3_600_000u64;
    let end = 10_000 * h + 1234;
    for advance in [true, false] {
        let mut store = SignalStore::new(&[h], 64, 0.0);
        let mut model = Model::default();
        let mut add = |store: &mut SignalStore, id: u64, w: f64, t: u64| {
            store.add(0, EntityId(id), w, Timestamp(t));
            model.add(Sig { ty: 0, id, w, t });
        };
        add(&mut store, 1, 3.0, 0);
        add(&mut store, 2, 1.0, 7);
        if advance {
            let mut log = 0;
            while log < end {
                log += 17 * h;
                store.advance_landmarks(log.min(end));
            }
        }
        add(&mut store, 2, -2.5, end - 5 * h);
        add(&mut store, 3, 4.0, end);
        add(&mut store, 3, 1e-3, end - 1);
        for at in [end, end + 100 * h, end - 40 * h, end + 1, 10 * h, 0] {
            for id in 1..=3 {
                let got = store.score(0, EntityId(id), Timestamp(at));
                let (exact, err) = model.score(0, id, h, at);
                assert!(got.is_finite(), "{got}");
                // Reads thousands of half-lives before the landmark see sums
                // that underflowed at its moves; they only need be finite.
                if at >= store.landmark_ms(0) - 100 * h {
                    assert!(
                        (got - exact).abs() <= err,
                        "id {id} at {at}: {got} vs {exact}"
                    );
                }
            }
        }
        assert_eq!(store.count(0, EntityId(2)), 0);
        assert!(store.landmark_ms(0) > 9_000 * h);
        let top = store.top_k(&[(0, 1.0)], Timestamp(end), 3, &mut accept_all());
        let ids: Vec<u64> = top.iter().map(|(id, _)| id.0).collect();
        // Entity 1 decayed to 0 long ago; entity 2 is negative.
        assert_eq!(ids, vec![3, 1, 2]);
    }
}

/// A read long before a signal is enormous, but finite and signed.
#[test]
fn reads_far_before_the_landmark_saturate_instead_of_overflowing() {
    let mut store = SignalStore::new(&[1], 512, 0.0);
    store.advance_landmarks(1 << 40);
    store.add(0, EntityId(1), 1.0, Timestamp(1 << 40));
    store.add(0, EntityId(2), -1.0, Timestamp(1 << 40));
    store.add(0, EntityId(3), 0.0, Timestamp(1 << 40));
    assert_eq!(store.score(0, EntityId(1), Timestamp(0)), f64::MAX);
    assert_eq!(store.score(0, EntityId(2), Timestamp(0)), -f64::MAX);
    assert_eq!(store.score(0, EntityId(3), Timestamp(0)).to_bits(), 0);
    assert_eq!(store.score(0, EntityId(1), Timestamp(u64::MAX)), 0.0);
    let top = store.top_k(&[(0, 1.0)], Timestamp(0), 3, &mut accept_all());
    assert_eq!(
        bits(&top),
        vec![(1, f64::MAX.to_bits()), (3, 0), (2, (-f64::MAX).to_bits())]
    );
    // Huge weights saturate, and a later opposite signal brings them back.
    store.add(0, EntityId(4), f64::MAX, Timestamp(1 << 40));
    store.add(0, EntityId(4), f64::MAX, Timestamp(1 << 40));
    assert_eq!(store.score(0, EntityId(4), Timestamp(1 << 40)), f64::MAX);
    store.add(0, EntityId(4), -f64::MAX, Timestamp(1 << 40));
    assert_eq!(store.score(0, EntityId(4), Timestamp(1 << 40)), 0.0);
}

/// (d) With a floor, entries whose magnitude decayed below it at a landmark
/// move are dropped with their counts; the others stay.
#[test]
fn score_floor_drops_cold_entries_and_their_counts() {
    let mut store = SignalStore::new(&[1000], 1, 0.5);
    store.add(0, EntityId(1), 1.0, Timestamp(0));
    store.add(0, EntityId(2), 10.0, Timestamp(0));
    store.add(0, EntityId(2), 1.0, Timestamp(0));
    store.add(0, EntityId(3), -1.0, Timestamp(0));
    store.advance_landmarks(999);
    assert_eq!(store.landmark_ms(0), 0);
    store.advance_landmarks(1000);
    // |S| = 0.5 is not below the floor.
    assert_eq!(store.len(0), 3);
    store.advance_landmarks(2500);
    assert_eq!(store.landmark_ms(0), 2000);
    assert!(!store.contains(0, EntityId(1)));
    assert!(!store.contains(0, EntityId(3)));
    assert_eq!(store.count(0, EntityId(1)), 0);
    assert_eq!(store.count(0, EntityId(2)), 2);
    assert_eq!(store.len(0), 1);
    let top = store.top_k(&[(0, 1.0)], Timestamp(2000), 10, &mut accept_all());
    assert_eq!(bits(&top), vec![(2, 2.75f64.to_bits())]);
    // A new signal brings a dropped entity back from zero.
    store.add(0, EntityId(1), 1.0, Timestamp(2000));
    assert_eq!(store.count(0, EntityId(1)), 1);
    assert_eq!(store.score(0, EntityId(1), Timestamp(3000)), 0.5);
    // Without a floor nothing is dropped.
    let mut keep = SignalStore::new(&[1000], 1, 0.0);
    keep.add(0, EntityId(1), 1.0, Timestamp(0));
    keep.advance_landmarks(5_000_000);
    assert!(keep.contains(0, EntityId(1)));
    assert_eq!(keep.count(0, EntityId(1)), 1);
}

/// Landmark moves multiply by exact powers of two: the bits are those of
/// the same signals added after the move.
#[test]
fn landmark_moves_are_exact() {
    let mut moved = SignalStore::new(&[1000], 4, 0.0);
    moved.add(0, EntityId(1), 0.3, Timestamp(8500));
    moved.advance_landmarks(8999);
    assert_eq!(moved.landmark_ms(0), 8000);
    let mut direct = SignalStore::new(&[1000], 4, 0.0);
    direct.advance_landmarks(8999);
    direct.add(0, EntityId(1), 0.3, Timestamp(8500));
    let at = Timestamp(9100);
    assert_eq!(
        moved.score(0, EntityId(1), at).to_bits(),
        direct.score(0, EntityId(1), at).to_bits()
    );
}

#[test]
fn remove_entity_clears_every_type_and_the_index() {
    let mut store = SignalStore::new(&[1000, 2000], 64, 0.0);
    for ty in 0..2 {
        store.add(ty, EntityId(1), 1.0, Timestamp(0));
        store.add(ty, EntityId(2), 2.0, Timestamp(0));
    }
    assert!(store.approx_bytes() > 0);
    store.remove_entity(EntityId(2));
    store.remove_entity(EntityId(99));
    for ty in 0..2 {
        assert!(!store.contains(ty, EntityId(2)));
        assert_eq!(store.score(ty, EntityId(2), Timestamp(0)), 0.0);
        assert_eq!(store.len(ty), 1);
        assert_eq!(store.types[usize::from(ty)].table.len(), 1);
    }
    let top = store.top_k(&[(0, 1.0), (1, 1.0)], Timestamp(0), 5, &mut accept_all());
    assert_eq!(bits(&top), vec![(1, 2.0f64.to_bits())]);
    assert!(!store.is_empty());
    store.remove_entity(EntityId(1));
    assert!(store.is_empty());
}

#[test]
fn unknown_types_read_as_empty() {
    let store = SignalStore::new(&[1000], 64, 0.0);
    assert_eq!(store.score(5, EntityId(1), Timestamp(0)), 0.0);
    assert_eq!(store.count(5, EntityId(1)), 0);
    assert!(!store.contains(5, EntityId(1)));
    assert_eq!(store.len(5), 0);
    assert_eq!(store.landmark_ms(5), 0);
    assert!(
        store
            .top_k(&[(5, 1.0)], Timestamp(0), 5, &mut accept_all())
            .is_empty()
    );
}

/// Release builds ignore what validation should have refused.
#[cfg(not(debug_assertions))]
#[test]
fn invalid_adds_are_ignored_in_release() {
    let mut store = SignalStore::new(&[1000], 64, 0.0);
    store.add(3, EntityId(1), 1.0, Timestamp(0));
    store.add(0, EntityId(1), f64::NAN, Timestamp(0));
    store.add(0, EntityId(1), f64::INFINITY, Timestamp(0));
    assert!(store.is_empty());
}

#[test]
fn decode_refuses_a_configuration_mismatch() {
    let mut store = SignalStore::new(&HALF_LIVES_MS, 2, 0.0);
    store.add(0, EntityId(1), 1.0, Timestamp(0));
    let mut bytes = Vec::new();
    store.encode(&mut bytes);
    assert!(SignalStore::decode(&mut Reader::new(&bytes), &[1000], 2, 0.0).is_err());
    assert!(SignalStore::decode(&mut Reader::new(&bytes), &[1000, 1800], 2, 0.0).is_err());
    // A NaN sum is refused: the S bits of the only entry start at byte 33.
    let mut bad = bytes.clone();
    bad[33..41].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
    assert!(SignalStore::decode(&mut Reader::new(&bad), &HALF_LIVES_MS, 2, 0.0).is_err());
}

#[test]
fn a_large_store_decodes_its_types_in_parallel_to_the_same_bits_and_errors() {
    // Above PARALLEL_DECODE_ENTRIES, so each type's table fills on its own
    // thread.
    let mut store = SignalStore::new(&HALF_LIVES_MS, 2, 0.0);
    let per_type = PARALLEL_DECODE_ENTRIES as u64 / 2 + 1_000;
    for ty in 0..2u16 {
        for id in 0..per_type {
            store.add(
                ty,
                EntityId(id * 3 + u64::from(ty)),
                1.0 + id as f64,
                Timestamp(100),
            );
        }
    }
    let mut bytes = Vec::new();
    store.encode(&mut bytes);
    let mut r = Reader::new(&bytes);
    let decoded = SignalStore::decode(&mut r, &HALF_LIVES_MS, 2, 0.0).unwrap();
    assert!(r.is_empty());
    let mut again = Vec::new();
    decoded.encode(&mut again);
    assert_eq!(bytes, again);
    // A duplicate id in the second type is refused at the offset right
    // after the duplicate entry, as a one-thread decode would name it.
    let last = bytes.len() - ENTRY_BYTES;
    let id_before = bytes[last - ENTRY_BYTES..last - ENTRY_BYTES + 8].to_vec();
    bytes[last..last + 8].copy_from_slice(&id_before);
    let err = SignalStore::decode(&mut Reader::new(&bytes), &HALF_LIVES_MS, 2, 0.0).unwrap_err();
    assert_eq!(err.offset, bytes.len(), "{err:?}");
    assert!(err.reason.contains("appears twice"), "{err:?}");
}

proptest! {
    #[test]
    fn catch_up_test_equals_the_division(e in any::<u64>(), h in any::<u64>(), small in 0u64..10_000) {
        for (e, h) in [(e, h), (e, small), (small * 768, small), (e, 0)] {
            prop_assert_eq!(needs_catch_up(e, h), e / h.max(1) >= CATCH_UP_HALF_LIVES);
        }
    }
}
