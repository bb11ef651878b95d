//! Retiring old segments: taken out of the log under the committer, their
//! files deleted after it is released.

use super::*;

impl Wal {
    /// Deletes the segments whose records are all below `seqno` (the next
    /// segment starts at or below `seqno`), never the current one, then
    /// syncs the directory. Returns the bytes freed.
    #[cfg(test)]
    pub fn remove_segments_below(&mut self, seqno: SeqNo) -> Result<u64> {
        self.take_segments_below(seqno)
            .remove(self.storage.as_ref())
    }

    /// Takes the segments [`Wal::remove_segments_below`] would remove out
    /// of the log, leaving their files to [`Retired::remove`]: a caller
    /// holding the log only for this step deletes them after letting go
    /// (a checkpoint under the committer lock: unlinking 64 MiB files and
    /// syncing the directory would stall every write).
    pub fn take_segments_below(&mut self, seqno: SeqNo) -> Retired {
        let mut n = 0;
        while self.segments.len() > n + 1 && self.segments[n + 1].first_seqno <= seqno {
            n += 1;
        }
        Retired {
            dir: self.dir.clone(),
            segments: self.segments.drain(..n).collect(),
        }
    }
}

/// Segments taken out of the log ([`Wal::take_segments_below`]), oldest
/// first, whose files are still to be deleted.
#[derive(Debug)]
#[must_use = "the segments' files stay on disk until removed"]
pub struct Retired {
    dir: PathBuf,
    segments: Vec<SegmentInfo>,
}

impl Retired {
    /// Deletes the files oldest first, then syncs the directory; the bytes
    /// freed. Stopping at a failure leaves a contiguous run of old segments
    /// on disk, which the next open finds and a later checkpoint retires.
    pub fn remove(self, storage: &dyn Storage) -> Result<u64> {
        let mut freed_bytes = 0;
        for info in &self.segments {
            storage
                .remove_file(&info.path)
                .map_err(|e| TidalError::io("remove segment", &info.path, e))?;
            freed_bytes += info.len;
        }
        if !self.segments.is_empty() {
            storage
                .sync_dir_at(SyncPoint::LogRetireDir, &self.dir)
                .map_err(|e| TidalError::io("sync dir", &self.dir, e))?;
        }
        Ok(freed_bytes)
    }
}
