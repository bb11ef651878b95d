//! The score table against a `BTreeMap` model: random upserts, removals,
//! rescales and reads, with the order, links and bitmap checked after each.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Checks every invariant against the model: lookups, length, both orders,
/// and that each live slot sits on the list of its bucket exactly once.
fn check(t: &ScoreTable, model: &BTreeMap<u64, (f64, i64)>) {
    assert_eq!(t.len(), model.len());
    for (&id, &(s, c)) in model {
        let got = t.get(EntityId(id)).map(|(s, c)| (s.to_bits(), c));
        assert_eq!(got, Some((s.to_bits(), c)), "entity {id}");
    }
    let mut want: Vec<(f64, EntityId)> = model
        .iter()
        .map(|(&id, &(s, _))| (s, EntityId(id)))
        .collect();
    want.sort_by(best_first);
    let bits = |v: &[(f64, EntityId)]| -> Vec<(u64, u64)> {
        v.iter().map(|(s, id)| (s.to_bits(), id.0)).collect()
    };
    let got: Vec<_> = t.iter().collect();
    assert_eq!(bits(&got), bits(&want));
    let mut rev: Vec<_> = t.iter_rev().collect();
    rev.reverse();
    assert_eq!(bits(&rev), bits(&want));
    let mut linked = 0;
    for b in 0..BUCKETS {
        let head = t.heads.get(b).copied().unwrap_or(NIL);
        assert_eq!(
            head != NIL,
            t.bits.l0[b >> 6] >> (b & 63) & 1 == 1,
            "bucket {b}"
        );
        let mut prev = NIL;
        let mut i = head;
        while i != NIL {
            let slot = &t.slots[i as usize];
            assert_eq!(bucket_of(slot.s), b);
            assert_eq!(slot.prev, prev);
            linked += 1;
            prev = i;
            i = slot.next;
        }
    }
    assert_eq!(linked, model.len());
}

#[derive(Clone, Debug)]
enum Op {
    Add(u64, f64),
    Remove(u64),
    Rescale(i64, f64),
}

/// Applies `op` to the table and the model; a removal's results agree.
fn apply(t: &mut ScoreTable, model: &mut BTreeMap<u64, (f64, i64)>, op: Op) {
    match op {
        Op::Add(id, w) => {
            t.upsert(EntityId(id), (w + 0.0, 1), |s, c| {
                (crate::state::decay::saturate(s + w), c + 1)
            });
            let e = model.entry(id).or_insert((0.0, 0));
            e.0 = crate::state::decay::saturate(e.0 + w);
            e.1 += 1;
        }
        Op::Remove(id) => {
            let got = t.remove(EntityId(id)).map(|(s, c)| (s.to_bits(), c));
            let want = model.remove(&id).map(|(s, c)| (s.to_bits(), c));
            assert_eq!(got, want);
        }
        Op::Rescale(exp, floor) => {
            t.rescale(exp, floor);
            for v in model.values_mut() {
                v.0 = scale_pow2(v.0, exp);
            }
            if floor > 0.0 {
                model.retain(|_, v| v.0.abs() >= floor);
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![
        (-3i32..4).prop_map(f64::from),
        -1e6f64..1e6,
        Just(f64::MAX),
        Just(-f64::MAX),
        Just(f64::from_bits(1)),
    ];
    prop_oneof![
        8 => (0u64..300, value).prop_map(|(id, w)| Op::Add(id, w)),
        3 => (0u64..300).prop_map(Op::Remove),
        1 => (-40i64..3, prop_oneof![Just(0.0), 0.0f64..2.0]).prop_map(|(e, f)| Op::Rescale(e, f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_a_btreemap(ops in prop::collection::vec(op(), 1..600)) {
        let mut t = ScoreTable::default();
        let mut model: BTreeMap<u64, (f64, i64)> = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            apply(&mut t, &mut model, op);
            if n % 16 == 0 {
                check(&t, &model);
            }
        }
        check(&t, &model);
        let mut reserved = t.clone();
        reserved.reserve(1000);
        check(&reserved, &model);
    }
}

#[test]
fn bitmap_finds_neighbours_like_a_scan() {
    let mut bits = Bitmap::new();
    let members = [0usize, 1, 63, 64, 4095, 4096, 4097, 30_000, 65_534, 65_535];
    for &b in &members {
        bits.set(b);
    }
    bits.set(77);
    bits.clear(77);
    for b in (0..BUCKETS).step_by(7).chain(members.iter().copied()) {
        let below = members.iter().copied().filter(|&m| m <= b).max();
        let above = members.iter().copied().filter(|&m| m >= b).min();
        assert_eq!(bits.highest_at_or_below(b), below, "below {b}");
        assert_eq!(bits.lowest_at_or_above(b), above, "above {b}");
    }
    for &b in &members {
        bits.clear(b);
    }
    assert_eq!(bits.l2, 0);
    assert_eq!(bits.highest_at_or_below(BUCKETS - 1), None);
    assert_eq!(bits.lowest_at_or_above(0), None);
}

#[test]
fn one_large_bucket_reads_in_order_and_grows() {
    // Equal sums share one bucket: the read must sort it in chunks.
    let mut t = ScoreTable::default();
    let mut model = BTreeMap::new();
    for id in (0..5_000u64).rev() {
        let s = 1.0 + (id % 3) as f64 * f64::EPSILON;
        t.upsert(EntityId(id), (s, 0), |_, _| unreachable!());
        model.insert(id, (s, 0));
    }
    check(&t, &model);
    assert_eq!(
        t.iter().take(3).map(|(_, id)| id.0).collect::<Vec<_>>(),
        [2, 5, 8]
    );
    assert!(!t.insert_unique(EntityId(7), 0.0, 0));
    assert!(t.insert_unique(EntityId(9_999), 0.0, 0));
    assert!(t.approx_bytes() > 5_000 * 32);
}

/// A whole copy in slices: begin, every step, finish.
fn copy_of(t: &ScoreTable, buf: TableBuffer) -> ScoreTable {
    let (mut copy, pending) = t.begin_copy(buf);
    while t.copy_step() {}
    if pending {
        assert!(t.finish_copy(&mut copy));
    }
    copy
}

#[test]
fn a_copy_into_a_prepared_buffer_is_the_table_and_stays_apart() {
    let mut t = ScoreTable::default();
    let mut model = BTreeMap::new();
    for id in 0..3_000u64 {
        t.upsert(EntityId(id), (id as f64, 1), |_, _| unreachable!());
        model.insert(id, (id as f64, 1));
    }
    let copy = copy_of(&t, TableBuffer::new(t.capacity()));
    check(&copy, &model);
    // Writes after the copy (a move to another bucket, a removal, a
    // rescale) never show in it, and the table sees them.
    t.upsert(EntityId(5), (0.0, 0), |s, c| (s * 1e6, c + 1));
    t.remove(EntityId(6));
    t.rescale(-1, 0.0);
    check(&copy, &model);
    assert_eq!(t.get(EntityId(5)), Some((2.5e6, 2)));
    assert_eq!(t.get(EntityId(6)), None);
    // A buffer of the wrong size (the table grew since) gives a plain clone.
    let mut grown = model.clone();
    grown.remove(&6);
    for v in grown.values_mut() {
        v.0 *= 0.5;
    }
    grown.insert(5, (2.5e6, 2));
    check(&copy_of(&t, TableBuffer::new(16)), &grown);
    check(&copy_of(&t, TableBuffer::default()), &grown);
    let empty = ScoreTable::default();
    check(
        &copy_of(&empty, TableBuffer::new(empty.capacity())),
        &BTreeMap::new(),
    );
}

#[test]
fn a_copy_is_lost_with_its_table_and_a_second_one_waits_for_the_first() {
    let mut t = ScoreTable::default();
    for id in 0..100u64 {
        t.upsert(EntityId(id), (1.0, 1), |_, _| unreachable!());
    }
    let (mut first, pending) = t.begin_copy(TableBuffer::new(t.capacity()));
    assert!(pending);
    // A second copy while one is under way is a plain clone.
    let (second, pending) = t.begin_copy(TableBuffer::new(t.capacity()));
    assert!(!pending);
    assert_eq!(second.len(), 100);
    // The state replaced meanwhile: the new table holds no copy.
    let replaced = t.clone();
    assert!(!replaced.copy_step());
    assert!(!replaced.finish_copy(&mut first));
    while t.copy_step() {}
    assert!(t.finish_copy(&mut first));
    assert_eq!(first.len(), 100);
    // Finished: nothing is left to finish.
    assert!(!t.finish_copy(&mut first));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The copy is the table as it was when the copy began, whatever the
    /// writes between its slices (slices of 8 slots in tests).
    #[test]
    fn a_copy_in_slices_is_the_table_when_it_began(
        before in prop::collection::vec(op(), 1..400),
        during in prop::collection::vec((op(), 0usize..3), 0..400),
    ) {
        let mut t = ScoreTable::default();
        let mut model: BTreeMap<u64, (f64, i64)> = BTreeMap::new();
        for op in before {
            apply(&mut t, &mut model, op);
        }
        let at_begin = model.clone();
        let (mut copy, pending) = t.begin_copy(TableBuffer::new(t.capacity()));
        let mut left = pending;
        for (op, steps) in during {
            apply(&mut t, &mut model, op);
            for _ in 0..steps {
                left = left && t.copy_step();
            }
        }
        while left && t.copy_step() {}
        if pending {
            prop_assert!(t.finish_copy(&mut copy));
        }
        check(&copy, &at_begin);
        check(&t, &model);
    }
}
