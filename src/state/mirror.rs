//! Bringing the second read-view copy up to date by copying what the first
//! apply wrote, instead of applying the batch again.
//!
//! The read view (`db::view`) keeps two copies of the state and applies
//! every batch to both, one after the other (left-right). A batch of
//! signals costs its apply about one cache miss per signal in each copy's
//! score table, and the two applies cannot overlap (a copy is written only
//! while unpublished), so durable ingest of 1,000-signal batches went at
//! most one batch per two applies: about 2.4M signals/s against an apply
//! rate of 4.6-5.3M (W1, BENCHMARKS.md).
//!
//! Both copies start equal, slot for slot (one is a clone of the other,
//! hash seeds included), and the apply is deterministic. So for a change
//! made only of `Signal` records, the first apply notes every score-table
//! slot and bucket head it writes (`Slots` is the only way to write a slot,
//! so none escapes the log), and the second copy takes exactly those from
//! the first: blind copies of known slots, with no hashing, probing or
//! relinking, and no load waiting on another. A growth or a landmark
//! rescale, which rewrites a whole table, copies that table whole. What a
//! signal batch changes besides the tables (sessions and idempotency keys
//! expired by log time, the applied position, the last HLC) is done again
//! or copied. Any other record (metadata, embeddings, deletes, sessions,
//! merges) makes the whole change apply twice as before: such batches are
//! rare next to signals, and keeping the logs to tables keeps the rule
//! simple enough to check. `mirror_tests` checks that a mirrored copy
//! equals the applied one bit for bit after random batches, growths,
//! rescales and deletes.

use crate::state::State;
use crate::types::Position;
use crate::wal::format::BatchMeta;
use crate::wal::record::Record;

/// Logged batches to apply to both read-view copies, as one change.
#[derive(Debug)]
pub(crate) struct Batches {
    batches: Vec<(BatchMeta, Vec<Record>)>,
    /// Every record is a signal: the second copy can mirror the first.
    signals_only: bool,
}

impl Batches {
    /// The change of `batches`, applied in order.
    pub(crate) fn new(batches: Vec<(BatchMeta, Vec<Record>)>) -> Batches {
        let signals_only = batches
            .iter()
            .flat_map(|(_, records)| records)
            .all(|r| matches!(r, Record::Signal { .. }));
        Batches {
            batches,
            signals_only,
        }
    }

    /// The change of one batch.
    pub(crate) fn one(meta: BatchMeta, records: Vec<Record>) -> Batches {
        Batches::new(vec![(meta, records)])
    }

    /// The records of the first batch (of the only one, for
    /// [`Batches::one`]).
    pub(crate) fn first_records(&self) -> &[Record] {
        self.batches.first().map_or(&[], |(_, records)| records)
    }

    /// Applies the batches to the copy about to be published, noting the
    /// score-table writes when [`Self::mirror`] will use them.
    pub(crate) fn apply(&self, state: &mut State) {
        if self.signals_only {
            state.signals.begin_log();
        }
        for (meta, records) in &self.batches {
            state.apply_batch(meta, records);
        }
        if self.signals_only {
            state.signals.end_log();
        }
    }

    /// Brings `state` to `src`, where `state` equals `src` as it was before
    /// [`Self::apply`] ran on it: copies the score-table writes `src`
    /// noted when the batches hold signals only, else applies them.
    pub(crate) fn mirror(&self, state: &mut State, src: &State) {
        if !self.signals_only {
            for (meta, records) in &self.batches {
                state.apply_batch(meta, records);
            }
            return;
        }
        let Some((last, _)) = self.batches.last() else {
            return;
        };
        for (meta, _) in &self.batches {
            state.expire(meta.hlc.physical_ms());
        }
        state.signals.mirror_from(&src.signals);
        state.applied = Position::new(last.epoch, last.last_seqno());
        state.last_hlc = self
            .batches
            .iter()
            .fold(state.last_hlc, |hlc, (meta, _)| hlc.max(meta.hlc));
        debug_assert_eq!(state.applied, src.applied);
        debug_assert_eq!(state.last_hlc, src.last_hlc);
    }
}
