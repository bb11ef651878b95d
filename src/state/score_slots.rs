//! A score table's slot array, and a snapshot's copy of it taken in slices
//! while the writer goes on.
//!
//! # Why slices
//!
//! A checkpoint needs the state at one position. It used to copy the
//! published read-view copy whole under that copy's read lock; the
//! committer needs the same copy one batch later (left-right: it writes
//! each copy in turn), so at 1M entities x 3 types every durable write
//! waited for a ~130 MB memcpy: 25-35 ms (W10, BENCHMARKS.md), after the
//! page faults had already been moved out of the lock.
//!
//! Now the checkpoint takes the small parts (bucket heads, bitmap, length)
//! under one short read lock and installs a [`SliceCopy`] in the table; it
//! then copies the slots [`COPY_SLICE`] at a time, each slice under its own
//! short read lock. Between two slices the writer may write the copy: every
//! slot write goes through [`Slots::at_mut`] (the array has no other
//! mutable access), which first keeps the slot's value when its slice is
//! not copied yet and the value is not kept already (one bit per slot);
//! when the copy ends, the kept values are laid over what the slices
//! took. The snapshot is therefore exactly the state at one position. A
//! write that replaces or rewrites the whole array (growth, landmark
//! rescale) copies every slice left first, and the kept values still win.
//!
//! Keeping slots, not slices: a first version copied the written slot's
//! whole slice before the write. A batch of 1,000 random signals touches
//! nearly every 1 MiB slice of a 43 MB table, so the first batch after the
//! copy began did the whole copy itself, and that write took 13-23 ms (W10
//! with phase timestamps). Between two slices the checkpoint also sleeps
//! (`db::maintenance`), since a read lock taken again at once wins over a
//! writer still waking up. Without a copy in progress a write pays one
//! branch on a field it already has in cache.

use std::ops::Index;
use std::sync::{Mutex, PoisonError};

use crate::types::EntityId;

/// "No slot" in links and bucket heads.
pub(super) const NIL: u32 = u32::MAX;

/// Slots one step of a snapshot's copy takes under one read lock: 1 MiB,
/// a memcpy of well under a millisecond, which is what a writer can wait.
#[cfg(not(test))]
pub(crate) const COPY_SLICE: usize = 32 * 1024;
/// Slices of 8 slots in unit tests, so small tables span many.
#[cfg(test)]
pub(crate) const COPY_SLICE: usize = 8;

/// One (entity, type) entry, or an empty slot when `s` is NaN.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub(super) id: EntityId,
    /// Forward-decayed sum; finite and never `-0.0` in a live slot.
    pub(super) s: f64,
    pub(super) count: i64,
    /// Neighbours in the bucket list of `s`.
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const EMPTY: Slot = Slot {
    id: EntityId(0),
    s: f64::NAN,
    count: 0,
    prev: NIL,
    next: NIL,
};

/// A snapshot's copy of a slot array in progress: the destination (as long
/// as the array was when the copy began), which slices it holds, and the
/// old value of every slot written before its slice was copied.
#[derive(Debug)]
pub(super) struct SliceCopy {
    dest: Vec<Slot>,
    done: Vec<bool>,
    left: usize,
    /// Where the snapshot's own steps look for the next slice.
    cursor: usize,
    /// `(slot, value when the copy began)`, for slots written before their
    /// slice was copied: laid over `dest` when the copy ends.
    old: Vec<(usize, Slot)>,
    /// One bit per slot: its value is in `old`.
    kept: Vec<u64>,
}

impl SliceCopy {
    /// Before slot `i` of `src` is written: keeps its value unless its
    /// slice is copied already or the value is kept.
    #[inline]
    fn keep(&mut self, src: &[Slot], i: usize) {
        if self.done.get(i / COPY_SLICE).copied().unwrap_or(true) {
            return;
        }
        if let (Some(word), Some(slot)) = (self.kept.get_mut(i / 64), src.get(i)) {
            let bit = 1u64 << (i % 64);
            if *word & bit == 0 {
                *word |= bit;
                self.old.push((i, *slot));
            }
        }
    }

    /// Copies slice `k` of `src` unless it is already held.
    fn save(&mut self, src: &[Slot], k: usize) {
        if self.done.get(k).copied().unwrap_or(true) {
            return;
        }
        let start = k * COPY_SLICE;
        let end = (start + COPY_SLICE).min(self.dest.len());
        if let (Some(to), Some(from)) = (self.dest.get_mut(start..end), src.get(start..end)) {
            to.copy_from_slice(from);
        }
        self.done[k] = true;
        self.left -= 1;
    }

    fn save_all(&mut self, src: &[Slot]) {
        for k in 0..self.done.len() {
            self.save(src, k);
        }
    }
}

/// A table's slots. Read by index; written only through [`Slots::at_mut`],
/// [`Slots::set`], [`Slots::replace`] and [`Slots::rewrite`], which keep
/// a snapshot's copy in progress whole (module docs).
#[derive(Debug, Default)]
pub(super) struct Slots {
    v: Vec<Slot>,
    /// A snapshot's copy in progress. The snapshot reaches it through
    /// `&self` (a read lock on the state copy); the writer, which holds
    /// `&mut self`, through `get_mut`, without locking.
    copy: Mutex<Option<SliceCopy>>,
}

impl Clone for Slots {
    /// The slots alone: a copy in progress stays with the original.
    fn clone(&self) -> Self {
        Slots {
            v: self.v.clone(),
            copy: Mutex::new(None),
        }
    }
}

impl Index<usize> for Slots {
    type Output = Slot;
    fn index(&self, i: usize) -> &Slot {
        &self.v[i]
    }
}

impl Slots {
    pub(super) fn new(v: Vec<Slot>) -> Slots {
        Slots {
            v,
            copy: Mutex::new(None),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.v.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    pub(super) fn capacity(&self) -> usize {
        self.v.capacity()
    }

    pub(super) fn get(&self, i: usize) -> Option<&Slot> {
        self.v.get(i)
    }

    pub(super) fn as_slice(&self) -> &[Slot] {
        &self.v
    }

    /// Copies every slice a copy in progress still lacks, before a write
    /// to the whole array.
    fn copy_all(&mut self) {
        if let Some(c) = self.copy.get_mut().unwrap_or_else(PoisonError::into_inner) {
            c.save_all(&self.v);
        }
    }

    /// Slot `i` for writing, its value kept first when a copy needs it.
    #[inline]
    pub(super) fn at_mut(&mut self, i: usize) -> &mut Slot {
        if let Some(c) = self.copy.get_mut().unwrap_or_else(PoisonError::into_inner) {
            c.keep(&self.v, i);
        }
        &mut self.v[i]
    }

    pub(super) fn set(&mut self, i: usize, slot: Slot) {
        *self.at_mut(i) = slot;
    }

    /// Replaces the whole array (growth), every slice left copied first.
    pub(super) fn replace(&mut self, v: Vec<Slot>) -> Vec<Slot> {
        self.copy_all();
        std::mem::replace(&mut self.v, v)
    }

    /// Every slot for writing (landmark rescale), every slice left copied
    /// first.
    pub(super) fn rewrite(&mut self) -> &mut [Slot] {
        self.copy_all();
        &mut self.v
    }

    /// Starts a snapshot's copy into `dest` (as long as the array; false,
    /// and nothing started, when it is not or a copy is under way).
    pub(super) fn begin_copy(&self, dest: Vec<Slot>) -> bool {
        let mut copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        if copy.is_some() || dest.len() != self.v.len() {
            return false;
        }
        let slices = self.v.len().div_ceil(COPY_SLICE);
        *copy = Some(SliceCopy {
            dest,
            done: vec![false; slices],
            left: slices,
            cursor: 0,
            old: Vec::new(),
            kept: vec![0; self.v.len().div_ceil(64)],
        });
        true
    }

    /// Copies the next slice the copy lacks; whether any is still lacking
    /// (false also when no copy is under way).
    pub(super) fn copy_step(&self) -> bool {
        let mut copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(c) = copy.as_mut() else {
            return false;
        };
        while c.cursor < c.done.len() && c.done[c.cursor] {
            c.cursor += 1;
        }
        if c.cursor < c.done.len() {
            let k = c.cursor;
            c.save(&self.v, k);
        }
        c.left > 0
    }

    /// Ends the copy: the slots as they were when it began, or None when
    /// no complete copy is here (the array was replaced by another state,
    /// or the copy was never started).
    pub(super) fn finish_copy(&self) -> Option<Vec<Slot>> {
        let mut copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        match copy.take() {
            Some(mut c) if c.left == 0 => {
                for (i, slot) in c.old {
                    if let Some(d) = c.dest.get_mut(i) {
                        *d = slot;
                    }
                }
                Some(c.dest)
            }
            _ => None,
        }
    }
}
