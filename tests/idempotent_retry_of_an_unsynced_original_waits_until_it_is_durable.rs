//! A retry answered from an original that is not yet durable must not
//! return before the original is as durable as the retry's durability asks.
//!
//! The original is written under `Durability::Periodic` (a long interval,
//! so it is never synced) and the process dies without syncing (the
//! simulated disk fails every data sync from then on, so the shutdown sync
//! fails): the pages are still in the (simulated) page cache, as after a
//! real process crash. The node restarts under `Durability::Sync` and reads
//! the original back from that cache; a client retries. The retry returns
//! the original Position, then power is lost (every unsynced write is
//! dropped): the original must survive, because the retry under `Sync`
//! returned only once the original was synced. A retry that returned
//! without syncing would lose it here.

use std::sync::Arc;
use std::time::Duration;

use tidal::storage::{CrashMode, FaultKind};
use tidal::{Config, Durability, EntityId, SimStorage, TidalDb, Timestamp, WriteBatch};

fn open(storage: &Arc<SimStorage>, durability: Durability) -> TidalDb {
    TidalDb::open(
        Config::builder("/data/db")
            .signal_type("like", Duration::from_secs(3_600))
            .storage(storage.clone())
            .durability(durability)
            .segment_bytes(1 << 20)
            .build()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_sync_retry_makes_the_unsynced_original_durable_before_returning() {
    let storage = SimStorage::new();
    let at = Timestamp::now();
    let keyed = || {
        WriteBatch::new()
            .signal("like", EntityId(1), 1.0, at)
            .idempotency_key("charge-1")
    };
    let db = open(&storage, Durability::Periodic(Duration::from_secs(3_600)));
    let original = db.write(keyed()).unwrap();
    // The process dies: nothing more reaches the disk by a sync.
    storage.fail_always(FaultKind::SyncData, "");
    drop(db);
    storage.clear_faults();

    // Restart under Sync; the original is read back from the page cache.
    let db = open(&storage, Durability::Sync);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
    let syncs = storage.sync_count();
    assert_eq!(db.write(keyed()).unwrap(), original);
    assert!(
        storage.sync_count() > syncs,
        "the retry synced the original"
    );
    // A second retry finds it durable already: no sync needed.
    let syncs = storage.sync_count();
    assert_eq!(db.write(keyed()).unwrap(), original);
    assert_eq!(storage.sync_count(), syncs);

    // Power loss right after the retries returned.
    storage.crash(CrashMode::DropUnsynced);
    drop(db);
    let db = open(&storage, Durability::Sync);
    assert_eq!(
        db.read_count(EntityId(1), "like").unwrap(),
        1,
        "the original survived the crash"
    );
    assert_eq!(db.status().idempotency_keys, 1);
    assert_eq!(db.write(keyed()).unwrap(), original);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
}
