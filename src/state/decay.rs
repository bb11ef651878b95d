//! Deterministic powers of two for forward decay.
//!
//! Every decay factor in TidalDb is `2^(d / h)` for an integer time
//! difference `d` (ms) and a half-life `h` (ms). The value is split into a
//! whole number of half-lives `q = floor(d / h)`, applied as an exact power
//! of two, and a fraction `2^(r / h)` with `0 <= r < h`, which lies in
//! `[1, 2)`. Splitting in integers first is what keeps precision over
//! timestamps spanning thousands of half-lives: `(d as f64) / h` would carry
//! an absolute error growing with `|d / h|`, which `exp2` turns into a
//! relative error.
//!
//! The fraction is computed here with `+`, `*` and `/` only, which IEEE 754
//! defines bit for bit, instead of the platform `exp2`: libm versions differ
//! in the last bit, and a follower replaying the log on another host must
//! hold the same bits as its leader.

use std::f64::consts::LN_2;

/// The largest step of a power-of-two scaling; `2^±1000` is a normal f64.
const STEP_EXP: i64 = 1000;

/// Beyond this many doublings any finite non-zero f64 has left the range
/// (f64 spans about 2^-1074 to 2^1024), so exponents are clamped to it.
const CLAMP_EXP: i64 = 2200;

/// A decay factor `2^(d / h)` split into an exact power of two and a
/// fraction in `[1, 2)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pow2 {
    /// Whole half-lives, applied exactly by [`scale_pow2`].
    pub(crate) exp: i64,
    /// `2^(r / h)` for the remainder `r` in `[0, h)`.
    pub(crate) frac: f64,
}

/// Factors each thread remembers: one per signal type of a blend or of a
/// mixed batch, for the usual few types.
const FACTOR_CACHE: usize = 4;

/// The factors a thread computed last (see [`Pow2::ratio_cached`]). An
/// entry that was never filled holds a half-life of 0, which no call
/// passes with a diff of 0 and a factor other than `ratio(0, 0)`'s: it is
/// filled with exactly that.
struct FactorCache {
    entries: [(i128, u64, Pow2); FACTOR_CACHE],
    next: usize,
}

thread_local! {
    static FACTORS: std::cell::RefCell<FactorCache> = const {
        std::cell::RefCell::new(FactorCache {
            entries: [(0, 0, Pow2 { exp: 0, frac: 1.0 }); FACTOR_CACHE],
            next: 0,
        })
    };
}

impl Pow2 {
    /// `2^(diff_ms / half_life_ms)`; a zero half-life is treated as 1 ms so
    /// that no input divides by zero (configuration refuses it anyway).
    pub(crate) fn ratio(diff_ms: i128, half_life_ms: u64) -> Pow2 {
        // Every read computes one; i128 division is a library call several
        // times slower than the hardware's, so take the i64 path whenever
        // the operands fit (always, for timestamps before the year 292e6).
        // The quotient and remainder are the same integers either way.
        if let (Ok(d), Ok(h)) = (i64::try_from(diff_ms), i64::try_from(half_life_ms.max(1))) {
            let q = d.div_euclid(h);
            let r = d.rem_euclid(h);
            return Pow2 {
                exp: q.clamp(-CLAMP_EXP, CLAMP_EXP),
                frac: exp2_unit(r as f64 / h as f64),
            };
        }
        Pow2::ratio_wide(diff_ms, half_life_ms)
    }

    /// [`Pow2::ratio`], remembered: each thread keeps the last few factors
    /// it computed, keyed by both arguments, so the same bits come back.
    /// A ranking request reads many entities at one `at`, and a batch's
    /// signals share a few timestamps, so most calls are a lookup instead
    /// of a division and fourteen dependent multiplications.
    pub(crate) fn ratio_cached(diff_ms: i128, half_life_ms: u64) -> Pow2 {
        FACTORS.with_borrow_mut(|c| {
            if let Some(&(_, _, f)) = c
                .entries
                .iter()
                .find(|(d, h, _)| *d == diff_ms && *h == half_life_ms)
            {
                return f;
            }
            let f = Pow2::ratio(diff_ms, half_life_ms);
            c.entries[c.next] = (diff_ms, half_life_ms, f);
            c.next = (c.next + 1) % FACTOR_CACHE;
            f
        })
    }

    /// [`Pow2::ratio`] in i128 arithmetic, for operands beyond i64.
    fn ratio_wide(diff_ms: i128, half_life_ms: u64) -> Pow2 {
        let h = i128::from(half_life_ms.max(1));
        let q = diff_ms.div_euclid(h);
        let r = diff_ms.rem_euclid(h);
        let exp =
            i64::try_from(q.clamp(-i128::from(CLAMP_EXP), i128::from(CLAMP_EXP))).unwrap_or(0);
        // r < h <= u64::MAX; both convert with at most one rounding each, and
        // the quotient lies in [0, 1].
        let x = r as f64 / h as f64;
        Pow2 {
            exp,
            frac: exp2_unit(x),
        }
    }

    /// `x * 2^(d / h)`, finite (saturating at `±f64::MAX`) and monotone
    /// non-decreasing in `x`, so that ordering by `x` is ordering by the
    /// result.
    pub(crate) fn apply(self, x: f64) -> f64 {
        scale_pow2(x * self.frac, self.exp)
    }
}

/// `2^x` for `x` in `[0, 1]`, with a relative error of a few ulps, using
/// only correctly rounded operations (see the module docs).
///
/// `2^x = e^y` with `y = x ln 2`. `e^(y / 256) - 1` comes from a short
/// Taylor series (the first omitted term is below 1e-19 relative), and
/// squaring `1 + u` eight times is done on `u` itself, `u' = u (2 + u)`,
/// which keeps the relative error of `u` at a few ulps instead of losing the
/// small part against the 1.
pub(crate) fn exp2_unit(x: f64) -> f64 {
    let y = x * LN_2 / 256.0;
    let mut u = y
        * (1.0
            + y * (1.0 / 2.0
                + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))));
    for _ in 0..8 {
        u *= 2.0 + u;
    }
    1.0 + u
}

/// `2^e` for `e` in `[-1022, 1023]` (a normal f64, built from its bits).
fn pow2i(e: i64) -> f64 {
    let biased = (e.clamp(-1022, 1023) + 1023) as u64;
    f64::from_bits(biased << 52)
}

/// `x * 2^e`: exact while the result is a normal f64; rounds like any
/// multiplication when it becomes subnormal; `0.0` below that; saturates at
/// `±f64::MAX` instead of reaching infinity. Never NaN for a non-NaN `x`.
pub(crate) fn scale_pow2(x: f64, e: i64) -> f64 {
    if x == 0.0 || x.is_nan() {
        return 0.0;
    }
    let mut e = e.clamp(-CLAMP_EXP, CLAMP_EXP);
    let mut v = x;
    while e > STEP_EXP {
        v *= pow2i(STEP_EXP);
        e -= STEP_EXP;
    }
    while e < -STEP_EXP {
        v *= pow2i(-STEP_EXP);
        e += STEP_EXP;
    }
    saturate(v * pow2i(e))
}

/// Replaces infinities by `±f64::MAX` and NaN by 0, and `-0.0` by `0.0`, so
/// that stored and returned values are finite and canonical.
pub(crate) fn saturate(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        // Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
        x.clamp(-f64::MAX, f64::MAX) + 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_unit_matches_std_within_a_few_ulps() {
        for i in 0..=10_000u32 {
            let x = f64::from(i) / 10_000.0;
            let ours = exp2_unit(x);
            let std = x.exp2();
            assert!(
                ((ours - std) / std).abs() < 2e-15,
                "x={x} ours={ours} std={std}"
            );
        }
        assert_eq!(exp2_unit(0.0), 1.0);
    }

    #[test]
    fn ratio_splits_whole_half_lives_exactly() {
        let p = Pow2::ratio(-3000, 1000);
        assert_eq!(p.exp, -3);
        assert_eq!(p.frac, 1.0);
        assert_eq!(p.apply(8.0), 1.0);
        let p = Pow2::ratio(-1500, 1000);
        assert_eq!(p.exp, -2);
        assert!((p.apply(1.0) - 2f64.powf(-1.5)).abs() < 1e-16);
        // Far beyond the range: finite, never NaN.
        assert_eq!(Pow2::ratio(i128::from(u64::MAX), 1).apply(1.0), f64::MAX);
        assert_eq!(Pow2::ratio(-i128::from(u64::MAX), 1).apply(1.0), 0.0);
        assert_eq!(Pow2::ratio(1, 0).apply(0.0), 0.0);
    }

    proptest::proptest! {
        /// The i64 fast path gives the same bits as the i128 one.
        #[test]
        fn ratio_fast_path_equals_the_wide_one(
            d in proptest::prelude::any::<i64>(),
            h in proptest::prelude::any::<u64>(),
            small in 1u64..100_000_000,
        ) {
            for h in [h, small, small, h] {
                // Computed, then remembered: the same bits either way.
                let cached = Pow2::ratio_cached(i128::from(d), h);
                proptest::prop_assert_eq!(cached, Pow2::ratio(i128::from(d), h));
                let fast = Pow2::ratio(i128::from(d), h);
                let wide = Pow2::ratio_wide(i128::from(d), h);
                proptest::prop_assert_eq!(fast.exp, wide.exp);
                proptest::prop_assert_eq!(fast.frac.to_bits(), wide.frac.to_bits());
            }
        }
    }

    #[test]
    fn the_factor_cache_answers_each_key_with_its_own_factor() {
        // More keys than entries, revisited: every answer is its key's.
        for round in 0..3 {
            for k in 0..(3 * FACTOR_CACHE as i128) {
                let (d, h) = (k * 977 - 5_000, 1_000 + (k as u64 % 3));
                assert_eq!(
                    Pow2::ratio_cached(d, h),
                    Pow2::ratio(d, h),
                    "round {round} key {k}"
                );
            }
        }
        assert_eq!(Pow2::ratio_cached(0, 0), Pow2::ratio(0, 0));
    }

    #[test]
    fn scale_pow2_is_exact_saturating_and_canonical() {
        assert_eq!(scale_pow2(3.0, 10), 3072.0);
        assert_eq!(scale_pow2(-3.0, -1), -1.5);
        assert_eq!(scale_pow2(1.0, 1500), f64::MAX);
        assert_eq!(scale_pow2(-1.0, 1500), -f64::MAX);
        assert_eq!(scale_pow2(-1.0, -1500).to_bits(), 0.0f64.to_bits());
        assert_eq!(scale_pow2(1.0, -1074), f64::from_bits(1));
        assert_eq!(
            scale_pow2(f64::MAX, -1023 - 1000),
            f64::MAX / 2f64.powi(1023) / 2f64.powi(1000)
        );
    }
}
