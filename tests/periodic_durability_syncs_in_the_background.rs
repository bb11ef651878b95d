//! Under `Durability::Periodic` a write returns once its batch is written,
//! before any sync; a background flusher syncs at the interval, so a crash
//! loses at most that window. With a 20 ms interval, ~100 ms after the last
//! write the flusher has synced everything (the high-water mark caught up)
//! and a crash that drops unsynced data loses nothing. With an interval
//! that never fires during the test, writes make no sync at all, a crash
//! loses the unflushed ones, and `flush()` makes everything durable at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::storage::CrashMode;
use tidal::{Config, Durability, EntityId, ManualClock, SimStorage, TidalDb, Timestamp};

const NOW: u64 = 1_700_000_000_000;

fn open(storage: &Arc<SimStorage>, interval: Duration) -> TidalDb {
    TidalDb::open(
        Config::builder("/db")
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(64 * 1024)
            .durability(Durability::Periodic(interval))
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn write(db: &TidalDb, from: u64, n: u64, model: &mut BTreeMap<u64, i64>) {
    for i in from..from + n {
        db.signal("like", EntityId(i % 23), 1.0, Timestamp(NOW))
            .unwrap();
        *model.entry(i % 23).or_default() += 1;
    }
}

fn check(db: &TidalDb, model: &BTreeMap<u64, i64>, what: &str) {
    for e in 0..23 {
        let want = model.get(&e).copied().unwrap_or(0);
        assert_eq!(
            db.read_count(EntityId(e), "like").unwrap(),
            want,
            "{what}: entity {e}"
        );
    }
}

#[test]
fn the_background_flusher_makes_writes_durable_within_the_interval() {
    let sim = SimStorage::new();
    let db = open(&sim, Duration::from_millis(20));
    let mut model = BTreeMap::new();
    let syncs = sim.sync_count();
    let started = Instant::now();
    write(&db, 0, 300, &mut model);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // Writes do not sync: at most one flusher sync per interval ran meanwhile.
    let during = sim.sync_count() - syncs;
    assert!(
        during <= elapsed_ms / 20 + 2,
        "{during} syncs during 300 writes in {elapsed_ms} ms"
    );

    std::thread::sleep(Duration::from_millis(100));
    let last = db.last_position();
    // The flusher has run (a loaded machine gets some slack, never a pass
    // without the flusher: nothing else syncs).
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.status().hwm < last.seqno {
        assert!(Instant::now() < deadline, "the flusher never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    sim.crash(CrashMode::DropUnsynced);
    drop(db); // its last flush fails against the crashed files

    let db = open(&sim, Duration::from_millis(20));
    check(&db, &model, "after a crash");
    assert_eq!(db.last_position(), last);
    assert!(db.status().recovery.cuts.is_empty());
    db.close().unwrap();
}

#[test]
fn writes_return_before_any_sync_and_flush_makes_them_durable() {
    let hour = Duration::from_secs(3_600);
    let sim = SimStorage::new();
    let db = open(&sim, hour);
    let mut model = BTreeMap::new();
    let syncs = sim.sync_count();
    write(&db, 0, 200, &mut model);
    assert_eq!(sim.sync_count(), syncs, "a Periodic write never syncs");
    let flushed = db.last_position();
    assert!(db.status().hwm < flushed.seqno, "not durable yet");
    db.flush().unwrap();
    assert!(sim.sync_count() > syncs);
    assert_eq!(db.status().hwm, flushed.seqno, "durable at once");

    // Writes after the flush are in the window a crash may lose.
    let mut unflushed = BTreeMap::new();
    write(&db, 200, 50, &mut unflushed);
    assert!(db.last_position() > flushed);
    sim.crash(CrashMode::DropUnsynced);
    drop(db);

    let db = open(&sim, hour);
    check(&db, &model, "after flush and crash");
    assert_eq!(db.last_position(), flushed);
    db.close().unwrap();
}
