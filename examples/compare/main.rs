//! The peer comparison harness of issue 5: every workload on TidalDb, SQLite
//! and redb (or a raw-I/O baseline) in the same process run, on the same data,
//! with the same durability and batch sizes.
//!
//! ```sh
//! cargo run --release --example compare -- --quick     # within 3 minutes on 2 cores
//! cargo run --release --example compare                # full sizes: 1M entities x 3 types
//! cargo run --release --example compare -- --dir /path # temp dirs under /path
//! cargo run --release --example compare -- --only W1,W4 # a subset (W7E: W7/W8 with embeddings)
//! cargo run --release --example compare -- --only W4,W5 --no-peers # TidalDb alone
//! ```
//!
//! Output: progress rows on stderr as they are measured; on stdout a table
//! (markdown) and one `RESULT <workload> tidal=<v> <peer>=<v> ratio=<r>
//! unit=<u>` line per peer or target, ratio oriented so that higher is better
//! for TidalDb (peer/tidal for latencies and bytes).
//!
//! Design (see also each module):
//! - One seeded signal stream (xorshift64*, Zipf(1.1) entities scrambled over
//!   the id space, types round-robin, weight 1.0, event times in the minute
//!   before the run) feeds every system; the peers store the time-invariant
//!   forward-decay key `w * 2^((t - L)/h)` against a fixed landmark `L`, the
//!   quantity TidalDb ranks by (`peers.rs`).
//! - Durable workloads sync before they acknowledge on every system
//!   (TidalDb `Durability::Sync`, SQLite `synchronous=FULL` in WAL mode, redb
//!   `Durability::Immediate`); relaxed ones use `Periodic(100 ms)`,
//!   `synchronous=NORMAL` and `Durability::None`.
//! - W4/W5/W7/W8/W10 share one TidalDb fixture: every (entity, type) gets one
//!   signal, plus as many Zipf signals again (`reads.rs`, `recovery.rs`).
//! - W9 (replication) is its own example: `cargo run --release --example
//!   replication_lag` (it needs a Tokio runtime and TCP; see its docs).

mod ann;
mod ingest;
mod peers;
mod reads;
mod recovery;
mod util;

use std::path::PathBuf;

use util::{Report, Sizes, Zipf, now_ms, signals};

struct Args {
    quick: bool,
    dir: Option<PathBuf>,
    only: Option<Vec<String>>,
    /// W4/W5 on TidalDb alone (no SQLite/redb load): for quick regression runs.
    no_peers: bool,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        dir: None,
        only: None,
        no_peers: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--no-peers" => a.no_peers = true,
            "--dir" => a.dir = it.next().map(PathBuf::from),
            "--only" => {
                a.only = it
                    .next()
                    .map(|s| s.split(',').map(|w| w.trim().to_uppercase()).collect());
            }
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: compare [--quick] [--no-peers] [--dir DIR] [--only W1,W4,..]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    let a = args();
    let sizes = Sizes::new(a.quick);
    let base = util::base_dir(a.dir);
    let wants = |w: &str| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == w));
    let start = std::time::Instant::now();
    let load_start = util::load_average();
    eprintln!(
        "compare: {} mode, {} entities x 3 types, temp dirs under {}, load average {load_start}",
        if a.quick { "quick" } else { "full" },
        sizes.entities,
        base.display()
    );

    let t0 = now_ms();
    // The peers' fixed landmark: an hour before the run.
    let landmark = t0 - 3_600_000;
    let zipf = Zipf::new(sizes.entities, 1.1);
    let mut rep = Report::default();

    // Memory first, before other workloads leave freed pages behind.
    let needs_fixture = ["W4", "W5", "W7", "W8", "W10"].iter().any(|w| wants(w));
    if needs_fixture {
        reads::fixture_workloads(
            &mut rep,
            &base,
            &sizes,
            &zipf,
            landmark,
            &wants,
            !a.no_peers,
        );
    }

    let w1_sigs = signals(&zipf, sizes.w1_signals.max(sizes.w3_writes), 11, t0);
    if wants("W1") {
        ingest::w1(
            &mut rep,
            &base,
            &sizes,
            &w1_sigs[..sizes.w1_signals],
            landmark,
        );
    }
    if wants("W2") {
        ingest::w2(&mut rep, &base, &sizes, &w1_sigs, landmark);
    }
    if wants("W3") {
        ingest::w3(&mut rep, &base, &sizes, &w1_sigs, landmark);
    }
    drop(w1_sigs);
    if wants("W6") {
        reads::w6(&mut rep, &base, &sizes);
        ann::w6_approx(&mut rep, &base, &sizes);
    }
    // Reported, not a target: full mode only (about 1 GiB more memory).
    if (a.only.is_none() && !a.quick)
        || a.only
            .as_ref()
            .is_some_and(|o| o.iter().any(|w| w == "W7E"))
    {
        recovery::with_embeddings(&mut rep, &base, &sizes, &zipf);
    }
    if wants("W9") {
        rep.missing(
            "W9",
            "replication is measured by its own example: cargo run --release --example replication_lag",
        );
    }

    println!(
        "# compare: {} mode, {} entities x 3 types, Zipf(1.1); load average {load_start} at start, {} at end; {:.1} s",
        if a.quick { "quick" } else { "full" },
        sizes.entities,
        util::load_average(),
        start.elapsed().as_secs_f64()
    );
    println!();
    print!("{}", rep.render());
}
