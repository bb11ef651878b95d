//! Copy-on-write chunked arrays: the storage of the big state tables.
//!
//! # Why
//!
//! A checkpoint needs the state at one Position while the committer keeps
//! applying batches. It used to clone the published copy of the state under
//! that copy's read lock, and the committer's second apply (see
//! `db/view.rs`) waits for that lock: at 1M entities x 3 types the clone,
//! about 100 MB of fresh memory, stalled durable writes for 91-209 ms.
//!
//! # How
//!
//! A [`Chunked`] array keeps its elements in fixed-size chunks of `N`
//! behind [`Arc`]s. Cloning it clones the `Arc`s only: O(len / N) pointer
//! copies and reference-count increments (microseconds for a million
//! elements), and the clone shares every chunk. A write goes through
//! [`Arc::make_mut`], which copies a chunk only while another clone still
//! holds it, so a snapshot taken before a write keeps the old chunk and
//! never sees the write, and the writer pays one chunk copy per chunk it
//! first touches after a snapshot instead of the whole table at once.
//!
//! The chunk size trades the writer's cost after a snapshot (a 1,000-signal
//! batch touches up to a few thousand chunks, each copied once) against the
//! pointer table a read goes through (one pointer per chunk, best kept in
//! the L2 cache). Point reads pay one extra dependent load, from that small
//! table; writes pay an uncontended atomic check per element written.
//!
//! Lengths are whole chunks: a table asking for `n` elements gets `n`
//! rounded up to a multiple of `N`.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// An array of `T` in copy-on-write chunks of `N` (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Chunked<T, const N: usize> {
    chunks: Vec<Arc<[T; N]>>,
}

impl<T: Copy, const N: usize> Default for Chunked<T, N> {
    fn default() -> Self {
        Chunked { chunks: Vec::new() }
    }
}

impl<T: Copy, const N: usize> Chunked<T, N> {
    /// `len` rounded up to whole chunks: the length [`Chunked::filled`]
    /// gives for it.
    pub(crate) fn rounded(len: usize) -> usize {
        len.div_ceil(N).saturating_mul(N)
    }

    /// At least `len` elements (rounded up to whole chunks), all `value`,
    /// each chunk its own, so writes after this copy nothing.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        let n = len.div_ceil(N);
        let mut chunks = Vec::with_capacity(n);
        chunks.extend((0..n).map(|_| Arc::new([value; N])));
        Chunked { chunks }
    }

    /// A copy with chunks of its own (a deep copy).
    pub(crate) fn unshared(&self) -> Self {
        let mut chunks = Vec::with_capacity(self.chunks.len());
        chunks.extend(self.chunks.iter().map(|c| Arc::new(**c)));
        Chunked { chunks }
    }

    /// Number of elements (a multiple of `N`).
    pub(crate) fn len(&self) -> usize {
        self.chunks.len() * N
    }

    /// Whether there are no elements.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The element at `i`, None past the end.
    #[cfg(test)]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / N).map(|c| &c[i % N])
    }

    /// Every element in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Every element in index order, mutably: each chunk still shared is
    /// copied first (so a rewrite of the whole array costs one copy of it
    /// when a snapshot holds it).
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
    }

    /// Sets every element to `value`; a chunk still shared is replaced, not
    /// copied.
    pub(crate) fn fill(&mut self, value: T) {
        for c in &mut self.chunks {
            match Arc::get_mut(c) {
                Some(own) => own.fill(value),
                None => *c = Arc::new([value; N]),
            }
        }
    }

    /// Heap bytes of this array, counting shared chunks in full: the chunk
    /// pointers, and per chunk its elements and the two `Arc` counts.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Arc<[T; N]>>()
            + self.chunks.len() * (std::mem::size_of::<[T; N]>() + 2 * std::mem::size_of::<usize>())
    }

    /// How many chunks this array shares with `other` (the same allocation
    /// at the same position), for the tests.
    #[cfg(test)]
    pub(crate) fn shared_chunks(&self, other: &Self) -> usize {
        self.chunks
            .iter()
            .zip(&other.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

impl<T, const N: usize> Index<usize> for Chunked<T, N> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / N][i % N]
    }
}

impl<T: Clone, const N: usize> IndexMut<usize> for Chunked<T, N> {
    /// Copies the chunk of `i` first when a clone still shares it.
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut Arc::make_mut(&mut self.chunks[i / N])[i % N]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_whole_chunks() {
        let a: Chunked<u32, 8> = Chunked::filled(9, 7);
        assert_eq!(a.len(), 16);
        assert_eq!(Chunked::<u32, 8>::rounded(9), 16);
        assert_eq!(Chunked::<u32, 8>::rounded(16), 16);
        assert_eq!(Chunked::<u32, 8>::rounded(0), 0);
        assert!(a.iter().all(|&x| x == 7));
        assert_eq!(a.get(15), Some(&7));
        assert_eq!(a.get(16), None);
        assert!(Chunked::<u32, 8>::default().is_empty());
    }

    #[test]
    fn a_clone_shares_every_chunk_until_written() {
        let mut a: Chunked<u64, 4> = Chunked::filled(16, 0);
        for i in 0..16 {
            a[i] = i as u64;
        }
        let snapshot = a.clone();
        assert_eq!(a.shared_chunks(&snapshot), 4);
        a[5] = 500;
        // Only the written chunk was copied; the clone keeps the old value.
        assert_eq!(a.shared_chunks(&snapshot), 3);
        assert_eq!(snapshot[5], 5);
        assert_eq!(a[5], 500);
        assert_eq!(a[4], 4);
    }

    #[test]
    fn an_unshared_copy_shares_nothing() {
        let a: Chunked<u64, 4> = Chunked::filled(8, 1);
        let mut b = a.unshared();
        assert_eq!(a.shared_chunks(&b), 0);
        b[0] = 2;
        assert_eq!((a[0], b[0], b[1]), (1, 2, 1));
    }

    #[test]
    fn a_write_to_the_clone_leaves_the_original() {
        let a: Chunked<u64, 4> = Chunked::filled(8, 1);
        let mut b = a.clone();
        b[0] = 9;
        b.fill(3);
        assert!(a.iter().all(|&x| x == 1));
        assert!(b.iter().all(|&x| x == 3));
        let mut c = a.clone();
        for x in c.iter_mut() {
            *x += 1;
        }
        assert!(a.iter().all(|&x| x == 1));
        assert!(c.iter().all(|&x| x == 2));
        assert_eq!(a.shared_chunks(&c), 0);
    }

    #[test]
    fn an_unshared_chunk_is_written_in_place() {
        let mut a: Chunked<u64, 4> = Chunked::filled(8, 0);
        let snapshot = a.clone();
        a[0] = 1;
        let copied = Arc::as_ptr(&a.chunks[0]);
        a[1] = 2;
        // The chunk of 0 and 1 was copied once (on the first write), then
        // written in place: the snapshot still shares the other chunk only.
        assert_eq!(Arc::as_ptr(&a.chunks[0]), copied);
        assert_eq!(a.shared_chunks(&snapshot), 1);
        assert_eq!((a[0], a[1], snapshot[0], snapshot[1]), (1, 2, 0, 0));
    }
}
