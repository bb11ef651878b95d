//! The per-type score table: one open-addressing table of slots
//! `(id, S, count, prev, next)` whose slots are also threaded into 65,536
//! buckets by the top 16 bits of an order-preserving encoding of `S`, so
//! bucket order is `S` order. Non-empty buckets are found through a
//! three-level bitmap (65,536 bits, 1,024 words, 16 words, one word).
//!
//! It replaces a hash map plus a `BTreeSet<(S, id)>`, whose insert and
//! remove per signal were dominated by B-tree node cache misses (see
//! PERFORMANCE-NOTES.md, "The trending index"). Here an update whose `S`
//! stays in its bucket touches one slot and nothing else; one that changes
//! bucket unlinks and relinks in O(1). Reads in order gather a bucket's
//! members and sort only them (by `S` descending, id ascending), in chunks,
//! so a top-k read sorts about as many entries as it returns.
//!
//! Probing is linear with backward-shift deletion (no tombstones); a slot is
//! empty when its `S` is NaN, which no stored `S` ever is. The table grows
//! by 1.5x at a load of 0.8, and home positions use a multiply-shift range
//! reduction, so capacities need not be powers of two. Within a bucket the
//! list order depends on the hash seed, but nothing observable does: every
//! ordered read sorts.
//!
//! Costs to know: each type holds an 8 KiB bitmap, plus 256 KiB of bucket
//! heads from its first entry on, whatever its size. Walking a bucket
//! follows links to slots spread over the table, about one cache miss per
//! entry, so ordered reads cost more per entry than a B-tree's sequential
//! leaves: in the store's `measure` test over uniform data, top-100 of one
//! type took 7.4-7.8 us against 4.3-5.0 us, and the threshold blend of
//! three types, which walks deep, about twice as long.

use std::cmp::Ordering;
use std::fmt;
use std::hash::BuildHasher;

use foldhash::fast::RandomState as EntityHashState;

use crate::state::decay::scale_pow2;
use crate::state::score_bitmap::Bitmap;
use crate::state::score_slots::{EMPTY, NIL, Slot, Slots};
use crate::state::trending::order_key;
use crate::types::EntityId;

/// Number of buckets of the order index.
pub(super) const BUCKETS: usize = 1 << 16;

/// Largest capacity: slot indices must stay below [`NIL`].
const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;

/// Smallest non-zero capacity.
const MIN_CAPACITY: usize = 16;

/// Entries a read sorts at once before it needs more of a large bucket.
const FIRST_CHUNK: usize = 64;

/// The bucket of `s`: the top 16 bits of its ascending order encoding, so a
/// higher bucket holds only larger sums.
fn bucket_of(s: f64) -> usize {
    (!order_key(s) >> 48) as usize
}

/// S descending, then id ascending: the order of every ranked read.
fn best_first(a: &(f64, EntityId), b: &(f64, EntityId)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Memory for a copy of a [`ScoreTable`], allocated and written (so its
/// pages are faulted in) before the copy is taken: a snapshot's copy then
/// fills it slice by slice ([`ScoreTable::begin_copy`]), each slice a
/// memcpy under a short read lock, never ~130 MB of first-touch page
/// faults (4 us a page on these machines; PERFORMANCE-NOTES.md).
#[derive(Default)]
pub(crate) struct TableBuffer {
    slots: Vec<Slot>,
    heads: Vec<u32>,
}

impl TableBuffer {
    /// A buffer for a table of `capacity` slots, every page written.
    pub(crate) fn new(capacity: usize) -> TableBuffer {
        if capacity == 0 {
            return TableBuffer::default();
        }
        TableBuffer {
            slots: vec![EMPTY; capacity],
            heads: vec![NIL; BUCKETS],
        }
    }
}

/// The entries of one signal type, by id and in `S` order.
#[derive(Clone)]
pub(crate) struct ScoreTable {
    slots: Slots,
    len: usize,
    hasher: EntityHashState,
    /// First slot of each bucket list; empty until the first insert.
    heads: Vec<u32>,
    bits: Bitmap,
    /// Buckets whose head a change wrote, while `slots` records its writes
    /// (`state::mirror`); repeats allowed.
    heads_written: Vec<u32>,
}

impl Default for ScoreTable {
    fn default() -> Self {
        ScoreTable {
            slots: Slots::default(),
            len: 0,
            hasher: EntityHashState::default(),
            heads: Vec::new(),
            bits: Bitmap::new(),
            heads_written: Vec::new(),
        }
    }
}

impl fmt::Debug for ScoreTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScoreTable")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .finish()
    }
}

impl ScoreTable {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, id: EntityId) -> usize {
        let h = self.hasher.hash_one(id.0);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// Loads `id`'s home slot, and when `id` sits there its two bucket
    /// neighbours (which an upsert that changes bucket writes), and returns
    /// a word of them, so that a caller can start the cache misses of many
    /// upserts at once: no branch waits for these loads (the neighbours'
    /// wait only for their own home slot), so the CPU overlaps them, where
    /// each `upsert`'s probe branches on its slot and so waits for its miss
    /// before the next one starts. The neighbours took the apply of 1,000
    /// uniform signals over 1M entities from 3.0-3.5M to 4.6-5.3M signals/s
    /// (`state::apply_measure`, alternating builds).
    pub(crate) fn touch(&self, id: EntityId) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        let home = &self.slots[self.home(id)];
        let mut word = home.id.0;
        if home.id == id {
            for link in [home.prev, home.next] {
                if let Some(s) = self.slots.get(link as usize) {
                    word ^= s.id.0;
                }
            }
        }
        word
    }

    fn step(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    fn find(&self, id: EntityId) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(id);
        // The load stays below 1, so an empty slot ends every probe.
        loop {
            let slot = &self.slots[i];
            if slot.s.is_nan() {
                return None;
            }
            if slot.id == id {
                return Some(i);
            }
            i = self.step(i);
        }
    }

    /// `(S, count)` of `id`.
    pub(crate) fn get(&self, id: EntityId) -> Option<(f64, i64)> {
        self.find(id)
            .map(|i| (self.slots[i].s, self.slots[i].count))
    }

    /// Whether `id` has an entry.
    pub(crate) fn contains(&self, id: EntityId) -> bool {
        self.find(id).is_some()
    }

    /// Every id, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.slots
            .as_slice()
            .iter()
            .filter(|s| !s.s.is_nan())
            .map(|s| s.id)
    }

    fn link(&mut self, i: usize) {
        let b = bucket_of(self.slots[i].s);
        let head = self.heads[b];
        let slot = self.slots.at_mut(i);
        slot.prev = NIL;
        slot.next = head;
        if head == NIL {
            self.bits.set(b);
        } else {
            self.slots.at_mut(head as usize).prev = i as u32;
        }
        self.set_head(b, i as u32);
    }

    /// Points bucket `b`'s list at slot `i`, noting the bucket while the
    /// slots record writes.
    fn set_head(&mut self, b: usize, i: u32) {
        self.heads[b] = i;
        if self.slots.logging() {
            self.heads_written.push(b as u32);
        }
    }

    fn unlink(&mut self, i: usize) {
        let Slot { s, prev, next, .. } = self.slots[i];
        let b = bucket_of(s);
        if prev == NIL {
            self.set_head(b, next);
            if next == NIL {
                self.bits.clear(b);
            }
        } else {
            self.slots.at_mut(prev as usize).next = next;
        }
        if next != NIL {
            self.slots.at_mut(next as usize).prev = prev;
        }
    }

    /// Capacity keeping `n` entries at a load of about 0.75.
    fn capacity_for(n: usize) -> usize {
        n.saturating_add(n / 3)
            .saturating_add(MIN_CAPACITY)
            .min(MAX_CAPACITY)
    }

    /// Moves every entry into a table of `capacity` slots (at least
    /// `len + 1`), relinking the buckets.
    fn resize(&mut self, capacity: usize) {
        let old = self.slots.replace(vec![EMPTY; capacity]);
        self.heads.clear();
        self.heads.resize(BUCKETS, NIL);
        self.bits = Bitmap::new();
        for slot in old.into_iter().filter(|s| !s.s.is_nan()) {
            self.place(slot);
        }
    }

    /// Writes a slot known to be absent into the first free position of its
    /// probe sequence and links it; its index.
    fn place(&mut self, slot: Slot) -> usize {
        let mut i = self.home(slot.id);
        while !self.slots[i].s.is_nan() {
            i = self.step(i);
        }
        self.slots.set(i, slot);
        self.link(i);
        i
    }

    /// Adds an entry for an absent id; false when the table is at its
    /// largest capacity (over 4 billion entries; never in practice).
    fn insert_new(&mut self, id: EntityId, s: f64, count: i64) -> bool {
        let cap = self.slots.len();
        if (self.len + 1).saturating_mul(5) > cap.saturating_mul(4) {
            let grown = cap
                .saturating_add(cap / 2)
                .clamp(MIN_CAPACITY, MAX_CAPACITY);
            if grown <= self.len + 1 {
                return false;
            }
            self.resize(grown);
        }
        self.place(Slot {
            id,
            s,
            count,
            prev: NIL,
            next: NIL,
        });
        self.len += 1;
        true
    }

    /// Applies `update` to the `(S, count)` of `id`, or inserts `fresh` when
    /// it is absent; `S` must be finite and canonical (never `-0.0`). Only a
    /// change of bucket touches the order index.
    pub(crate) fn upsert(
        &mut self,
        id: EntityId,
        fresh: (f64, i64),
        update: impl FnOnce(f64, i64) -> (f64, i64),
    ) {
        let Some(i) = self.find(id) else {
            let inserted = self.insert_new(id, fresh.0, fresh.1);
            debug_assert!(inserted, "score table full");
            return;
        };
        let old = self.slots[i].s;
        let (s, count) = update(old, self.slots[i].count);
        if bucket_of(s) == bucket_of(old) {
            let slot = self.slots.at_mut(i);
            slot.count = count;
            slot.s = s;
        } else {
            self.unlink(i);
            let slot = self.slots.at_mut(i);
            slot.count = count;
            slot.s = s;
            self.link(i);
        }
    }

    /// Inserts an entry while decoding; false when `id` is already there.
    pub(crate) fn insert_unique(&mut self, id: EntityId, s: f64, count: i64) -> bool {
        if self.contains(id) {
            return false;
        }
        self.insert_new(id, s, count)
    }

    /// Removes `id`; its `(S, count)`, or None when absent.
    pub(crate) fn remove(&mut self, id: EntityId) -> Option<(f64, i64)> {
        let mut hole = self.find(id)?;
        let removed = (self.slots[hole].s, self.slots[hole].count);
        self.unlink(hole);
        self.slots.set(hole, EMPTY);
        self.len -= 1;
        // Backward shift: pull later entries of the run into the hole when
        // their home does not lie cyclically within (hole, j].
        let cap = self.slots.len();
        let mut j = self.step(hole);
        while !self.slots[j].s.is_nan() {
            let home = self.home(self.slots[j].id);
            let dist_home = (j + cap - home) % cap;
            let dist_hole = (j + cap - hole) % cap;
            if dist_home >= dist_hole {
                self.move_slot(j, hole);
                hole = j;
            }
            j = self.step(j);
        }
        Some(removed)
    }

    /// Moves the live slot `from` into the empty slot `to`, fixing links.
    fn move_slot(&mut self, from: usize, to: usize) {
        let slot = self.slots[from];
        self.slots.set(to, slot);
        self.slots.set(from, EMPTY);
        if slot.prev == NIL {
            self.set_head(bucket_of(slot.s), to as u32);
        } else {
            self.slots.at_mut(slot.prev as usize).next = to as u32;
        }
        if slot.next != NIL {
            self.slots.at_mut(slot.next as usize).prev = to as u32;
        }
    }

    /// Multiplies every `S` by `2^exp` (exact, so the order is kept) and,
    /// with `floor > 0`, drops the entries whose `|S|` falls below it; then
    /// relinks the buckets, shrinking the table when most entries went.
    pub(crate) fn rescale(&mut self, exp: i64, floor: f64) {
        let mut live = 0;
        for slot in self.slots.rewrite().iter_mut().filter(|s| !s.s.is_nan()) {
            slot.s = scale_pow2(slot.s, exp);
            if floor > 0.0 && slot.s.abs() < floor {
                *slot = EMPTY;
            } else {
                live += 1;
            }
        }
        let dropped = live != self.len;
        self.len = live;
        if self.slots.is_empty() {
            return;
        }
        if dropped {
            // Emptied slots break probe runs, so every entry is re-placed.
            let cap = if self.slots.len() > 4 * live + 64 {
                Self::capacity_for(live)
            } else {
                self.slots.len()
            };
            self.resize(cap);
        } else {
            self.heads.fill(NIL);
            self.bits = Bitmap::new();
            for i in 0..self.slots.len() {
                if !self.slots[i].s.is_nan() {
                    self.link(i);
                }
            }
        }
    }

    /// Reserves room for `n` more entries.
    pub(crate) fn reserve(&mut self, n: usize) {
        let want = Self::capacity_for(self.len.saturating_add(n));
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// Entries `(S, id)` by `S` descending, then id ascending.
    pub(crate) fn iter(&self) -> OrderIter<'_> {
        OrderIter::new(self, true)
    }

    /// Entries `(S, id)` by `S` ascending, then id descending: [`Self::iter`]
    /// reversed.
    pub(crate) fn iter_rev(&self) -> OrderIter<'_> {
        OrderIter::new(self, false)
    }

    /// Calls `f(S, id, count)` for every entry by `S` descending, then id
    /// ascending (the order of [`Self::iter`]), without a lookup per entry:
    /// what a snapshot encodes.
    pub(crate) fn for_each_ordered(&self, mut f: impl FnMut(f64, EntityId, i64)) {
        let mut bucket: Vec<(f64, EntityId, i64)> = Vec::new();
        let mut next = self.bits.highest_at_or_below(BUCKETS - 1);
        while let Some(b) = next {
            bucket.clear();
            let mut i = self.heads[b];
            while i != NIL {
                let slot = &self.slots[i as usize];
                bucket.push((slot.s, slot.id, slot.count));
                i = slot.next;
            }
            bucket.sort_unstable_by(|x, y| best_first(&(x.0, x.1), &(y.0, y.1)));
            for &(s, id, count) in &bucket {
                f(s, id, count);
            }
            next = b
                .checked_sub(1)
                .and_then(|b| self.bits.highest_at_or_below(b));
        }
    }

    /// Starts noting which slots and bucket heads change, for
    /// [`Self::mirror_from`].
    pub(crate) fn begin_log(&mut self) {
        self.slots.begin_log();
        self.heads_written.clear();
    }

    /// Stops noting changes; those noted stay for [`Self::mirror_from`].
    pub(crate) fn end_log(&mut self) {
        self.slots.end_log();
    }

    /// Makes this table equal to `src`, slot for slot, given that it was
    /// equal before the changes `src` noted between `begin_log` and
    /// `end_log`: copies the slots and bucket heads they wrote (or the
    /// whole arrays after a growth or rescale), the bitmap and the length.
    pub(crate) fn mirror_from(&mut self, src: &ScoreTable) {
        let whole = self.slots.mirror_from(&src.slots);
        if whole || self.heads.len() != src.heads.len() || self.bits.l0.len() != src.bits.l0.len() {
            self.heads.clone_from(&src.heads);
            self.bits.l0.clone_from(&src.bits.l0);
        } else {
            // A bucket's bit changes only with its head (`link`, `unlink`).
            for &b in &src.heads_written {
                let b = b as usize;
                self.heads[b] = src.heads[b];
                self.bits.l0[b / 64] = src.bits.l0[b / 64];
            }
        }
        self.bits.l1 = src.bits.l1;
        self.bits.l2 = src.bits.l2;
        self.len = src.len;
        self.hasher.clone_from(&src.hasher);
    }

    /// Whether this table is `other` bit for bit: slots, heads, bitmap,
    /// length (what a mirror must reproduce).
    #[cfg(test)]
    pub(crate) fn same_layout(&self, other: &ScoreTable) -> bool {
        let slot_bits = |s: &Slot| (s.id, s.s.to_bits(), s.count, s.prev, s.next);
        self.len == other.len
            && self.heads == other.heads
            && self.bits.l0 == other.bits.l0
            && self.bits.l1 == other.bits.l1
            && self.bits.l2 == other.bits.l2
            && self.slots.len() == other.slots.len()
            && self
                .slots
                .as_slice()
                .iter()
                .zip(other.slots.as_slice())
                .all(|(a, b)| slot_bits(a) == slot_bits(b))
    }

    /// Slots allocated (the size a [`TableBuffer`] for a copy needs).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Starts a snapshot's copy of this table into `buf`, slots slice by
    /// slice (`score_slots`): the table as it is now, its slots still to
    /// come from [`Self::finish_copy`]; or, when `buf` does not fit (the
    /// table grew) or a copy is under way, a plain clone, and false.
    pub(crate) fn begin_copy(&self, mut buf: TableBuffer) -> (ScoreTable, bool) {
        if buf.heads.len() != self.heads.len() || !self.slots.begin_copy(buf.slots) {
            return (self.clone(), false);
        }
        buf.heads.copy_from_slice(&self.heads);
        let table = ScoreTable {
            slots: Slots::default(),
            len: self.len,
            hasher: self.hasher.clone(),
            heads: buf.heads,
            bits: self.bits.clone(),
            heads_written: Vec::new(),
        };
        (table, true)
    }

    /// Copies one more slice of a copy under way; whether any is left.
    pub(crate) fn copy_step(&self) -> bool {
        self.slots.copy_step()
    }

    /// Completes `into` (from [`Self::begin_copy`]) with the copied slots;
    /// false when this table holds no complete copy (it was replaced).
    pub(crate) fn finish_copy(&self, into: &mut ScoreTable) -> bool {
        match self.slots.finish_copy() {
            Some(slots) => {
                into.slots = Slots::new(slots);
                true
            }
            None => false,
        }
    }

    /// Estimated heap bytes: slots by capacity, bucket heads and bitmap.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.heads.capacity() * 4
            + self.bits.l0.capacity() * 8
    }
}

mod order;
pub(crate) use order::OrderIter;

#[cfg(test)]
#[path = "score_table_tests.rs"]
mod tests;
