//! A snapshot's copy of the store, slice by slice while the writer goes on
//! (`ScoreTable::begin_copy`).

use std::thread::Scope;

use super::{SignalStore, TypeState};
use crate::state::clone_threads::Part;
use crate::state::score_table::TableBuffer;

impl SignalStore {
    /// Starts cloning each type on a thread of its own in `scope`
    /// (`state::clone_threads`); the returned function gathers the clone.
    pub(crate) fn clone_on<'s>(
        &'s self,
        scope: &'s Scope<'s, '_>,
    ) -> impl FnOnce() -> SignalStore + 's {
        let types: Vec<Part<'s, TypeState>> = self
            .types
            .iter()
            .map(|t| Part::clone_of(scope, t))
            .collect();
        move || SignalStore {
            types: types.into_iter().map(Part::join).collect(),
            landmark_half_lives: self.landmark_half_lives,
            score_floor: self.score_floor,
        }
    }

    /// Starts a snapshot's copy slice by slice (`ScoreTable::begin_copy`):
    /// the store as it is now, and for each type whether its slots are
    /// still to come from [`Self::finish_copy`].
    pub(crate) fn begin_copy(&self, buffers: Vec<TableBuffer>) -> (SignalStore, Vec<bool>) {
        let mut buffers = buffers.into_iter();
        let mut pending = Vec::with_capacity(self.types.len());
        let types = self
            .types
            .iter()
            .map(|t| {
                let (table, copying) = t.table.begin_copy(buffers.next().unwrap_or_default());
                pending.push(copying);
                TypeState {
                    half_life_ms: t.half_life_ms,
                    period_ms: t.period_ms,
                    landmark_ms: t.landmark_ms,
                    table,
                }
            })
            .collect();
        let store = SignalStore {
            types,
            landmark_half_lives: self.landmark_half_lives,
            score_floor: self.score_floor,
        };
        (store, pending)
    }

    /// Copies about one more slice of a copy under way; whether any is
    /// left.
    pub(crate) fn copy_step(&self) -> bool {
        self.types.iter().any(|t| t.table.copy_step())
    }

    /// Completes `into` with the copied slots of the types `pending` marks;
    /// false when one is missing (the state was replaced meanwhile).
    pub(crate) fn finish_copy(&self, into: &mut SignalStore, pending: &[bool]) -> bool {
        let mut whole = true;
        for ((t, into), &p) in self.types.iter().zip(&mut into.types).zip(pending) {
            // Every table's copy is ended, also after one was found missing.
            whole &= !p || t.table.finish_copy(&mut into.table);
        }
        whole && self.types.len() == into.types.len()
    }
}
