//! Under `Durability::Periodic` a flush syncs the log without holding the
//! committer: writes go on while its fdatasync waits for the disk (they
//! used to wait with it: 25-45 ms under a checkpoint's writeback, W10).
//! The flush still makes durable what was written before it, and a failed
//! flush still poisons the database.
//!
//! The storage holds the flush at its log sync until the test lets it go.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hold::HoldAt;
use tidal::storage::{CrashMode, FaultKind, SyncPoint};
use tidal::{Config, Durability, EntityId, TidalDb, TidalError, Timestamp};

fn open(storage: &Arc<HoldAt>) -> TidalDb {
    let config = Config::builder("/db")
        .signal_type("like", Duration::from_secs(3_600))
        // No background flush during the test: only the test's.
        .durability(Durability::Periodic(Duration::from_secs(3_600)))
        .storage(storage.clone())
        .build()
        .unwrap();
    TidalDb::open(config).unwrap()
}

#[test]
fn writes_complete_while_a_flush_waits_for_its_sync() {
    let storage = HoldAt::new(SyncPoint::LogAppend);
    let db = open(&storage);
    let now = Timestamp::now();
    let before = db.signal("like", EntityId(1), 1.0, now).unwrap();
    // The flush is inside its sync: writes still complete.
    let (flushed, went_on) = storage.while_held(
        || db.flush(),
        || {
            for e in 2..12 {
                db.signal("like", EntityId(e), 1.0, now).unwrap();
            }
        },
    );
    flushed.unwrap();
    assert!(went_on, "writes waited for the flush's sync");
    // What was written before the flush is durable: a crash keeps it.
    assert!(db.status().hwm >= before.seqno, "{:?}", db.status());
    storage.inner.crash(CrashMode::DropUnsynced);
    drop(db); // its shutdown fails against the crashed files
    let db = open(&storage);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
}

#[test]
fn a_failed_flush_poisons() {
    let storage = HoldAt::new(SyncPoint::LogAppend);
    let db = open(&storage);
    db.signal("like", EntityId(1), 1.0, Timestamp::now())
        .unwrap();
    storage
        .inner
        .fail_at(SyncPoint::LogAppend, FaultKind::SyncData);
    assert!(matches!(db.flush(), Err(TidalError::Poisoned { .. })));
    let again = db.signal("like", EntityId(2), 1.0, Timestamp::now());
    assert!(
        matches!(again, Err(TidalError::Poisoned { .. })),
        "{again:?}"
    );
}
