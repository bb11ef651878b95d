//! Write-behind: appended batches held in memory and written in one piece
//! (`Config::write_behind_bytes`).

use super::*;

impl Wal {
    /// Holds up to `bytes` of appended batches in memory before writing
    /// them in one piece (0, the default: each batch is written at once).
    ///
    /// Decision (`Config::write_behind_bytes`): the held bytes are written
    /// when they reach `bytes`, before every sync and roll, before anything
    /// reads or cuts the log files ([`Wal::write_out`]), and when the log is
    /// dropped. A sync still covers every batch appended before it, so
    /// `Durability::Sync` is unchanged; under `Periodic` a run of small
    /// batches between syncs becomes one `pwrite` instead of one each,
    /// which was about half the time of a single-signal write (BENCHMARKS.md,
    /// W3), at the price of a process crash losing what is held, as a
    /// machine crash always could.
    pub fn set_write_behind(&mut self, bytes: usize) {
        self.write_behind = bytes;
    }

    /// Writes the appended bytes still held in memory to the segment (see
    /// [`Wal::set_write_behind`]). Readers of the log files outside the log
    /// call this (under the committer) before they read.
    pub fn write_out(&mut self) -> Result<()> {
        if self.write_failed {
            return Err(TidalError::io(
                "write batch",
                &self.dir,
                std::io::Error::other("an earlier write to the log failed"),
            ));
        }
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        if c.pending.is_empty() {
            return Ok(());
        }
        let at = c.end_offset - c.pending.len() as u64;
        if let Err(e) = c.file.write_all_at(&c.pending, at) {
            self.write_failed = true;
            return Err(TidalError::io("write batch", &c.path, e));
        }
        c.pending.clear();
        Ok(())
    }
}

/// A dropped log writes what it holds and joins the spare's builder.
impl Drop for Wal {
    fn drop(&mut self) {
        // A log dropped without a last sync (a `Periodic` database closed
        // by a panic, say) still leaves its batches to the page cache, as
        // it did before writes were held back.
        if !self.write_failed
            && let Err(e) = self.write_out()
        {
            tracing::error!(error = %e, "writing the log's last batches failed when it was dropped");
        }
        let thread = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .thread
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Wal {
    /// What [`Wal::sync`] would sync, for a caller that syncs it without
    /// holding the log: the current segment, after writing out what is
    /// held in memory (earlier segments were synced when they rolled).
    pub fn sync_target(&mut self) -> Result<Option<(Arc<dyn StorageFile>, PathBuf)>> {
        self.write_out()?;
        Ok(self
            .current
            .as_ref()
            .map(|c| (Arc::clone(&c.file), c.path.clone())))
    }
}
