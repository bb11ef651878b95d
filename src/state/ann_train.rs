//! Fitting the two-level coarse quantizer of [`super::ann`]: spherical
//! k-means on unit vectors, deterministic.
//!
//! The sample is every `stride`-th stored vector in (list, slot) order,
//! about [`SAMPLE_PER_LIST`] per list wanted. Seeding is k-means++ driven
//! by a SplitMix64 from a constant seed; a round assigns each point to its
//! best centroid (max dot, ties to the lower index) and moves each centroid
//! to the normalized f64 sum of its points, in sample order; an empty
//! cluster keeps its centroid. The groups are fitted first, then each
//! group's own sample points get fine centroids in proportion to their
//! share of the sample. Everything runs on one thread in a fixed order, so
//! the same stored vectors give the same centroids bit for bit.

use super::ann::{List, Quantizer};
use super::vectors::dot;
use crate::splitmix::SplitMix64;

/// Lloyd rounds per k-means (after seeding).
const ROUNDS: usize = 8;
/// Sample points wanted per fine centroid.
pub const SAMPLE_PER_LIST: usize = 40;
/// The fixed seed of k-means++ ("tidal_an").
const SEED: u64 = 0x7469_6461_6c5f_616e;

/// Uniform draws for k-means++ seeding.
impl SplitMix64 {
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the best centroid for `v` (max dot, ties to the lower).
pub(super) fn nearest(centroids: &[f32], v: &[f32], d: usize) -> usize {
    let mut best = (f32::NEG_INFINITY, 0);
    for (i, c) in centroids.chunks_exact(d).enumerate() {
        let s = dot(v, c);
        if s > best.0 {
            best = (s, i);
        }
    }
    best.1
}

/// Every `stride`-th of the `n` stored vectors, about `want` of them.
fn sample(lists: &[List], n: usize, d: usize, want: usize) -> Vec<f32> {
    let stride = (n / want.max(1)).max(1);
    let mut out = Vec::with_capacity((n / stride + 1) * d);
    let mut i = 0usize;
    for list in lists {
        for v in list.data.chunks_exact(d) {
            if i.is_multiple_of(stride) {
                out.extend_from_slice(v);
            }
            i += 1;
        }
    }
    out
}

/// Spherical k-means of the unit vectors `points` into at most `k`
/// (at least one) unit centroids. `points` is not empty.
fn kmeans(points: &[f32], d: usize, k: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let n = points.len() / d;
    let k = k.clamp(1, n.max(1));
    let mut cent: Vec<f32> = Vec::with_capacity(k * d);
    let first = (rng.next_u64() % n as u64) as usize;
    cent.extend_from_slice(&points[first * d..(first + 1) * d]);
    // k-means++: the next seed is a point drawn with probability
    // proportional to its distance (1 - cos) to the nearest seed so far.
    let mut dist: Vec<f64> = points
        .chunks_exact(d)
        .map(|p| (1.0 - f64::from(dot(p, &cent[..d]))).max(0.0))
        .collect();
    while cent.len() < k * d {
        let total: f64 = dist.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.unit() * total;
            let mut pick = n - 1;
            for (i, &w) in dist.iter().enumerate() {
                if t < w {
                    pick = i;
                    break;
                }
                t -= w;
            }
            pick
        } else {
            // Every point sits on a seed already: duplicates.
            (cent.len() / d) % n
        };
        let c: Vec<f32> = points[pick * d..(pick + 1) * d].to_vec();
        for (w, p) in dist.iter_mut().zip(points.chunks_exact(d)) {
            *w = w.min((1.0 - f64::from(dot(p, &c))).max(0.0));
        }
        cent.extend_from_slice(&c);
    }
    let mut assign = vec![usize::MAX; n];
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0usize; k];
    for _ in 0..ROUNDS {
        let mut changed = false;
        for (a, p) in assign.iter_mut().zip(points.chunks_exact(d)) {
            let best = nearest(&cent, p, d);
            changed |= best != *a;
            *a = best;
        }
        if !changed {
            break;
        }
        sums.fill(0.0);
        counts.fill(0);
        for (&a, p) in assign.iter().zip(points.chunks_exact(d)) {
            counts[a] += 1;
            for (s, &x) in sums[a * d..(a + 1) * d].iter_mut().zip(p) {
                *s += f64::from(x);
            }
        }
        for (c, (sum, &count)) in cent
            .chunks_exact_mut(d)
            .zip(sums.chunks_exact(d).zip(&counts))
        {
            let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
            if count > 0 && norm > 0.0 && norm.is_finite() {
                for (x, s) in c.iter_mut().zip(sum) {
                    *x = (s / norm) as f32;
                }
            }
        }
    }
    cent
}

/// Fits a quantizer of about `nlist` lists to the `n` vectors in `lists`
/// (`n` > 0, `d` > 0). `trained_at` is set to `n`.
pub(super) fn train(lists: &[List], n: usize, d: usize, nlist: usize) -> Quantizer {
    let pts = sample(lists, n, d, nlist.saturating_mul(SAMPLE_PER_LIST));
    let m = pts.len() / d;
    let mut rng = SplitMix64(SEED);
    let g = ((nlist as f64).sqrt().ceil() as usize).clamp(1, m.max(1));
    let groups = kmeans(&pts, d, g, &mut rng);
    let g = groups.len() / d;
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); g];
    for p in pts.chunks_exact(d) {
        members[nearest(&groups, p, d)].extend_from_slice(p);
    }
    let mut fine = Vec::with_capacity((nlist + g) * d);
    let mut group_ends = Vec::with_capacity(g);
    for (gi, mem) in members.iter().enumerate() {
        let count = mem.len() / d;
        if count == 0 {
            fine.extend_from_slice(&groups[gi * d..(gi + 1) * d]);
        } else {
            let want = ((nlist * count) as f64 / m as f64).round() as usize;
            fine.extend(kmeans(mem, d, want.clamp(1, count), &mut rng));
        }
        group_ends.push((fine.len() / d) as u32);
    }
    Quantizer {
        trained_at: n as u64,
        groups,
        group_ends,
        fine,
    }
}
