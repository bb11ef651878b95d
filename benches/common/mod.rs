//! Shared fixtures for the benches: configs, id generators and loaders.
//!
//! Every bench binary includes this file with `mod common;`, so a helper
//! one binary does not use would warn; hence the `dead_code` allowance.
#![allow(dead_code)]

mod workload;
pub use workload::{Rng, Zipf};

use std::path::Path;
use std::time::Duration;

use tidal::{Config, Durability, EntityId, TidalDb, Timestamp, WriteBatch};

/// The three signal types every bench uses.
pub const TYPES: [&str; 3] = ["view", "like", "share"];

/// Entities in the large fixtures.
pub const ENTITIES: u64 = 1_000_000;

/// Signals in one `WriteBatch`.
pub const BATCH: usize = 1_000;

/// A config on the real disk (`RealStorage`, the default) with the three
/// signal types; `dimension` for the search fixture.
pub fn config(dir: &Path, durability: Durability, dimension: usize) -> Config {
    Config::builder(dir)
        .signal_type(TYPES[0], Duration::from_secs(3_600))
        .signal_type(TYPES[1], Duration::from_secs(86_400))
        .signal_type(TYPES[2], Duration::from_secs(6 * 3_600))
        .durability(durability)
        .dimension(dimension)
        // Auto-snapshots stay off in fixtures so each bench measures one thing.
        .snapshot_every_bytes(u64::MAX)
        .build()
        .expect("bench config")
}

/// A tempdir on the real disk: `TIDAL_BENCH_DIR` if set, else the system
/// temporary directory (ext4 on the virtio disk on the bench machines, not
/// a tmpfs; check with `df` elsewhere).
pub fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("TIDAL_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

/// Id distributions the benches compare.
#[derive(Clone, Copy, Debug)]
pub enum Dist {
    Uniform,
    Zipf,
}

/// `count` entity ids drawn from `dist` over `0..ENTITIES`.
pub fn ids(dist: Dist, count: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    match dist {
        Dist::Uniform => (0..count).map(|_| rng.below(ENTITIES)).collect(),
        Dist::Zipf => {
            let z = Zipf::new(ENTITIES, 1.1);
            (0..count).map(|_| z.sample(&mut rng)).collect()
        }
    }
}

/// A batch of signals on `ids`, types round-robin, weight 1.0 at `at`.
pub fn batch(ids: &[u64], at: Timestamp) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (i, id) in ids.iter().enumerate() {
        b = b.signal(TYPES[i % TYPES.len()], EntityId(*id), 1.0, at);
    }
    b
}

/// Loads every entity of `0..ENTITIES` with one signal of each type (3M
/// signals) in 1,000-signal batches, plus `extra` Zipf signals, so every
/// (entity, type) exists and the hot ids carry larger scores.
pub fn load_full(db: &TidalDb, at: Timestamp, extra: usize) -> u64 {
    let mut written = 0u64;
    for t in TYPES {
        let mut start = 0;
        while start < ENTITIES {
            let end = (start + BATCH as u64).min(ENTITIES);
            let mut b = WriteBatch::new();
            for id in start..end {
                b = b.signal(t, EntityId(id), 1.0, at);
            }
            db.write(b).expect("load batch");
            written += end - start;
            start = end;
        }
    }
    let zipf = ids(Dist::Zipf, extra, 7);
    for chunk in zipf.chunks(BATCH) {
        db.write(batch(chunk, at)).expect("load zipf batch");
        written += chunk.len() as u64;
    }
    written
}
