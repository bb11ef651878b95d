//! Ordered reads of a [`ScoreTable`]: bucket by bucket from the bitmap,
//! each bucket's members sorted in chunks as the reader reaches them.

use std::cmp::Ordering;

use super::{BUCKETS, FIRST_CHUNK, NIL, ScoreTable, best_first};
use crate::types::EntityId;

/// An ordered read: bucket by bucket, each bucket's members sorted in
/// growing chunks as the reader gets to them.
pub(crate) struct OrderIter<'a> {
    table: &'a ScoreTable,
    /// S descending when true, ascending when false.
    descending: bool,
    /// The next bucket to look from, None when done.
    next_bucket: Option<usize>,
    buf: Vec<(f64, EntityId)>,
    pos: usize,
    sorted: usize,
}

impl<'a> OrderIter<'a> {
    pub(super) fn new(table: &'a ScoreTable, descending: bool) -> OrderIter<'a> {
        let start = if table.is_empty() {
            None
        } else if descending {
            Some(BUCKETS - 1)
        } else {
            Some(0)
        };
        OrderIter {
            table,
            descending,
            next_bucket: start,
            buf: Vec::new(),
            pos: 0,
            sorted: 0,
        }
    }

    fn order_fn(&self) -> fn(&(f64, EntityId), &(f64, EntityId)) -> Ordering {
        if self.descending {
            best_first
        } else {
            |a, b| best_first(b, a)
        }
    }

    /// Loads the next non-empty bucket; false when there is none.
    fn load(&mut self) -> bool {
        let Some(from) = self.next_bucket else {
            return false;
        };
        let found = if self.descending {
            self.table.bits.highest_at_or_below(from)
        } else {
            self.table.bits.lowest_at_or_above(from)
        };
        let Some(b) = found else {
            self.next_bucket = None;
            return false;
        };
        self.next_bucket = if self.descending {
            b.checked_sub(1)
        } else {
            Some(b + 1).filter(|&n| n < BUCKETS)
        };
        self.buf.clear();
        self.pos = 0;
        self.sorted = 0;
        let mut i = self.table.heads[b];
        while i != NIL {
            let slot = &self.table.slots[i as usize];
            self.buf.push((slot.s, slot.id));
            i = slot.next;
        }
        true
    }

    /// Sorts the next chunk of the loaded bucket: first only the best
    /// [`FIRST_CHUNK`] (a top-k read rarely needs more of a bucket), then,
    /// when the reader goes on (a deep walk), the whole rest at once.
    fn sort_chunk(&mut self) {
        let cmp = self.order_fn();
        let take = if self.pos == 0 {
            FIRST_CHUNK
        } else {
            self.buf.len()
        };
        let rest = &mut self.buf[self.pos..];
        if rest.len() > take {
            rest.select_nth_unstable_by(take, cmp);
            rest[..take].sort_unstable_by(cmp);
            self.sorted = self.pos + take;
        } else {
            rest.sort_unstable_by(cmp);
            self.sorted = self.buf.len();
        }
    }
}

impl Iterator for OrderIter<'_> {
    type Item = (f64, EntityId);

    fn next(&mut self) -> Option<(f64, EntityId)> {
        loop {
            if self.pos < self.sorted {
                let e = self.buf[self.pos];
                self.pos += 1;
                return Some(e);
            }
            if self.pos < self.buf.len() {
                self.sort_chunk();
            } else if !self.load() {
                return None;
            }
        }
    }
}
