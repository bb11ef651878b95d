//! Soak: a mixed workload over a bounded set of entities and users for a
//! given duration, printing throughput and RSS every 10 s. Once the sets are
//! full, memory must level off.
//!
//! ```sh
//! cargo run --release --example soak -- 600        # seconds (default 60)
//! ```
//!
//! A leader (`Durability::Periodic(100 ms)`) with one in-process follower;
//! writer threads send signal batches and session activity (sessions open,
//! collect events, close; closed ones expire after a short retention);
//! reader threads run point reads and top-k on both nodes; a checkpoint
//! runs every 20 s. Per 10 s it prints writes, signals, reads, the
//! follower's lag, and the process RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidal::{
    ClusterConfig, Config, Durability, EntityId, InProcessTransport, NodeId, NodeRole, Retrieve,
    SessionId, TidalDb, Timestamp, UserId, WriteBatch,
};

const ENTITIES: u64 = 200_000;
const USERS: u64 = 10_000;

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("view", Duration::from_secs(3_600))
        .signal_type("like", Duration::from_secs(86_400))
        .signal_type("skip", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Periodic(Duration::from_millis(100)))
        .session_retention(Duration::from_secs(30))
        .segment_bytes(16 << 20)
        .retention_bytes(64 << 20)
        .snapshot_every_bytes(64 << 20)
        .build()
        .expect("config")
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let (ld, fd) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let t = InProcessTransport::new();
    let leader = Arc::new(TidalDb::open_leader(
        config(ld.path(), 1, NodeRole::Leader),
        t.clone(),
    )?);
    let follower = Arc::new(TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower),
        t,
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, signals, reads) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let next_session = Arc::new(AtomicU64::new(1));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (db, stop, writes, signals, next_session) = (
            leader.clone(),
            stop.clone(),
            writes.clone(),
            signals.clone(),
            next_session.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut x = 0x9E37_79B9_7F4A_7C15 ^ (w + 1);
            // Paced at 50 batches/s per writer (about 50k signals/s in all),
            // a rate the follower sustains on 2 cores, so the soak measures
            // memory at a steady state rather than a growing backlog.
            let pace = Duration::from_millis(20);
            let mut due = Instant::now();
            while !stop.load(Ordering::Acquire) {
                due += pace;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let now = Timestamp::now();
                let mut b = WriteBatch::new();
                for _ in 0..500 {
                    let e = EntityId(xorshift(&mut x) % ENTITIES);
                    let (ty, wt) = match xorshift(&mut x) % 10 {
                        0 => ("skip", -1.0),
                        1 | 2 => ("like", 1.0),
                        _ => ("view", 1.0),
                    };
                    b = b.signal(ty, e, wt, now);
                }
                // One short session per batch: opened, a few events, closed.
                let s = SessionId(next_session.fetch_add(1, Ordering::Relaxed));
                let u = UserId(xorshift(&mut x) % USERS);
                b = b.open_session(s, u, now);
                for _ in 0..5 {
                    let e = EntityId(xorshift(&mut x) % ENTITIES);
                    b = b.record_session_event(s, e, "view", 1.0, now);
                }
                b = b.close_session(s, now);
                if db.write(b).is_ok() {
                    writes.fetch_add(1, Ordering::Relaxed);
                    signals.fetch_add(505, Ordering::Relaxed);
                }
            }
        }));
    }
    for r in 0..2u64 {
        let (leader, follower, stop, reads) = (
            leader.clone(),
            follower.clone(),
            stop.clone(),
            reads.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut x = 0xDEAD_BEEF ^ (r + 7);
            while !stop.load(Ordering::Acquire) {
                let now = Timestamp::now();
                for _ in 0..1_000 {
                    let e = EntityId(xorshift(&mut x) % ENTITIES);
                    let _ = leader.read_decay_score(e, "view", now);
                    let _ = follower.read_decay_score(e, "like", now);
                }
                let _ = leader.retrieve(&Retrieve::top(100, "like", now));
                let _ = follower.retrieve(&Retrieve::top(100, "view", now));
                reads.fetch_add(2_002, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    let mut last = (0u64, 0u64, 0u64);
    let mut tick = 0u64;
    println!("soak: {secs} s, {ENTITIES} entities x 3 types, {USERS} users");
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tick += 1;
        if tick.is_multiple_of(2) {
            let l = leader.clone();
            tokio::task::spawn_blocking(move || l.checkpoint()).await??;
        }
        let now = (
            writes.load(Ordering::Relaxed),
            signals.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed),
        );
        let lag = leader.last_position().seqno.0 - follower.last_position().seqno.0;
        println!(
            "t={:>4}s writes/s {:>6} signals/s {:>8} reads/s {:>9} follower lag {:>6} records  state {:>6.1} MiB  RSS {:>7.1} MiB",
            start.elapsed().as_secs(),
            (now.0 - last.0) / 10,
            (now.1 - last.1) / 10,
            (now.2 - last.2) / 10,
            lag,
            leader.status().state_bytes as f64 / (1 << 20) as f64,
            rss_mib()
        );
        last = now;
    }
    stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
