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

/// The checkpoint's view of the store at 1M entities x 3 types: the time to
/// clone it (what the committer waits for), the cost of 1,000-signal batches
/// right after a clone (chunks copied on first write) against batches with
/// no clone alive, and point reads.
/// Run with `cargo test --release --lib state::signals::measure::clone -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn clone_and_write_after() {
    use std::time::Instant;
    let entities = 1_000_000u64;
    let mut store = SignalStore::new(&[3_600_000, 86_400_000, 21_600_000], 64, 0.0);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let next = |x: &mut u64| {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    // Skewed ids (a squared uniform draw), scrambled over the id space.
    let skewed = |x: &mut u64| {
        let u = (next(x) >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * entities as f64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % entities
    };
    for id in 0..entities {
        for t in 0..3 {
            store.add(t, EntityId(id), 1.0, Timestamp(1));
        }
    }
    for i in 0..entities {
        store.add((i % 3) as u16, EntityId(skewed(&mut x)), 1.0, Timestamp(2));
    }
    let batch = |store: &mut SignalStore, x: &mut u64| {
        let start = Instant::now();
        for i in 0..1_000u64 {
            store.add((i % 3) as u16, EntityId(skewed(x)), 1.0, Timestamp(3));
        }
        start.elapsed().as_secs_f64() * 1e6
    };
    let quiet: Vec<f64> = (0..20).map(|_| batch(&mut store, &mut x)).collect();
    let mut clones = Vec::new();
    let mut after = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let snapshot = store.clone();
        clones.push(start.elapsed().as_secs_f64() * 1e6);
        after.push(
            (0..20)
                .map(|_| batch(&mut store, &mut x))
                .collect::<Vec<f64>>(),
        );
        let start = Instant::now();
        drop(snapshot);
        clones.push(start.elapsed().as_secs_f64() * 1e6);
    }
    println!("clone, drop of 1M x 3 (us): {clones:.0?}");
    // Chunks copied by earlier writes lie anywhere in the heap: clones
    // after many snapshot-and-write rounds, the checkpoint's steady state.
    let mut scattered = Vec::new();
    for _ in 0..10 {
        let snapshot = store.clone();
        for _ in 0..200 {
            batch(&mut store, &mut x);
        }
        drop(snapshot);
        let start = Instant::now();
        drop(std::hint::black_box(store.clone()));
        scattered.push(start.elapsed().as_secs_f64() * 1e6);
    }
    println!("clone and drop after 200 batches of copy-on-write, 10 rounds (us): {scattered:.0?}");
    println!("1,000-signal batches, no clone alive (us): {quiet:.0?}");
    for a in &after {
        println!("1,000-signal batches right after a clone (us): {a:.0?}");
    }
    for (name, ids) in [
        (
            "uniform",
            (0..4_000_000u64)
                .map(|_| next(&mut x) % entities)
                .collect::<Vec<_>>(),
        ),
        (
            "skewed",
            (0..4_000_000u64)
                .map(|_| skewed(&mut x))
                .collect::<Vec<_>>(),
        ),
    ] {
        let start = Instant::now();
        let mut sum = 0.0;
        for (i, &id) in ids.iter().enumerate() {
            sum += store.score((i % 3) as u16, EntityId(id), Timestamp(4));
        }
        let rate = ids.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
        println!("point reads, {name}: {rate:.1} M/s (sum {sum:.0})");
    }
}
