//! Shared pieces of the comparison harness: sizes, the seeded generators,
//! the signal stream every system receives, the forward-decay key the peers
//! store, percentiles, RSS, and the report (human table + `RESULT` lines).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidal::{Config, Durability, Timestamp};

/// The signal types every workload uses, with their half-lives.
pub const TYPES: [&str; 3] = ["view", "like", "share"];
/// Half-lives of [`TYPES`] in milliseconds (1 h, 24 h, 6 h).
pub const HALF_LIVES_MS: [u64; 3] = [3_600_000, 86_400_000, 21_600_000];
/// Signals per batch / transaction in the batched workloads.
pub const BATCH: usize = 1_000;
/// Bytes one single-signal batch takes in TidalDb's log (48-byte batch
/// header + 27-byte signal record, `src/wal/format.rs`); the raw
/// append+fdatasync baseline of W2 writes records of this size.
pub const RECORD_BYTES: usize = 75;

/// Sizes of one run.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Entities in the fixtures (ids `0..entities`).
    pub entities: u64,
    /// Signals written in W1 by each system.
    pub w1_signals: usize,
    /// Single durable writes in W2 (1 thread), per system.
    pub w2_writes: usize,
    /// Writes per thread in W2 with 32 threads, over all rounds (each
    /// round's turn starts the 32 threads for its share). 100 in all, 10 a
    /// round, measured mostly the threads starting and the group's ramp
    /// up and down: 45-70k writes/s where the same build holds 76-92k in
    /// its steady state (`ingest_probe group`); 1,000 in all is 0.3-0.5 s.
    pub w2_per_thread: usize,
    /// Single relaxed writes in W3 for TidalDb; peers get `w3_peer_writes`.
    pub w3_writes: usize,
    pub w3_peer_writes: usize,
    /// Point reads in W4 for TidalDb; peers get a fifth.
    pub w4_reads: usize,
    /// Seconds of top-k queries in W5 (each system, single type; blend gets the same).
    pub w5_seconds: f64,
    /// Embeddings and queries in W6.
    pub w6_vectors: usize,
    pub w6_queries: usize,
    /// Embeddings, timed queries and recall-checked queries in W6-approx.
    pub w6_approx_vectors: usize,
    pub w6_approx_queries: usize,
    pub w6_approx_recall_queries: usize,
    /// Seconds of baseline ingest before the checkpoint in W10.
    pub w10_baseline_seconds: f64,
    /// Turns each system takes in the interleaved W1-W3 (`ingest.rs`).
    pub rounds: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                entities: 100_000,
                w1_signals: 200_000,
                w2_writes: 300,
                w2_per_thread: 200,
                w3_writes: 200_000,
                w3_peer_writes: 20_000,
                w4_reads: 2_000_000,
                w5_seconds: 3.0,
                w6_vectors: 100_000,
                w6_queries: 30,
                w6_approx_vectors: 100_000,
                w6_approx_queries: 1_000,
                w6_approx_recall_queries: 100,
                w10_baseline_seconds: 1.0,
                rounds: 5,
            }
        } else {
            Sizes {
                entities: 1_000_000,
                w1_signals: 3_000_000,
                w2_writes: 2_000,
                w2_per_thread: 1_000,
                w3_writes: 2_000_000,
                w3_peer_writes: 100_000,
                w4_reads: 10_000_000,
                w5_seconds: 10.0,
                w6_vectors: 100_000,
                w6_queries: 200,
                w6_approx_vectors: 1_000_000,
                w6_approx_queries: 3_000,
                w6_approx_recall_queries: 300,
                w10_baseline_seconds: 3.0,
                rounds: 10,
            }
        }
    }
}

// The same generator and Zipf sampler as the benches, from one file.
#[path = "../../benches/common/workload.rs"]
mod workload;
pub use workload::{Rng, Zipf};

/// One signal, as every system receives it.
#[derive(Clone, Copy, Debug)]
pub struct Sig {
    pub entity: u64,
    pub ty: u8,
    pub weight: f64,
    /// Event time, ms since the Unix epoch.
    pub at: u64,
}

/// The signal stream: Zipf(1.1) entities, types round-robin, weight 1.0,
/// event times spread over the minute before `t0` (all in the past, so no
/// future-skew limit applies).
pub fn signals(zipf: &Zipf, count: usize, seed: u64, t0: u64) -> Vec<Sig> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| Sig {
            entity: zipf.sample(&mut rng),
            ty: (i % TYPES.len()) as u8,
            weight: 1.0,
            at: t0 - 60_000 + (i as u64 * 60_000 / count as u64),
        })
        .collect()
}

/// The time-invariant forward-decay key the peers store:
/// `weight * 2^((t - L) / h)` with the fixed landmark `L`.
pub fn key(sig: &Sig, landmark: u64) -> f64 {
    let h = HALF_LIVES_MS[sig.ty as usize] as f64;
    sig.weight * ((sig.at as f64 - landmark as f64) / h).exp2()
}

/// The factor that turns a stored key into the decayed score at `at`.
pub fn read_factor(ty: u8, landmark: u64, at: u64) -> f64 {
    let h = HALF_LIVES_MS[ty as usize] as f64;
    ((landmark as f64 - at as f64) / h).exp2()
}

/// A TidalDb config with the three types; auto-snapshots off so each
/// workload measures one thing.
pub fn tidal_config(dir: &Path, durability: Durability, dimension: usize) -> Config {
    let mut b = Config::builder(dir);
    for (name, h) in TYPES.iter().zip(HALF_LIVES_MS) {
        b = b.signal_type(*name, Duration::from_millis(h));
    }
    b.durability(durability)
        .dimension(dimension)
        .snapshot_every_bytes(u64::MAX)
        .retention_bytes(1 << 40)
        .build()
        .expect("compare config")
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    Timestamp::now().0
}

/// A fresh temporary directory under `base`.
pub fn tempdir(base: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Where temp dirs go: `--dir` or the system temporary directory.
pub fn base_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(std::env::temp_dir)
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Resident set size of this process in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The 1-minute load average, for the record.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Times `f`.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Whether higher values are better for a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// Rows for the human table and the machine-readable `RESULT` lines.
#[derive(Default)]
pub struct Report {
    rows: Vec<[String; 5]>,
    results: Vec<String>,
}

impl Report {
    /// One measured figure; printed at once to stderr as progress.
    pub fn row(&mut self, workload: &str, system: &str, value: f64, unit: &str, note: &str) {
        let r = [
            workload.to_string(),
            system.to_string(),
            fmt_value(value),
            unit.to_string(),
            note.to_string(),
        ];
        eprintln!(
            "  {:<10} {:<28} {:>14} {:<10} {}",
            r[0], r[1], r[2], r[3], r[4]
        );
        self.rows.push(r);
    }

    /// `RESULT <w> tidal=<v> <peer>=<v> ratio=<..> unit=<u>`, ratio oriented so
    /// higher is better for TidalDb.
    pub fn vs(
        &mut self,
        workload: &str,
        tidal: f64,
        peer: &str,
        other: f64,
        unit: &str,
        b: Better,
    ) {
        let ratio = match b {
            Better::Higher => tidal / other,
            Better::Lower => other / tidal,
        };
        self.results.push(format!(
            "RESULT {workload} tidal={} {peer}={} ratio={ratio:.3} unit={unit}",
            fmt_value(tidal),
            fmt_value(other)
        ));
    }

    /// An absolute target without a peer.
    pub fn target(&mut self, workload: &str, tidal: f64, target: f64, unit: &str, b: Better) {
        self.vs(workload, tidal, "target", target, unit, b);
    }

    /// A line that says what was not measured, and why.
    pub fn missing(&mut self, workload: &str, why: &str) {
        self.results
            .push(format!("RESULT {workload} not-measured reason=\"{why}\""));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let head = ["workload", "system", "value", "unit", "note"];
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|---|---|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out.push('\n');
        for l in &self.results {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
