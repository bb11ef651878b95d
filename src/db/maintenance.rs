//! Maintenance: checkpoints (snapshots plus log retention) and backups.
//!
//! A snapshot is taken from a clone of the published state copy, so writers
//! wait only while the clone is made (the writer needs that copy for its
//! second apply); encoding and I/O happen off the commit path.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::db::core::Core;
use crate::db::core::repl::retention_point;
use crate::error::{Result, TidalError};
use crate::snapshot::{self, Section, SnapshotHeader};
use crate::state::State;
use crate::state::signals::SignalStore;
use crate::storage::{AtomicPoints, SyncPoint, create_dir_durable, write_file_atomic};
use crate::types::{Position, SeqNo};

/// The pause between two slices of a checkpoint's copy, so that a writer
/// waiting for the copy's lock gets it (see `snapshot_of_state`): at 1M x 3
/// (~130 slices) it adds a few tens of milliseconds to a checkpoint that
/// takes about a second.
const COPY_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

impl Core {
    pub(super) fn spawn_checkpoint(self: &Arc<Self>) {
        let core = Arc::downgrade(self);
        let scheduled = Arc::clone(&self.checkpoint_scheduled);
        let spawned = std::thread::Builder::new()
            .name("tidal-checkpoint".into())
            .spawn(move || {
                if let Some(core) = core.upgrade()
                    && let Err(e) = core.checkpoint()
                {
                    tracing::error!(error = %e, "background checkpoint failed");
                }
                scheduled.store(false, Ordering::Release);
            });
        match spawned {
            Ok(h) => {
                let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
                // Finished checkpoint threads need no join: keep the list bounded.
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(e) => {
                self.checkpoint_scheduled.store(false, Ordering::Release);
                tracing::error!(error = %e, "could not start a checkpoint thread");
            }
        }
    }

    /// A consistent copy of the state and the sections of its snapshot.
    fn snapshot_of_state(&self) -> Result<(SnapshotHeader, Vec<Section>)> {
        // A copy holds a read lock on one state copy, and the committer
        // waits for it when it next needs that copy. At 1M entities x 3
        // types a plain clone was ~130 MB: first-touch page faults (91-209
        // ms), so the score tables' memory is allocated and written first,
        // with no lock held; then the memcpy itself (25-35 ms), so the
        // slots are copied in slices of 1 MiB, each under its own read
        // lock, the writer keeping a slot's old value before it first writes it
        // (`state::score_slots`). The sizes come from a short read; should
        // a table grow in between, that table is cloned plainly, and
        // should the copy be replaced meanwhile (a divergence cut), the
        // whole state is.
        let capacities = self.view.read(|s| s.signals.capacities());
        let buffers = SignalStore::buffers(&capacities);
        let idx = self.view.published();
        let partial = self.view.read_copy(idx, |s| s.begin_copy(buffers));
        while self.view.read_copy(idx, State::copy_step) {
            // A gap the writer can take: a read lock taken again at once
            // can win over the writer it just woke. Without the pause the
            // longest W10 write was 8.4-16.3 ms (4 runs), about the whole
            // copy; with it 5.2-12.8 ms, none during the copy.
            std::thread::sleep(COPY_PAUSE);
        }
        let state = match self.view.read_copy(idx, |s| s.finish_copy(partial)) {
            Some(state) => state,
            None => self.view.read(State::clone),
        };
        // The snapshot must never be ahead of the durable log.
        self.flush()?;
        let applied = state.applied();
        let header = SnapshotHeader {
            shard: self.config().cluster.shard_id,
            seqno: applied.seqno,
            epoch: applied.epoch,
            hlc: state.last_hlc(),
        };
        let sections = state
            .encode_sections()
            .into_iter()
            .map(|(id, version, bytes)| Section { id, version, bytes })
            .collect();
        Ok((header, sections))
    }

    /// Writes a snapshot, keeps the two newest, and deletes the segments
    /// only older snapshots needed.
    pub(crate) fn checkpoint(&self) -> Result<SeqNo> {
        let _one_at_a_time = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.commit.with_committer(|c| c.bytes_since_snapshot = 0);
        let (header, sections) = self.snapshot_of_state()?;
        let path =
            snapshot::write_snapshot(self.storage.as_ref(), &self.data_dir, &header, &sections)?;
        tracing::info!(path = %path.display(), seqno = header.seqno.0, "snapshot written");
        let shard = self.config().cluster.shard_id;
        if let Some(oldest) =
            snapshot::retain_newest(self.storage.as_ref(), &self.data_dir, shard, 2)?
        {
            // Segments a known follower still needs stay, up to
            // `retention_bytes`; past that it catches up from a snapshot.
            let floor = SeqNo(self.marks.replica_floor.load(Ordering::Acquire));
            let budget = self.config().retention_bytes;
            // The segments leave the log under the committer; their files
            // are deleted after it is released, so writes do not wait for
            // the unlinks and the directory sync.
            let retired = self.commit.with_committer(|c| {
                c.check_writable()?;
                let below = retention_point(&c.wal.segments(), oldest.next(), floor, budget);
                let retired = c.wal.take_segments_below(below);
                self.marks
                    .first_retained
                    .store(c.wal.first_retained().0, Ordering::Release);
                Ok::<_, TidalError>(retired)
            })?;
            retired.remove(self.storage.as_ref())?;
        }
        Ok(header.seqno)
    }

    /// Writes a consistent copy (META and a snapshot) into `dir`, which must
    /// be missing or empty. Opening it gives the state at the returned Position.
    pub(crate) fn backup(&self, dir: &Path) -> Result<Position> {
        let storage = self.storage.as_ref();
        if let Ok(entries) = storage.list_dir(dir)
            && !entries.is_empty()
        {
            return Err(TidalError::io(
                "backup into",
                dir,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "directory is not empty"),
            ));
        }
        // The copy is only durable once the new directory's entry is.
        create_dir_durable(storage, SyncPoint::BackupCreateDirs, dir)?;
        let (header, sections) = self.snapshot_of_state()?;
        write_file_atomic(
            storage,
            AtomicPoints::META,
            &dir.join("META"),
            &self.meta.encode(),
        )?;
        snapshot::write_snapshot(storage, dir, &header, &sections)?;
        Ok(Position::new(header.epoch, header.seqno))
    }
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;
