//! A measurement of the signal store (ignored in normal runs): add rate,
//! top-k latency, landmark moves and bytes per entry.
//! Run with `cargo test --release --lib state::signals::measure -- --ignored --nocapture`.

use super::*;

#[test]
#[ignore = "a measurement, not a check"]
fn measure() {
    use std::time::Instant;
    let entities = 100_000u64;
    let signals = 1_000_000u64;
    for (name, skewed) in [("uniform", false), ("skewed", true)] {
        let mut store = SignalStore::new(&[3_600_000, 86_400_000, 600_000], 64, 0.0);
        // A cheap deterministic generator; "skewed" squares a uniform draw so
        // low ids get most signals, roughly like a Zipf head.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let start = Instant::now();
        for i in 0..signals {
            let r = next();
            let u = (r >> 11) as f64 / (1u64 << 53) as f64;
            let id = if skewed {
                (u * u * entities as f64) as u64
            } else {
                r % entities
            };
            let w = if r & 7 == 0 { -1.0 } else { 1.0 };
            store.add((i % 3) as u16, EntityId(id), w, Timestamp(i));
        }
        let add_s = start.elapsed().as_secs_f64();
        let at = Timestamp(signals);
        let reps = 200;
        let start = Instant::now();
        for _ in 0..reps {
            let top = store.top_k(&[(0, 1.0)], at, 100, &mut |_| true);
            assert_eq!(top.len(), 100);
        }
        let one_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(reps);
        let start = Instant::now();
        for _ in 0..reps {
            let top = store.top_k(&[(0, 1.0), (1, 0.5), (2, 2.0)], at, 100, &mut |_| true);
            assert_eq!(top.len(), 100);
        }
        let blend_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(reps);
        let start = Instant::now();
        let top = store.top_k(&[(0, 1.0), (1, -0.5)], at, 100, &mut |_| true);
        let scan_us = start.elapsed().as_secs_f64() * 1e6;
        assert_eq!(top.len(), 100);
        let start = Instant::now();
        store.advance_landmarks(64 * 3_600_000);
        let move_ms = start.elapsed().as_secs_f64() * 1e3;
        println!(
            "{name}: add {:.2} M signals/s, top-100 one type {one_us:.1} us, \
             blend of 3 (threshold) {blend_us:.1} us, blend with a negative weight (scan) \
             {scan_us:.0} us, landmark move of {} entries in 3 types {move_ms:.1} ms, ~{} bytes/entry",
            signals as f64 / add_s / 1e6,
            store.len(0) + store.len(1) + store.len(2),
            store.approx_bytes() / (store.len(0) + store.len(1) + store.len(2)).max(1),
        );
    }
}
