//! Applying a run of signal batches with one thread per signal type.
//!
//! A signal touches only its own type's table, landmark and decay cache,
//! so the types of a run of signal-only batches can be applied side by
//! side: each type sees the same calls in the same order as a batch-by-
//! batch apply makes (its landmark moved at each batch's log time, then
//! its signals of that batch in log order), and so ends bit for bit the
//! same (`state::replay_tests`). Recovery uses it for the log after
//! the snapshot, the one place where many batches apply with nobody
//! waiting for any one of them.

use std::sync::{Mutex, PoisonError};

use super::{SignalStore, TypeState};
use crate::state::TOUCH_WINDOW;
use crate::wal::record::Record;

/// One batch of a run: its log time (HLC physical milliseconds) and its
/// records, every one a [`Record::Signal`].
pub(crate) type RunBatch<'a> = (u64, &'a [Record]);

impl SignalStore {
    /// Applies `run` as `advance_landmarks` then `add` of each signal,
    /// batch after batch, would; on up to `threads` threads (this one
    /// included), each taking whole types. Records other than signals are
    /// skipped: the caller passes none.
    pub(crate) fn add_run(&mut self, run: &[RunBatch<'_>], threads: usize) {
        let (lh, floor) = (self.landmark_half_lives, self.score_floor);
        let helpers = threads.min(self.types.len()).saturating_sub(1);
        // The types, as a queue the threads take from (and this one, which
        // therefore applies them all when no thread can be started).
        let queue: Mutex<Vec<(u16, &mut TypeState)>> = Mutex::new(
            self.types
                .iter_mut()
                .enumerate()
                // Type ids are u16 (`Config` allows no more types).
                .map(|(i, t)| (u16::try_from(i).unwrap_or(u16::MAX), t))
                .collect(),
        );
        let work = || {
            loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let Some((id, t)) = next else {
                    return;
                };
                t.add_run(id, run, lh, floor);
            }
        };
        std::thread::scope(|s| {
            for _ in 0..helpers {
                if std::thread::Builder::new()
                    .name("tidal-replay-type".into())
                    .spawn_scoped(s, work)
                    .is_err()
                {
                    break;
                }
            }
            work();
        });
    }
}

impl TypeState {
    /// This type's part of [`SignalStore::add_run`]: its landmark at each
    /// batch's log time, then its signals, a window's entries touched
    /// before they apply (as `State::apply_batch` does).
    fn add_run(&mut self, id: u16, run: &[RunBatch<'_>], lh: u32, floor: f64) {
        for &(log_ms, records) in run {
            self.move_landmark(log_ms, lh, floor);
            for window in records.chunks(TOUCH_WINDOW) {
                let mut touched = 0u64;
                for r in window {
                    if let Record::Signal {
                        signal_type,
                        entity,
                        ..
                    } = r
                        && *signal_type == id
                    {
                        touched ^= self.table.touch(*entity);
                    }
                }
                std::hint::black_box(touched);
                for r in window {
                    if let Record::Signal {
                        signal_type,
                        entity,
                        weight,
                        at,
                    } = r
                        && *signal_type == id
                    {
                        self.add(*entity, *weight, *at, lh, floor);
                    }
                }
            }
        }
    }
}
