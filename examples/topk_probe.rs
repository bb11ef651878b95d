//! W5's reads alone, without the background ingest: top-100 of one type
//! and the blend of three over the full fixture (1M x 3 plus 1M Zipf
//! signals), as latency percentiles. `cargo run --release --example
//! topk_probe [seconds] [top|blend]`.
#[path = "../benches/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};
use tidal::{Durability, Retrieve, TidalDb, Timestamp};

fn percentiles(label: &str, secs: f64, mut f: impl FnMut()) {
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        f();
        lat.push(t.elapsed());
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{label}: {} queries, p50 {:.2} us, p90 {:.2} us, p99 {:.2} us",
        lat.len(),
        p(0.5),
        p(0.9),
        p(0.99)
    );
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(3.0, |s| s.parse().unwrap());
    let only = std::env::args().nth(2).unwrap_or_default();
    let dir = common::tempdir();
    let db = TidalDb::open(common::config(
        dir.path(),
        Durability::Periodic(Duration::from_millis(100)),
        8,
    ))
    .unwrap();
    let at = Timestamp::now();
    common::load_full(&db, at, 1_000_000);
    let mut n = 0;
    if only != "blend" {
        percentiles("top-100 view", secs, || {
            n += db
                .retrieve(&Retrieve::top(100, "view", Timestamp::now()))
                .unwrap()
                .len();
        });
    }
    if only == "top" {
        return;
    }
    percentiles("blend of 3", secs, || {
        let q = Retrieve::blend(
            100,
            &[("view", 1.0), ("like", 0.5), ("share", 2.0)],
            Timestamp::now(),
        );
        n += db.retrieve(&q).unwrap().len();
    });
    assert!(n > 0);
}
