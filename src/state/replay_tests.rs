//! Recovery's replay (`state::replay`: runs of signal-only batches applied
//! one thread per type, on another thread than the reading one) against
//! batch-by-batch `apply_batch`: equal bit for bit (tables, every snapshot
//! section, applied position, last HLC) after random logs that mix
//! signal-only batches (landmark rescales, out-of-order signal times, types
//! the configuration lacks) with batches that delete entities, open and
//! close sessions and log idempotency keys, which expire by log time
//! during the signal runs.

use proptest::prelude::*;

use super::replay::{CHUNK_BYTES, approx_bytes, replay};
use super::*;
use crate::types::{EntityId, EntityKind, SessionId, Timestamp, UserId};
use crate::wal::format::BatchMeta;
use crate::wal::record::Record;

fn params() -> StateParams {
    StateParams {
        half_lives_ms: vec![1_000, 60_000, 5_000],
        landmark_half_lives: 4,
        score_floor: 1e-6,
        session_retention_ms: 20_000,
        dimension: 4,
        idempotency_ttl_ms: 30_000,
        vector_index: Default::default(),
    }
}

/// One batch's records, other than signals.
#[derive(Clone, Debug)]
enum Other {
    Delete(u64),
    Open(u64),
    Close(u64),
    Key(u8),
}

/// One batch: signals `(type, entity, weight, ms before the batch)`,
/// seconds of log time before it, and at most one other record.
#[derive(Clone, Debug)]
struct Step {
    signals: Vec<(u16, u64, f64, u64)>,
    advance_s: u64,
    other: Option<Other>,
}

fn step() -> impl Strategy<Value = Step> {
    let signal = (
        // Type 3 is unknown to the configuration: ignored by both.
        prop_oneof![8 => 0u16..3, 1 => Just(3u16)],
        0u64..300,
        prop_oneof![Just(1.0), Just(-1.0), 0.5f64..50.0],
        prop_oneof![3 => Just(0u64), 1 => 0u64..20_000],
    );
    let other = prop_oneof![
        (0u64..300).prop_map(Other::Delete),
        (0u64..4).prop_map(Other::Open),
        (0u64..4).prop_map(Other::Close),
        any::<u8>().prop_map(Other::Key),
    ];
    (
        prop::collection::vec(signal, 1..60),
        prop_oneof![4 => Just(0u64), 2 => 1u64..6, 1 => 20u64..60],
        prop::option::weighted(0.2, other),
    )
        .prop_map(|(signals, advance_s, other)| Step {
            signals,
            advance_s,
            other,
        })
}

/// The batches of `steps`, as the log holds them.
fn log(steps: &[Step]) -> Vec<(BatchMeta, Vec<Record>)> {
    let (mut ms, mut seq) = (1_000_000u64, 1u64);
    let mut out = Vec::new();
    for s in steps {
        ms += s.advance_s * 1_000;
        let mut records: Vec<Record> = s
            .signals
            .iter()
            .map(|&(signal_type, e, weight, before)| Record::Signal {
                signal_type,
                entity: EntityId(e),
                weight,
                at: Timestamp(ms - before),
            })
            .collect();
        records.extend(s.other.as_ref().map(|o| match *o {
            Other::Delete(id) => Record::Delete {
                kind: EntityKind::Item,
                id: EntityId(id),
            },
            Other::Open(id) => Record::OpenSession {
                session: SessionId(id),
                user: UserId(id),
                at: Timestamp(ms),
            },
            Other::Close(id) => Record::CloseSession {
                session: SessionId(id),
                at: Timestamp(ms),
            },
            Other::Key(k) => Record::IdempotencyKey {
                key: vec![k],
                digest: [k; 16],
                span: 0,
                merged: false,
            },
        }));
        let meta = test_meta(seq, ms, &records);
        seq += records.len() as u64;
        out.push((meta, records));
    }
    out
}

/// Replays `log` both ways and compares.
fn check(log: &[(BatchMeta, Vec<Record>)]) {
    let mut one = State::new(params());
    // A clone, not a second `new`: tables hash with a seed of their own.
    let mut par = one.clone();
    for (meta, records) in log {
        one.apply_batch(meta, records);
    }
    let passed = replay(&mut par, |apply| {
        for (meta, records) in log {
            apply(meta, records);
        }
        log.len()
    });
    assert_eq!(passed, log.len());
    assert!(one.signals.same_layout(&par.signals), "tables differ");
    assert_eq!(one.applied, par.applied);
    assert_eq!(one.last_hlc, par.last_hlc);
    assert_eq!(one.encode_sections(), par.encode_sections());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_parallel_replay_equals_batch_by_batch_applies(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        check(&log(&steps));
    }
}

/// Past one chunk (`CHUNK_BYTES`): runs that span chunks, many landmark
/// moves, and a table that grows many times.
#[test]
fn a_long_log_replays_to_the_same_state() {
    let steps: Vec<Step> = (0..1_500u64)
        .map(|i| Step {
            signals: (0..100u64)
                .map(|j| {
                    (
                        (j % 3) as u16,
                        (i * 7_919 + j * 104_729) % 20_000,
                        1.0 + (j % 5) as f64,
                        j % 3 * 500,
                    )
                })
                .collect(),
            advance_s: i % 7,
            other: (i % 97 == 0).then_some(Other::Delete(i % 20_000)),
        })
        .collect();
    let log = log(&steps);
    let bytes: usize = log
        .iter()
        .flat_map(|(_, r)| r.iter().map(approx_bytes))
        .sum();
    assert!(bytes > 2 * CHUNK_BYTES, "{bytes} bytes");
    check(&log);
}
