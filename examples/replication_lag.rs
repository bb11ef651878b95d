//! Replication lag and follower catch-up over authenticated TCP loopback.
//!
//! Run with `cargo run --release --example replication_lag -- [--quick]
//! [--batch N]` (`--batch` sets the signals per lag write, default 1,000;
//! the write interval is N / 100,000 s).
//!
//! 1. **Lag.** A leader on `TcpTransport::bind("127.0.0.1:0")` and one
//!    follower on `TcpTransport::connector`, both `Durability::Sync` (every
//!    batch fdatasync'ed on the leader before the write returns, and on the
//!    follower before it applies). A writer thread paced on an absolute
//!    schedule writes 1,000 signals every 10 ms (100,000 signals/s) for 10 s
//!    (2 s with `--quick`). For each write the commit time is when
//!    `leader.write` returns; a single task then awaits
//!    `follower.wait_for(position)` for each write in order and stamps the
//!    time it returns (the follower's applied watch wakes it, so there is no
//!    spinning poller competing for the cores). Lag = applied - commit.
//! 2. **Catch-up.** A leader with no follower builds a backlog of 10,000,000
//!    signals (1,000,000 with `--quick`) in 1,000-signal batches under
//!    `Durability::Periodic(100 ms)`, then is flushed; auto-snapshots are
//!    off and retention is large, so the follower is served the stored log
//!    segments, not a snapshot. A `Durability::Sync` follower is then
//!    opened and timed until `wait_for(leader.last_position())` returns.
//!
//! Tempdirs are in the system temporary directory (ext4 on the virtio disk
//! here, not a tmpfs), or `TIDAL_BENCH_DIR` if set.
//!
//! Measured on 2026-11-24 05:38 UTC, full size (`cargo run --release
//! --example replication_lag`), 2 vCPUs, ext4 on virtio disk, machine
//! shared with other builds: `uptime` load average 5.9 / 4.8 / 5.3 at the
//! start and 5.6 at the end of the run, so these are loaded-machine numbers.
//! Two consecutive full runs:
//!
//! | | run 1 | run 2 |
//! |---|---|---|
//! | lag writes: 1,000 x 1,000 signals, achieved rate | 100,078 signals/s | 100,038 signals/s |
//! | lag p50 (leader commit -> follower applied) | 1.870 ms | 1.699 ms |
//! | lag p99 | 9.112 ms | 7.908 ms |
//! | lag max | 33.765 ms | 15.298 ms |
//! | backlog build, 10,000,000 signals, Periodic(100 ms) | 8.66 s (1.15 M/s) | 7.09 s (1.41 M/s) |
//! | follower catch-up, 10,000,000 records over TCP | 11.49 s = 870,514 records/s | 10.30 s = 971,024 records/s |
//!
//! (A record is one signal: the leader's last SeqNo was 10,000,001, the
//! 10,000,000 signals plus the epoch-start record.)
//!
//! With `--batch 100` (100 signals every 1 ms, `--quick`, load 5.6) Sync
//! cannot keep the pace: one fdatasync per 100-signal write caps the
//! writer at 41,488-46,400 signals/s, and the follower, also syncing per
//! batch, falls behind: p50 32.7-45.5 ms, p99 166.6-260.6 ms. At 100,000
//! signals/s under Sync, batches of about 1,000 are what hold the rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::{
    ClusterConfig, Config, Durability, EntityId, NodeId, NodeRole, Position, TcpOptions,
    TcpTransport, TidalDb, Timestamp, WriteBatch,
};

const SECRET: &[u8] = b"replication lag example secret!!";
const RATE: u64 = 100_000;
const BACKLOG_BATCH: u64 = 1_000;
const ENTITIES: u64 = 100_000;

fn config(dir: &std::path::Path, node: u64, role: NodeRole, durability: Durability) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(86_400))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(durability)
        .snapshot_every_bytes(u64::MAX)
        .retention_bytes(1 << 40)
        .build()
        .expect("config")
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("TIDAL_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

fn batch(first: u64, n: u64, at: Timestamp) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in first..first + n {
        // A multiplicative spread over the entity space.
        let e = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % ENTITIES;
        b = b.signal("like", EntityId(e), 1.0, at);
    }
    b
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn lag(seconds: u64, lag_batch: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (ld, fd) = (tempdir(), tempdir());
    let listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default())?;
    let addr = listener.local_addr().ok_or("no local addr")?.to_string();
    let leader = Arc::new(TidalDb::open_leader(
        config(ld.path(), 1, NodeRole::Leader, Durability::Sync),
        listener,
    )?);
    let follower = Arc::new(TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower, Durability::Sync),
        TcpTransport::connector(addr, SECRET, TcpOptions::default())?,
    )?);
    // Warm up: the follower says hello and is caught up before timing.
    let p = leader.write(batch(0, lag_batch, Timestamp::now()))?;
    follower.wait_for(p, Duration::from_secs(30)).await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Position, Instant)>();
    let waiter = {
        let follower = follower.clone();
        tokio::spawn(async move {
            let mut lags = Vec::new();
            while let Some((pos, committed)) = rx.recv().await {
                follower.wait_for(pos, Duration::from_secs(60)).await?;
                lags.push(Instant::now().saturating_duration_since(committed));
            }
            Ok::<_, tidal::TidalError>(lags)
        })
    };
    let writes = seconds * RATE / lag_batch;
    let interval = Duration::from_nanos(1_000_000_000 * lag_batch / RATE);
    let writer = {
        let leader = leader.clone();
        std::thread::spawn(move || -> tidal::Result<Duration> {
            let start = Instant::now();
            for w in 0..writes {
                let due = start + interval * w as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let pos = leader.write(batch(w * lag_batch, lag_batch, Timestamp::now()))?;
                let _ = tx.send((pos, Instant::now()));
            }
            Ok(start.elapsed())
        })
    };
    let elapsed = writer.join().map_err(|_| "writer panicked")??;
    let mut lags = waiter.await??;
    lags.sort_unstable();
    let signals = writes * lag_batch;
    println!(
        "lag: {} writes of {} signals ({signals} signals) in {:.2} s = {:.0} signals/s \
         (target {RATE})",
        writes,
        lag_batch,
        elapsed.as_secs_f64(),
        signals as f64 / elapsed.as_secs_f64()
    );
    println!(
        "lag: leader commit -> follower applied: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(pct(&lags, 0.50)),
        ms(pct(&lags, 0.99)),
        ms(*lags.last().ok_or("no samples")?)
    );
    println!(
        "lag: leader's view of the follower: {:?}",
        leader.followers()
    );
    Ok(())
}

async fn catch_up(records: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (ld, fd) = (tempdir(), tempdir());
    let listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default())?;
    let addr = listener.local_addr().ok_or("no local addr")?.to_string();
    let leader = Arc::new(TidalDb::open_leader(
        config(
            ld.path(),
            1,
            NodeRole::Leader,
            Durability::Periodic(Duration::from_millis(100)),
        ),
        listener,
    )?);
    let t = Instant::now();
    let at = Timestamp::now();
    let builder = {
        let leader = leader.clone();
        tokio::task::spawn_blocking(move || -> tidal::Result<Position> {
            let mut last = Position::default();
            for b in 0..records / BACKLOG_BATCH {
                last = leader.write(batch(b * BACKLOG_BATCH, BACKLOG_BATCH, at))?;
            }
            leader.flush()?;
            Ok(last)
        })
    };
    let last = builder.await??;
    let built = t.elapsed();
    assert_eq!(last, leader.last_position());
    println!(
        "catch-up: backlog of {records} signals built in {:.2} s ({:.0} signals/s), \
         leader at {last}",
        built.as_secs_f64(),
        records as f64 / built.as_secs_f64()
    );

    let t = Instant::now();
    let follower = TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower, Durability::Sync),
        TcpTransport::connector(addr, SECRET, TcpOptions::default())?,
    )?;
    follower.wait_for(last, Duration::from_secs(3_600)).await?;
    let took = t.elapsed();
    assert_eq!(follower.last_position(), last);
    println!(
        "catch-up: follower applied {records} signals (to {last}) in {:.2} s = {:.0} records/s",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    let lag_batch = args
        .iter()
        .position(|a| a == "--batch")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(1_000), |s| s.parse::<u64>())?;
    let (seconds, backlog) = if quick {
        (2, 1_000_000)
    } else {
        (10, 10_000_000)
    };
    lag(seconds, lag_batch).await?;
    catch_up(backlog).await?;
    Ok(())
}
