//! W6-approx: the approximate vector index at full size (1M x 128; 100k
//! in --quick), through the public API.
//!
//! Data: a seeded mixture of Gaussians in 128 dimensions. 1,000 centres
//! with N(0, 1/128) coordinates (norm about 1); each vector is a uniformly
//! drawn centre plus N(0, sigma^2) noise per coordinate with sigma =
//! 1/sqrt(128), so the noise is as long as the centre: a vector's cosine to
//! its own centre is about 0.71, to another vector of its centre about 0.5,
//! to anything else about 0. Queries are drawn from the same mixture.
//! Recall@10 is measured against the harness's exact scan over the same
//! vectors. Every item gets metadata `bucket = b<id % 10>`; the filtered
//! queries ask for `bucket = b3` (10% of the items). The same figures over
//! uniformly random vectors (the worst case for any ANN index) are reported
//! too, without a target.

use std::path::Path;
use std::time::{Duration, Instant};

use tidal::{Durability, EntityId, Search, TidalDb, VectorIndex, WriteBatch};

use crate::reads::{dot, scan_where};
use crate::util::{
    BATCH, Better, Report, Rng, Sizes, rate, rss_bytes, tempdir, tidal_config, timed,
};

const DIM: usize = 128;
const CENTRES: usize = 1_000;

/// A standard normal (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u = rng.unit().max(1e-300);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.unit()).cos()
}

/// The W6-approx mixture (module docs).
struct Mixture {
    centres: Vec<f32>,
    sigma: f64,
    rng: Rng,
}

impl Mixture {
    fn new(seed: u64) -> Mixture {
        let mut rng = Rng::new(seed);
        let s = 1.0 / (DIM as f64).sqrt();
        let centres = (0..CENTRES * DIM)
            .map(|_| (normal(&mut rng) * s) as f32)
            .collect();
        Mixture {
            centres,
            sigma: s,
            rng,
        }
    }

    fn points(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * DIM);
        for _ in 0..n {
            let c = self.rng.below(CENTRES as u64) as usize;
            for i in 0..DIM {
                let x = f64::from(self.centres[c * DIM + i]) + normal(&mut self.rng) * self.sigma;
                out.push(x as f32);
            }
        }
        out
    }
}

fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n * DIM)
        .map(|_| rng.unit() as f32 * 2.0 - 1.0)
        .collect()
}

fn open(dir: &Path, index: VectorIndex) -> TidalDb {
    let relaxed = Durability::Periodic(Duration::from_millis(100));
    let mut c = tidal_config(dir, relaxed, DIM);
    c.vector_index = index;
    TidalDb::open(c).expect("open")
}

/// Writes `data` as item embeddings `0..n`, 1,000 per batch; the total
/// time and the slowest batch (a training shows there).
fn ingest(db: &TidalDb, data: &[f32]) -> (Duration, Duration) {
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for (c, chunk) in data.chunks(DIM * BATCH).enumerate() {
        let mut b = WriteBatch::new();
        for (i, v) in chunk.chunks(DIM).enumerate() {
            b = b.write_item_embedding(EntityId((c * BATCH + i) as u64), v);
        }
        let t = Instant::now();
        db.write(b).expect("embeddings");
        slowest = slowest.max(t.elapsed());
    }
    (start.elapsed(), slowest)
}

const BUCKET: u64 = 3;

fn search(q: &[f32], filtered: bool) -> Search {
    let s = Search::new(q.to_vec(), 10);
    if filtered {
        s.metadata("bucket", format!("b{BUCKET}"))
    } else {
        s
    }
}

/// Queries per second over all `queries` on this thread, and the result
/// ids of the first `keep`.
fn run(db: &TidalDb, queries: &[Vec<f32>], filtered: bool, keep: usize) -> (f64, Vec<Vec<u64>>) {
    let mut out = Vec::new();
    let (_, d) = timed(|| {
        for (i, q) in queries.iter().enumerate() {
            let r = db.search(&search(q, filtered)).expect("search");
            if i < keep {
                out.push(r.iter().map(|s| s.id.0).collect());
            }
        }
    });
    (rate(queries.len(), d), out)
}

/// Mean recall@10 of `got` against the exact scan.
fn recall(data: &[f32], queries: &[Vec<f32>], got: &[Vec<u64>], filtered: bool) -> f64 {
    let norms: Vec<f32> = data.chunks(DIM).map(|v| dot(v, v).sqrt()).collect();
    let (mut hit, mut want) = (0usize, 0usize);
    for (q, got) in queries.iter().zip(got) {
        let exact = scan_where(data, &norms, q, 10, &|i| !filtered || i % 10 == BUCKET);
        want += exact.len();
        hit += exact.iter().filter(|(id, _)| got.contains(id)).count();
    }
    hit as f64 / want.max(1) as f64
}

/// Recall@10 and queries/s, without and with the filter; the `RESULT`
/// lines if `targets`.
fn measure(
    rep: &mut Report,
    db: &TidalDb,
    data: &[f32],
    queries: &[Vec<f32>],
    nr: usize,
    index: VectorIndex,
    targets: bool,
) {
    let probes = index.probes;
    let nq = queries.len();
    for filtered in [false, true] {
        let (qps, got) = run(db, queries, filtered, nr);
        let r = recall(data, &queries[..nr], &got, filtered);
        let what = if filtered { "-filtered" } else { "" };
        let note = if filtered {
            ", bucket filter (10%)"
        } else {
            ""
        };
        rep.row(
            "W6-approx",
            &format!("tidal recall@10{note}"),
            r,
            "recall",
            &format!(
                "{nr} queries vs exact scan; probes {probes}, min_vectors {}",
                index.min_vectors
            ),
        );
        rep.row(
            "W6-approx",
            &format!("tidal search top-10{note}"),
            qps,
            "queries/s",
            &format!("{nq} queries, 1 thread; probes {probes}"),
        );
        if targets {
            rep.target(
                &format!("W6-approx-recall{what}"),
                r,
                0.95,
                "recall@10",
                Better::Higher,
            );
            rep.target(
                &format!("W6-approx-qps{what}"),
                qps,
                1_000.0,
                "queries/s",
                Better::Higher,
            );
        }
    }
}

pub fn w6_approx(rep: &mut Report, base: &Path, sizes: &Sizes) {
    let n = sizes.w6_approx_vectors;
    let nq = sizes.w6_approx_queries;
    let nr = sizes.w6_approx_recall_queries.min(nq);
    let mut mix = Mixture::new(61);
    let data = mix.points(n);

    // The build cost: the same vectors without the index, then with it.
    let plain = {
        let dir = tempdir(base);
        let exact = VectorIndex {
            min_vectors: u64::MAX,
            ..VectorIndex::default()
        };
        let db = open(dir.path(), exact);
        let (d, _) = ingest(&db, &data);
        let (_, cd) = timed(|| db.checkpoint().expect("checkpoint"));
        db.close().expect("close");
        let (db, od) = timed(|| open(dir.path(), exact));
        db.close().expect("close");
        rep.row(
            "W6-approx",
            "tidal reopen from snapshot, exact",
            od.as_secs_f64(),
            "s",
            &format!(
                "the same {n} vectors without the index; checkpoint {:.2} s",
                cd.as_secs_f64()
            ),
        );
        rate(n, d)
    };
    let dir = tempdir(base);
    let index = VectorIndex::default();
    let db = open(dir.path(), index);
    let rss0 = rss_bytes();
    let (d, slowest) = ingest(&db, &data);
    let rss1 = rss_bytes();
    rep.row(
        "W6-approx",
        "tidal load embeddings, indexed",
        rate(n, d),
        "vectors/s",
        &format!(
            "{n} x {DIM} mixture; without the index {plain:.0}/s; slowest 1,000-vector batch {:.0} ms (a training); RSS delta {:.0} B/vector (both read-view copies)",
            slowest.as_secs_f64() * 1e3,
            rss1.saturating_sub(rss0) as f64 / n as f64,
        ),
    );
    for (c, ids) in (0..n as u64).collect::<Vec<_>>().chunks(BATCH).enumerate() {
        let mut b = WriteBatch::new();
        for &id in ids {
            b = b.write_item(EntityId(id), None, &[("bucket", &format!("b{}", id % 10))]);
        }
        db.write(b)
            .unwrap_or_else(|e| panic!("metadata batch {c}: {e}"));
    }

    let qs = mix.points(nq);
    let queries: Vec<Vec<f32>> = qs.chunks(DIM).map(<[f32]>::to_vec).collect();
    measure(rep, &db, &data, &queries, nr, index, true);
    // A snapshot keeps the index: reopen reads it and answers alike.
    let (_, before) = run(&db, &queries, false, nr);
    let (_, cd) = timed(|| db.checkpoint().expect("checkpoint"));
    db.close().expect("close");
    let (db, od) = timed(|| open(dir.path(), index));
    let (_, after) = run(&db, &queries, false, nr);
    let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
    rep.row(
        "W6-approx",
        "tidal reopen from snapshot, indexed",
        od.as_secs_f64(),
        "s",
        &format!(
            "checkpoint {:.2} s; answers identical after reopen {same}/{nr}",
            cd.as_secs_f64()
        ),
    );
    db.close().expect("close");
    // The recall knob: the same snapshot reopened with other probes
    // (full mode only, to keep --quick short).
    let sweep: &[u32] = if n >= 1_000_000 { &[16, 64] } else { &[] };
    for &probes in sweep {
        let db = open(dir.path(), VectorIndex { probes, ..index });
        measure(
            rep,
            &db,
            &data,
            &queries,
            nr,
            VectorIndex { probes, ..index },
            false,
        );
        db.close().expect("close");
    }
    drop(dir);
    drop(data);

    // The worst case: uniformly random vectors, no target.
    let mut rng = Rng::new(67);
    let data = uniform(&mut rng, n);
    let dir = tempdir(base);
    let db = open(dir.path(), index);
    ingest(&db, &data);
    let qs = uniform(&mut rng, nr);
    let queries: Vec<Vec<f32>> = qs.chunks(DIM).map(<[f32]>::to_vec).collect();
    let (qps, got) = run(&db, &queries, false, nr);
    let r = recall(&data, &queries, &got, false);
    rep.row(
        "W6-approx",
        "tidal recall@10, uniform data",
        r,
        "recall",
        &format!("{n} x {DIM} uniform in [-1, 1); {nr} queries; {qps:.0} queries/s; no target: the adversarial case"),
    );
    db.close().expect("close");
}
