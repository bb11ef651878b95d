//! The second read copy of a freshly opened state, cloned with its large
//! parts side by side (`View::new`).
//!
//! An open ends by cloning the recovered state into the second copy of
//! the read view: at 1M entities x 3 types, about 130 MB of score tables
//! into fresh memory, 59-65 ms on one thread (a timer around the clone in
//! `compare --only W7 --no-peers`), a tenth of a replay's open and a sixth
//! of a reopen from a snapshot. Each signal type's table and the vector
//! store are independent, so each is cloned on a thread of its own while
//! the opening thread clones the rest: the page faults of fresh memory,
//! most of the cost, then proceed on every core. A thread that cannot be
//! started leaves its part to the opening thread, and a state under
//! [`THREADED_MIN_BYTES`] is cloned on the opening thread alone.
//!
//! Measured (`compare --only W7 --no-peers`, alternating builds, three
//! runs each): the open's time outside recovery went from 60-70 to 20-30
//! ms after a replay of 4M records, and from 61-80 to 35-43 ms in a reopen
//! from the snapshot of the same 1M x 3 state.

use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

use super::State;
use super::signals::SignalStore;
use super::vectors::VectorStore;

/// A part being cloned: on a thread of its own, or already here.
pub(super) enum Part<'s, T> {
    Thread(ScopedJoinHandle<'s, T>),
    Done(T),
}

impl<'s, T: Clone + Send + Sync> Part<'s, T> {
    /// Starts cloning `part` on a new thread of `scope` (or clones it
    /// here when no thread can start).
    pub(super) fn clone_of(scope: &'s Scope<'s, '_>, part: &'s T) -> Part<'s, T> {
        match std::thread::Builder::new()
            .name("tidal-clone".into())
            .spawn_scoped(scope, move || part.clone())
        {
            Ok(handle) => Part::Thread(handle),
            Err(_) => Part::Done(part.clone()),
        }
    }

    /// The clone; a panic of its thread continues here.
    pub(super) fn join(self) -> T {
        match self {
            Part::Thread(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Part::Done(value) => value,
        }
    }
}

/// Below this estimate of its size a state is cloned on one thread:
/// starting threads (tens of microseconds each) would cost more than the
/// copy saves.
const THREADED_MIN_BYTES: usize = 16 << 20;

impl State {
    /// A clone equal to `clone()`, its signal types' tables and vector
    /// store cloned on threads of their own when it is large (module docs).
    pub(crate) fn clone_on_threads(&self) -> State {
        self.clone_threaded_from(THREADED_MIN_BYTES)
    }

    /// [`State::clone_on_threads`] with threads from `min_bytes` on.
    fn clone_threaded_from(&self, min_bytes: usize) -> State {
        if self.approx_bytes() < min_bytes {
            return self.clone();
        }
        std::thread::scope(|scope| {
            let vectors = Part::clone_of(scope, &self.vectors);
            let signals = self.signals.clone_on(scope);
            self.with_parts(signals, || vectors.join())
        })
    }

    /// A clone of this state's smaller parts, then the signals and the
    /// vector store `signals` and `vectors` give, called in that order
    /// (a snapshot's copy, and the threaded clone, which gathers its
    /// threads' parts last).
    pub(super) fn with_parts(
        &self,
        signals: impl FnOnce() -> SignalStore,
        vectors: impl FnOnce() -> VectorStore,
    ) -> State {
        State {
            params: Arc::clone(&self.params),
            entities: self.entities.clone(),
            sessions: self.sessions.clone(),
            merged: self.merged.clone(),
            idempotency: self.idempotency.clone(),
            epochs: self.epochs.clone(),
            applied: self.applied,
            last_hlc: self.last_hlc,
            signals: signals(),
            vectors: vectors(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateParams;
    use crate::state::test_meta;
    use crate::types::{EntityId, EntityKind, Timestamp};
    use crate::wal::record::Record;

    #[test]
    fn the_threaded_clone_equals_the_plain_clone() {
        let params = StateParams {
            half_lives_ms: vec![1_000, 60_000, 3_600_000],
            landmark_half_lives: 4,
            score_floor: 1e-9,
            session_retention_ms: 3_600_000,
            dimension: 4,
            idempotency_ttl_ms: 3_600_000,
            vector_index: Default::default(),
        };
        let mut st = State::new(params);
        let mut records: Vec<Record> = (0..3_000u64)
            .map(|i| Record::Signal {
                signal_type: (i % 3) as u16,
                entity: EntityId(i * 7 % 1_009),
                weight: 1.0 + (i % 5) as f64,
                at: Timestamp(1_000_000 + i),
            })
            .collect();
        records.extend((0..50u64).map(|i| Record::Embedding {
            kind: EntityKind::Item,
            id: EntityId(i),
            vector: vec![1.0, i as f32, 0.5, -2.0],
        }));
        st.apply_batch(&test_meta(1, 1_000_100, &records), &records);
        // Threads from 0 bytes on: this state is far below the threshold.
        let threaded = st.clone_threaded_from(0);
        let plain = st.clone();
        assert!(
            threaded.signals.same_layout(&plain.signals),
            "tables differ"
        );
        assert_eq!(threaded.encode_sections(), plain.encode_sections());
        assert_eq!(threaded.applied, plain.applied);
        assert_eq!(threaded.last_hlc, plain.last_hlc);
        // And equal to the original: nothing was lost on the way.
        assert!(threaded.signals.same_layout(&st.signals), "tables differ");
        assert_eq!(threaded.encode_sections(), st.encode_sections());
    }
}
