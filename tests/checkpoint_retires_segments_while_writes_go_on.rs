//! A checkpoint takes the segments its snapshot made unneeded out of the
//! log under the committer, but deletes their files and syncs the
//! directory after letting it go: durable writes complete while it does.
//! The segments are gone once the checkpoint returns, and every write
//! survives a reopen.
//!
//! The storage holds the checkpoint at the directory sync after the
//! deletes until the test lets it go.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hold::HoldAt;
use tidal::storage::SyncPoint;
use tidal::{Config, EntityId, TidalDb, Timestamp};

fn open(storage: &Arc<HoldAt>) -> TidalDb {
    let config = Config::builder("/db")
        .signal_type("like", Duration::from_secs(3_600))
        .segment_bytes(4_096)
        .retention_bytes(0)
        .storage(storage.clone())
        .build()
        .unwrap();
    TidalDb::open(config).unwrap()
}

#[test]
fn durable_writes_complete_while_a_checkpoint_deletes_old_segments() {
    let storage = HoldAt::new(SyncPoint::LogRetireDir);
    let db = open(&storage);
    let now = Timestamp::now();
    // Two snapshots are kept: the third checkpoint retires the segments
    // written between the first and the second.
    for _ in 0..2 {
        for e in 0..300 {
            db.signal("like", EntityId(e % 7), 1.0, now).unwrap();
        }
        db.checkpoint().unwrap();
    }
    for e in 0..300 {
        db.signal("like", EntityId(e % 7), 1.0, now).unwrap();
    }
    let before = db.status().segments;
    // The old segments are deleted, their directory sync waits.
    let (checkpoint, went_on) = storage.while_held(
        || db.checkpoint(),
        || {
            for e in 0..7 {
                db.signal("like", EntityId(e), 1.0, now).unwrap();
            }
        },
    );
    checkpoint.unwrap();
    assert!(went_on, "durable writes waited for the segments' deletion");
    let after = db.status().segments;
    assert!(after < before, "segments {before} -> {after}");
    let counts: Vec<i64> = (0..7)
        .map(|e| db.read_count(EntityId(e), "like").unwrap())
        .collect();
    db.close().unwrap();
    let db = open(&storage);
    let reopened: Vec<i64> = (0..7)
        .map(|e| db.read_count(EntityId(e), "like").unwrap())
        .collect();
    assert_eq!(reopened, counts);
    // 900 before the hold, 7 during it.
    assert_eq!(counts.iter().sum::<i64>(), 907);
}
