//! Hybrid logical clock (Kulkarni et al., 2014).
//!
//! An [`Hlc`] packs 48 bits of physical milliseconds and a 16-bit counter in
//! a `u64`, ordered as that integer. [`HlcClock::now`] is strictly
//! increasing; when the counter would overflow the clock moves to the next
//! millisecond with counter 0 (defined, never a wrap). On open the clock is
//! moved past the highest HLC in the log, so it is monotonic across
//! restarts.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, TidalError};

/// A hybrid logical clock reading: physical ms (48 bits) and a counter (16 bits).
///
/// ```
/// use tidal::Hlc;
/// let h = Hlc::new(1_000, 3);
/// assert_eq!(h.physical_ms(), 1_000);
/// assert_eq!(h.counter(), 3);
/// assert!(Hlc::new(1_000, 4) > h && Hlc::new(1_001, 0) > Hlc::new(1_000, u16::MAX));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Largest physical time representable (2^48 - 1 ms, the year 10889).
    pub const MAX_PHYSICAL_MS: u64 = (1 << 48) - 1;

    /// Builds an HLC; physical time past 48 bits saturates.
    pub const fn new(physical_ms: u64, counter: u16) -> Hlc {
        let p = if physical_ms > Self::MAX_PHYSICAL_MS {
            Self::MAX_PHYSICAL_MS
        } else {
            physical_ms
        };
        Hlc((p << 16) | counter as u64)
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter.
    pub const fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The smallest HLC strictly above this one.
    pub const fn successor(self) -> Hlc {
        // Counter overflow carries into the millisecond: defined by the packing.
        Hlc(self.0.saturating_add(1))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.counter())
    }
}

/// The physical clock an [`HlcClock`] reads; injectable so tests are deterministic.
///
/// ```
/// use tidal::{PhysicalClock, ManualClock};
/// fn stamp(clock: &dyn PhysicalClock) -> u64 { clock.now_ms() }
/// assert_eq!(stamp(&ManualClock::new(42)), 42);
/// ```
pub trait PhysicalClock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system wall clock.
///
/// ```
/// use tidal::{PhysicalClock, SystemClock};
/// assert!(SystemClock.now_ms() > 1_600_000_000_000);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::types::Timestamp::now().0
    }
}

/// A clock that moves only when told to: for tests and simulations.
///
/// ```
/// use tidal::{ManualClock, PhysicalClock};
/// let c = ManualClock::new(1_000);
/// c.advance_ms(5);
/// assert_eq!(c.now_ms(), 1_005);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }
    /// Sets the reading.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the reading forward.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl PhysicalClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A hybrid logical clock over an injectable physical clock.
///
/// ```
/// use std::sync::Arc;
/// use tidal::{Hlc, HlcClock, ManualClock};
/// let clock = HlcClock::new(Arc::new(ManualClock::new(1_000)), 500);
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b > a);
/// // A remote reading far ahead is refused and changes nothing.
/// assert!(clock.observe(Hlc::new(10_000, 0)).is_err());
/// assert!(clock.now() > b);
/// ```
#[derive(Debug)]
pub struct HlcClock {
    last: AtomicU64,
    physical: Arc<dyn PhysicalClock>,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock reading `physical`, refusing remote readings more than
    /// `max_drift_ms` ahead of it.
    pub fn new(physical: Arc<dyn PhysicalClock>, max_drift_ms: u64) -> HlcClock {
        HlcClock {
            last: AtomicU64::new(0),
            physical,
            max_drift_ms,
        }
    }

    /// A strictly increasing reading.
    pub fn now(&self) -> Hlc {
        let pt = Hlc::new(self.physical.now_ms(), 0);
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let next = if pt.0 > prev {
                pt
            } else {
                Hlc(prev).successor()
            };
            match self
                .last
                .compare_exchange_weak(prev, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Moves the clock to at least `remote` (a message or a log record).
    /// Refuses a remote more than `max_drift_ms` ahead of the physical clock
    /// with [`TidalError::ClockSkew`], leaving the clock unchanged.
    pub fn observe(&self, remote: Hlc) -> Result<()> {
        let now_ms = self.physical.now_ms();
        let ahead_ms = remote.physical_ms().saturating_sub(now_ms);
        if ahead_ms > self.max_drift_ms {
            return Err(TidalError::ClockSkew {
                remote_ms: remote.physical_ms(),
                ahead_ms,
                limit_ms: self.max_drift_ms,
            });
        }
        self.advance_to(remote);
        Ok(())
    }

    /// Moves the clock to at least `h` unconditionally (used on open, from
    /// the highest HLC in the log: the log is trusted).
    pub fn advance_to(&self, h: Hlc) {
        self.last.fetch_max(h.0, Ordering::AcqRel);
    }

    /// The physical clock's reading in milliseconds.
    pub fn physical_ms(&self) -> u64 {
        self.physical.now_ms()
    }

    /// The last reading handed out or observed.
    pub fn last(&self) -> Hlc {
        Hlc(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_increasing_with_a_stuck_physical_clock() {
        let c = HlcClock::new(Arc::new(ManualClock::new(7)), 0);
        let mut prev = c.now();
        for _ in 0..200_000 {
            let n = c.now();
            assert!(n > prev);
            prev = n;
        }
        // 200k readings in one ms overflowed the counter into later milliseconds.
        assert!(prev.physical_ms() > 7);
    }

    #[test]
    fn observe_within_drift_moves_the_clock() {
        let c = HlcClock::new(Arc::new(ManualClock::new(1_000)), 100);
        c.observe(Hlc::new(1_050, 9)).expect("within drift");
        assert!(c.now() > Hlc::new(1_050, 9));
    }

    #[test]
    fn observe_beyond_drift_is_refused_and_changes_nothing() {
        let c = HlcClock::new(Arc::new(ManualClock::new(1_000)), 100);
        let before = c.now();
        let err = c.observe(Hlc::new(1_101, 0)).expect_err("too far ahead");
        assert!(matches!(err, TidalError::ClockSkew { ahead_ms: 101, .. }));
        assert_eq!(c.last(), before);
    }

    #[test]
    fn physical_time_saturates_at_48_bits() {
        assert_eq!(Hlc::new(u64::MAX, 0).physical_ms(), Hlc::MAX_PHYSICAL_MS);
    }
}
