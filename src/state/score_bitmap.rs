//! The three-level bitmap of non-empty buckets of a score table.
//!
//! One bit per bucket (65,536 bits in 1,024 words), one bit per non-zero
//! word of that level (16 words), and one bit per non-zero word of the
//! second level (one word), so the next non-empty bucket in either direction
//! is found in at most three word scans. It is small
//! (8 KiB), so a clone of the state copies it whole.

use super::score_table::BUCKETS;

/// Which buckets are non-empty, three levels deep so that the next one in
/// either direction is found in at most three word scans.
#[derive(Clone)]
pub(super) struct Bitmap {
    /// One bit per bucket.
    pub(super) l0: Vec<u64>,
    /// One bit per non-zero word of `l0`.
    pub(super) l1: [u64; 16],
    /// One bit per non-zero word of `l1`.
    pub(super) l2: u64,
}

impl Bitmap {
    pub(super) fn new() -> Bitmap {
        Bitmap {
            l0: vec![0; BUCKETS / 64],
            l1: [0; 16],
            l2: 0,
        }
    }

    pub(super) fn set(&mut self, b: usize) {
        self.l0[b >> 6] |= 1 << (b & 63);
        self.l1[b >> 12] |= 1 << ((b >> 6) & 63);
        self.l2 |= 1 << (b >> 12);
    }

    pub(super) fn clear(&mut self, b: usize) {
        let w0 = b >> 6;
        self.l0[w0] &= !(1 << (b & 63));
        if self.l0[w0] == 0 {
            let w1 = w0 >> 6;
            self.l1[w1] &= !(1 << (w0 & 63));
            if self.l1[w1] == 0 {
                self.l2 &= !(1 << w1);
            }
        }
    }

    /// The highest non-empty bucket `<= b`.
    pub(super) fn highest_at_or_below(&self, b: usize) -> Option<usize> {
        let w0 = b >> 6;
        let m = self.l0[w0] & (u64::MAX >> (63 - (b & 63)));
        if m != 0 {
            return Some(w0 * 64 + 63 - m.leading_zeros() as usize);
        }
        let w1 = w0 >> 6;
        let m = self.l1[w1] & ((1u64 << (w0 & 63)) - 1);
        let word = if m != 0 {
            w1 * 64 + 63 - m.leading_zeros() as usize
        } else {
            let m = self.l2 & ((1u64 << w1) - 1);
            if m == 0 {
                return None;
            }
            let top = 63 - m.leading_zeros() as usize;
            top * 64 + 63 - self.l1[top].leading_zeros() as usize
        };
        Some(word * 64 + 63 - self.l0[word].leading_zeros() as usize)
    }

    /// The lowest non-empty bucket `>= b`.
    pub(super) fn lowest_at_or_above(&self, b: usize) -> Option<usize> {
        let w0 = b >> 6;
        let m = self.l0[w0] & (u64::MAX << (b & 63));
        if m != 0 {
            return Some(w0 * 64 + m.trailing_zeros() as usize);
        }
        let w1 = w0 >> 6;
        let bit = w0 & 63;
        let m = if bit == 63 {
            0
        } else {
            self.l1[w1] & (u64::MAX << (bit + 1))
        };
        let word = if m != 0 {
            w1 * 64 + m.trailing_zeros() as usize
        } else {
            // w1 < 16, so the shift is in range.
            let m = self.l2 & (u64::MAX << (w1 + 1));
            if m == 0 {
                return None;
            }
            let low = m.trailing_zeros() as usize;
            low * 64 + self.l1[low].trailing_zeros() as usize
        };
        Some(word * 64 + self.l0[word].trailing_zeros() as usize)
    }
}
