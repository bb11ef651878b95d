//! Per-signal-type decayed scores, counts and the trending index.
//!
//! # Forward decay with a moving landmark
//!
//! A decay score is `sum w_i * 2^(-(t - t_i)/h)`: every signal loses half its
//! weight per half-life `h`. Decaying every stored score as time passes
//! would cost a write per entity per tick. Forward decay (Cormode, Shkapenyuk,
//! Srivastava and Xu, ICDE 2009) instead stores, per entity and type,
//! `S = sum w_i * 2^((t_i - L)/h)` relative to a landmark time `L` shared by
//! all entities of the type, and reads the score at `t` as
//! `S * 2^(-(t - L)/h)`. Adding a signal is one addition, and since one
//! factor converts every `S` of a type into its score, ordering by `S` is
//! ordering by score at any time: the trending index is kept in `S` order
//! (negative sums from skips included) and top-k reads never scan.
//!
//! `S` grows by a factor of two per half-life of signal time, so `L` has to
//! follow the clock or `S` would overflow. It moves on a fixed schedule of
//! *log* time: [`SignalStore::advance_landmarks`] is called with each
//! batch's HLC physical time before its records apply, and once the time is
//! a whole period `P = landmark_half_lives * h` past `L`, `L` jumps by the
//! whole periods elapsed and every `S` of the type is multiplied by
//! `2^(-landmark_half_lives * n)`. That factor is an exact power of two, so
//! the multiplication is exact (until values become subnormal, then zero),
//! the index order is unchanged, and a follower replaying the same log holds
//! the same bits as its leader. `L` therefore always lies on the grid of
//! multiples of `P`.
//!
//! A signal timestamped far ahead of `L` (more than
//! [`CATCH_UP_HALF_LIVES`] half-lives, possible only with a half-life much
//! shorter than the allowed clock skew, or with a caller that never advances
//! the landmark) first moves its type's landmark along the same grid, as
//! if the log time had reached the signal's time, so no `S` can overflow.
//! This depends only on the sequence of calls, so replicas agree.
//!
//! # Precision
//!
//! Each factor `2^(d/h)` is split in integers into whole half-lives, applied
//! as an exact power of two, and a fraction in `[1, 2)` computed with
//! correctly rounded operations only (see `decay.rs`), so timestamps
//! spanning thousands of half-lives lose nothing and every host computes the
//! same bits. The score meets `|score - exact| <= 1e-9 * sum |w_i| *
//! 2^(-(t - t_i)/h)` as long as the result is a normal f64; contributions
//! below about 1e-308 of the weights underflow to zero. Values that would
//! exceed `f64::MAX` (absurd weights, or reading at a time thousands of
//! half-lives before a signal) saturate at `±f64::MAX`: nothing stored or
//! returned is ever infinite or NaN.
//!
//! # Forgetting
//!
//! With `score_floor > 0`, an entry whose `|S|` is below the floor right
//! after its type's landmark moves (its magnitude decayed to time `L`) is
//! dropped, and its count with it: the count of a cold entity is forgotten,
//! not kept. Without a floor, entries stay until their entity is deleted.
//!
//! A signal of weight zero creates an entry (scoring 0) without changing
//! the count: the entity has been signalled, and trending may show it.

use std::cmp::Ordering;

use crate::codec::{DecodeError, Put, Reader};
use crate::state::decay::{Pow2, saturate};
use crate::state::score_table::{ScoreTable, TableBuffer};
use crate::state::trending::{Lane, top_k_scan, top_k_threshold, top_k_walk};
use crate::types::{EntityId, Timestamp};

/// A signal more than this many half-lives ahead of its type's landmark
/// moves the landmark first (see the module docs). `2^768` leaves room for
/// weights up to about `1e77` before a sum could saturate.
pub const CATCH_UP_HALF_LIVES: u64 = 768;

/// The range of `landmark_half_lives` that `Config` accepts; other values
/// are clamped into it so that no input can divide by zero or overflow.
const LANDMARK_HALF_LIVES_MAX: u32 = 512;

/// Version of the encoded section body, so it can evolve.
const FORMAT_VERSION: u8 = 1;

/// Bytes of one encoded entry: id, `S` bits, count.
const ENTRY_BYTES: usize = 24;

/// Entries (all types together) from which a decode fills the types'
/// tables in parallel.
const PARALLEL_DECODE_ENTRIES: usize = 64 * 1024;

/// Fills `table` with the entries in `bytes`, which start at offset `at` of
/// the decoded buffer (errors name offsets in that buffer).
fn fill(table: &mut ScoreTable, at: usize, bytes: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    let err = |r: &Reader<'_>, reason: String| DecodeError {
        offset: at + r.position(),
        reason,
    };
    let shift = |e: DecodeError| DecodeError {
        offset: at + e.offset,
        ..e
    };
    table.reserve(bytes.len() / ENTRY_BYTES);
    while !r.is_empty() {
        let id = EntityId(r.u64().map_err(shift)?);
        let s = r.f64().map_err(shift)?;
        let count = r.u64().map_err(shift)? as i64;
        if !s.is_finite() {
            return Err(err(&r, format!("non-finite score sum for entity {id}")));
        }
        if !table.insert_unique(id, s + 0.0, count) {
            return Err(err(&r, format!("entity {id} appears twice")));
        }
    }
    Ok(())
}

/// The state of one signal type.
#[derive(Clone, Debug)]
pub(crate) struct TypeState {
    half_life_ms: u64,
    /// `landmark_half_lives * half_life_ms`, at least 1.
    period_ms: u64,
    landmark_ms: u64,
    /// Every entry `(id, S, count)`, by id and in `S` order.
    pub(crate) table: ScoreTable,
}

impl TypeState {
    fn new(half_life_ms: u64, landmark_half_lives: u32) -> TypeState {
        TypeState {
            half_life_ms,
            period_ms: half_life_ms
                .max(1)
                .saturating_mul(u64::from(landmark_half_lives)),
            landmark_ms: 0,
            table: ScoreTable::default(),
        }
    }

    /// [`SignalStore::add`] on this type.
    fn add(
        &mut self,
        entity: EntityId,
        weight: f64,
        at: Timestamp,
        landmark_half_lives: u32,
        score_floor: f64,
    ) {
        if !weight.is_finite() {
            debug_assert!(false, "non-finite weight {weight}");
            return;
        }
        if needs_catch_up(at.0.saturating_sub(self.landmark_ms), self.half_life_ms) {
            self.move_landmark(at.0, landmark_half_lives, score_floor);
        }
        let contribution = Pow2::ratio_cached(
            i128::from(at.0) - i128::from(self.landmark_ms),
            self.half_life_ms,
        )
        .apply(weight);
        let step = match weight.partial_cmp(&0.0) {
            Some(Ordering::Greater) => 1,
            Some(Ordering::Less) => -1,
            _ => 0,
        };
        self.table.upsert(entity, (contribution, step), |s, count| {
            (saturate(s + contribution), count.saturating_add(step))
        });
    }

    /// Moves the landmark by the whole periods elapsed up to `time_ms`.
    fn move_landmark(&mut self, time_ms: u64, landmark_half_lives: u32, score_floor: f64) {
        let Some(elapsed_ms) = time_ms.checked_sub(self.landmark_ms) else {
            return;
        };
        let periods = elapsed_ms / self.period_ms;
        if periods == 0 {
            return;
        }
        // periods * period_ms <= elapsed_ms, so this cannot overflow.
        self.landmark_ms += periods * self.period_ms;
        let doublings = i128::from(landmark_half_lives) * i128::from(periods);
        let exp = i64::try_from(-doublings).unwrap_or(i64::MIN);
        // Scaling by one power of two keeps the order (ties can only appear,
        // where values underflow), so the table relinks its buckets in one
        // linear pass; entries below the floor go.
        self.table.rescale(exp, score_floor);
    }

    /// The factor converting `S` into the score at `at`: `2^((L - at)/h)`.
    fn read_factor(&self, at: Timestamp) -> Pow2 {
        Pow2::ratio_cached(
            i128::from(self.landmark_ms) - i128::from(at.0),
            self.half_life_ms,
        )
    }

    pub(crate) fn score_with(&self, factor: Pow2, entity: EntityId) -> f64 {
        self.table.get(entity).map_or(0.0, |(s, _)| factor.apply(s))
    }
}

/// Whether `elapsed_ms` spans [`CATCH_UP_HALF_LIVES`] half-lives: the test
/// `elapsed / h >= C` without a division per signal (`elapsed >= C * h`,
/// never true when `C * h` overflows u64, as the quotient cannot reach C).
fn needs_catch_up(elapsed_ms: u64, half_life_ms: u64) -> bool {
    CATCH_UP_HALF_LIVES
        .checked_mul(half_life_ms.max(1))
        .is_some_and(|limit| elapsed_ms >= limit)
}

/// The score state of every signal type: decayed sums, counts and a
/// trending index per type.
///
/// It is a deterministic function of the sequence of calls made on it, so
/// a follower replaying the leader's log holds the same bits. It knows
/// nothing of files, logs or sockets.
#[derive(Clone, Debug)]
pub struct SignalStore {
    types: Vec<TypeState>,
    landmark_half_lives: u32,
    score_floor: f64,
}

impl SignalStore {
    /// An empty store with one type per half-life (type ids are positions
    /// in `half_lives_ms`), every landmark at 0. `landmark_half_lives` is
    /// clamped to `1..=512` and a negative or NaN `score_floor` means no
    /// floor; `Config` refuses such values before they get here.
    pub fn new(half_lives_ms: &[u64], landmark_half_lives: u32, score_floor: f64) -> Self {
        let landmark_half_lives = landmark_half_lives.clamp(1, LANDMARK_HALF_LIVES_MAX);
        SignalStore {
            types: half_lives_ms
                .iter()
                .map(|&h| TypeState::new(h, landmark_half_lives))
                .collect(),
            landmark_half_lives,
            score_floor: if score_floor > 0.0 { score_floor } else { 0.0 },
        }
    }

    /// Moves each type's landmark on the schedule of log time; call it once
    /// per batch, with the batch's HLC physical milliseconds, before its
    /// records apply. Cost: nothing unless a landmark moves, then a rescale
    /// and an index rebuild of that type (once every `landmark_half_lives`
    /// half-lives).
    pub fn advance_landmarks(&mut self, log_time_ms: u64) {
        for t in &mut self.types {
            t.move_landmark(log_time_ms, self.landmark_half_lives, self.score_floor);
        }
    }

    /// Adds one signal in O(1) (plus the index update). Timestamps may
    /// arrive out of order. The weight must be finite and the type known
    /// (both validated upstream); anything else is ignored, never a panic.
    pub fn add(&mut self, type_id: u16, entity: EntityId, weight: f64, at: Timestamp) {
        let Some(t) = self.types.get_mut(usize::from(type_id)) else {
            debug_assert!(false, "unknown signal type {type_id}");
            return;
        };
        t.add(
            entity,
            weight,
            at,
            self.landmark_half_lives,
            self.score_floor,
        );
    }

    /// Starts loading the entry `add(type_id, entity, ..)` will update
    /// (see `ScoreTable::touch`); returns a word of it to keep the load.
    pub(crate) fn touch(&self, type_id: u16, entity: EntityId) -> u64 {
        self.types
            .get(usize::from(type_id))
            .map_or(0, |t| t.table.touch(entity))
    }

    /// `(landmark_ms, half_life_ms)` of a type.
    pub(crate) fn landmark(&self, type_id: u16) -> Option<(u64, u64)> {
        self.types
            .get(usize::from(type_id))
            .map(|t| (t.landmark_ms, t.half_life_ms))
    }

    /// Adds a mass already relative to the type's landmark (a merged
    /// contribution's increase) and a count step to an entity's entry.
    pub(crate) fn add_mass(&mut self, type_id: u16, entity: EntityId, mass: f64, count: i64) {
        let Some(t) = self.types.get_mut(usize::from(type_id)) else {
            return;
        };
        if !mass.is_finite() {
            return;
        }
        t.table.upsert(entity, (saturate(mass), count), |s, c| {
            (saturate(s + mass), c.saturating_add(count))
        });
    }

    /// Starts noting which table slots change (`state::mirror`).
    pub(crate) fn begin_log(&mut self) {
        for t in &mut self.types {
            t.table.begin_log();
        }
    }

    /// Stops noting changes; those noted stay for [`Self::mirror_from`].
    pub(crate) fn end_log(&mut self) {
        for t in &mut self.types {
            t.table.end_log();
        }
    }

    /// Makes this store equal to `src`, given that it was equal before the
    /// changes `src` noted between `begin_log` and `end_log`.
    pub(crate) fn mirror_from(&mut self, src: &SignalStore) {
        debug_assert_eq!(self.types.len(), src.types.len());
        for (t, s) in self.types.iter_mut().zip(&src.types) {
            t.landmark_ms = s.landmark_ms;
            t.table.mirror_from(&s.table);
        }
    }

    /// Whether every type's table is `other`'s bit for bit.
    #[cfg(test)]
    pub(crate) fn same_layout(&self, other: &SignalStore) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|(a, b)| a.landmark_ms == b.landmark_ms && a.table.same_layout(&b.table))
    }

    /// Removes the entity from every type (a delete frees its space).
    pub fn remove_entity(&mut self, entity: EntityId) {
        for t in &mut self.types {
            t.table.remove(entity);
        }
    }

    /// The decayed score at `at`: `S * 2^(-(at - L)/h)`; 0.0 when the
    /// entity has no entry of that type. Finite for every `at`, also before
    /// the landmark.
    pub fn score(&self, type_id: u16, entity: EntityId, at: Timestamp) -> f64 {
        self.types
            .get(usize::from(type_id))
            .map_or(0.0, |t| t.score_with(t.read_factor(at), entity))
    }

    /// Signals with positive weight minus those with negative weight; 0 when
    /// absent.
    pub fn count(&self, type_id: u16, entity: EntityId) -> i64 {
        self.cell(type_id, entity).map_or(0, |(_, count)| count)
    }

    /// Whether the entity has an entry of that type.
    #[cfg(test)]
    pub fn contains(&self, type_id: u16, entity: EntityId) -> bool {
        self.cell(type_id, entity).is_some()
    }

    /// Number of entries of that type (0 for an unknown type).
    #[cfg(test)]
    pub fn len(&self, type_id: u16) -> usize {
        self.types
            .get(usize::from(type_id))
            .map_or(0, |t| t.table.len())
    }

    /// Whether no type holds any entry.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.types.iter().all(|t| t.table.is_empty())
    }

    /// Number of signal types.
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// The type's current landmark in ms (0 for an unknown type).
    #[cfg(test)]
    pub fn landmark_ms(&self, type_id: u16) -> u64 {
        self.types
            .get(usize::from(type_id))
            .map_or(0, |t| t.landmark_ms)
    }

    fn cell(&self, type_id: u16, entity: EntityId) -> Option<(f64, i64)> {
        self.types
            .get(usize::from(type_id))
            .and_then(|t| t.table.get(entity))
    }

    /// Exact top-k of a blend `sum_j weight_j * score_j(entity, at)` over
    /// the entities that have an entry in at least one listed type, filtered
    /// by `accept` (called at most once per entity); best first, ties broken
    /// by id ascending.
    ///
    /// One type walks its index from the top (from the bottom for a negative
    /// weight) and stops after `k` accepted entities plus those whose
    /// computed score equals the k-th, so ties stay exact after the float
    /// rounding of `S * factor`. Several types with weights `>= 0` use
    /// Fagin's threshold algorithm over the per-type indexes; any negative
    /// weight falls back to a scan of the union. Unknown type ids contribute
    /// nothing, and a non-finite weight counts as 0. Every path computes a
    /// score with the same operations, so results do not depend on the path.
    pub fn top_k(
        &self,
        blend: &[(u16, f64)],
        at: Timestamp,
        k: usize,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        let lanes: Vec<Lane<'_>> = blend
            .iter()
            .filter_map(|&(type_id, weight)| {
                let ty = self.types.get(usize::from(type_id))?;
                Some(Lane {
                    ty,
                    // +0.0 turns -0.0 into 0.0.
                    weight: if weight.is_finite() {
                        weight + 0.0
                    } else {
                        0.0
                    },
                    factor: ty.read_factor(at),
                })
            })
            .collect();
        if k == 0 || lanes.is_empty() {
            return Vec::new();
        }
        if let [lane] = lanes.as_slice() {
            return top_k_walk(lane, k, accept);
        }
        if lanes.iter().any(|l| l.weight < 0.0) {
            top_k_scan(&lanes, k, accept)
        } else {
            top_k_threshold(&lanes, k, accept)
        }
    }

    /// Appends the snapshot section body: a format version, then per type
    /// its half-life (checked on decode), landmark and entries `(id, S bits,
    /// count)` in index order, so equal states encode to equal bytes. The
    /// index itself is rebuilt on decode.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(FORMAT_VERSION);
        // Type counts are u16 ids, far below u32::MAX.
        out.put_u32(self.types.len() as u32);
        for t in &self.types {
            out.put_u64(t.half_life_ms);
            out.put_u64(t.landmark_ms);
            out.put_u32(t.table.len() as u32);
            out.reserve(t.table.len() * ENTRY_BYTES);
            t.table.for_each_ordered(|s, id, count| {
                out.put_u64(id.0);
                out.put_f64(s);
                out.put_u64(count as u64);
            });
        }
    }

    /// Decodes what [`SignalStore::encode`] wrote, for the given
    /// configuration. Never panics: a wrong version, a type list that does
    /// not match `half_lives_ms`, a non-finite `S`, a duplicate id or short
    /// input is a [`DecodeError`].
    pub fn decode(
        r: &mut Reader<'_>,
        half_lives_ms: &[u64],
        landmark_half_lives: u32,
        score_floor: f64,
    ) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(r.error(format!("unknown signal state version {version}")));
        }
        let type_count = r.u32()? as usize;
        if type_count != half_lives_ms.len() {
            return Err(r.error(format!(
                "{type_count} signal types stored, {} configured",
                half_lives_ms.len()
            )));
        }
        let mut store = SignalStore::new(half_lives_ms, landmark_half_lives, score_floor);
        // Each type's entries: where they start in the buffer, and the bytes.
        let mut parts = Vec::with_capacity(store.types.len());
        for t in &mut store.types {
            let half_life_ms = r.u64()?;
            if half_life_ms != t.half_life_ms {
                return Err(r.error(format!(
                    "half-life {half_life_ms} ms stored, {} ms configured",
                    t.half_life_ms
                )));
            }
            t.landmark_ms = r.u64()?;
            let n = r.count(ENTRY_BYTES)?;
            let at = r.position();
            parts.push((at, r.take(n * ENTRY_BYTES)?));
        }
        // The types' tables are independent: large ones are filled on one
        // thread each (a reopen from a snapshot of 1M entities x 3 types is
        // mostly these inserts, a cache miss each). The outcome, errors
        // included (the first type's first), does not depend on the threads.
        let total: usize = parts.iter().map(|(_, b)| b.len() / ENTRY_BYTES).sum();
        let fills: Vec<Result<(), DecodeError>> = if total >= PARALLEL_DECODE_ENTRIES {
            std::thread::scope(|scope| {
                let handles: Vec<_> = store
                    .types
                    .iter_mut()
                    .zip(&parts)
                    .map(|(t, &(at, bytes))| scope.spawn(move || fill(&mut t.table, at, bytes)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(DecodeError {
                                offset: 0,
                                reason: "a signal table's decode panicked".into(),
                            })
                        })
                    })
                    .collect()
            })
        } else {
            store
                .types
                .iter_mut()
                .zip(&parts)
                .map(|(t, &(at, bytes))| fill(&mut t.table, at, bytes))
                .collect()
        };
        fills.into_iter().collect::<Result<(), _>>()?;
        Ok(store)
    }

    /// Buffers for a copy of this store's tables, pages faulted in: size
    /// them with [`Self::capacities`] under a short read, allocate them with
    /// no lock held, then copy with [`Self::begin_copy`].
    pub(crate) fn buffers(capacities: &[usize]) -> Vec<TableBuffer> {
        capacities.iter().map(|&c| TableBuffer::new(c)).collect()
    }

    /// Each type's table capacity, for [`Self::buffers`].
    pub(crate) fn capacities(&self) -> Vec<usize> {
        self.types.iter().map(|t| t.table.capacity()).collect()
    }

    /// Estimated heap bytes, for status: each table by capacity, with its
    /// bucket heads and bitmap.
    pub fn approx_bytes(&self) -> usize {
        self.types.iter().fold(
            std::mem::size_of::<Self>() + self.types.len() * std::mem::size_of::<TypeState>(),
            |acc, t| acc.saturating_add(t.table.approx_bytes()),
        )
    }
}

mod copy;
#[cfg(test)]
mod measure;
mod parallel;
pub(crate) use parallel::RunBatch;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod walk_tests;
