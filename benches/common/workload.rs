//! The seeded id streams the benches and the compare harness share:
//! a xorshift64* generator and a Zipf sampler over scrambled ids.

/// xorshift64*: deterministic, allocation-free, good enough for ids.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Zipf(s) over `0..n` by inversion of a precomputed CDF (n floats).
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// Rank 0 is the most frequent; ranks are scrambled into ids so hot ids
    /// are spread over the id space.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&c| c < u) as u64;
        scramble(rank.min(self.cdf.len() as u64 - 1), self.cdf.len() as u64)
    }
}

/// A bijection on `0..n` for n = 1M-ish: multiply by an odd constant mod n
/// is a bijection when gcd(c, n) = 1; 1_000_003 is prime.
pub fn scramble(x: u64, n: u64) -> u64 {
    (x.wrapping_mul(1_000_003)) % n
}
