//! The binary form of a [`CrdtSignalState`], for the log and snapshots.
//!
//! Little-endian, through the crate codec:
//!
//! ```text
//! u8  version (1)
//! u64 half_life_ms        u32 landmark_half_lives        u64 landmark_ms
//! hot lineage:            f64 positive_mass  f64 negative_mass
//!                         u64 positive_count u64 negative_count
//! u32 n, then n times:    u64 epoch  u64 node  (the key, strictly increasing)
//!                         f64 positive_mass  f64 negative_mass
//!                         u64 positive_count u64 negative_count
//! ```
//!
//! The form is canonical: decoding accepts only what encoding can produce
//! (a valid configuration, a landmark on its grid, masses that are `0.0` or
//! normal, positive and finite, keys strictly increasing and never
//! [`ContributionKey::HOT`], no trailing bytes). So equal states have equal
//! bytes and decoding then encoding gives the input back. Decoding never
//! panics and never allocates more than the input can describe.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::key::ContributionKey;
use crate::crdt::signal_state::{Contribution, CrdtSignalState, flush};
use crate::error::{Result, TidalError};
use crate::types::{Epoch, NodeId};

/// Version of the encoded form, so it can evolve.
const FORMAT_VERSION: u8 = 1;

/// Bytes of one encoded keyed contribution.
const ENTRY_BYTES: usize = 48;

/// The label standing for the path in [`TidalError::Corruption`] from
/// [`CrdtSignalState::from_bytes`], which has no file to name.
pub const CORRUPTION_LABEL: &str = "<CrdtSignalState bytes>";

fn put_contribution(out: &mut Vec<u8>, c: &Contribution) {
    out.put_f64(c.positive_mass);
    out.put_f64(c.negative_mass);
    out.put_u64(c.positive_count);
    out.put_u64(c.negative_count);
}

fn mass(r: &mut Reader<'_>, what: &str) -> Result<f64, DecodeError> {
    let at = r.position();
    let m = r.f64()?;
    if m.to_bits() != flush(m).to_bits() {
        return Err(DecodeError {
            offset: at,
            reason: format!("{what} {m:e} is not 0 or a normal positive finite number"),
        });
    }
    Ok(m)
}

fn read_contribution(r: &mut Reader<'_>) -> Result<Contribution, DecodeError> {
    Ok(Contribution {
        positive_mass: mass(r, "positive mass")?,
        negative_mass: mass(r, "negative mass")?,
        positive_count: r.u64()?,
        negative_count: r.u64()?,
    })
}

impl CrdtSignalState {
    /// Appends the encoded state (see the module docs) to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(FORMAT_VERSION);
        out.put_u64(self.half_life_ms);
        out.put_u32(self.landmark_half_lives);
        out.put_u64(self.landmark_ms);
        put_contribution(out, &self.hot);
        // A state holds one contribution per origin term, far below 2^32.
        out.put_u32(self.contributions.len() as u32);
        for (k, c) in &self.contributions {
            out.put_u64(k.epoch.0);
            out.put_u64(k.node.0);
            put_contribution(out, c);
        }
    }

    /// Reads one encoded state from `r`, leaving `r` after it. Anything
    /// [`encode`](Self::encode) cannot produce is a [`DecodeError`] at its
    /// offset; never a panic.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<CrdtSignalState, DecodeError> {
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(r.error(format!("unknown CRDT signal state version {version}")));
        }
        let at = r.position();
        let half_life_ms = r.u64()?;
        let landmark_half_lives = r.u32()?;
        let mut state =
            CrdtSignalState::new(half_life_ms, landmark_half_lives).map_err(|e| DecodeError {
                offset: at,
                reason: e.to_string(),
            })?;
        let at = r.position();
        let landmark_ms = r.u64()?;
        if landmark_ms % state.period_ms() != 0 {
            return Err(DecodeError {
                offset: at,
                reason: format!(
                    "landmark {landmark_ms} ms is not a multiple of the period {} ms",
                    state.period_ms()
                ),
            });
        }
        state.landmark_ms = landmark_ms;
        state.hot = read_contribution(r)?;
        let n = r.count(ENTRY_BYTES)?;
        let mut contributions = BTreeMap::new();
        let mut previous = ContributionKey::HOT;
        for _ in 0..n {
            let at = r.position();
            let epoch = Epoch(r.u64()?);
            let key = ContributionKey::new(NodeId(r.u64()?), epoch);
            if key <= previous {
                return Err(DecodeError {
                    offset: at,
                    reason: format!("key {key} is not after {previous}"),
                });
            }
            previous = key;
            contributions.insert(key, read_contribution(r)?);
        }
        state.contributions = contributions;
        Ok(state)
    }

    /// The encoded state as a new byte vector; equal states give equal
    /// bytes.
    ///
    /// ```
    /// use tidal::{CrdtSignalState, Timestamp};
    /// let mut s = CrdtSignalState::new(1_000, 8)?;
    /// s.add_hot(1.5, Timestamp(20_000))?;
    /// let bytes = s.to_bytes();
    /// assert_eq!(CrdtSignalState::from_bytes(&bytes)?, s);
    /// assert!(CrdtSignalState::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    /// # Ok::<(), tidal::TidalError>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(57 + ENTRY_BYTES * self.contributions.len());
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one state from `bytes` (trailing bytes are an
    /// error). Bad bytes are [`TidalError::Corruption`] with the offset and
    /// reason, and [`CORRUPTION_LABEL`] as the path; never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<CrdtSignalState> {
        let corruption =
            |e: DecodeError| TidalError::corruption(CORRUPTION_LABEL, e.offset as u64, e.reason);
        let mut r = Reader::new(bytes);
        let state = CrdtSignalState::decode(&mut r).map_err(corruption)?;
        if !r.is_empty() {
            return Err(corruption(
                r.error(format!("{} trailing bytes", r.remaining())),
            ));
        }
        Ok(state)
    }
}
