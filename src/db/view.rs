//! The versioned read view: readers see whole batches only and never wait
//! for a batch being applied.
//!
//! This is the left-right scheme (as in Jon Gjengset's `left-right` and
//! `evmap`): two copies of the state. The one writer (the group committer)
//! applies a batch to the copy readers are *not* using, publishes it with
//! one atomic store, then applies the same batch to the other copy once the
//! readers still in it have left. Readers take a `try_read` on the
//! published copy; if that fails, a writer holds or waits for it, which only
//! happens after it stopped being the published copy, so the reader takes
//! the other copy (the newest one) instead. A reader therefore never blocks
//! on an apply; the writer pays by applying each batch twice and the state
//! takes twice the memory. That cost is measured in the benches and is the
//! first candidate for the performance work.
//!
//! A read holds its copy only for its closure. `TidalDb::read_view` runs a
//! caller's closure of several reads the same way: the writer's second
//! apply (and so the next batch) waits while such a closure still holds
//! the copy it just replaced, which is why that API is a closure and its
//! docs ask for short ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, TryLockError};

use crate::state::State;

/// Two copies of the state and the index of the published one.
#[derive(Debug)]
pub(crate) struct View {
    copies: [RwLock<State>; 2],
    published: AtomicUsize,
}

impl View {
    /// A view publishing `state`.
    pub(crate) fn new(state: State) -> View {
        let other = state.clone();
        View {
            copies: [RwLock::new(state), RwLock::new(other)],
            published: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the newest whole-batch state without waiting for an apply.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.read_guard())
    }

    /// The read side of the newest whole-batch copy, as `read` picks it,
    /// for a crate-internal caller that holds several views at once (a
    /// sharded read view). Never handed to users: a guard could be held
    /// across an `.await` and stall the writer (see `db::read_view`).
    pub(crate) fn read_guard(&self) -> RwLockReadGuard<'_, State> {
        loop {
            let i = self.published.load(Ordering::Acquire);
            for idx in [i, 1 - i] {
                match self.copies[idx].try_read() {
                    Ok(guard) => return guard,
                    Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                    Err(TryLockError::WouldBlock) => {}
                }
            }
            // Both copies busy: the writer flipped twice while we looked.
            // Never waits on an apply, only retries.
            std::hint::spin_loop();
        }
    }

    /// Applies one batch: to the unpublished copy, publishes it, calls
    /// `published` (acknowledging writers), then brings the other copy up to
    /// date. Only the group committer calls this, one batch at a time.
    pub(crate) fn apply(&self, apply: impl Fn(&mut State), published: impl FnOnce()) {
        let old = self.published.load(Ordering::Acquire);
        let new = 1 - old;
        {
            let mut g = self.copies[new]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            apply(&mut g);
        }
        self.published.store(new, Ordering::Release);
        published();
        let mut g = self.copies[old]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        apply(&mut g);
    }

    /// Replaces the whole state (a divergence cut rebuilt it): the
    /// unpublished copy first, which is then published, then the other.
    /// Readers never see a mix. Only the group committer's holder calls this.
    pub(crate) fn replace(&self, state: State) {
        let old = self.published.load(Ordering::Acquire);
        let new = 1 - old;
        *self.copies[new]
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state.clone();
        self.published.store(new, Ordering::Release);
        *self.copies[old]
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state;
    }
}
