//! Recovery's replay of the log after the snapshot, with the signal types
//! applied side by side.
//!
//! Replay is one apply per record, each a few cache misses in a table far
//! larger than the cache, on one thread (W7: 2.8-3.3M records/s in
//! `examples/ingest_probe replay`, a profile two-thirds apply). Here
//! consecutive batches made of signals only apply as a run of up to
//! [`CHUNK_BYTES`] of records with one thread per type
//! (`SignalStore::add_run`); any other batch applies as usual, after the
//! run before it. Sessions and idempotency keys expire at each batch's log
//! time as `apply_batch` would have (signals touch neither), and the
//! applied position and last HLC end where the last batch puts them. The
//! state after a replay is bit for bit the one batch-by-batch applies give
//! (`state::replay_tests`).
//!
//! The log is read and decoded on the opening thread while another applies
//! what it read, so that decoding (a quarter of a one-thread replay)
//! overlaps the apply too.

use std::sync::{Mutex, PoisonError};

use crate::state::State;
use crate::state::signals::RunBatch;
use crate::types::Position;
use crate::wal::format::BatchMeta;
use crate::wal::record::Record;

/// Bytes of records (about: [`approx_bytes`]) the reading side gathers
/// before it hands them over, and so the most a run applies at once: about
/// 75,000 signals, enough that starting the type threads (tens of
/// microseconds) is noise, and little memory (at most four chunks: one
/// filling, two in the channel, one being applied), also when the records
/// are embeddings.
pub(super) const CHUNK_BYTES: usize = 4 << 20;

/// A record's size in a chunk, its heap parts included.
pub(super) fn approx_bytes(record: &Record) -> usize {
    let heap = match record {
        Record::Upsert { fields, .. } => fields.iter().map(|(k, v)| k.len() + v.len()).sum(),
        Record::Embedding { vector, .. } => vector.len() * size_of::<f32>(),
        Record::IdempotencyKey { key, .. } => key.len(),
        Record::Reconciled { record, .. } => approx_bytes(record),
        _ => 0,
    };
    size_of::<Record>() + heap
}

/// Most threads a run applies on, whatever the types.
const MAX_TYPE_THREADS: usize = 8;

/// A chunk of the log handed from the reading side to the applying side:
/// its records in one array, and each batch with the end of its records.
/// The applying side sends emptied chunks back, so the reading side fills
/// the same memory again. A chunk of one array per batch, allocated fresh,
/// had the reading thread at 31% of `ingest_probe replay`'s samples, a
/// third of it page faults; this at 23% (3.7-4.1M -> 4.0-4.3M records/s,
/// alternating builds).
#[derive(Default)]
struct Chunk {
    batches: Vec<(BatchMeta, usize)>,
    records: Vec<Record>,
}

impl Chunk {
    /// The chunk's batches with their records.
    fn iter(&self) -> impl Iterator<Item = (&BatchMeta, &[Record])> {
        let mut start = 0;
        self.batches.iter().map(move |(meta, end)| {
            let records = self.records.get(start..*end).unwrap_or_default();
            start = *end;
            (meta, records)
        })
    }
}

/// Runs `scan` (which reads the log and calls its argument with each
/// batch, in order) while another thread applies the batches to `state`,
/// runs of signal-only batches one thread per type; returns what `scan`
/// returns once every batch it passed is applied. With one core it
/// applies each batch as `scan` passes it, as `apply_batch`.
pub(crate) fn replay<R>(
    state: &mut State,
    scan: impl FnOnce(&mut dyn FnMut(&BatchMeta, &[Record])) -> R,
) -> R {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        return scan(&mut |meta, records| state.apply_batch(meta, records));
    }
    let threads = state.signals.type_count().clamp(1, MAX_TYPE_THREADS);
    // Where the applying thread takes the state from, and this one takes
    // it back when that thread cannot be started.
    let slot = Mutex::new(Some(state));
    let take = || slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Chunk>();
        let applier = std::thread::Builder::new()
            .name("tidal-replay".into())
            .spawn_scoped(s, move || {
                if let Some(state) = take() {
                    for mut chunk in rx {
                        apply_chunk(state, &chunk, threads);
                        chunk.batches.clear();
                        chunk.records.clear();
                        // The reading side may be done: then it is dropped.
                        let _ = back_tx.send(chunk);
                    }
                }
            });
        if let Err(e) = applier {
            tracing::warn!(error = %e, "no replay thread; replaying on this one");
            let Some(state) = take() else {
                unreachable!("the state is taken only by the thread not started");
            };
            return scan(&mut |meta, records| state.apply_batch(meta, records));
        }
        let mut chunk = Chunk::default();
        let mut bytes = 0;
        let out = scan(&mut |meta, batch| {
            chunk.records.extend_from_slice(batch);
            chunk.batches.push((*meta, chunk.records.len()));
            bytes += size_of::<BatchMeta>() + batch.iter().map(approx_bytes).sum::<usize>();
            if bytes >= CHUNK_BYTES {
                bytes = 0;
                let next = back_rx.try_recv().unwrap_or_default();
                // The applying side only goes away by panicking, which
                // the scope passes on when it ends.
                let _ = tx.send(std::mem::replace(&mut chunk, next));
            }
        });
        if !chunk.batches.is_empty() {
            let _ = tx.send(chunk);
        }
        out
    })
}

/// Applies a chunk: each run of signal-only batches with `add_run`, every
/// other batch with `apply_batch`, in log order.
fn apply_chunk(state: &mut State, chunk: &Chunk, threads: usize) {
    let signals_only =
        |records: &[Record]| records.iter().all(|r| matches!(r, Record::Signal { .. }));
    let mut run: Vec<(&BatchMeta, &[Record])> = Vec::new();
    for (meta, records) in chunk.iter() {
        if signals_only(records) {
            run.push((meta, records));
            continue;
        }
        apply_run(state, &run, threads);
        run.clear();
        state.apply_batch(meta, records);
    }
    apply_run(state, &run, threads);
}

/// Applies signal-only batches as `apply_batch` on each in turn would.
fn apply_run(state: &mut State, run: &[(&BatchMeta, &[Record])], threads: usize) {
    let Some((last, _)) = run.last() else {
        return;
    };
    let applied = Position::new(last.epoch, last.last_seqno());
    let mut hlc = last.hlc;
    let mut batches: Vec<RunBatch<'_>> = Vec::with_capacity(run.len());
    for (meta, records) in run {
        let log_ms = meta.hlc.physical_ms();
        state.expire(log_ms);
        hlc = hlc.max(meta.hlc);
        batches.push((log_ms, records));
    }
    state.signals.add_run(&batches, threads);
    state.applied = applied;
    state.last_hlc = state.last_hlc.max(hlc);
}
