//! A measurement of `State::apply_batch` alone (ignored in normal runs):
//! 6,000 batches of 1,000 signals over 1M entities x 3 types, uniform, into
//! a fresh state, the shape of W1's apply without the log; then the same
//! batches applied to a second state warmed to the same 3M entries, with a
//! third copy brought up by `mirror` (`state::mirror`), each timed alone.
//! Run with `cargo test --release --lib state::apply_measure -- --ignored --nocapture`.
use std::time::{Duration, Instant};

use super::*;
use crate::crdt::hlc::Hlc;
use crate::types::{EntityId, Epoch, SeqNo, ShardId, Timestamp};
use crate::wal::format::BatchMeta;
use crate::wal::record::Record;

#[test]
#[ignore = "a measurement"]
fn apply_measure() {
    let params = StateParams {
        half_lives_ms: vec![3_600_000, 86_400_000, 60_000],
        landmark_half_lives: 64,
        score_floor: 0.0,
        session_retention_ms: 7 * 24 * 3_600_000,
        dimension: 4,
        idempotency_ttl_ms: 24 * 3_600_000,
        vector_index: Default::default(),
    };
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let now = 1_790_000_000_000u64;
    let batches: Vec<Vec<Record>> = (0..6000)
        .map(|_| {
            (0..1000)
                .map(|_| {
                    let r = next();
                    Record::Signal {
                        signal_type: (r % 3) as u16,
                        entity: EntityId((r >> 8) % 1_000_000),
                        weight: 1.0,
                        at: Timestamp(now),
                    }
                })
                .collect()
        })
        .collect();
    let meta = |seq: u64, len: usize| BatchMeta {
        shard: ShardId(0),
        first_seqno: SeqNo(seq),
        epoch: Epoch(1),
        hlc: Hlc::new(now, 0),
        record_count: len as u32,
    };
    for round in 0..3 {
        let mut st = State::new(params.clone());
        let mut seq = 1u64;
        let t = Instant::now();
        let mut half = None;
        for (i, b) in batches.iter().enumerate() {
            let meta = meta(seq, b.len());
            st.apply_batch(&meta, b);
            seq += b.len() as u64;
            if i == 2999 {
                half = Some(t.elapsed());
            }
        }
        let all = t.elapsed();
        let h = half.unwrap();
        println!(
            "round {round}: first 3M {:.2} M/s, next 3M {:.2} M/s",
            3.0 / h.as_secs_f64(),
            3.0 / (all - h).as_secs_f64()
        );
        // Both copies warm (every entry present): logged apply vs mirror.
        let mut other = st.clone();
        let (mut t_apply, mut t_mirror) = (Duration::ZERO, Duration::ZERO);
        for b in &batches {
            let meta = meta(seq, b.len());
            seq += b.len() as u64;
            let change = mirror::Batches::one(meta, b.clone());
            let t = Instant::now();
            change.apply(&mut st);
            t_apply += t.elapsed();
            let t = Instant::now();
            change.mirror(&mut other, &st);
            t_mirror += t.elapsed();
        }
        println!(
            "round {round}: warm logged apply {:.2} M/s, mirror {:.2} M/s",
            6.0 / t_apply.as_secs_f64(),
            6.0 / t_mirror.as_secs_f64()
        );
    }
}
