//! Injected faults of [`SimStorage`]: by path ([`SimStorage::fail_next`],
//! [`SimStorage::fail_always`]) or at a named [`SyncPoint`]
//! ([`SimStorage::fail_at`]), and the test-only switch that skips a sync
//! point ([`SimStorage::disable_sync`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::{Inner, SimStorage};
use crate::storage::{PointKind, Storage, StorageFile, SyncPoint};

/// Which call an injected fault makes fail.
///
/// ```
/// use tidal::storage::{FaultKind, OpenMode, Storage};
/// let fs = tidal::SimStorage::default();
/// let f = fs.open("/wal".as_ref(), OpenMode::CreateNew).unwrap();
/// fs.fail_next(FaultKind::SyncData, "wal");
/// assert!(f.sync_data().is_err());
/// assert!(f.sync_data().is_ok()); // fail_next fires once
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `write_all_at` and `set_len` on a file (matched against the path the
    /// handle was opened with).
    Write,
    /// `sync_data` on a file (matched like `Write`).
    SyncData,
    /// `sync_dir` on a directory.
    SyncDir,
    /// `rename` (matched against either path).
    Rename,
    /// `open` with [`OpenMode::CreateNew`](crate::storage::OpenMode::CreateNew).
    Create,
    /// `remove_file`.
    Remove,
    /// `open` with [`OpenMode::Read`](crate::storage::OpenMode::Read) or [`OpenMode::ReadWrite`](crate::storage::OpenMode::ReadWrite).
    Open,
    /// A full disk (`StorageFull`): by path, `write_all_at` and `set_len`
    /// fail; at a [`SyncPoint`], the named call does (a real kernel reports
    /// a full disk found at writeback from fsync).
    DiskFull,
}

#[derive(Debug)]
pub(super) struct Fault {
    kind: FaultKind,
    path_contains: String,
    once: bool,
    /// Matching calls let through before this one fires.
    skip: u64,
}

/// Faults and switches at named sync points.
#[derive(Debug, Default)]
pub(super) struct PointFaults {
    /// Points whose sync is skipped (it returns `Ok` and syncs nothing).
    disabled: BTreeSet<SyncPoint>,
    /// Faults, each at its point, and whether it stays after firing.
    pending: Vec<(SyncPoint, FaultKind, bool)>,
    /// Calls that reached each point (disabled or failed ones included).
    hits: BTreeMap<SyncPoint, u64>,
    /// Every one-shot fault that fired, in order: its point and the path
    /// of the call (`None` for a file sync). Kept through
    /// [`SimStorage::clear_faults`] and crashes: it is what happened.
    fired: Vec<(SyncPoint, Option<PathBuf>)>,
    /// Set while the next `sync_data` is to report a writeback error and
    /// lose the unsynced writes: the message it fails with.
    pub(super) writeback_error: Option<String>,
}

impl Inner {
    pub(super) fn check_fault(&mut self, kind: FaultKind, paths: &[&Path]) -> io::Result<()> {
        let hit = self.faults.iter().position(|f| {
            (f.kind == kind || (f.kind == FaultKind::DiskFull && kind == FaultKind::Write))
                && paths
                    .iter()
                    .any(|p| p.to_string_lossy().contains(&f.path_contains))
        });
        if let Some(i) = hit {
            if self.faults[i].skip > 0 {
                self.faults[i].skip -= 1;
                return Ok(());
            }
            let (once, full) = (
                self.faults[i].once,
                self.faults[i].kind == FaultKind::DiskFull,
            );
            if once {
                self.faults.remove(i);
            }
            if full {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "injected disk full on {}",
                        paths
                            .first()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
            return Err(io::Error::other(format!(
                "injected {kind:?} fault on {}",
                paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Counts a call at `point` (on `path`, when the call names one), then:
    /// the injected fault scheduled there (as an error, recorded), or
    /// whether the point is disabled.
    fn at_point(&mut self, point: SyncPoint, path: Option<&Path>) -> io::Result<bool> {
        *self.points.hits.entry(point).or_default() += 1;
        if let Some(i) = self.points.pending.iter().position(|(p, ..)| *p == point) {
            let (_, kind, stays) = self.points.pending[i];
            if !stays {
                self.points.pending.remove(i);
            }
            self.points.fired.push((point, path.map(Path::to_path_buf)));
            let msg = format!("injected {kind:?} fault at sync point {point}");
            return match kind {
                FaultKind::Write if point.kind() == PointKind::File => {
                    // Reported by the sync itself, which loses the data.
                    self.points.writeback_error = Some(msg);
                    Ok(false)
                }
                FaultKind::DiskFull => Err(io::Error::new(io::ErrorKind::StorageFull, msg)),
                _ => Err(io::Error::other(msg)),
            };
        }
        Ok(self.points.disabled.contains(&point))
    }
}

impl SimStorage {
    /// Makes the next call of `kind` on a path containing `path_contains`
    /// fail with an I/O error (an empty string matches every path).
    pub fn fail_next(&self, kind: FaultKind, path_contains: &str) {
        self.add_fault(kind, path_contains, true, 0);
    }

    /// Makes every call of `kind` on a path containing `path_contains` fail
    /// until [`SimStorage::clear_faults`].
    pub fn fail_always(&self, kind: FaultKind, path_contains: &str) {
        self.add_fault(kind, path_contains, false, 0);
    }

    /// Lets `n` calls of `kind` on a path containing `path_contains`
    /// through, then makes the next one fail (once): a fault in the middle
    /// of a sequence of operations, at a chosen step.
    pub fn fail_after(&self, n: u64, kind: FaultKind, path_contains: &str) {
        self.add_fault(kind, path_contains, true, n);
    }

    fn add_fault(&self, kind: FaultKind, path_contains: &str, once: bool, skip: u64) {
        self.inner().faults.push(Fault {
            kind,
            path_contains: path_contains.to_string(),
            once,
            skip,
        });
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        let mut g = self.inner();
        g.faults.clear();
        g.points.pending.clear();
        g.points.writeback_error = None;
    }

    /// Makes the next call at `point` fail with `kind` (once):
    ///
    /// - [`FaultKind::SyncData`], [`FaultKind::SyncDir`], [`FaultKind::Rename`]:
    ///   the call fails and changes nothing.
    /// - [`FaultKind::Write`] at a file point: the sync reports a writeback
    ///   error, and the writes it should have made durable are lost at the
    ///   next crash even if a later sync succeeds (what Linux does after a
    ///   failed fsync); elsewhere it fails like `SyncData`.
    /// - [`FaultKind::DiskFull`]: the call fails with `StorageFull`.
    ///
    /// [`SimStorage::clear_faults`] removes it.
    ///
    /// ```
    /// use tidal::storage::{FaultKind, OpenMode, Storage, SyncPoint};
    /// let fs = tidal::SimStorage::default();
    /// let f = fs.open("/f".as_ref(), OpenMode::CreateNew).unwrap();
    /// fs.fail_at(SyncPoint::LogAppend, FaultKind::SyncData);
    /// assert!(fs.sync_file(SyncPoint::MetaFile, f.as_ref()).is_ok());
    /// assert!(fs.sync_file(SyncPoint::LogAppend, f.as_ref()).is_err());
    /// assert!(fs.sync_file(SyncPoint::LogAppend, f.as_ref()).is_ok());
    /// ```
    pub fn fail_at(&self, point: SyncPoint, kind: FaultKind) {
        self.inner().points.pending.push((point, kind, false));
    }

    /// Makes every call at `point` fail with `kind` (as
    /// [`SimStorage::fail_at`] does once) until
    /// [`SimStorage::clear_faults`]: a step that retries must not get past
    /// the point.
    ///
    /// ```
    /// use tidal::storage::{FaultKind, Storage, SyncPoint};
    /// let fs = tidal::SimStorage::default();
    /// fs.create_dir_all("/d".as_ref()).unwrap();
    /// fs.fail_always_at(SyncPoint::MetaDir, FaultKind::SyncDir);
    /// assert!(fs.sync_dir_at(SyncPoint::MetaDir, "/d".as_ref()).is_err());
    /// assert!(fs.sync_dir_at(SyncPoint::MetaDir, "/d".as_ref()).is_err());
    /// assert_eq!(fs.fired_at(SyncPoint::MetaDir).len(), 2);
    /// fs.clear_faults();
    /// assert!(fs.sync_dir_at(SyncPoint::MetaDir, "/d".as_ref()).is_ok());
    /// ```
    pub fn fail_always_at(&self, point: SyncPoint, kind: FaultKind) {
        self.inner().points.pending.push((point, kind, true));
    }

    /// The test-only switch: the sync at `point` is skipped from now on
    /// (it returns `Ok` and makes nothing durable), so a test can show what
    /// the point protects. Only the simulated disk has it; [`RealStorage`]
    /// always syncs. A rename point cannot be skipped: it does not make
    /// anything durable, it publishes a file.
    ///
    /// [`RealStorage`]: crate::storage::RealStorage
    ///
    /// ```
    /// use tidal::storage::{CrashMode, OpenMode, Storage, SyncPoint};
    /// let fs = tidal::SimStorage::default();
    /// let f = fs.open("/f".as_ref(), OpenMode::CreateNew).unwrap();
    /// fs.sync_dir("/".as_ref()).unwrap();
    /// f.write_all_at(b"x", 0).unwrap();
    /// fs.disable_sync(SyncPoint::LogAppend);
    /// fs.sync_file(SyncPoint::LogAppend, f.as_ref()).unwrap();
    /// fs.crash(CrashMode::DropUnsynced);
    /// assert_eq!(fs.read("/f").unwrap(), b"");
    /// ```
    ///
    /// # Panics
    ///
    /// If `point` is a rename point (a mistake in the calling test).
    pub fn disable_sync(&self, point: SyncPoint) {
        assert!(
            point.kind() != PointKind::Rename,
            "{point} is a rename, not a sync: it cannot be skipped"
        );
        self.inner().points.disabled.insert(point);
    }

    /// Turns every point disabled by [`SimStorage::disable_sync`] back on.
    pub fn enable_all_syncs(&self) {
        self.inner().points.disabled.clear();
    }

    /// How many calls reached `point` (skipped and failed ones included):
    /// lets a test check that its scenario exercises the point at all.
    pub fn sync_point_hits(&self, point: SyncPoint) -> u64 {
        self.inner().points.hits.get(&point).copied().unwrap_or(0)
    }

    /// The faults injected with [`SimStorage::fail_at`] (or
    /// [`SimStorage::fail_always_at`]) that fired at
    /// `point`, in order, each with the path of the call it failed (the
    /// renamed file or the synced directory; `None` for a file sync): a
    /// test proves its fault happened, and where, from this record rather
    /// than from call counts that depend on timing.
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use tidal::storage::{FaultKind, Storage, SyncPoint};
    /// let fs = tidal::SimStorage::default();
    /// fs.create_dir_all("/d".as_ref()).unwrap();
    /// fs.fail_at(SyncPoint::MetaDir, FaultKind::SyncDir);
    /// fs.clear_faults(); // removed before it fired: nothing recorded
    /// assert!(fs.fired_at(SyncPoint::MetaDir).is_empty());
    /// fs.fail_at(SyncPoint::MetaDir, FaultKind::SyncDir);
    /// assert!(fs.sync_dir_at(SyncPoint::MetaDir, "/d".as_ref()).is_err());
    /// assert!(fs.sync_dir_at(SyncPoint::MetaDir, "/d".as_ref()).is_ok());
    /// assert_eq!(fs.fired_at(SyncPoint::MetaDir), vec![Some(PathBuf::from("/d"))]);
    /// ```
    pub fn fired_at(&self, point: SyncPoint) -> Vec<Option<PathBuf>> {
        self.inner()
            .points
            .fired
            .iter()
            .filter(|(p, _)| *p == point)
            .map(|(_, path)| path.clone())
            .collect()
    }

    pub(super) fn sync_file_at(&self, point: SyncPoint, file: &dyn StorageFile) -> io::Result<()> {
        if self.inner().at_point(point, None)? {
            return Ok(());
        }
        file.sync_data()
    }

    pub(super) fn sync_dir_at_point(&self, point: SyncPoint, path: &Path) -> io::Result<()> {
        if self.inner().at_point(point, Some(path))? {
            return Ok(());
        }
        self.sync_dir(path)
    }

    pub(super) fn rename_at_point(
        &self,
        point: SyncPoint,
        from: &Path,
        to: &Path,
    ) -> io::Result<()> {
        // A rename point is never disabled (`disable_sync` refuses it).
        self.inner().at_point(point, Some(from))?;
        self.rename(from, to)
    }
}
