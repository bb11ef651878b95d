//! Routing entities (and users) to shards with jump consistent hashing
//! (Lamping and Veach, 2014): stable, even, and moving only `1/n` of the
//! keys when a shard is added.

use crate::types::ShardId;

/// Routes ids to shards.
///
/// ```
/// use tidal::{ShardId, ShardRouter};
/// let r = ShardRouter::new(8);
/// let s = r.route(12_345);
/// assert!(s.0 < 8);
/// assert_eq!(ShardRouter::new(1).route(12_345), ShardId(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardRouter {
    shards: u32,
}

impl ShardRouter {
    /// A router over `shards` shards (at least one; zero is treated as one).
    pub fn new(shards: u32) -> ShardRouter {
        ShardRouter {
            shards: shards.max(1),
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The shard of an id (an `EntityId` or a `UserId` value).
    pub fn route(&self, id: u64) -> ShardId {
        ShardId(jump_consistent_hash(id, self.shards))
    }
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`.
fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / r)) as i64;
    }
    b.max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_shard_moves_about_one_nth_of_the_keys_and_only_to_the_new_shard() {
        let (a, b) = (ShardRouter::new(10), ShardRouter::new(11));
        let mut moved = 0;
        for k in 0..100_000u64 {
            let (x, y) = (a.route(k), b.route(k));
            if x != y {
                assert_eq!(y, ShardId(10), "a key moved between old shards");
                moved += 1;
            }
        }
        // Expected 100_000 / 11 = 9_091.
        assert!((8_000..10_200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn keys_spread_evenly() {
        let r = ShardRouter::new(4);
        let mut counts = [0u32; 4];
        for k in 0..40_000u64 {
            counts[r.route(k).0 as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn zero_shards_means_one() {
        assert_eq!(ShardRouter::new(0).shard_count(), 1);
        assert_eq!(ShardRouter::new(0).route(u64::MAX), ShardId(0));
    }
}
