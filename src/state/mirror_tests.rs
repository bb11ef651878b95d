//! The second read-view copy brought up by `mirror` against the copy the
//! batches were applied to: equal bit for bit (slots, bucket heads, bitmap)
//! and section for section, after random signal batches (new entries,
//! bucket moves, growth, landmark rescales that drop entries, batches that
//! write most of a table), mixed batches that apply twice, and with a
//! snapshot's copy in slices under way in the mirrored copy.

use proptest::prelude::*;

use super::mirror::Batches;
use super::*;
use crate::types::{EntityId, EntityKind, Timestamp};
use crate::wal::record::Record;

fn params() -> StateParams {
    StateParams {
        half_lives_ms: vec![1_000, 60_000, 5_000],
        landmark_half_lives: 4,
        score_floor: 1e-6,
        session_retention_ms: 3_600_000,
        dimension: 4,
        idempotency_ttl_ms: 3_600_000,
        vector_index: Default::default(),
    }
}

/// One batch: signals `(type, entity, weight)`, seconds of log time
/// before it, and whether it also deletes an entity (a mixed batch).
#[derive(Clone, Debug)]
struct Step {
    signals: Vec<(u16, u64, f64)>,
    advance_s: u64,
    delete: Option<u64>,
}

fn step() -> impl Strategy<Value = Step> {
    let signal = (
        0u16..3,
        0u64..400,
        prop_oneof![Just(1.0), Just(-1.0), 0.5f64..50.0],
    );
    (
        prop::collection::vec(signal, 0..120),
        prop_oneof![4 => Just(0u64), 2 => 1u64..6, 1 => 20u64..60],
        prop::option::weighted(0.15, 0u64..400),
    )
        .prop_map(|(signals, advance_s, delete)| Step {
            signals,
            advance_s,
            delete,
        })
}

/// The change of `step` at log time `ms`, numbered from `seq`.
fn change(step: &Step, ms: u64, seq: &mut u64) -> Batches {
    let mut records: Vec<Record> = step
        .signals
        .iter()
        .map(|&(signal_type, e, weight)| Record::Signal {
            signal_type,
            entity: EntityId(e),
            weight,
            at: Timestamp(ms),
        })
        .collect();
    if let Some(id) = step.delete {
        records.push(Record::Delete {
            kind: EntityKind::Item,
            id: EntityId(id),
        });
    }
    let meta = test_meta(*seq, ms, &records);
    *seq += records.len().max(1) as u64;
    Batches::one(meta, records)
}

fn assert_same(a: &State, b: &State, what: &str) {
    assert!(a.signals.same_layout(&b.signals), "{what}: tables differ");
    assert_eq!(a.applied, b.applied, "{what}");
    assert_eq!(a.last_hlc, b.last_hlc, "{what}");
    assert_eq!(a.encode_sections(), b.encode_sections(), "{what}");
}

/// Runs `steps` the way the view does: apply to one copy, mirror the
/// other from it, and swap roles each batch.
fn run(steps: &[Step]) {
    let mut copies = [State::new(params()), State::new(params())];
    copies[1] = copies[0].clone();
    let (mut ms, mut seq) = (1_000_000u64, 1u64);
    for (n, s) in steps.iter().enumerate() {
        ms += s.advance_s * 1_000;
        let c = change(s, ms, &mut seq);
        let x = n % 2;
        let (first, second) = copies.split_at_mut(1);
        let (applied, mirrored) = if x == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        c.apply(applied);
        c.mirror(mirrored, applied);
        assert_same(&copies[0], &copies[1], &format!("batch {n}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_mirrored_copy_equals_the_applied_one(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}

#[test]
fn a_batch_writing_most_of_a_table_and_a_rescale_mirror_whole() {
    // Few entries, then a batch touching all of them (the log gives up and
    // copies the table), then a jump past a landmark period (a rescale).
    let few = Step {
        signals: (0..40).map(|e| (0, e, 1.0)).collect(),
        advance_s: 0,
        delete: None,
    };
    let all = Step {
        signals: (0..40).map(|e| (0, e, 100.0)).collect(),
        advance_s: 1,
        delete: None,
    };
    let jump = Step {
        signals: vec![(0, 3, 1.0)],
        advance_s: 30,
        delete: None,
    };
    run(&[few.clone(), all.clone(), jump, few, all]);
}

#[test]
fn a_mirror_keeps_a_snapshot_copy_under_way_in_that_copy_whole() {
    let mut seq = 1;
    let mut ms = 1_000_000;
    let mut copies = [State::new(params()), State::new(params())];
    let warm = Step {
        signals: (0..300).map(|e| ((e % 3) as u16, e, 1.0)).collect(),
        advance_s: 0,
        delete: None,
    };
    let c = change(&warm, ms, &mut seq);
    c.apply(&mut copies[0]);
    copies[1] = copies[0].clone();
    let before = copies[1].clone();
    let partial = copies[1].begin_copy(SignalStore::buffers(&copies[1].signals.capacities()));
    for n in 0..20u64 {
        ms += 1_000;
        let s = Step {
            signals: (0..50)
                .map(|i| ((i % 3) as u16, (n * 31 + i * 7) % 500, 2.0))
                .collect(),
            advance_s: 0,
            delete: None,
        };
        let c = change(&s, ms, &mut seq);
        let (a, b) = copies.split_at_mut(1);
        c.apply(&mut a[0]);
        c.mirror(&mut b[0], &a[0]);
        copies[1].copy_step();
    }
    while copies[1].copy_step() {}
    let copy = copies[1].finish_copy(partial).expect("the copy is whole");
    assert_eq!(copy.encode_sections(), before.encode_sections());
    assert_same(&copies[0], &copies[1], "after the copy");
}
