//! Measures what idempotency keys cost on the write path: one-signal writes
//! without a key, with a fresh key each, and retries of held keys, under
//! `Durability::Periodic` (so the numbers are CPU, not fsync), and the
//! state bytes per key held.
//!
//! `cargo run --release --example idempotency_probe -- [WRITES]`

use std::time::{Duration, Instant};

use tidal::{Config, Durability, EntityId, TidalDb, Timestamp, WriteBatch};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("WRITES is a number"));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TidalDb::open(
        Config::builder(dir.path())
            .signal_type("like", Duration::from_secs(3_600))
            .durability(Durability::Periodic(Duration::from_millis(100)))
            .build()
            .expect("config"),
    )
    .expect("open");
    let at = Timestamp::now();
    let one = |i: u64| WriteBatch::new().signal("like", EntityId(i % 10_000), 1.0, at);
    let run = |label: &str, f: &dyn Fn(u64)| {
        let t = Instant::now();
        for i in 0..n {
            f(i);
        }
        let el = t.elapsed();
        println!(
            "{label:<28} {n} writes in {el:?}: {:.2} us/write",
            el.as_secs_f64() * 1e6 / n as f64
        );
    };
    run("no key", &|i| {
        db.write(one(i)).expect("write");
    });
    let before = db.status().state_bytes;
    let rss_before = rss_bytes();
    run("fresh 32-byte key", &|i| {
        db.write(one(i).idempotency_key(format!("{i:032}")))
            .expect("write");
    });
    let st = db.status();
    let keys = st.idempotency_keys.max(1) as u64;
    println!(
        "keys held {}, estimated state bytes per key {} (one copy), measured RSS growth per key {} (both copies of the read view)",
        st.idempotency_keys,
        (st.state_bytes - before) as u64 / keys,
        rss_bytes().saturating_sub(rss_before) / keys
    );
    run("retry of a held key", &|i| {
        db.write(one(i).idempotency_key(format!("{i:032}")))
            .expect("retry");
    });
    db.close().expect("close");
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
