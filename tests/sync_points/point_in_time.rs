//! The point-in-time recovery sync point, shown covered by
//! `lost_write_point_in_time_sync_points`; shared with
//! `lost_write_needs_every_sync_point`, which checks that every point is
//! listed exactly once across the lists.

use tidal::storage::SyncPoint;

/// Points another sync covers; disabled alone they lose nothing.
pub const COVERED: &[(SyncPoint, &str)] = &[(
    SyncPoint::RecoveryDamagedDir,
    "Wal::open syncs the log directory (LogOpenDir) right after recovery set the \
     later segments aside, before anything is acknowledged; kept so the set-aside is durable on its own, \
     whatever the open does next",
)];

/// Renames, not switchable: failed once by
/// `a_failed_set_aside_rename_is_reported_and_redone`.
pub const RENAMES: &[SyncPoint] = &[SyncPoint::RecoveryDamagedRename];
