//! The longest writer stall while `checkpoint()` snapshots 1M entities x 3
//! types: a writer thread writes 1,000-signal batches under
//! `Durability::Sync` on the real disk and times every write; the main
//! thread runs two checkpoints. Prints the per-write latency (p50, p99,
//! max) before and during each checkpoint. Not a criterion bench: the
//! figure is a tail, not a mean.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Dist;
use tidal::{Durability, TidalDb, Timestamp};

/// One write: when it started and ended, relative to the run's start.
#[derive(Clone, Copy, Debug)]
struct Write {
    start: Duration,
    end: Duration,
}

impl Write {
    fn latency(&self) -> Duration {
        self.end - self.start
    }
}

fn stats(label: &str, writes: &[Write]) {
    let mut l: Vec<Duration> = writes.iter().map(Write::latency).collect();
    if l.is_empty() {
        println!("  {label:<28} no writes");
        return;
    }
    l.sort();
    let q = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
    println!(
        "  {label:<28} {:>6} writes  p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
        l.len(),
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        l[l.len() - 1].as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench -- <filter>` passes a filter; run unless it excludes us.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "checkpoint_stall".contains(a.as_str())) {
        return;
    }
    let dir = common::tempdir();
    let db =
        Arc::new(TidalDb::open(common::config(dir.path(), Durability::Sync, 8)).expect("open"));
    let at = Timestamp::now();
    let started = Instant::now();
    let n = common::load_full(&db, at, 0);
    println!(
        "checkpoint_stall: loaded {n} signals under Sync in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let writer = {
        let db = db.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let pool = common::ids(Dist::Zipf, 1 << 20, 29);
            let mut writes = Vec::with_capacity(1 << 16);
            let mut next = 0usize;
            while !stop.load(Ordering::Acquire) {
                let s = next % (pool.len() - common::BATCH);
                next += common::BATCH;
                let batch = common::batch(&pool[s..s + common::BATCH], at);
                let start = t0.elapsed();
                db.write(batch).expect("write");
                writes.push(Write {
                    start,
                    end: t0.elapsed(),
                });
            }
            writes
        })
    };

    let mut windows = Vec::new();
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..2 {
        let start = t0.elapsed();
        db.checkpoint().expect("checkpoint");
        let end = t0.elapsed();
        windows.push((start, end));
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Release);
    let writes = writer.join().expect("writer");

    let first = windows[0].0;
    let before: Vec<Write> = writes.iter().copied().filter(|w| w.end < first).collect();
    println!(
        "checkpoint_stall: writer wrote {} batches of {} signals ({:.2} M signals/s overall)",
        writes.len(),
        common::BATCH,
        (writes.len() * common::BATCH) as f64 / t0.elapsed().as_secs_f64() / 1e6
    );
    stats("before any checkpoint", &before);
    for (i, (s, e)) in windows.iter().enumerate() {
        let during: Vec<Write> = writes
            .iter()
            .copied()
            .filter(|w| w.start < *e && w.end > *s)
            .collect();
        println!(
            "  checkpoint {}: {:.1} ms (from {:.3} s to {:.3} s)",
            i + 1,
            (*e - *s).as_secs_f64() * 1e3,
            s.as_secs_f64(),
            e.as_secs_f64()
        );
        stats(&format!("during checkpoint {}", i + 1), &during);
    }
    stats("whole run", &writes);
    let worst = writes.iter().max_by_key(|w| w.latency()).expect("writes");
    println!(
        "  longest write: {:.3} ms starting at {:.3} s",
        worst.latency().as_secs_f64() * 1e3,
        worst.start.as_secs_f64()
    );
}
