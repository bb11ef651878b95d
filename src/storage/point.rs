//! Names for every place the engine makes something durable.
//!
//! Each `sync_data`, `sync_dir` and publishing `rename` the engine makes
//! goes through [`Storage::sync_file`](super::Storage::sync_file),
//! [`Storage::sync_dir_at`](super::Storage::sync_dir_at) or
//! [`Storage::rename_at`](super::Storage::rename_at) with the
//! [`SyncPoint`] naming it. [`RealStorage`](super::RealStorage) ignores the
//! name (the default trait methods call the plain ones, so production paths
//! are unchanged); [`SimStorage`](super::SimStorage) uses it to skip a
//! disabled point ([`SimStorage::disable_sync`](super::SimStorage::disable_sync),
//! the test-only switch: it exists on the simulated disk only, so the real
//! one can never skip a sync) and to fail the call at a named point
//! ([`SimStorage::fail_at`](super::SimStorage::fail_at)).
//!
//! Decision: the name travels with the call instead of being a global
//! switch in the engine, so there is no test-only branch in the engine at
//! all, and a unit test checks that no plain `sync_data`, `sync_dir` or
//! `rename` call is left in the engine (a new site cannot go unnamed).

use std::fmt;

use super::FaultKind;

/// What kind of call a [`SyncPoint`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// `sync_data` of a file.
    File,
    /// `sync_dir` of a directory.
    Dir,
    /// A `rename` that publishes a file (made durable by a later `Dir` point).
    Rename,
}

macro_rules! sync_points {
    ($($(#[$doc:meta])* $name:ident => $kind:ident,)*) => {
        /// A named place where the engine makes something durable (see the
        /// module docs of [`crate::storage`] for what each one protects).
        ///
        /// ```
        /// use tidal::storage::{PointKind, SyncPoint};
        /// assert!(SyncPoint::ALL.contains(&SyncPoint::LogAppend));
        /// assert_eq!(SyncPoint::LogAppend.kind(), PointKind::File);
        /// assert_eq!(SyncPoint::LogAppend.to_string(), "LogAppend");
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum SyncPoint {
            $($(#[$doc])* $name,)*
        }

        impl SyncPoint {
            /// Every point, so a test that walks them cannot forget a new one.
            pub const ALL: &'static [SyncPoint] = &[$(SyncPoint::$name,)*];

            /// Which call the point names.
            pub fn kind(self) -> PointKind {
                match self {
                    $(SyncPoint::$name => PointKind::$kind,)*
                }
            }

            /// The point's name, as in the enum.
            pub fn name(self) -> &'static str {
                match self {
                    $(SyncPoint::$name => stringify!($name),)*
                }
            }
        }
    };
}

sync_points! {
    /// `Wal::sync`: fdatasync of the current segment after appends. Every
    /// acknowledged batch (under `Sync`, and every flush under `Periodic`).
    LogAppend => File,
    /// `Wal::roll`: the finished segment is synced before the next is
    /// created, as the next sync only covers the new segment.
    LogRoll => File,
    /// `create_segment`: header and zeros of a segment made on the commit
    /// path.
    SegmentFile => File,
    /// `create_segment`: the new segment's directory entry.
    SegmentDir => Dir,
    /// `create_spare`: zeros of the background pre-allocated spare.
    SpareFile => File,
    /// `adopt_spare`: the spare renamed to the next segment's name.
    SpareRename => Rename,
    /// `adopt_spare`: the adopted segment's directory entry.
    SpareAdoptDir => Dir,
    /// `Wal::open`: every segment name recovery adopted (one a failed
    /// earlier process created but never made durable).
    LogOpenDir => Dir,
    /// `ensure_dir` (wal): a new `wal/shard-N` directory's entries.
    LogCreateDirs => Dir,
    /// `Wal::remove_segments_below`: removal of retired segments.
    LogRetireDir => Dir,
    /// `Wal::truncate_after`: removal of the segments after a divergence cut.
    LogCutDir => Dir,
    /// `Wal::truncate_after`: the zeros written over the cut suffix.
    LogCutFile => File,
    /// `Wal::restart_after`: removal of every segment after an installed
    /// snapshot.
    LogRestartDir => Dir,
    /// `cut_segment` (recovery): the zeros over a torn tail or damage cut.
    RecoveryCutFile => File,
    /// `set_aside` (recovery): segments after a point-in-time stop renamed
    /// `*.damaged`.
    RecoveryDamagedRename => Rename,
    /// `set_aside` (recovery): those renames.
    RecoveryDamagedDir => Dir,
    /// `write_snapshot_bytes`: a new `snapshots/shard-N` directory's entries.
    SnapshotCreateDirs => Dir,
    /// Snapshot temporary file's data.
    SnapshotFile => File,
    /// Snapshot temporary file renamed to its `.snap` name.
    SnapshotRename => Rename,
    /// Snapshot directory after the rename.
    SnapshotDir => Dir,
    /// `retain_newest`: removal of old snapshots.
    SnapshotRetireDir => Dir,
    /// `drop_snapshots_above`: removal of snapshots holding cut records,
    /// before the log is cut.
    SnapshotCutDir => Dir,
    /// `Core::open` (and `meta::load_or_create`): a new data directory's
    /// entry (and any new parents').
    DataDirCreate => Dir,
    /// `backup`: a new backup directory's entry (and any new parents').
    BackupCreateDirs => Dir,
    /// `META` temporary file's data.
    MetaFile => File,
    /// `META` temporary file renamed to `META`.
    MetaRename => Rename,
    /// Data directory after the `META` rename.
    MetaDir => Dir,
    /// `EPOCH` temporary file's data (the highest epoch seen).
    EpochFile => File,
    /// `EPOCH` temporary file renamed to `EPOCH`.
    EpochRename => Rename,
    /// Data directory after the `EPOCH` rename.
    EpochDir => Dir,
    /// `keep_diverged`: the `diverged/` directory's entry (synced once per
    /// process, even if the directory existed: an earlier try may have
    /// created it and failed before syncing).
    DivergedCreateDir => Dir,
    /// A diverged suffix's temporary file's data.
    DivergedFile => File,
    /// A diverged suffix's temporary file renamed to `*.batches`.
    DivergedRename => Rename,
    /// `diverged/` after that rename.
    DivergedDir => Dir,
    /// `mark_merged`: a merged suffix renamed `*.merged`.
    MergedRename => Rename,
    /// `mark_merged`: `diverged/` after that rename.
    MergedDir => Dir,
}

impl SyncPoint {
    /// The faults that make sense at this point: the call's own failure,
    /// plus, for a file sync, a writeback error that loses the unsynced
    /// data and a full disk (both reported by fsync on a real kernel).
    pub fn faults(self) -> &'static [FaultKind] {
        match self.kind() {
            PointKind::File => &[FaultKind::SyncData, FaultKind::Write, FaultKind::DiskFull],
            PointKind::Dir => &[FaultKind::SyncDir, FaultKind::DiskFull],
            PointKind::Rename => &[FaultKind::Rename, FaultKind::DiskFull],
        }
    }
}

impl fmt::Display for SyncPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three points of one atomic file write (temporary file synced,
/// renamed, directory synced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AtomicPoints {
    pub(crate) file: SyncPoint,
    pub(crate) rename: SyncPoint,
    pub(crate) dir: SyncPoint,
}

impl AtomicPoints {
    pub(crate) const SNAPSHOT: AtomicPoints = AtomicPoints {
        file: SyncPoint::SnapshotFile,
        rename: SyncPoint::SnapshotRename,
        dir: SyncPoint::SnapshotDir,
    };
    pub(crate) const META: AtomicPoints = AtomicPoints {
        file: SyncPoint::MetaFile,
        rename: SyncPoint::MetaRename,
        dir: SyncPoint::MetaDir,
    };
    pub(crate) const EPOCH: AtomicPoints = AtomicPoints {
        file: SyncPoint::EpochFile,
        rename: SyncPoint::EpochRename,
        dir: SyncPoint::EpochDir,
    };
    pub(crate) const DIVERGED: AtomicPoints = AtomicPoints {
        file: SyncPoint::DivergedFile,
        rename: SyncPoint::DivergedRename,
        dir: SyncPoint::DivergedDir,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every sync and publishing rename of the engine goes through a named
    /// point: a plain call would be invisible to the tests that disable or
    /// fail each point. Only the storage seam itself (and test code) makes
    /// plain calls.
    #[test]
    fn no_engine_sync_or_rename_is_unnamed() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut unnamed = Vec::new();
        for f in files {
            if f.starts_with(src.join("storage")) {
                continue;
            }
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            // Test modules may sync as they like; they come last in a file.
            let engine = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for (i, line) in engine.lines().enumerate() {
                if [".sync_data()", ".sync_dir(", ".rename("]
                    .iter()
                    .any(|call| line.contains(call))
                {
                    unnamed.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            unnamed.is_empty(),
            "unnamed sync or rename calls: {unnamed:#?}"
        );
    }

    #[test]
    fn names_are_unique_and_every_point_has_faults() {
        let mut names: Vec<&str> = SyncPoint::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SyncPoint::ALL.len());
        for p in SyncPoint::ALL {
            assert!(!p.faults().is_empty(), "{p}");
        }
    }
}
