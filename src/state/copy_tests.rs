//! A snapshot's copy in slices (`State::begin_copy`) against a plain clone
//! taken at the same moment, with whole batches applied between the slices
//! (slices of 8 slots under `cfg(test)`): signals moving entries between
//! buckets, growth, deletes and a landmark move.

use super::*;
use crate::types::{EntityId, EntityKind, Timestamp};
use crate::wal::record::Record;

fn params() -> StateParams {
    StateParams {
        half_lives_ms: vec![1_000, 60_000],
        landmark_half_lives: 4,
        score_floor: 1e-9,
        session_retention_ms: 3_600_000,
        dimension: 4,
        idempotency_ttl_ms: 3_600_000,
        vector_index: Default::default(),
    }
}

/// Batch `n`: 50 signals over a growing range of entities, every fifth
/// batch a delete, at a log time that moves 1 s per batch (so the 1 s
/// type's landmark moves every few batches).
fn batch(st: &mut State, n: u64, seq: &mut u64) {
    let ms = 1_000_000 + n * 1_000;
    let mut records: Vec<Record> = (0..50u64)
        .map(|i| Record::Signal {
            signal_type: (i % 2) as u16,
            entity: EntityId((n * 37 + i * 11) % (100 + n * 20)),
            weight: if i % 7 == 0 { -1.0 } else { 1.0 + i as f64 },
            at: Timestamp(ms),
        })
        .collect();
    if n % 5 == 4 {
        records.push(Record::Delete {
            kind: EntityKind::Item,
            id: EntityId(n * 3),
        });
    }
    let meta = test_meta(*seq, ms, &records);
    st.apply_batch(&meta, &records);
    *seq += records.len() as u64;
}

#[test]
fn a_copy_in_slices_equals_a_clone_taken_when_it_began() {
    let mut st = State::new(params());
    let mut seq = 1;
    for n in 0..40 {
        batch(&mut st, n, &mut seq);
    }
    for round in 0..6u64 {
        let clone = st.clone();
        let buffers = SignalStore::buffers(&st.signals.capacities());
        let partial = st.begin_copy(buffers);
        // Whole batches between steps, as the committer interleaves them.
        for n in 0..(10 + round * 15) {
            batch(&mut st, 40 + round * 100 + n, &mut seq);
            for _ in 0..round {
                st.copy_step();
            }
        }
        while st.copy_step() {}
        let copy = st.finish_copy(partial).expect("the copy is whole");
        assert_eq!(
            copy.encode_sections(),
            clone.encode_sections(),
            "round {round}"
        );
        assert_ne!(st.encode_sections(), clone.encode_sections());
    }
}

#[test]
fn a_copy_of_a_replaced_state_is_refused() {
    let mut st = State::new(params());
    let mut seq = 1;
    for n in 0..10 {
        batch(&mut st, n, &mut seq);
    }
    let partial = st.begin_copy(SignalStore::buffers(&st.signals.capacities()));
    let replaced = st.clone();
    assert!(replaced.finish_copy(partial).is_none());
}
