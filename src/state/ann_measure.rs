//! A measurement of the filtered approximate search (ignored in normal
//! runs): 1M x 128 (env `ANN_N`), a seeded mixture of 1,000 Gaussians with
//! noise as long as the centre (the shape of `examples/compare/ann.rs`), or
//! uniform random vectors with `ANN_UNIFORM=1`; a 10% filter through a hash
//! map of strings (the cost of an entity lookup); recall@10 against the
//! exact scan, queries/s and lists scanned per widening rule.
//! Run with `cargo test --release --lib state::ann_measure -- --ignored --nocapture`.
use std::collections::HashMap;
use std::time::Instant;

use super::vectors::{VectorStore, normalize};
use crate::splitmix::SplitMix64;
use crate::types::{EntityId, EntityKind};

const D: usize = 128;

fn normal(r: &mut SplitMix64) -> f64 {
    let mut unit = || ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u, v) = (unit(), unit());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[test]
#[ignore = "a measurement"]
fn ann_measure() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("ANN_N", 1_000_000);
    let uniform = env("ANN_UNIFORM", 0) == 1;
    let mut r = SplitMix64(61);
    let s = 1.0 / (D as f64).sqrt();
    let centres: Vec<f64> = (0..1_000 * D).map(|_| normal(&mut r) * s).collect();
    let point = |r: &mut SplitMix64| -> Vec<f32> {
        let v: Vec<f32> = if uniform {
            (0..D).map(|_| (normal(r) * s) as f32).collect()
        } else {
            let c = (r.next_u64() % 1_000) as usize;
            (0..D)
                .map(|i| (centres[c * D + i] + normal(r) * s) as f32)
                .collect()
        };
        normalize(&v).unwrap_or_else(|| vec![1.0; D])
    };
    let mut store = VectorStore::new(D, Default::default());
    let t = Instant::now();
    for id in 0..n as u64 {
        store.set(EntityKind::Item, EntityId(id), &point(&mut r));
    }
    eprintln!(
        "loaded {n} in {:.1} s (uniform: {uniform})",
        t.elapsed().as_secs_f64()
    );
    let meta: HashMap<EntityId, String> = (0..n as u64)
        .map(|i| (EntityId(i), format!("b{}", i % 10)))
        .collect();
    let meta1: HashMap<EntityId, String> = (0..n as u64)
        .map(|i| (EntityId(i), format!("c{}", i % 100)))
        .collect();
    let keep = |id: EntityId, every: u64| match every {
        1 => true,
        10 => meta.get(&id).is_some_and(|b| b == "b3"),
        _ => meta1.get(&id).is_some_and(|b| b == "c3"),
    };
    let queries: Vec<Vec<f32>> = (0..1_000).map(|_| point(&mut r)).collect();
    let nr = 200;
    let set = store.set_of(EntityKind::Item);
    let exact: Vec<Vec<Vec<(EntityId, f64)>>> = queries[..nr]
        .iter()
        .map(|q| {
            [1, 10, 100]
                .map(|every| set.top_k(q, 10, usize::MAX, D, &mut |id| keep(id, every)))
                .to_vec()
        })
        .collect();
    // (name, widening cap, 1 in `every` ids accepted)
    let rules = [
        ("none", 1, 1),
        ("10% cap 1", 1, 10),
        ("10% cap 2", 2, 10),
        ("10% cap 4", 4, 10),
        ("1% cap 1", 1, 100),
        ("1% cap 4", 4, 100),
    ];
    let probes: Vec<usize> = std::env::var("ANN_PROBES")
        .unwrap_or_else(|_| "32".into())
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    for &p in &probes {
        for (name, cap, every) in rules {
            {
                let (mut lists, mut asked) = (0usize, 0usize);
                let t = Instant::now();
                let mut got = Vec::new();
                for (i, q) in queries.iter().enumerate() {
                    let (hits, l) = set.top_k_with(q, 10, p, D, cap, &mut |id| {
                        asked += 1;
                        keep(id, every)
                    });
                    lists += l;
                    if i < nr {
                        got.push(hits);
                    }
                }
                let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
                let (mut hit, mut want) = (0usize, 0usize);
                for (g, e) in got.iter().zip(&exact) {
                    let e = &e[[1, 10, 100].iter().position(|&x| x == every).unwrap_or(0)];
                    want += e.len();
                    hit += e.iter().filter(|x| g.iter().any(|y| y.0 == x.0)).count();
                }
                eprintln!(
                    "probes {p:>3} {name:<10} recall {:.3}  {qps:>6.0} q/s  {:.1} lists, {:.0} asked",
                    hit as f64 / want as f64,
                    lists as f64 / queries.len() as f64,
                    asked as f64 / queries.len() as f64,
                );
            }
        }
    }
}
