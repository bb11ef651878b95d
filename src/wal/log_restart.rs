//! Where the retained log starts, and restarting it after a snapshot
//! installed from a leader.

use super::Wal;
use crate::error::{Result, TidalError};
use crate::types::SeqNo;

impl Wal {
    /// The first SeqNo of the contiguous log that ends at
    /// [`Wal::next_seqno`]: what a follower can be streamed from. With no
    /// segment (a new log, or one restarted after an installed snapshot) it
    /// is the next SeqNo.
    pub fn first_retained(&self) -> SeqNo {
        self.segments
            .first()
            .map_or(self.next_seqno, |s| s.first_seqno.min(self.next_seqno))
    }

    /// Restarts the log after a snapshot installed at `seqno` (a follower
    /// behind its leader's retained log): every segment is deleted (they
    /// hold only records the snapshot covers) and appending continues at
    /// `seqno + 1` in a new segment. The snapshot must be durable first: a
    /// crash in between reopens from it, and [`Wal::open`] then drops the
    /// stale segments the same way. Refused if the log already holds
    /// `seqno + 1`.
    pub fn restart_after(&mut self, seqno: SeqNo) -> Result<()> {
        if seqno.next() < self.next_seqno {
            return Err(TidalError::corruption(
                &self.dir,
                0,
                format!(
                    "cannot restart the log after SeqNo {seqno}: it already continues at {}",
                    self.next_seqno
                ),
            ));
        }
        // Batches still held back in memory go with their segment: the
        // snapshot covers them.
        self.current = None;
        for info in self.segments.drain(..).rev() {
            self.storage
                .remove_file(&info.path)
                .map_err(|e| TidalError::io("remove segment", &info.path, e))?;
        }
        self.storage
            .sync_dir_at(crate::storage::SyncPoint::LogRestartDir, &self.dir)
            .map_err(|e| TidalError::io("sync dir", &self.dir, e))?;
        self.next_seqno = seqno.next();
        Ok(())
    }
}
