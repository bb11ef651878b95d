//! Clocks and conflict-free replicated data types.
//!
//! - [`hlc`]: the hybrid logical clock stamping every batch.
//! - [`PNCounter`]: grow-only increments and decrements per
//!   [`ContributionKey`] (origin node and epoch), merged by maximum.
//! - [`LWWRegister`]: a value with its [`Stamp`]; the larger stamp wins,
//!   equal stamps with different values are a [`MergeOutcome::Conflict`]
//!   resolved the same way on every replica; `LWWRegister<Option<T>>`
//!   carries tombstones.
//! - [`CrdtSignalState`]: one entity's decayed score and count of one signal
//!   type, as a hot lineage plus keyed contributions, merged by maximum
//!   bit-exactly across landmark moves.
//!
//! Every merge here is commutative, associative and idempotent on the exact
//! bits, so replicas exchanging states in any order, with duplicates and
//! stale copies, end identical.

pub mod hlc;
mod key;
pub mod lww;
pub mod pn_counter;
pub mod signal_state;
mod signal_state_codec;

pub use key::ContributionKey;
pub use lww::{LWWRegister, MergeOutcome, Stamp};
pub use pn_counter::PNCounter;
pub use signal_state::{Contribution, CrdtSignalState, MAX_LANDMARK_HALF_LIVES};
pub use signal_state_codec::CORRUPTION_LABEL;
