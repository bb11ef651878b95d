//! A fast seeded hasher for maps keyed by `EntityId`.
//!
//! std's default SipHash-1-3 costs about as much as the rest of a signal's
//! apply path. Entity ids are single `u64`s, for which a folded 128-bit
//! multiply with a per-map random seed (the construction of `foldhash` and
//! `ahash`'s fallback) mixes well and resists inputs chosen to collide
//! without knowing the seed. Nothing that is stored or returned depends on
//! hash order, so the random seed does not break determinism between
//! replicas.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// An odd constant from the digits of pi, as in foldhash.
const MUL: u64 = 0x243f_6a88_85a3_08d3;

/// Builds [`EntityHasher`]s sharing one random seed.
#[derive(Clone, Debug)]
pub(crate) struct EntityHashState {
    seed: u64,
}

impl Default for EntityHashState {
    fn default() -> Self {
        // RandomState is seeded from the OS once per thread and varied per
        // instance; hashing a constant through it yields a random seed.
        EntityHashState {
            seed: RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }
}

impl BuildHasher for EntityHashState {
    type Hasher = EntityHasher;
    fn build_hasher(&self) -> EntityHasher {
        EntityHasher { state: self.seed }
    }
}

/// Folded-multiply hasher; fast for `u64` keys, correct for any bytes.
#[derive(Clone, Debug)]
pub(crate) struct EntityHasher {
    state: u64,
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hasher for EntityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.state = folded_multiply(self.state ^ v, MUL);
    }

    fn finish(&self) -> u64 {
        // One more round so the high bits hashbrown uses for its control
        // bytes depend on every input bit.
        folded_multiply(self.state, MUL ^ self.state.rotate_left(23))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        let s = EntityHashState::default();
        let top_bits: HashSet<u64> = (0..4096u64).map(|i| s.hash_one(i) >> 52).collect();
        // 4096 ids into 4096 top-12-bit buckets: a good hash fills ~63%.
        assert!(top_bits.len() > 2300, "{}", top_bits.len());
        let low_bits: HashSet<u64> = (0..4096u64).map(|i| s.hash_one(i) & 4095).collect();
        assert!(low_bits.len() > 2300, "{}", low_bits.len());
    }
}
