//! Open files and lock guards of [`SimStorage`](super::SimStorage): each
//! remembers the crash generation it was made in, so a crash invalidates it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::crash::apply;
use super::{FaultKind, Inner, Ino, Node, Op, lock_inner};
use crate::storage::{StorageFile, StorageLock};

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

fn crashed() -> io::Error {
    io::Error::other("handle invalidated by a simulated crash")
}
pub(super) struct SimLock {
    pub(super) shared: Arc<Mutex<Inner>>,
    pub(super) generation: u64,
    pub(super) path: PathBuf,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock").field("path", &self.path).finish()
    }
}

impl StorageLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut g = lock_inner(&self.shared);
        // A lock from before a crash died with its process; a newer holder
        // of the same path must keep its lock.
        if g.generation == self.generation {
            g.locks.remove(&self.path);
        }
    }
}

pub(super) struct SimFile {
    pub(super) shared: Arc<Mutex<Inner>>,
    pub(super) ino: Ino,
    pub(super) generation: u64,
    pub(super) path: PathBuf,
    pub(super) writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SimFile {
    /// Runs `f` on this file's node, if the handle is still valid.
    fn with<T>(&self, f: impl FnOnce(&mut Inner, Ino) -> io::Result<T>) -> io::Result<T> {
        let mut g = lock_inner(&self.shared);
        if g.generation != self.generation || !g.nodes.contains_key(&self.ino) {
            return Err(crashed());
        }
        f(&mut g, self.ino)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was opened read-only", self.path.display()),
            ))
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut g = lock_inner(&self.shared);
        if g.generation == self.generation {
            if let Some(n) = g.nodes.get_mut(&self.ino) {
                n.open_handles = n.open_handles.saturating_sub(1);
            }
            g.collect(self.ino);
        }
    }
}

fn node(g: &mut Inner, ino: Ino) -> io::Result<&mut Node> {
    g.nodes.get_mut(&ino).ok_or_else(crashed)
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|g, ino| Ok(node(g, ino)?.data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|g, ino| {
            let data = &node(g, ino)?.data;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|g, ino| {
            g.check_fault(FaultKind::Write, &[&self.path])?;
            if buf.is_empty() {
                return Ok(());
            }
            let end = offset
                .checked_add(buf.len() as u64)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
            to_usize(end)?;
            let old_len = node(g, ino)?.data.len() as u64;
            g.check_growth(old_len, end)?;
            let n = node(g, ino)?;
            let op = Op::Write {
                offset,
                bytes: buf.to_vec(),
            };
            apply(&mut n.data, &op, None);
            n.unsynced.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|g, ino| {
            if let Some(msg) = g.points.writeback_error.take() {
                // Writeback failed: the pages are clean now, their data
                // never reached the disk, and no later sync will send it.
                node(g, ino)?.unsynced.clear();
                return Err(io::Error::other(msg));
            }
            g.check_fault(FaultKind::SyncData, &[&self.path])?;
            let n = node(g, ino)?;
            // Replaying the pending writes costs what was written since the
            // last sync, not the file's size (segments are large).
            let ops = std::mem::take(&mut n.unsynced);
            for op in &ops {
                apply(&mut n.synced, op, None);
            }
            g.sync_count += 1;
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|g, ino| {
            g.check_fault(FaultKind::Write, &[&self.path])?;
            to_usize(len)?;
            let old_len = node(g, ino)?.data.len() as u64;
            g.check_growth(old_len, len)?;
            let n = node(g, ino)?;
            let op = Op::SetLen(len);
            apply(&mut n.data, &op, None);
            n.unsynced.push(op);
            Ok(())
        })
    }
}
