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
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Which slots a change wrote, so that the other read-view copy can take
/// them instead of applying the change again (`state::mirror`).
#[derive(Debug, Default)]
pub(super) struct WriteLog {
    /// Whether writes are being noted.
    recording: bool,
    /// Slots written (with repeats), while `whole` is false.
    written: Vec<u32>,
    /// The whole array was replaced or rewritten, or so many slots were
    /// written that copying it all is as cheap.
    whole: bool,
}

impl WriteLog {
    #[inline(always)]
    fn note(&mut self, i: usize, len: usize) {
        if !self.recording || self.whole {
            return;
        }
        if self.written.len() >= len / 4 {
            self.whole = true;
            self.written = Vec::new();
        } else {
            self.written.push(i as u32);
        }
    }
}

/// A table's slots. Read by index; written only through [`Slots::at_mut`],
/// [`Slots::set`], [`Slots::replace`] and [`Slots::rewrite`], which keep
/// a snapshot's copy in progress whole (module docs) and note the write
/// in the write log while one records.
#[derive(Debug, Default)]
pub(super) struct Slots {
    v: Vec<Slot>,
    /// A snapshot's copy in progress. The snapshot reaches it through
    /// `&self` (a read lock on the state copy); the writer, which holds
    /// `&mut self`, through `get_mut`, without locking.
    copy: Mutex<Option<SliceCopy>>,
    /// Whether `copy` holds a copy: set under its lock, read by the writer
    /// without it (the state copy's lock orders the two).
    copying: AtomicBool,
    log: WriteLog,
}

impl Clone for Slots {
    /// The slots alone: a copy in progress and the write log stay with the
    /// original.
    fn clone(&self) -> Self {
        Slots {
            v: self.v.clone(),
            copy: Mutex::new(None),
            copying: AtomicBool::new(false),
            log: WriteLog::default(),
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
            copying: AtomicBool::new(false),
            log: WriteLog::default(),
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
        if *self.copying.get_mut() {
            self.keep(i);
        }
        self.log.note(i, self.v.len());
        &mut self.v[i]
    }

    /// Keeps slot `i`'s value for the copy in progress, if it needs it.
    #[cold]
    #[inline(never)]
    fn keep(&mut self, i: usize) {
        if let Some(c) = self.copy.get_mut().unwrap_or_else(PoisonError::into_inner) {
            c.keep(&self.v, i);
        }
    }

    #[inline]
    pub(super) fn set(&mut self, i: usize, slot: Slot) {
        *self.at_mut(i) = slot;
    }

    /// Replaces the whole array (growth), every slice left copied first.
    pub(super) fn replace(&mut self, v: Vec<Slot>) -> Vec<Slot> {
        self.copy_all();
        self.log.whole = true;
        std::mem::replace(&mut self.v, v)
    }

    /// Every slot for writing (landmark rescale), every slice left copied
    /// first.
    pub(super) fn rewrite(&mut self) -> &mut [Slot] {
        self.copy_all();
        self.log.whole = true;
        &mut self.v
    }

    /// Starts noting writes, forgetting those noted before.
    pub(super) fn begin_log(&mut self) {
        self.log.recording = true;
        self.log.whole = false;
        self.log.written.clear();
    }

    /// Whether writes are being noted.
    pub(super) fn logging(&self) -> bool {
        self.log.recording
    }

    /// Stops noting writes; those noted stay for [`Slots::mirror_from`].
    pub(super) fn end_log(&mut self) {
        self.log.recording = false;
    }

    /// Makes these slots equal to `src`'s, given that they were equal
    /// before the writes `src` noted between its `begin_log` and
    /// `end_log`: copies the slots written, or all of them. Whether all
    /// were copied.
    pub(super) fn mirror_from(&mut self, src: &Slots) -> bool {
        if src.log.whole || self.v.len() != src.v.len() {
            self.copy_all();
            if self.v.len() == src.v.len() {
                self.v.copy_from_slice(&src.v);
            } else {
                // A fresh array of exactly the length (as `src` grew its
                // own): `clone_from` would keep a larger allocation,
                // amortized growth, a third more capacity than slots.
                self.v = src.v.clone();
            }
            return true;
        }
        if *self.copying.get_mut() || self.log.recording {
            for &i in &src.log.written {
                let i = i as usize;
                self.set(i, src.v[i]);
            }
        } else {
            // The usual case: blind copies in a loop of their own, which
            // ran 2-3 times as fast as the same copies through `set`
            // (`state::apply_measure`: 10-13M against 4-6M signals/s).
            for &i in &src.log.written {
                let i = i as usize;
                if let (Some(to), Some(from)) = (self.v.get_mut(i), src.v.get(i)) {
                    *to = *from;
                }
            }
        }
        false
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
        self.copying.store(true, Ordering::Relaxed);
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
        self.copying.store(false, Ordering::Relaxed);
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
