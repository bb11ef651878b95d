//! The follower's divergence cut (DESIGN.md section 6): the records it holds
//! past the point its leader named are kept in `diverged/`, cut from the
//! log, and the state is rebuilt at the cut point.

use std::path::PathBuf;
use std::sync::PoisonError;

use bytes::Bytes;

use super::{Core, params, state_from_snapshot};
use crate::db::sequencer::Committer;
use crate::error::{Result, TidalError};
use crate::snapshot;
use crate::state::State;
use crate::types::{Epoch, SeqNo};
use crate::wal::format::{BATCH_HEADER_LEN, Schema, decode_records};
use crate::wal::reader::read_batches;
use crate::wal::record::Record;

/// Bytes of stored batches read per step when the state is rebuilt.
const REPLAY_CHUNK_BYTES: usize = 4 << 20;

/// What a divergence cut removed from the log.
#[derive(Clone, Debug)]
pub(crate) struct CutSuffix {
    /// Epoch of the first cut record.
    pub(crate) epoch: Epoch,
    /// SeqNo of the first cut record.
    pub(crate) first: SeqNo,
    /// SeqNo of the last cut record.
    pub(crate) last: SeqNo,
    /// The cut batches, exactly as they were logged, concatenated.
    pub(crate) batches: Bytes,
    /// Where they are kept.
    pub(crate) path: PathBuf,
}

impl Core {
    /// Cuts the log after `to` (the leader's divergence point): the batches
    /// above it are written durably into `<data_dir>/diverged/`, snapshots
    /// above `to` are deleted, the log is cut, and the state is rebuilt from
    /// the newest snapshot at or below `to` plus the log up to `to`, then
    /// published. Runs under the checkpoint lock and the committer.
    ///
    /// Nothing is changed before the suffix is durable in `diverged/`. A
    /// failure after the log was cut poisons the database (its state would
    /// no longer match its log); a reopen recovers the cut state.
    pub(crate) fn cut_log_after(&self, to: SeqNo) -> Result<CutSuffix> {
        let _no_checkpoint = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.commit.with_committer(|c| {
            // The suffix is read from the log files.
            c.write_out()?;
            let cut = self.keep_suffix(to)?;
            self.drop_snapshots_above(to)?;
            if let Err(e) = self.cut_and_rebuild(c, to) {
                let cause = format!("divergence cut after SeqNo {to} failed: {e}");
                tracing::error!(%cause, "the database is poisoned until reopened");
                c.poisoned = Some(cause);
                return Err(e);
            }
            Ok(cut)
        })
    }

    /// Reads the batches above `to` and writes them into `diverged/`.
    fn keep_suffix(&self, to: SeqNo) -> Result<CutSuffix> {
        let storage = self.storage.as_ref();
        let shard = self.config().cluster.shard_id;
        let first = to.next();
        let batches = read_batches(
            storage,
            &self.data_dir,
            shard,
            first,
            SeqNo(u64::MAX),
            usize::MAX,
        )?
        .unwrap_or_default();
        let (Some(head), Some(tail)) = (batches.first(), batches.last()) else {
            return Err(TidalError::corruption(
                &self.data_dir,
                0,
                format!("asked to cut the log after SeqNo {to}, but it holds nothing past it"),
            ));
        };
        if head.meta.first_seqno != first {
            return Err(TidalError::corruption(
                &self.data_dir,
                0,
                format!(
                    "cannot cut after SeqNo {to}: batch {}..={} holds it (not a batch boundary)",
                    head.meta.first_seqno,
                    head.meta.last_seqno()
                ),
            ));
        }
        let (epoch, last) = (head.meta.epoch, tail.meta.last_seqno());
        let mut all = Vec::with_capacity(batches.iter().map(|b| b.bytes.len()).sum());
        for b in &batches {
            all.extend_from_slice(&b.bytes);
        }
        let path = self.keep_diverged(epoch, first, None, &all)?;
        Ok(CutSuffix {
            epoch,
            first,
            last,
            batches: Bytes::from(all),
            path,
        })
    }

    /// Deletes every snapshot above `to` (it holds cut records), then syncs
    /// the snapshot directory. Done before the log is cut, so a crash in
    /// between recovers from an older snapshot and the whole log.
    fn drop_snapshots_above(&self, to: SeqNo) -> Result<()> {
        let storage = self.storage.as_ref();
        let shard = self.config().cluster.shard_id;
        let mut removed = false;
        for (seqno, path) in snapshot::list_snapshots(storage, &self.data_dir, shard)? {
            if seqno > to {
                storage
                    .remove_file(&path)
                    .map_err(|e| TidalError::io("remove snapshot", &path, e))?;
                removed = true;
            }
        }
        if removed {
            let dir = snapshot::snapshot_dir(&self.data_dir, shard);
            storage
                .sync_dir_at(crate::storage::SyncPoint::SnapshotCutDir, &dir)
                .map_err(|e| TidalError::io("sync dir", &dir, e))?;
        }
        Ok(())
    }

    /// Cuts the log, rebuilds the state at `to` and publishes it.
    fn cut_and_rebuild(&self, c: &mut Committer, to: SeqNo) -> Result<()> {
        c.wal.truncate_after(to)?;
        let state = self.state_at(to)?;
        let applied = state.applied();
        if applied.seqno != to {
            return Err(TidalError::corruption(
                &self.data_dir,
                0,
                format!(
                    "rebuilding the state at SeqNo {to} after a cut reached {}",
                    applied.seqno
                ),
            ));
        }
        c.last_appended = applied;
        if let Some(e) = state.epochs().last() {
            c.epoch = e.epoch;
        }
        self.view.replace(state);
        self.applied_tx.send_replace(applied);
        Ok(())
    }

    /// The state at `to`: the newest valid snapshot (none is above `to` any
    /// more) and the log replayed through the function recovery uses.
    fn state_at(&self, to: SeqNo) -> Result<State> {
        let config = self.config();
        let storage = self.storage.as_ref();
        let shard = config.cluster.shard_id;
        let (mut state, after) = match snapshot::load_newest_valid(storage, &self.data_dir, shard)?
        {
            Some(loaded) => (state_from_snapshot(config, &loaded)?, loaded.header.seqno),
            None => (State::new(params(config)), SeqNo(0)),
        };
        let schema = Schema {
            signal_type_count: config.signal_types.len() as u16,
            dimension: config.dimension as u32,
        };
        let mut records: Vec<Record> = Vec::new();
        let mut from = after.next();
        while from <= to {
            let batches =
                read_batches(storage, &self.data_dir, shard, from, to, REPLAY_CHUNK_BYTES)?
                    .ok_or_else(|| {
                        TidalError::corruption(
                            &self.data_dir,
                            0,
                            format!(
                                "the log no longer holds SeqNo {from}, needed to rebuild the state"
                            ),
                        )
                    })?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                if b.meta.first_seqno != from {
                    return Err(TidalError::corruption(
                        &self.data_dir,
                        0,
                        format!(
                            "replaying after a cut: batch starts at {}, expected {from}",
                            b.meta.first_seqno
                        ),
                    ));
                }
                records.clear();
                let payload = b.bytes.get(BATCH_HEADER_LEN..).unwrap_or_default();
                decode_records(payload, b.meta.record_count, &schema, &mut records).map_err(
                    |e| TidalError::corruption(&self.data_dir, e.offset as u64, e.reason),
                )?;
                state.apply_batch(&b.meta, &records);
                from = b.meta.last_seqno().next();
            }
        }
        Ok(state)
    }
}
