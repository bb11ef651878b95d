//! Reads over 1M entities x 3 signal types (plus 3M Zipf signals on top),
//! loaded once with `Durability::Periodic` to set up fast: point reads of
//! decayed scores (Zipf and uniform ids), `retrieve` top-100 of one type
//! and of a blend of three, and `search` top-10 exact cosine over 100k
//! embeddings of dimension 128.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Dist, Rng, TYPES};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tidal::{Durability, EntityId, Retrieve, Search, TidalDb, Timestamp, WriteBatch};

const DIMENSION: usize = 128;
const EMBEDDINGS: u64 = 100_000;
const READS_PER_ITER: usize = 1_000;

struct Fixture {
    _dir: tempfile::TempDir,
    db: TidalDb,
    at: Timestamp,
}

fn fixture() -> Fixture {
    let dir = common::tempdir();
    let config = common::config(
        dir.path(),
        Durability::Periodic(Duration::from_millis(100)),
        DIMENSION,
    );
    let db = TidalDb::open(config).expect("open");
    let at = Timestamp::now();
    let started = Instant::now();
    let signals = common::load_full(&db, at, 3_000_000);
    let loaded = started.elapsed();
    let mut rng = Rng::new(5);
    let started = Instant::now();
    let mut v = vec![0f32; DIMENSION];
    for chunk in (0..EMBEDDINGS).collect::<Vec<_>>().chunks(1_000) {
        let mut b = WriteBatch::new();
        for id in chunk {
            for x in &mut v {
                *x = rng.unit() as f32 - 0.5;
            }
            b = b.write_item_embedding(EntityId(*id), &v);
        }
        db.write(b).expect("embeddings");
    }
    println!(
        "read fixture: {signals} signals in {:.1} s ({:.2} M signals/s under Periodic), \
         {EMBEDDINGS} x {DIMENSION} embeddings in {:.1} s",
        loaded.as_secs_f64(),
        signals as f64 / loaded.as_secs_f64() / 1e6,
        started.elapsed().as_secs_f64()
    );
    Fixture { _dir: dir, db, at }
}

fn reads(c: &mut Criterion) {
    let f = fixture();
    let db = &f.db;
    let at = f.at;

    let mut g = c.benchmark_group("read_decay_score");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(READS_PER_ITER as u64));
    for dist in [Dist::Zipf, Dist::Uniform] {
        let ids = common::ids(dist, 1 << 20, 17);
        let mut next = 0usize;
        g.bench_function(format!("{dist:?}"), |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for k in 0..READS_PER_ITER {
                    let id = ids[(next + k) & (ids.len() - 1)];
                    sum += db
                        .read_decay_score(EntityId(id), TYPES[k % 3], at)
                        .expect("read");
                }
                next = next.wrapping_add(READS_PER_ITER);
                black_box(sum)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("retrieve_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    let top = Retrieve::top(100, TYPES[0], at);
    let hits = db.retrieve(&top).expect("retrieve");
    assert_eq!(hits.len(), 100);
    g.bench_function("top100_one_type", |b| {
        b.iter(|| db.retrieve(black_box(&top)).expect("retrieve"))
    });
    let blend = Retrieve::blend(
        100,
        &[(TYPES[0], 1.0), (TYPES[1], 0.5), (TYPES[2], 2.0)],
        at,
    );
    assert_eq!(db.retrieve(&blend).expect("blend").len(), 100);
    g.bench_function("top100_blend_3_types", |b| {
        b.iter(|| db.retrieve(black_box(&blend)).expect("retrieve"))
    });
    g.finish();

    let mut g = c.benchmark_group("search_100k_x_128");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    let mut rng = Rng::new(23);
    let queries: Vec<Search> = (0..64)
        .map(|_| {
            let v = (0..DIMENSION).map(|_| rng.unit() as f32 - 0.5).collect();
            Search::new(v, 10)
        })
        .collect();
    assert_eq!(db.search(&queries[0]).expect("search").len(), 10);
    let mut q = 0usize;
    g.bench_function("top10_cosine", |b| {
        b.iter(|| {
            q += 1;
            db.search(&queries[q % queries.len()]).expect("search")
        })
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
