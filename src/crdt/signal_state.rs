//! The mergeable score and count of one entity for one signal type.
//!
//! # What it holds
//!
//! A [`CrdtSignalState`] keeps the forward-decayed mass of the signals it
//! has seen (see `state/signals.rs`: a signal of weight `w` at time `t`
//! adds `w * 2^((t - L)/h)` relative to the landmark `L`), split by
//! lineage: the *hot* lineage (the log the state is replayed from, under
//! [`ContributionKey::HOT`]) and one [`Contribution`] per
//! [`ContributionKey`] `(origin epoch, origin node)` of a diverged suffix
//! merged in by reconciliation. Each lineage holds four fields that only
//! grow as its signals are added: positive mass, negative mass (the
//! magnitude of the negative weights), and the number of positive and of
//! negative signals.
//!
//! # Why a maximum merges exactly once
//!
//! A key is written by a single lineage, in order, so two states holding
//! the same key hold prefixes of one sequence of signals, and since every
//! field only grows along that sequence (additions of non-negative
//! magnitudes, rounded monotonically), the longer prefix is at least as
//! large in every field. The pointwise maximum therefore keeps the longer
//! prefix: receiving the same contribution twice, a stale copy, or a
//! contribution and its extension counts each signal once. The maximum is
//! commutative, associative and idempotent. This is why the hot lineage
//! also keeps positive and negative mass apart instead of one signed sum:
//! a skip makes a signed sum smaller along its own lineage, and a maximum
//! over it would keep the stale value.
//!
//! Two writers must never add to one key independently: the maximum would
//! keep one and lose the other. Keys are origin `(epoch, node)` pairs, and a
//! node takes the writes of an epoch in one log, so this holds by
//! construction.
//!
//! # Landmarks, bit for bit
//!
//! The landmark moves on the fixed grid of multiples of the period
//! `P = landmark_half_lives * h`, as in `SignalStore`: [`advance_landmark`]
//! jumps by the whole periods elapsed and divides every mass by
//! `2^(landmark_half_lives * periods)`. A merge first moves both sides to
//! the later landmark, then takes the maximum.
//!
//! For merging to be associative bit for bit, moving by `a` periods and
//! then `b` must give the same bits as moving by `a + b` at once, or two
//! replicas that saw different landmark histories would disagree. Dividing
//! by a power of two is exact while the result is a normal f64, but once it
//! becomes subnormal each step rounds, and two roundings can differ from
//! one. So masses are *flushed*: any stored mass below
//! `f64::MIN_POSITIVE` (about `2.2e-308`) is 0, and rescaling subtracts
//! from the exponent field directly, giving 0 whenever the exact result is
//! not normal. Rescaling is then exact-or-zero, depends only on the total
//! shift, and is monotone; landmarks only move forward, so scaling only
//! goes down and nothing is ever scaled back up from a flushed 0. Masses
//! above `f64::MAX` saturate there; nothing stored or returned is ever NaN
//! or infinite, and there is no `-0.0`, so equal states have equal bits and
//! equal encodings.
//!
//! # Precision
//!
//! Each signal's factor is computed as in `SignalStore` (whole half-lives
//! as an exact power of two, the fraction with correctly rounded operations
//! only), so every host computes the same bits. [`CrdtSignalState::score`]
//! sums positive and negative masses over the lineages in key order (hot
//! first), subtracts, and applies the read factor. Its error is at most
//! about `(n + 8) * 2^-53 * sum |w_i| * 2^(-(t - t_i)/h)` for `n` signals,
//! so within `1e-9` of that absolute mass up to about a million signals
//! per state, as long as the masses involved stay normal: a signal whose
//! mass relative to the landmark falls below `f64::MIN_POSITIVE` (about
//! 1000 half-lives older than the landmark) counts 0.
//!
//! [`advance_landmark`]: CrdtSignalState::advance_landmark

use std::collections::BTreeMap;

use crate::crdt::key::ContributionKey;
use crate::crdt::pn_counter::PNCounter;
use crate::error::{Result, TidalError};
use crate::state::decay::{Pow2, saturate};
use crate::state::signals::CATCH_UP_HALF_LIVES;
use crate::types::Timestamp;

/// The largest `landmark_half_lives` accepted (as `Config` does).
pub const MAX_LANDMARK_HALF_LIVES: u32 = 512;

/// The canonical stored form of a non-negative mass: below
/// `f64::MIN_POSITIVE` (subnormal, zero, negative, NaN) it is `0.0`, above
/// `f64::MAX` it is `f64::MAX`. Monotone non-decreasing.
pub(crate) fn flush(x: f64) -> f64 {
    if x >= f64::MIN_POSITIVE {
        x.min(f64::MAX)
    } else {
        0.0
    }
}

/// `x * 2^-shift` for a canonical mass `x`: exact when the result is a
/// normal f64, else `0.0`. Works on the exponent field, so there is no
/// rounding at all and `scale_down(scale_down(x, a), b) == scale_down(x, a +
/// b)` for every `a` and `b` (see the module docs).
pub(crate) fn scale_down(x: f64, shift: u64) -> f64 {
    if shift == 0 {
        return x;
    }
    let bits = x.to_bits();
    let exponent = (bits >> 52) & 0x7ff;
    // A canonical mass is 0.0 (exponent 0) or normal and positive; the
    // result's exponent field `exponent - shift` must stay at least 1.
    if exponent <= shift {
        0.0
    } else {
        f64::from_bits(bits - (shift << 52))
    }
}

/// The mass and counts of one lineage; every field only grows as the
/// lineage's signals are added.
///
/// ```
/// use tidal::{ContributionKey, CrdtSignalState, Epoch, NodeId, Timestamp};
/// let key = ContributionKey::new(NodeId(2), Epoch(3));
/// let mut s = CrdtSignalState::new(1_000, 4)?;
/// s.add(key, 2.0, Timestamp(1_000))?; // one half-life after the landmark
/// s.add(key, -0.5, Timestamp(0))?;
/// let c = s.contribution(key).expect("touched");
/// assert_eq!((c.positive_mass(), c.negative_mass()), (4.0, 0.5));
/// assert_eq!((c.positive_count(), c.negative_count()), (1, 1));
/// # Ok::<(), tidal::TidalError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Contribution {
    pub(crate) positive_mass: f64,
    pub(crate) negative_mass: f64,
    pub(crate) positive_count: u64,
    pub(crate) negative_count: u64,
}

impl Contribution {
    /// Sum of `w * 2^((t - L)/h)` over the positive weights, relative to
    /// the state's landmark `L`.
    pub fn positive_mass(&self) -> f64 {
        self.positive_mass
    }

    /// Sum of `|w| * 2^((t - L)/h)` over the negative weights (a
    /// magnitude, never negative).
    pub fn negative_mass(&self) -> f64 {
        self.negative_mass
    }

    /// Number of signals with a positive weight.
    pub fn positive_count(&self) -> u64 {
        self.positive_count
    }

    /// Number of signals with a negative weight.
    pub fn negative_count(&self) -> u64 {
        self.negative_count
    }

    /// `positive_mass - negative_mass`: the lineage's `S`.
    pub fn net_mass(&self) -> f64 {
        saturate(self.positive_mass - self.negative_mass)
    }

    /// `positive_count - negative_count`, clamped to the `i64` range.
    pub fn net_count(&self) -> i64 {
        clamp_i64(i128::from(self.positive_count) - i128::from(self.negative_count))
    }

    /// Adds one signal of `weight` whose decayed magnitude is `magnitude`.
    fn record(&mut self, weight: f64, magnitude: f64) {
        if weight > 0.0 {
            self.positive_mass = flush(self.positive_mass + magnitude);
            self.positive_count = self.positive_count.saturating_add(1);
        } else if weight < 0.0 {
            self.negative_mass = flush(self.negative_mass + magnitude);
            self.negative_count = self.negative_count.saturating_add(1);
        }
    }

    /// Moves the masses `shift` half-lives forward (see [`scale_down`]).
    fn rescale(&mut self, shift: u64) {
        self.positive_mass = scale_down(self.positive_mass, shift);
        self.negative_mass = scale_down(self.negative_mass, shift);
    }

    /// The pointwise maximum with `other` moved `shift` half-lives forward.
    fn join(&mut self, other: &Contribution, shift: u64) {
        self.positive_mass = self
            .positive_mass
            .max(scale_down(other.positive_mass, shift));
        self.negative_mass = self
            .negative_mass
            .max(scale_down(other.negative_mass, shift));
        self.positive_count = self.positive_count.max(other.positive_count);
        self.negative_count = self.negative_count.max(other.negative_count);
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// One entity's decayed score and count of one signal type, mergeable
/// exactly once: a hot lineage plus [`Contribution`]s keyed by
/// [`ContributionKey`], merged by pointwise maximum after aligning
/// landmarks. See the [module docs](self) for why the maximum is
/// exactly-once, how landmark moves stay bit-exact, and the precision.
///
/// ```
/// use tidal::{ContributionKey, CrdtSignalState, Epoch, NodeId, Timestamp};
/// let hour_ms = 3_600_000;
/// let old_leader = ContributionKey::new(NodeId(1), Epoch(4));
/// let mut leader = CrdtSignalState::new(hour_ms, 64)?;
/// leader.add_hot(1.0, Timestamp(0))?;
/// // A suffix the old leader took and never shipped, merged in twice.
/// let mut suffix = CrdtSignalState::new(hour_ms, 64)?;
/// suffix.add(old_leader, 1.0, Timestamp(0))?;
/// suffix.add(old_leader, -1.0, Timestamp(hour_ms))?;
/// leader.merge(&suffix)?;
/// leader.merge(&suffix)?;
/// assert_eq!(leader.count(), 1);
/// assert_eq!(leader.score(Timestamp(hour_ms)), 0.0); // 0.5 + 0.5 - 1
/// # Ok::<(), tidal::TidalError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CrdtSignalState {
    pub(crate) half_life_ms: u64,
    pub(crate) landmark_half_lives: u32,
    pub(crate) landmark_ms: u64,
    pub(crate) hot: Contribution,
    pub(crate) contributions: BTreeMap<ContributionKey, Contribution>,
}

impl CrdtSignalState {
    /// An empty state with half-life `half_life_ms` whose landmark moves
    /// every `landmark_half_lives` half-lives, starting at 0.
    ///
    /// A zero half-life, `landmark_half_lives` outside `1..=512`, or a
    /// period overflowing `u64` is [`TidalError::InvalidConfig`].
    pub fn new(half_life_ms: u64, landmark_half_lives: u32) -> Result<CrdtSignalState> {
        if half_life_ms == 0 {
            return Err(TidalError::InvalidConfig {
                field: "half_life_ms",
                reason: "must be at least 1 ms".into(),
            });
        }
        if !(1..=MAX_LANDMARK_HALF_LIVES).contains(&landmark_half_lives) {
            return Err(TidalError::InvalidConfig {
                field: "landmark_half_lives",
                reason: format!("is {landmark_half_lives}, must be 1 to {MAX_LANDMARK_HALF_LIVES}"),
            });
        }
        if half_life_ms
            .checked_mul(u64::from(landmark_half_lives))
            .is_none()
        {
            return Err(TidalError::InvalidConfig {
                field: "half_life_ms",
                reason: format!(
                    "{half_life_ms} ms times {landmark_half_lives} landmark half-lives overflows u64"
                ),
            });
        }
        Ok(CrdtSignalState {
            half_life_ms,
            landmark_half_lives,
            landmark_ms: 0,
            hot: Contribution::default(),
            contributions: BTreeMap::new(),
        })
    }

    /// The half-life in milliseconds.
    pub fn half_life_ms(&self) -> u64 {
        self.half_life_ms
    }

    /// Half-lives per landmark period.
    pub fn landmark_half_lives(&self) -> u32 {
        self.landmark_half_lives
    }

    /// The landmark period `landmark_half_lives * half_life_ms`.
    pub fn period_ms(&self) -> u64 {
        // Checked in new() (and on decode).
        self.half_life_ms * u64::from(self.landmark_half_lives)
    }

    /// The current landmark, a multiple of [`period_ms`](Self::period_ms).
    pub fn landmark_ms(&self) -> u64 {
        self.landmark_ms
    }

    /// Moves the landmark by the whole periods elapsed from it to
    /// `time_ms` (nothing if less than one period, or `time_ms` is before
    /// it) and rescales every mass by the exact power of two. Replicas may
    /// call it at different times and merge later: the result is the same
    /// bits (see the module docs).
    pub fn advance_landmark(&mut self, time_ms: u64) {
        let Some(elapsed_ms) = time_ms.checked_sub(self.landmark_ms) else {
            return;
        };
        let periods = elapsed_ms / self.period_ms();
        if periods == 0 {
            return;
        }
        // periods * period_ms <= elapsed_ms: no overflow.
        self.landmark_ms += periods * self.period_ms();
        let shift = periods.saturating_mul(u64::from(self.landmark_half_lives));
        self.hot.rescale(shift);
        for c in self.contributions.values_mut() {
            c.rescale(shift);
        }
    }

    /// Records a signal of `weight` at `at` into `key`'s contribution
    /// ([`ContributionKey::HOT`] is the hot lineage). A weight of zero
    /// creates the entry without changing masses or counts. A signal more
    /// than 768 half-lives after the landmark first advances the landmark
    /// to it, so no mass can overflow.
    ///
    /// A NaN or infinite weight is [`TidalError::NonFinite`] (field
    /// `weight`) and leaves the state unchanged.
    pub fn add(&mut self, key: ContributionKey, weight: f64, at: Timestamp) -> Result<()> {
        if !weight.is_finite() {
            return Err(TidalError::NonFinite {
                field: "weight",
                value: weight,
            });
        }
        if at.0.saturating_sub(self.landmark_ms) / self.half_life_ms >= CATCH_UP_HALF_LIVES {
            self.advance_landmark(at.0);
        }
        let factor = Pow2::ratio(
            i128::from(at.0) - i128::from(self.landmark_ms),
            self.half_life_ms,
        );
        let magnitude = factor.apply(weight.abs());
        let entry = if key == ContributionKey::HOT {
            &mut self.hot
        } else {
            self.contributions.entry(key).or_default()
        };
        entry.record(weight, magnitude);
        Ok(())
    }

    /// Records a signal into the hot lineage: `add(ContributionKey::HOT, ..)`.
    pub fn add_hot(&mut self, weight: f64, at: Timestamp) -> Result<()> {
        self.add(ContributionKey::HOT, weight, at)
    }

    /// The hot lineage.
    pub fn hot(&self) -> &Contribution {
        &self.hot
    }

    /// The hot lineage's `S` (relative to the landmark).
    pub fn hot_sum(&self) -> f64 {
        self.hot.net_mass()
    }

    /// The hot lineage's count.
    pub fn hot_count(&self) -> i64 {
        self.hot.net_count()
    }

    /// The contribution of `key` (the hot lineage for
    /// [`ContributionKey::HOT`]); `None` if the key was never touched.
    pub fn contribution(&self, key: ContributionKey) -> Option<&Contribution> {
        if key == ContributionKey::HOT {
            Some(&self.hot)
        } else {
            self.contributions.get(&key)
        }
    }

    /// Every keyed contribution (not the hot lineage), in key order.
    pub fn contributions(&self) -> impl Iterator<Item = (ContributionKey, &Contribution)> + '_ {
        self.contributions.iter().map(|(k, c)| (*k, c))
    }

    /// The hot lineage under [`ContributionKey::HOT`], then every keyed
    /// contribution, in key order.
    fn lineages(&self) -> impl Iterator<Item = &Contribution> + '_ {
        std::iter::once(&self.hot).chain(self.contributions.values())
    }

    /// The decayed score at `at`: the positive masses of every lineage
    /// summed in key order, minus the negative masses summed likewise,
    /// times `2^((L - at)/h)`. Finite for every `at`; the same bits on every
    /// replica holding the same state. Sums saturate at `f64::MAX` (only
    /// weights near `f64::MAX` get there, and then the difference is
    /// meaningless, like any saturated value).
    pub fn score(&self, at: Timestamp) -> f64 {
        let (positive, negative) = self.lineages().fold((0.0f64, 0.0f64), |(p, n), c| {
            (saturate(p + c.positive_mass), saturate(n + c.negative_mass))
        });
        Pow2::ratio(
            i128::from(self.landmark_ms) - i128::from(at.0),
            self.half_life_ms,
        )
        .apply(saturate(positive - negative))
    }

    /// Signals with positive weight minus those with negative weight, over
    /// every lineage, exact and then clamped to the `i64` range (equal to
    /// `self.counter().value()`).
    pub fn count(&self) -> i64 {
        clamp_i64(self.lineages().fold(0i128, |acc, c| {
            acc.saturating_add(i128::from(c.positive_count) - i128::from(c.negative_count))
        }))
    }

    /// The count part as a [`PNCounter`]: the hot lineage under
    /// [`ContributionKey::HOT`] and every keyed contribution.
    pub fn counter(&self) -> PNCounter {
        let mut counter = PNCounter::new();
        counter.observe(
            ContributionKey::HOT,
            self.hot.positive_count,
            self.hot.negative_count,
        );
        for (k, c) in &self.contributions {
            counter.observe(*k, c.positive_count, c.negative_count);
        }
        counter
    }

    /// Merges `other` in: both move to the later landmark, then every
    /// lineage takes the maximum per field. Commutative, associative and
    /// idempotent on the exact bits.
    ///
    /// States of another half-life or landmark period cannot be merged:
    /// [`TidalError::InvalidConfig`], and the state is unchanged.
    pub fn merge(&mut self, other: &CrdtSignalState) -> Result<()> {
        for (field, ours, theirs) in [
            ("half_life_ms", self.half_life_ms, other.half_life_ms),
            (
                "landmark_half_lives",
                u64::from(self.landmark_half_lives),
                u64::from(other.landmark_half_lives),
            ),
        ] {
            if ours != theirs {
                return Err(TidalError::InvalidConfig {
                    field,
                    reason: format!("cannot merge a state with {theirs} into one with {ours}"),
                });
            }
        }
        self.advance_landmark(other.landmark_ms);
        // Both landmarks lie on the same grid and ours is now the later one.
        let periods = (self.landmark_ms - other.landmark_ms) / self.period_ms();
        let shift = periods.saturating_mul(u64::from(self.landmark_half_lives));
        self.hot.join(&other.hot, shift);
        for (k, c) in &other.contributions {
            self.contributions.entry(*k).or_default().join(c, shift);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "signal_state_tests.rs"]
mod tests;
