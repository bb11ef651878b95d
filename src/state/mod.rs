//! The in-memory state machine. It knows nothing of files or sockets.
//!
//! [`State::apply_batch`] is the one function that turns logged records
//! into state, used by the group committer, by recovery, and (later) by
//! followers: records were validated before they were logged, so applying
//! never fails, and two replicas applying the same batches hold the same
//! bits.

use std::sync::Arc;

pub mod ann;
mod ann_codes;
#[cfg(test)]
mod ann_codes_tests;
#[cfg(test)]
mod ann_measure;
mod ann_scan;
#[cfg(test)]
mod ann_tests;
mod ann_train;
#[cfg(test)]
mod apply_measure;
mod clone_threads;
#[cfg(test)]
mod copy_tests;
pub(crate) mod decay;
pub mod entities;
pub(crate) mod merged;
pub(crate) mod mirror;
#[cfg(test)]
mod mirror_tests;
pub(crate) mod replay;
#[cfg(test)]
mod replay_tests;
mod score_bitmap;
mod score_slots;
mod score_table;
pub mod sessions;
pub mod signals;
mod trending;
pub mod vectors;
#[cfg(test)]
mod vectors_tests;

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::idempotency::IdempotencyStore;
use crate::query::Filter;
use crate::types::{EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, Timestamp};
use crate::wal::format::BatchMeta;
use crate::wal::record::Record;
use entities::{Deleted, EntityStore, Stamp};
use merged::{MergedStore, Stored};
use sessions::{EventRecord, SessionStore};
use signals::SignalStore;
use vectors::VectorStore;

/// The state-machine parameters (part of the database identity in `META`).
#[derive(Clone, Debug, PartialEq)]
pub struct StateParams {
    /// Half-life of each signal type, by type id.
    pub half_lives_ms: Vec<u64>,
    /// Half-lives between landmark moves.
    pub landmark_half_lives: u32,
    /// Entries below this magnitude are dropped when the landmark moves.
    pub score_floor: f64,
    /// Closed sessions older than this (log time) are dropped.
    pub session_retention_ms: u64,
    /// Embedding dimension.
    pub dimension: usize,
    /// Idempotency keys older than this (log time) are dropped.
    pub idempotency_ttl_ms: u64,
    /// The approximate vector index's knobs.
    pub vector_index: ann::IndexParams,
}

/// One epoch of the log's history: rebuilt from `EpochStart` records and
/// kept in snapshots, so every replica knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The epoch.
    pub epoch: Epoch,
    /// SeqNo of its `EpochStart` record.
    pub start: SeqNo,
    /// The node that led it.
    pub leader_node: NodeId,
    /// Led by a replicating leader (`true`) or a Single node.
    pub replicated: bool,
}

/// Snapshot section ids. New sections get new ids; readers skip unknown ones.
pub(crate) mod section {
    pub const HEADER: u16 = 1;
    pub const SIGNALS: u16 = 2;
    pub const ENTITIES: u16 = 3;
    pub const VECTORS: u16 = 4;
    pub const SESSIONS: u16 = 5;
    pub const MERGED: u16 = 6;
    /// Optional: a snapshot written before idempotency keys existed has
    /// none, which is an empty store.
    pub const IDEMPOTENCY: u16 = 7;
}

/// The whole in-memory state of a shard.
#[derive(Clone, Debug)]
pub struct State {
    params: Arc<StateParams>,
    pub(crate) signals: SignalStore,
    pub(crate) entities: EntityStore,
    pub(crate) vectors: VectorStore,
    pub(crate) sessions: SessionStore,
    /// Contributions merged by reconciliation (only where one touched).
    pub(crate) merged: MergedStore,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) epochs: Vec<EpochEntry>,
    pub(crate) applied: Position,
    pub(crate) last_hlc: Hlc,
}

/// A snapshot's copy of a [`State`] under way (`State::begin_copy`).
pub(crate) struct PartialCopy {
    state: State,
    /// By signal type: slots still to come from the source.
    pending: Vec<bool>,
}

/// The header of a test batch of `records` at log time `ms` (shard 0,
/// epoch 1), numbered from `first_seqno`.
#[cfg(test)]
pub(crate) fn test_meta(first_seqno: u64, ms: u64, records: &[Record]) -> BatchMeta {
    BatchMeta {
        shard: crate::types::ShardId(0),
        first_seqno: SeqNo(first_seqno),
        epoch: Epoch(1),
        hlc: Hlc::new(ms, 0),
        record_count: records.len() as u32,
    }
}

/// Records whose entries `apply_batch` touches before applying them: about
/// as many misses as a core keeps in flight, with their lines still cached
/// when the window's upserts reach them.
const TOUCH_WINDOW: usize = 16;

impl State {
    /// An empty state.
    pub fn new(params: StateParams) -> State {
        State {
            signals: SignalStore::new(
                &params.half_lives_ms,
                params.landmark_half_lives,
                params.score_floor,
            ),
            entities: EntityStore::new(),
            vectors: VectorStore::new(params.dimension, params.vector_index),
            sessions: SessionStore::new(),
            merged: MergedStore::default(),
            idempotency: IdempotencyStore::new(),
            epochs: Vec::new(),
            applied: Position::default(),
            last_hlc: Hlc::default(),
            params: Arc::new(params),
        }
    }

    /// Starts a snapshot's copy of this state: everything but the score
    /// tables' slots now, the slots slice by slice ([`State::copy_step`])
    /// while the writer may go on writing this state, each slice as it was
    /// now (`score_slots`); [`State::finish_copy`] completes it.
    pub(crate) fn begin_copy(&self, buffers: Vec<score_table::TableBuffer>) -> PartialCopy {
        let (signals, pending) = self.signals.begin_copy(buffers);
        PartialCopy {
            state: self.with_parts(|| signals, || self.vectors.clone()),
            pending,
        }
    }

    /// Copies about one slice more of a copy under way; whether any is left.
    pub(crate) fn copy_step(&self) -> bool {
        self.signals.copy_step()
    }

    /// The state as it was when `partial` began, or None when this state
    /// no longer holds the copy (it was replaced meanwhile). Ends the copy
    /// either way.
    pub(crate) fn finish_copy(&self, mut partial: PartialCopy) -> Option<State> {
        self.signals
            .finish_copy(&mut partial.state.signals, &partial.pending)
            .then_some(partial.state)
    }

    /// The last applied record.
    pub fn applied(&self) -> Position {
        self.applied
    }

    /// The highest batch HLC applied.
    pub fn last_hlc(&self) -> Hlc {
        self.last_hlc
    }

    /// Estimated heap bytes of this copy of the state.
    pub fn approx_bytes(&self) -> usize {
        self.signals.approx_bytes()
            + self.entities.approx_bytes()
            + self.vectors.approx_bytes()
            + self.sessions.approx_bytes()
            + self.merged.approx_bytes()
            + self.idempotency.approx_bytes()
    }

    /// The idempotency keys held.
    pub fn idempotency(&self) -> &IdempotencyStore {
        &self.idempotency
    }

    /// The epoch history, oldest first.
    pub fn epochs(&self) -> &[EpochEntry] {
        &self.epochs
    }

    /// Applies one logged batch. Never fails: records were validated before
    /// they were logged (and decoding refuses anything apply could not take).
    pub fn apply_batch(&mut self, meta: &BatchMeta, records: &[Record]) {
        let log_ms = meta.hlc.physical_ms();
        self.signals.advance_landmarks(log_ms);
        self.expire(log_ms);
        // Signals hit random entries of tables far larger than the cache:
        // touch a window's entries first, so their misses overlap, then
        // apply it (see `ScoreTable::touch`).
        let mut touched = 0u64;
        for (w, window) in records.chunks(TOUCH_WINDOW).enumerate() {
            for record in window {
                if let Record::Signal {
                    signal_type,
                    entity,
                    ..
                } = record
                {
                    touched ^= self.signals.touch(*signal_type, *entity);
                }
            }
            for (i, record) in window.iter().enumerate() {
                let seqno = SeqNo(meta.first_seqno.0 + (w * TOUCH_WINDOW + i) as u64);
                self.apply_record(meta, seqno, record);
            }
        }
        std::hint::black_box(touched);
        self.applied = Position::new(meta.epoch, meta.last_seqno());
        self.last_hlc = self.last_hlc.max(meta.hlc);
    }

    /// What a batch drops by log time before its records apply, besides
    /// moving the landmarks: closed sessions and idempotency keys past
    /// their retention (`mirror` does this part of a batch itself).
    fn expire(&mut self, log_ms: u64) {
        self.sessions
            .expire(log_ms, self.params.session_retention_ms);
        self.idempotency
            .expire(log_ms, self.params.idempotency_ttl_ms);
    }

    /// A metadata upsert, embedding or delete, last-writer-wins by `stamp`
    /// (its own record's, or the origin stamp of a reconciled one).
    fn apply_register(&mut self, record: &Record, stamp: Stamp) {
        match record {
            Record::Upsert {
                kind,
                id,
                creator,
                fields,
            } => self.entities.upsert(*kind, *id, *creator, fields, stamp),
            // An embedding binds the id's kind, like metadata does.
            Record::Embedding { kind, id, vector } if self.entities.embed(*kind, *id, stamp) => {
                self.vectors.set(*kind, *id, vector);
            }
            Record::Delete { kind, id } => match self.entities.delete(*kind, *id, stamp) {
                Deleted::WrongKind => {}
                Deleted::Gone => {
                    self.vectors.remove(*id);
                    self.signals.remove_entity(*id);
                    self.merged.remove_entity(*id);
                }
                Deleted::StillLive { embedding_dropped } => {
                    if embedding_dropped {
                        self.vectors.remove(*id);
                    }
                }
            },
            // The codec allows nothing else inside `Reconciled`.
            _ => {}
        }
    }

    fn apply_record(&mut self, meta: &BatchMeta, seqno: SeqNo, record: &Record) {
        let node = self
            .epochs
            .last()
            .map(|e| e.leader_node)
            .unwrap_or_default();
        let stamp = Stamp {
            hlc: meta.hlc,
            node,
            seqno,
        };
        match record {
            Record::EpochStart {
                epoch,
                leader_node,
                replicated,
                ..
            } => self.epochs.push(EpochEntry {
                epoch: *epoch,
                start: seqno,
                leader_node: *leader_node,
                replicated: *replicated,
            }),
            Record::Signal {
                signal_type,
                entity,
                weight,
                at,
            } => self.signals.add(*signal_type, *entity, *weight, *at),
            Record::Upsert { .. } | Record::Embedding { .. } | Record::Delete { .. } => {
                self.apply_register(record, stamp)
            }
            Record::Reconciled { stamp, record } => self.apply_register(record, *stamp),
            Record::OpenSession { session, user, at } => self.sessions.open(*session, *user, *at),
            Record::SessionEvent {
                session,
                seq,
                entity,
                signal_type,
                weight,
                at,
                apply_signal,
            } => {
                self.sessions.record(
                    *session,
                    EventRecord {
                        seq: *seq,
                        entity: *entity,
                        signal_type: *signal_type,
                        weight: *weight,
                        at: *at,
                        merged: false,
                    },
                );
                if *apply_signal {
                    self.signals.add(*signal_type, *entity, *weight, *at);
                }
            }
            Record::CloseSession { session, at } => {
                self.sessions.close(*session, *at, meta.hlc.physical_ms())
            }
            Record::DeleteUser { user } => self.sessions.delete_user(*user),
            Record::MergedSessionEvent {
                session,
                entity,
                signal_type,
                weight,
                at,
                origin,
            } => self.sessions.merge_event(
                *session,
                *origin,
                EventRecord {
                    seq: 0,
                    entity: *entity,
                    signal_type: *signal_type,
                    weight: *weight,
                    at: *at,
                    merged: true,
                },
            ),
            Record::IdempotencyKey {
                key,
                digest,
                merged,
                ..
            } => self.idempotency.insert(
                key,
                *digest,
                Position::new(meta.epoch, seqno),
                meta.hlc.physical_ms(),
                *merged,
            ),
            Record::Merge {
                signal_type,
                entity,
                key,
                landmark_ms,
                positive_mass,
                negative_mass,
                positive_count,
                negative_count,
            } => self.merged.merge(
                &mut self.signals,
                *signal_type,
                *entity,
                *key,
                Stored {
                    landmark_ms: *landmark_ms,
                    positive_mass: *positive_mass,
                    negative_mass: *negative_mass,
                    positive_count: *positive_count,
                    negative_count: *negative_count,
                },
            ),
        }
    }

    /// Whether `id` passes `filter` (kind, metadata, creator, exclusions).
    pub fn accepts(&self, id: EntityId, filter: &Filter) -> bool {
        let needs_entity =
            filter.kind.is_some() || !filter.metadata.is_empty() || filter.creator.is_some();
        if needs_entity
            && !self
                .entities
                .matches(id, filter.kind, &filter.metadata, filter.creator)
        {
            return false;
        }
        if filter.exclude_ids.contains(&id) {
            return false;
        }
        if let Some(s) = filter.exclude_seen
            && self.sessions.has_seen(s, id)
        {
            return false;
        }
        if let Some(u) = filter.exclude_hard_negatives
            && self.sessions.is_hard_negative(u, id)
        {
            return false;
        }
        true
    }

    /// Exact top-k of a blend of signal types at `at`, filtered.
    pub fn retrieve(
        &self,
        blend: &[(u16, f64)],
        at: Timestamp,
        k: usize,
        filter: &Filter,
    ) -> Vec<(EntityId, f64)> {
        self.signals
            .top_k(blend, at, k, &mut |id| self.accepts(id, filter))
    }

    /// Cosine top-k over one kind's embeddings (query of unit length):
    /// exact below the index size, approximate above (`vectors`).
    pub fn search(
        &self,
        kind: EntityKind,
        unit: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Vec<(EntityId, f64)> {
        self.vectors
            .top_k(kind, unit, k, &mut |id| self.accepts(id, filter))
    }

    /// The snapshot sections of this state: `(id, version, bytes)`.
    pub(crate) fn encode_sections(&self) -> Vec<(u16, u16, Vec<u8>)> {
        let mut header = Vec::new();
        header.put_u64(self.applied.epoch.0);
        header.put_u64(self.applied.seqno.0);
        header.put_u64(self.last_hlc.0);
        header.put_u32(self.epochs.len() as u32);
        for e in &self.epochs {
            header.put_u64(e.epoch.0);
            header.put_u64(e.start.0);
            header.put_u64(e.leader_node.0);
            header.put_u8(u8::from(e.replicated));
        }
        let mut signals = Vec::new();
        self.signals.encode(&mut signals);
        let mut entities = Vec::new();
        self.entities.encode(&mut entities);
        let mut vectors = Vec::new();
        self.vectors.encode(&mut vectors);
        let mut sessions = Vec::new();
        self.sessions.encode(&mut sessions);
        let mut merged = Vec::new();
        self.merged.encode(&mut merged);
        let mut idempotency = Vec::new();
        self.idempotency.encode(&mut idempotency);
        vec![
            (section::HEADER, 1, header),
            (section::SIGNALS, 1, signals),
            (section::ENTITIES, 1, entities),
            (section::VECTORS, 2, vectors),
            (section::SESSIONS, 1, sessions),
            (section::MERGED, 1, merged),
            (section::IDEMPOTENCY, 1, idempotency),
        ]
    }

    /// Rebuilds a state from snapshot sections. Unknown section ids are
    /// skipped (a newer writer may add sections); a missing known section
    /// or a bad one is an error.
    pub(crate) fn decode_sections(
        params: StateParams,
        sections: &[(u16, u16, &[u8])],
    ) -> Result<State, (u16, DecodeError)> {
        // The vectors section has a version 2 (the index); the others 1.
        let newest = |id: u16| if id == section::VECTORS { 2 } else { 1 };
        let find = |id: u16| -> Result<Reader<'_>, (u16, DecodeError)> {
            match sections.iter().find(|(sid, _, _)| *sid == id) {
                Some((_, v, bytes)) if (1..=newest(id)).contains(v) => Ok(Reader::new(bytes)),
                Some((_, v, _)) => Err((
                    id,
                    DecodeError {
                        offset: 0,
                        reason: format!("section version {v} is not supported"),
                    },
                )),
                None => Err((
                    id,
                    DecodeError {
                        offset: 0,
                        reason: "section missing".into(),
                    },
                )),
            }
        };
        let mut st = State::new(params);
        let p = st.params.clone();
        let mut r = find(section::HEADER)?;
        let e = |e: DecodeError| (section::HEADER, e);
        let epoch = r.u64().map_err(e)?;
        let seqno = r.u64().map_err(e)?;
        st.applied = Position::new(Epoch(epoch), SeqNo(seqno));
        st.last_hlc = Hlc(r.u64().map_err(e)?);
        let n = r.count(25).map_err(e)?;
        for _ in 0..n {
            st.epochs.push(EpochEntry {
                epoch: Epoch(r.u64().map_err(e)?),
                start: SeqNo(r.u64().map_err(e)?),
                leader_node: NodeId(r.u64().map_err(e)?),
                replicated: r.u8().map_err(e)? != 0,
            });
        }
        let mut r = find(section::SIGNALS)?;
        st.signals = SignalStore::decode(
            &mut r,
            &p.half_lives_ms,
            p.landmark_half_lives,
            p.score_floor,
        )
        .map_err(|e| (section::SIGNALS, e))?;
        let mut r = find(section::ENTITIES)?;
        st.entities = EntityStore::decode(&mut r).map_err(|e| (section::ENTITIES, e))?;
        let mut r = find(section::VECTORS)?;
        let version = sections
            .iter()
            .find(|(id, _, _)| *id == section::VECTORS)
            .map_or(1, |s| s.1);
        st.vectors = VectorStore::decode(&mut r, version, p.dimension, p.vector_index)
            .map_err(|e| (section::VECTORS, e))?;
        let mut r = find(section::SESSIONS)?;
        st.sessions = SessionStore::decode(&mut r).map_err(|e| (section::SESSIONS, e))?;
        // Snapshots written before reconciliation existed have no such
        // section: nothing was merged then.
        if sections.iter().any(|(id, _, _)| *id == section::MERGED) {
            let mut r = find(section::MERGED)?;
            st.merged = MergedStore::decode(&mut r, p.half_lives_ms.len())
                .map_err(|e| (section::MERGED, e))?;
        }
        // Likewise for snapshots written before idempotency keys existed.
        if sections
            .iter()
            .any(|(id, _, _)| *id == section::IDEMPOTENCY)
        {
            let mut r = find(section::IDEMPOTENCY)?;
            st.idempotency =
                IdempotencyStore::decode(&mut r).map_err(|e| (section::IDEMPOTENCY, e))?;
        }
        Ok(st)
    }
}
