//! The replication sync points and what
//! `lost_write_replication_sync_points` shows about each; shared with
//! `lost_write_needs_every_sync_point`, which checks that its own lists and
//! these cover `SyncPoint::ALL` exactly once.

use tidal::storage::SyncPoint;

/// Replication points whose loss another mechanism covers: disabled alone
/// they lose nothing (the replication test runs the scenario with each and
/// checks that the crash did undo the operation, so the claim is not
/// vacuous).
pub const COVERED: &[(SyncPoint, &str)] = &[
    (
        SyncPoint::MergedDir,
        "a lost `*.merged` mark makes the suffix merge again after a crash, which changes \
         no read: the merge is idempotent (as reconciliation_survives_a_crash_in_the_middle \
         shows for a crash at the rename); the mark saves the rework",
    ),
    (
        SyncPoint::LogRestartDir,
        "a segment removed after an installed snapshot that a crash brings back holds only \
         SeqNos at or below the snapshot: recovery starts from the snapshot and skips it, \
         as with LogRetireDir; the sync keeps freed space freed",
    ),
];

/// Replication points that, disabled alone, must make the replication
/// scenario fail.
pub const GUARDS: &[SyncPoint] = &[
    SyncPoint::EpochFile,
    SyncPoint::EpochDir,
    SyncPoint::LogCutDir,
    SyncPoint::LogCutFile,
    SyncPoint::SnapshotCutDir,
    SyncPoint::DivergedCreateDir,
    SyncPoint::DivergedFile,
    SyncPoint::DivergedDir,
];

/// Replication renames: not syncs, so not switchable; made to fail once
/// each by `a_failed_replication_rename_loses_nothing`.
pub const RENAMES: &[SyncPoint] = &[
    SyncPoint::EpochRename,
    SyncPoint::DivergedRename,
    SyncPoint::MergedRename,
];
