#[path = "../benches/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};
use tidal::{Durability, TidalDb, Timestamp};
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode.starts_with("single") {
        return single(&mode);
    }
    if mode == "replay" {
        return replay();
    }
    if mode == "group" {
        return group();
    }
    let n: usize = std::env::args().nth(2).map_or(500, |s| s.parse().unwrap());
    let durability = if mode == "periodic" {
        Durability::Periodic(Duration::from_millis(100))
    } else {
        Durability::Sync
    };
    let dir = common::tempdir();
    let t = Instant::now();
    let db = TidalDb::open(common::config(dir.path(), durability, 8)).unwrap();
    println!(
        "open (creates + zero-fills first segment): {:?}",
        t.elapsed()
    );
    // A third argument `zipf` draws W1's entities (Zipf) instead.
    let dist = match std::env::args().nth(3).as_deref() {
        Some("zipf") => common::Dist::Zipf,
        _ => common::Dist::Uniform,
    };
    let pool = common::ids(dist, 1 << 20, 11);
    let at = Timestamp::now();
    let batches: Vec<_> = (0..n)
        .map(|i| {
            let s = (i * 1000) % (pool.len() - 1000);
            common::batch(&pool[s..s + 1000], at)
        })
        .collect();
    let mut lat = Vec::new();
    let t = Instant::now();
    for b in batches {
        let s = Instant::now();
        db.write(b).unwrap();
        lat.push(s.elapsed());
    }
    let el = t.elapsed();
    let (worst_i, worst) = lat
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| **d)
        .map(|(i, d)| (i, *d))
        .unwrap();
    let mut slow: Vec<(usize, Duration)> = lat
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, d)| *d > Duration::from_millis(8))
        .collect();
    slow.truncate(40);
    println!("worst write: batch {worst_i} took {worst:?}; writes over 50 ms: {slow:?}");
    lat.sort();
    let st = db.status();
    println!(
        "{mode}: {n} batches in {:?}: {:.0} signals/s; p50 {:?} p99 {:?} max {:?}; fsync mean {} us last {} us, fsyncs/batches {}",
        el,
        (n * 1000) as f64 / el.as_secs_f64(),
        lat[n / 2],
        lat[n * 99 / 100],
        lat[n - 1],
        st.fsync_mean_us,
        st.fsync_last_us,
        st.batches
    );
}

/// W3's shape: single-signal writes under `Periodic(100ms)`, 1 thread
/// (`single`), or with 256 KiB of write-behind (`single-wb`).
fn single(mode: &str) {
    let n: usize = std::env::args()
        .nth(2)
        .map_or(1_000_000, |s| s.parse().unwrap());
    let dir = common::tempdir();
    let mut config = common::config(
        dir.path(),
        Durability::Periodic(Duration::from_millis(100)),
        8,
    );
    if mode == "single-wb" {
        config.write_behind_bytes = 256 << 10;
    }
    let db = TidalDb::open(config).unwrap();
    let pool = common::ids(common::Dist::Uniform, 1 << 20, 11);
    let at = Timestamp::now();
    let t = Instant::now();
    for (i, id) in pool.iter().cycle().take(n).enumerate() {
        db.signal(
            common::TYPES[i % common::TYPES.len()],
            tidal::EntityId(*id),
            1.0,
            at,
        )
        .unwrap();
    }
    let el = t.elapsed();
    println!(
        "{mode}: {n} writes in {el:?}: {:.0} writes/s",
        n as f64 / el.as_secs_f64()
    );
}

/// W2's group commit in its steady state: `group [threads] [writes]`
/// threads (32) each make that many (1,000) single-signal `Sync` writes.
fn group() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).map_or(d, |s| s.parse().unwrap());
    let (threads, per) = (arg(2, 32), arg(3, 1000));
    let dir = common::tempdir();
    let db = TidalDb::open(common::config(dir.path(), Durability::Sync, 8)).unwrap();
    let at = Timestamp::now();
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let db = &db;
            s.spawn(move || {
                for i in 0..per {
                    let id = tidal::EntityId((th * per + i) as u64);
                    db.signal(common::TYPES[i % common::TYPES.len()], id, 1.0, at)
                        .unwrap();
                }
            });
        }
    });
    let el = t.elapsed();
    let st = db.status();
    println!(
        "group: {threads} threads x {per} writes: {:.0} writes/s, {:.1} writes per batch, fsync mean {} us",
        (threads * per) as f64 / el.as_secs_f64(),
        (threads * per) as f64 / st.batches as f64,
        st.fsync_mean_us
    );
}

/// W7's replay alone: 4,000 batches of 1,000 uniform signals written under
/// `Periodic`, closed without a checkpoint, then reopened (`replay [dir]`;
/// with a directory, a second run only reopens what the first wrote).
fn replay() {
    let given = std::env::args().nth(2);
    let tmp = common::tempdir();
    let dir = given.as_deref().map_or(tmp.path(), std::path::Path::new);
    let config = || {
        let mut c = common::config(dir, Durability::Periodic(Duration::from_millis(100)), 8);
        c.snapshot_every_bytes = u64::MAX;
        c
    };
    if !dir.join("META").exists() {
        let db = TidalDb::open(config()).unwrap();
        let pool = common::ids(common::Dist::Uniform, 1 << 22, 11);
        let at = Timestamp::now();
        for chunk in pool.chunks(1000) {
            db.write(common::batch(chunk, at)).unwrap();
        }
        db.close().unwrap();
    }
    let t = Instant::now();
    let db = TidalDb::open(config()).unwrap();
    let el = t.elapsed();
    let r = db.status().recovery;
    println!(
        "replay: {} records in {el:?}: {:.0} records/s",
        r.records_replayed,
        r.records_replayed as f64 / el.as_secs_f64()
    );
}
