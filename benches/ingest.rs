//! Durable ingest on the real disk: 1,000-signal `WriteBatch`es under
//! `Durability::Sync`, single-signal writes from 1 and 16 threads (group
//! commit), and single-signal writes under `Durability::Periodic(100ms)`.
//!
//! Every figure is signals per second (criterion's elements/s).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Dist, TYPES};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tidal::{Durability, EntityId, TidalDb, Timestamp};

fn write_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_sync_batch_1000");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(common::BATCH as u64));
    for dist in [Dist::Uniform, Dist::Zipf] {
        let dir = common::tempdir();
        let db = TidalDb::open(common::config(dir.path(), Durability::Sync, 8)).expect("open");
        // A pool of pre-drawn ids; each batch takes the next 1,000 of them.
        let pool = common::ids(dist, 1 << 20, 11);
        let mut next = 0usize;
        let at = Timestamp::now();
        g.bench_function(format!("{dist:?}"), |b| {
            b.iter_batched(
                || {
                    let start = next % (pool.len() - common::BATCH);
                    next += common::BATCH;
                    common::batch(&pool[start..start + common::BATCH], at)
                },
                |batch| db.write(batch).expect("write"),
                BatchSize::SmallInput,
            )
        });
        db.close().expect("close");
    }
    g.finish();
}

fn single_signals(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_single_signal");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));

    let ids = common::ids(Dist::Uniform, 1 << 16, 13);
    let at = Timestamp::now();

    for (name, durability) in [
        ("sync_1_thread", Durability::Sync),
        (
            "periodic_100ms_1_thread",
            Durability::Periodic(Duration::from_millis(100)),
        ),
    ] {
        let dir = common::tempdir();
        let db = TidalDb::open(common::config(dir.path(), durability, 8)).expect("open");
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let id = ids[i % ids.len()];
                db.signal(TYPES[i % 3], EntityId(id), 1.0, at)
                    .expect("signal")
            })
        });
        db.close().expect("close");
    }

    // 16 writers share one database: group commit packs them into one
    // batch and one fdatasync. `iters` signals are split over the threads.
    const THREADS: u64 = 16;
    let dir = common::tempdir();
    let db =
        Arc::new(TidalDb::open(common::config(dir.path(), Durability::Sync, 8)).expect("open"));
    g.bench_function("sync_16_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let n = iters / THREADS + u64::from(t < iters % THREADS);
                    let db = &db;
                    let ids = &ids;
                    s.spawn(move || {
                        for k in 0..n {
                            let i = (t * 7_919 + k) as usize;
                            db.signal(TYPES[i % 3], EntityId(ids[i % ids.len()]), 1.0, at)
                                .expect("signal");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let st = db.status();
    println!(
        "sync_16_threads: {} batches, {} records, {:.1} records per batch, fsync mean {} us",
        st.batches,
        st.records,
        st.records as f64 / st.batches.max(1) as f64,
        st.fsync_mean_us
    );
    g.finish();
}

criterion_group!(benches, write_batches, single_signals);
criterion_main!(benches);
