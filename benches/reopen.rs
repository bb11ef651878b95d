//! Reopen speed: replaying a log of 4M signal records with no snapshot,
//! and loading a snapshot of 1M entities x 3 types. Figures are records
//! (or snapshot entries) per second; each iteration is one full open.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tidal::{Durability, TidalDb, Timestamp};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn reopen(c: &mut Criterion) {
    // The log fixture: 1M entities x 3 types, then 1M Zipf signals; no snapshot.
    let log_dir = common::tempdir();
    let periodic = Durability::Periodic(Duration::from_millis(100));
    let started = Instant::now();
    let records = {
        let db = TidalDb::open(common::config(log_dir.path(), periodic, 8)).expect("open");
        let n = common::load_full(&db, Timestamp::now(), 1_000_000);
        db.close().expect("close");
        n
    };
    println!(
        "reopen fixture: {records} signal records logged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The snapshot fixture: the same database, checkpointed.
    let snap_dir = common::tempdir();
    copy_dir(log_dir.path(), snap_dir.path());
    {
        let db = TidalDb::open(common::config(snap_dir.path(), periodic, 8)).expect("open");
        db.checkpoint().expect("checkpoint");
        db.close().expect("close");
    }

    let mut g = c.benchmark_group("reopen");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);

    for (name, dir, elements) in [
        ("replay_log_4M_records", log_dir.path(), records),
        (
            "snapshot_1M_entities_x_3_types",
            snap_dir.path(),
            common::ENTITIES * 3,
        ),
    ] {
        // Reopened as a default (Sync) node would be.
        let config = common::config(dir, Durability::Sync, 8);
        let db = TidalDb::open(config.clone()).expect("open");
        let r = db.status().recovery;
        println!(
            "{name}: snapshot {:?}, {} segments, {} batches and {} records replayed, {:?}",
            r.snapshot.as_ref().map(|s| s.1),
            r.segments,
            r.batches_replayed,
            r.records_replayed,
            r.duration
        );
        drop(db);
        g.throughput(Throughput::Elements(elements));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let db = TidalDb::open(config.clone()).expect("open");
                    total += start.elapsed();
                    drop(db);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reopen);
criterion_main!(benches);
