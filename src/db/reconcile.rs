//! The reconciliation engine (DESIGN.md section 7): what an old leader took
//! and never shipped is folded into the current leader instead of thrown
//! away.
//!
//! Each diverged suffix held in `diverged/` (cut from this node's log, or
//! sent by a demoted leader or a cut follower) is read batch by batch.
//! Every signal of it (plain, or the signal part of a session event on
//! this shard) is folded into one [`Contribution`](crate::Contribution)
//! per touched (entity, type), keyed by the suffix's origin
//! `(epoch, leader node of that epoch)`, as forward-decayed positive and
//! negative mass and counts relative to the type's current landmark. The
//! contributions are logged as `Merge` records through the normal commit
//! path, so followers receive them, and applying one raises the stored
//! contribution of its key to the pointwise maximum and adds only the
//! increase to the entity's score and count. Hence the same suffix merged
//! twice, overlapping suffixes of one origin from several replicas (each a
//! prefix of the same lineage), and a crash in the middle of a
//! reconciliation (the suffix is marked merged only after its records are
//! logged; a rerun adds nothing already added) all end in the same state.
//!
//! Not merged yet, and reported as such in [`ReconcileReport::not_merged`]
//! (the suffix stays on disk): metadata upserts, embeddings, deletes,
//! session opens, events and closes, and user deletes. Merging those needs
//! their origin stamps on the merge records; until then they are never
//! applied twice and never silently dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use super::Core;
use crate::crdt::ContributionKey;
use crate::crdt::signal_state::flush;
use crate::error::{Result, TidalError};
use crate::state::decay::{Pow2, saturate};
use crate::storage::read_file;
use crate::types::{EntityId, Epoch, NodeId, Position};
use crate::wal::format::{BATCH_HEADER_LEN, Schema, decode_header, decode_records, verify_crc};
use crate::wal::record::Record;

/// What a reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Suffix files merged (and marked merged) by this run.
    pub suffixes: usize,
    /// Signal records folded into contributions.
    pub signals: u64,
    /// `Merge` records logged: one per touched (entity, type, origin).
    pub contributions: u64,
    /// Records of kinds reconciliation does not merge yet, by kind; they
    /// stay in the suffix file, which is kept.
    pub not_merged: BTreeMap<&'static str, u64>,
    /// Suffix files that could not be read as batches, with why; they are
    /// left as they are and not marked merged.
    pub damaged: Vec<(PathBuf, String)>,
    /// The position of the last merge batch logged, if any.
    pub last: Option<Position>,
}

/// `(type, entity, key)` -> (positive mass, negative mass, positive count,
/// negative count), relative to the type's landmark at reconciliation.
type Folded = BTreeMap<(u16, EntityId, ContributionKey), (f64, f64, u64, u64)>;

impl Core {
    /// Merges every diverged suffix not yet merged; see the module docs.
    pub(crate) fn reconcile(self: &Arc<Self>) -> Result<ReconcileReport> {
        let _one_at_a_time = self
            .marks
            .reconcile_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = ReconcileReport::default();
        for suffix in self.diverged().into_iter().filter(|d| !d.merged) {
            let bytes = read_file(self.storage.as_ref(), &suffix.path)?;
            let folded = match self.fold(&bytes, suffix.origin, &mut report) {
                Ok(f) => f,
                Err(why) => {
                    tracing::error!(path = %suffix.path.display(), %why, "a diverged suffix is damaged; not merged");
                    report.damaged.push((suffix.path, why));
                    continue;
                }
            };
            let (folded, landmarks) = folded;
            let records: Vec<Record> = folded
                .into_iter()
                .map(
                    |((signal_type, entity, key), (p, n, pc, nc))| Record::Merge {
                        signal_type,
                        entity,
                        key,
                        // The landmark the masses were computed against;
                        // the type's may move before the record applies,
                        // and applying rebases it.
                        landmark_ms: landmarks[usize::from(signal_type)].0,
                        positive_mass: p,
                        negative_mass: n,
                        positive_count: pc,
                        negative_count: nc,
                    },
                )
                .collect();
            let per_batch = self.config().limits.max_batch_records.max(1);
            for chunk in records.chunks(per_batch) {
                report.last = Some(self.submit(chunk.to_vec())?);
                report.contributions += chunk.len() as u64;
            }
            self.mark_merged(&suffix.path)?;
            report.suffixes += 1;
            tracing::info!(path = %suffix.path.display(), records = records.len(), "merged a diverged suffix");
        }
        *self
            .marks
            .last_reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        Ok(report)
    }

    /// Renames `X.batches` to `X.merged` (directory synced): kept as
    /// evidence, no longer merged again.
    fn mark_merged(&self, path: &std::path::Path) -> Result<()> {
        let to = path.with_extension("merged");
        let storage = self.storage.as_ref();
        storage
            .rename_at(crate::storage::SyncPoint::MergedRename, path, &to)
            .map_err(|e| TidalError::io("rename", path, e))?;
        let dir = path.parent().unwrap_or(&self.data_dir);
        storage
            .sync_dir_at(crate::storage::SyncPoint::MergedDir, dir)
            .map_err(|e| TidalError::io("sync dir", dir, e))
    }

    /// The leader of `epoch`: from this node's history, else the suffix's
    /// own `EpochStart`, else the node that sent it, else this node.
    fn leader_of(
        &self,
        epoch: Epoch,
        starts: &BTreeMap<Epoch, NodeId>,
        origin: Option<NodeId>,
    ) -> NodeId {
        self.view
            .read(|s| {
                s.epochs()
                    .iter()
                    .find(|e| e.epoch == epoch)
                    .map(|e| e.leader_node)
            })
            .or_else(|| starts.get(&epoch).copied())
            .or(origin)
            .unwrap_or(self.config().node_id)
    }

    /// Folds a suffix's signals into contributions, relative to each
    /// type's `(landmark_ms, half_life_ms)`, also returned; `Err` if its
    /// bytes are not whole, valid batches.
    fn fold(
        &self,
        bytes: &[u8],
        origin: Option<NodeId>,
        report: &mut ReconcileReport,
    ) -> std::result::Result<(Folded, Vec<(u64, u64)>), String> {
        let config = self.config();
        let schema = Schema {
            signal_type_count: config.signal_types.len() as u16,
            dimension: config.dimension as u32,
        };
        let mut batches = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let (meta, payload_len, _) =
                decode_header(rest).map_err(|e| format!("offset {at}: {}", e.reason))?;
            let end = BATCH_HEADER_LEN + payload_len as usize;
            let (Some(header), Some(payload)) = (
                rest.get(..BATCH_HEADER_LEN),
                rest.get(BATCH_HEADER_LEN..end),
            ) else {
                return Err(format!("offset {at}: batch cut short"));
            };
            if !verify_crc(header, payload) {
                return Err(format!("offset {at}: batch CRC mismatch"));
            }
            let mut records = Vec::new();
            decode_records(payload, meta.record_count, &schema, &mut records).map_err(|e| {
                format!("offset {}: {}", at + BATCH_HEADER_LEN + e.offset, e.reason)
            })?;
            batches.push((meta, records));
            at += end;
        }
        let mut starts = BTreeMap::new();
        for (_, records) in &batches {
            for r in records {
                if let Record::EpochStart {
                    epoch, leader_node, ..
                } = r
                {
                    starts.insert(*epoch, *leader_node);
                }
            }
        }
        let landmarks: Vec<(u64, u64)> = self.view.read(|s| {
            (0..schema.signal_type_count)
                .map(|t| s.signals.landmark(t).unwrap_or((0, 1)))
                .collect()
        });
        let mut folded = Folded::new();
        for (meta, records) in &batches {
            let key = ContributionKey {
                epoch: meta.epoch,
                node: self.leader_of(meta.epoch, &starts, origin),
            };
            for r in records {
                let (signal_type, entity, weight, t) = match r {
                    Record::Signal {
                        signal_type,
                        entity,
                        weight,
                        at,
                    } => (*signal_type, *entity, *weight, *at),
                    Record::SessionEvent {
                        signal_type,
                        entity,
                        weight,
                        at,
                        apply_signal: true,
                        ..
                    } => {
                        *report
                            .not_merged
                            .entry("session event (its signal was merged)")
                            .or_default() += 1;
                        (*signal_type, *entity, *weight, *at)
                    }
                    Record::EpochStart { .. } => continue,
                    other => {
                        *report.not_merged.entry(kind_name(other)).or_default() += 1;
                        continue;
                    }
                };
                let (landmark, h) = landmarks[usize::from(signal_type)];
                let mass = flush(
                    Pow2::ratio(i128::from(t.0) - i128::from(landmark), h).apply(weight.abs()),
                );
                let cell = folded
                    .entry((signal_type, entity, key))
                    .or_insert((0.0, 0.0, 0, 0));
                if weight > 0.0 {
                    cell.0 = flush(saturate(cell.0 + mass));
                    cell.2 += 1;
                } else if weight < 0.0 {
                    cell.1 = flush(saturate(cell.1 + mass));
                    cell.3 += 1;
                }
                report.signals += 1;
            }
        }
        Ok((folded, landmarks))
    }
}

fn kind_name(r: &Record) -> &'static str {
    match r {
        Record::Upsert { .. } => "metadata upsert",
        Record::Embedding { .. } => "embedding",
        Record::Delete { .. } => "delete",
        Record::OpenSession { .. } => "session open",
        Record::SessionEvent { .. } => "session event",
        Record::CloseSession { .. } => "session close",
        Record::DeleteUser { .. } => "user delete",
        Record::Merge { .. } => "merge",
        Record::IdempotencyKey { .. } => "idempotency key",
        Record::EpochStart { .. } => "epoch start",
        Record::Signal { .. } => "signal",
    }
}
