//! The reconciliation engine (DESIGN.md section 7): what an old leader took
//! and never shipped is folded into the current leader instead of thrown
//! away, each write counted once.
//!
//! Each diverged suffix held in `diverged/` (cut from this node's log, or
//! sent by a demoted leader or a cut follower) that is not yet merged is
//! read batch by batch and turned into records logged through the normal
//! commit path, so followers receive them:
//!
//! - **Signals** (plain, or the signal part of a session event on this
//!   shard) fold into one [`Contribution`](crate::Contribution) per touched
//!   (entity, type), keyed by the suffix's origin `(epoch, leader node of
//!   that epoch)`, logged as a `Merge` record: applying one raises the
//!   stored contribution of its key to the pointwise maximum and adds only
//!   the increase to the entity's score and count. `Merge` records a suffix
//!   already holds (its node reconciled an older suffix) are logged again
//!   as they are.
//! - **Metadata upserts, embeddings and deletes** are logged as
//!   `Reconciled` records carrying the stamp `(HLC, leader node, SeqNo)`
//!   they had in their own lineage: applying one is last-writer-wins by
//!   that stamp against what this lineage wrote (a newer write here stands;
//!   an older one here is replaced). A reconciled delete removes what is
//!   older than it; an entity written here after it stays live, with its
//!   score, and loses only the fields and embedding older than the delete.
//!   An entity that only ever had signals is removed by the delete with all
//!   its score, as a delete here would.
//! - **Sessions**: an open of a session this node does not have opens it;
//!   events are appended after the session's last number, marked merged
//!   (`SessionEvent::merged`), each remembered by where it was first logged
//!   so it is appended once; a close closes it if it is open here. A user
//!   delete is applied again: a privacy request is never lost, even if it
//!   also removes sessions the user opened here since.
//! - **Idempotency keys**: a key this node does not hold is logged first,
//!   as a merged key, before anything of its request: from then on a retry
//!   of the request here is answered with that key's Position instead of
//!   applied again. A key this node holds from a client (the request was
//!   retried here after the failover and applied here) means the request
//!   is already counted: its records are skipped (`already_here`). A key
//!   held here with other content is a conflict: this node's record
//!   stands, the suffix's request is merged without its key, and the
//!   conflict is reported; so is a key refused because the store is full.
//!   Nothing applied is ever taken back.
//! - **Records that no longer make sense** are dropped and reported by
//!   reason: a write for an id now of the other kind, events of a session
//!   that is not here or is another user's here, and a signal older (by
//!   stamp) than a delete of its entity, here or in the suffix: it was
//!   deleted with it.
//!
//! Limits that bound client writes do not refuse merged records (nothing
//! acknowledged is dropped for a limit): an entity may end with more
//! metadata fields than `Limits::max_metadata_fields`, a session with more
//! events than `max_session_events`; later client writes past the limit
//! are refused as usual. Idempotency keys are the exception, since they go
//! through the keyed write path: at capacity the key is not added and the
//! conflict is reported. A merged key's time to live counts from the
//! merge.
//!
//! Order: idempotency keys first, then register writes, sessions and user
//! deletes in the suffix's order, then the contributions (so a suffix's
//! delete never removes the signals it logged after it).
//!
//! Every step is idempotent, so the same suffix merged twice, overlapping
//! suffixes of one origin from several replicas (each a prefix of the same
//! lineage), and a crash in the middle of a reconciliation (the suffix is
//! marked merged only after all its records are logged and synced, under
//! every durability setting; a rerun adds
//! nothing already added) all end in the same state. A follower sends the
//! unmerged suffixes it holds to every leader it joins, so a second
//! failover before a reconciliation finished loses nothing either.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use super::Core;
use super::reconcile_plan::{Batches, Keyed, build, keyed_requests, parse};
use crate::db::sequencer::Request;
use crate::error::{Result, TidalError};
use crate::storage::read_file;
use crate::types::{Epoch, NodeId, Position};
use crate::wal::format::Schema;
use crate::wal::record::Record;

/// What a reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Suffix files merged (and marked merged) by this run.
    pub suffixes: usize,
    /// Signal records folded into contributions.
    pub signals: u64,
    /// `Merge` records logged: one per touched (entity, type, origin),
    /// plus the merges the suffixes held.
    pub contributions: u64,
    /// Records merged, by kind (signals are counted in `signals`).
    pub merged: BTreeMap<&'static str, u64>,
    /// Records already here, by kind: a request retried here under its
    /// idempotency key, an event, key or session merged or applied before.
    pub already_here: BTreeMap<&'static str, u64>,
    /// Records dropped because they no longer make sense here, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Idempotency keys the suffix's requests could not bring here.
    pub conflicts: Vec<ReconcileConflict>,
    /// Suffix files that could not be read as batches, with why; they are
    /// left as they are and not marked merged.
    pub damaged: Vec<(PathBuf, String)>,
    /// The position of the last record logged, if any.
    pub last: Option<Position>,
}

/// An idempotency key of a diverged suffix that could not be brought over.
/// The request's writes are merged either way; nothing applied is undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileConflict {
    /// This node holds the key for other content: its record stands, and a
    /// retry of the suffix's request gets `IdempotencyConflict` here.
    KeyUsed {
        /// The key.
        key: Vec<u8>,
        /// The Position of this node's request with that key.
        here: Position,
    },
    /// The store was at `Config::idempotency_capacity`: the key was not
    /// added, so a retry of the request here would apply it again.
    StoreFull {
        /// The key.
        key: Vec<u8>,
    },
}

impl Core {
    /// Merges every diverged suffix not yet merged; see the module docs.
    pub(crate) fn reconcile(self: &Arc<Self>) -> Result<ReconcileReport> {
        let _one_at_a_time = self
            .marks
            .reconcile_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.reconcile_locked()
    }

    /// The automatic reconciliation when a suffix arrives: merges as
    /// [`Core::reconcile`] does if any held suffix is unmerged, else does
    /// nothing and returns `None`, leaving the last report in place. A
    /// follower hands its suffixes over on every connection, so most
    /// arrivals are copies of suffixes merged already; reconciling for
    /// them would replace the report of the merge with an empty one.
    pub(crate) fn reconcile_if_unmerged(self: &Arc<Self>) -> Result<Option<ReconcileReport>> {
        let _one_at_a_time = self
            .marks
            .reconcile_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.diverged().iter().all(|d| d.merged) {
            return Ok(None);
        }
        self.reconcile_locked().map(Some)
    }

    /// [`Core::reconcile`] under its lock.
    fn reconcile_locked(self: &Arc<Self>) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let result = self.reconcile_all(&mut report);
        *self
            .marks
            .last_reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        result.map(|()| report)
    }

    fn reconcile_all(self: &Arc<Self>, report: &mut ReconcileReport) -> Result<()> {
        let config = self.config();
        let schema = Schema {
            signal_type_count: config.signal_types.len() as u16,
            dimension: config.dimension as u32,
        };
        for suffix in self.diverged().into_iter().filter(|d| !d.merged) {
            let bytes = read_file(self.storage.as_ref(), &suffix.path)?;
            let batches = match parse(&bytes, &schema) {
                Ok(b) => b,
                Err(why) => {
                    tracing::error!(path = %suffix.path.display(), %why, "a diverged suffix is damaged; not merged");
                    report.damaged.push((suffix.path, why));
                    continue;
                }
            };
            let skip = self.bring_keys(&batches, report)?;
            let starts = epoch_starts(&batches);
            let plan = self.view.read(|s| {
                let leader_of = |epoch: Epoch| self.leader_of(s, epoch, &starts, suffix.origin);
                build(s, &batches, &skip, &leader_of, report)
            });
            let per_batch = config.limits.max_batch_records.max(1);
            // Deletes before the contributions: a suffix's delete removes
            // only what came before it, and its later signals survive it.
            for chunk in plan.ordered.chunks(per_batch) {
                report.last = Some(self.submit(chunk.to_vec())?);
            }
            for chunk in plan.contributions.chunks(per_batch) {
                report.last = Some(self.submit(chunk.to_vec())?);
                report.contributions += chunk.len() as u64;
            }
            // Later writes here win over everything merged.
            if let Some(h) = batches.iter().map(|(m, _)| m.hlc).max() {
                self.hlc.advance_to(h);
            }
            // The records are durable before the suffix is marked merged,
            // whatever this node's durability (`Periodic` does not sync on
            // commit): a crash never leaves a suffix marked merged whose
            // records are lost.
            self.flush()?;
            self.mark_merged(&suffix.path, report)?;
            tracing::info!(path = %suffix.path.display(), "merged a diverged suffix");
        }
        Ok(())
    }

    /// Brings the suffix's idempotency keys here before anything of their
    /// requests (see the module docs). Returns the places of the records of
    /// requests already applied here, to skip.
    fn bring_keys(
        self: &Arc<Self>,
        batches: &Batches,
        report: &mut ReconcileReport,
    ) -> Result<HashSet<(usize, usize)>> {
        let ttl_ms = crate::config::duration_ms(self.config().idempotency_ttl);
        let held = |key: &[u8]| {
            self.view.read(|s| {
                s.idempotency()
                    .get(key, s.last_hlc().physical_ms(), ttl_ms)
                    .map(|e| (e.digest, e.position, e.merged))
            })
        };
        let mut skip = HashSet::new();
        let mut done = HashSet::new();
        for req in keyed_requests(batches) {
            let Keyed {
                key,
                digest,
                batch,
                records,
            } = req;
            if !done.insert(key.clone()) {
                continue;
            }
            let answer = match held(&key) {
                Some(h) => Ok(h),
                None => {
                    let logged = self.submit_request(Request {
                        records: Vec::new(),
                        idem: Some((key.clone(), digest)),
                        merged_key: true,
                    });
                    match logged {
                        Ok(pos) => {
                            report.last = Some(pos);
                            // A client's retry may have got in first.
                            Ok(held(&key).unwrap_or((digest, pos, true)))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match answer {
                Ok((d, _, false)) if d == digest => {
                    skip.extend(records.clone().map(|i| (batch, i)));
                    *report.already_here.entry("idempotency key").or_default() += 1;
                }
                Ok((d, _, true)) if d == digest => {
                    *report.merged.entry("idempotency key").or_default() += 1;
                }
                Ok((_, here, _)) | Err(TidalError::IdempotencyConflict { original: here, .. }) => {
                    report
                        .conflicts
                        .push(ReconcileConflict::KeyUsed { key, here });
                }
                Err(TidalError::IdempotencyFull { .. }) => {
                    report.conflicts.push(ReconcileConflict::StoreFull { key });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(skip)
    }

    /// Renames `X.batches` to `X.merged` (directory synced): kept as
    /// evidence, no longer merged again.
    ///
    /// The suffix is counted in `report` and the report so far published
    /// as `last_reconcile` under the same lock as the rename: `status()`
    /// lists `diverged/` before it takes that lock, so a status that shows
    /// the suffix merged also shows a report counting it. (Publishing only
    /// at the end of the run left a window, the directory sync included,
    /// where a suffix showed merged beside the previous run's report.)
    fn mark_merged(&self, path: &std::path::Path, report: &mut ReconcileReport) -> Result<()> {
        let to = path.with_extension("merged");
        let storage = self.storage.as_ref();
        {
            let _no_store = self
                .marks
                .diverged_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut last = self
                .marks
                .last_reconcile
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            storage
                .rename_at(crate::storage::SyncPoint::MergedRename, path, &to)
                .map_err(|e| TidalError::io("rename", path, e))?;
            report.suffixes += 1;
            *last = Some(report.clone());
        }
        let dir = path.parent().unwrap_or(&self.data_dir);
        storage
            .sync_dir_at(crate::storage::SyncPoint::MergedDir, dir)
            .map_err(|e| TidalError::io("sync dir", dir, e))
    }

    /// The leader of `epoch`: from this node's history, else the suffix's
    /// own `EpochStart`, else the node that sent it, else this node.
    fn leader_of(
        &self,
        state: &crate::state::State,
        epoch: Epoch,
        starts: &BTreeMap<Epoch, NodeId>,
        origin: Option<NodeId>,
    ) -> NodeId {
        state
            .epochs()
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.leader_node)
            .or_else(|| starts.get(&epoch).copied())
            .or(origin)
            .unwrap_or(self.config().node_id)
    }
}

/// The leaders the suffix's own `EpochStart` records name.
fn epoch_starts(batches: &Batches) -> BTreeMap<Epoch, NodeId> {
    let mut starts = BTreeMap::new();
    for (_, records) in batches {
        for r in records {
            if let Record::EpochStart {
                epoch, leader_node, ..
            } = r
            {
                starts.insert(*epoch, *leader_node);
            }
        }
    }
    starts
}
