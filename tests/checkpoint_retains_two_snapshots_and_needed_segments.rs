//! Checkpoints keep the two newest snapshots and every segment since the
//! older one: after each of several checkpoints (writes between), exactly
//! the two newest snapshots remain, every segment wholly older than the
//! older snapshot is deleted and none it needs is, and a reopen gives the
//! full state from the newest snapshot plus the log. Automatic snapshots
//! start once `snapshot_every_bytes` of log has been written, not before,
//! and follow the same retention.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::storage::Storage;
use tidal::{Config, EntityId, ManualClock, SeqNo, SimStorage, TidalDb, Timestamp};

const NOW: u64 = 1_700_000_000_000;
const WAL: &str = "/db/wal/shard-00000";
const SNAPS: &str = "/db/snapshots/shard-00000";

fn open(storage: &Arc<SimStorage>, snapshot_every_bytes: u64) -> TidalDb {
    TidalDb::open(
        Config::builder("/db")
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(4096)
            .snapshot_every_bytes(snapshot_every_bytes)
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// SeqNos named by the files of `dir` with extension `ext`, ascending.
fn seqnos(sim: &SimStorage, dir: &str, ext: &str) -> Vec<u64> {
    if !sim.exists(Path::new(dir)) {
        return Vec::new();
    }
    let mut out: Vec<u64> = sim
        .list_dir(Path::new(dir))
        .unwrap()
        .iter()
        .filter_map(|n| n.strip_suffix(ext)?.parse().ok())
        .collect();
    out.sort();
    out
}

/// The live segments hold the log from just after the older snapshot on,
/// and nothing wholly older.
fn check_segments(sim: &SimStorage, older_snapshot: u64, what: &str) {
    let segs = seqnos(sim, WAL, ".seg");
    assert!(!segs.is_empty(), "{what}");
    assert!(
        segs[0] <= older_snapshot + 1,
        "{what}: the segment holding SeqNo {} is kept: {segs:?}",
        older_snapshot + 1
    );
    if segs.len() > 1 {
        assert!(
            segs[1] > older_snapshot + 1,
            "{what}: segment {} is wholly older than snapshot {older_snapshot}: {segs:?}",
            segs[0]
        );
    }
}

fn write_round(db: &TidalDb, round: u64, n: u64, model: &mut BTreeMap<u64, i64>) {
    for i in 0..n {
        let e = (round * 13 + i) % 17;
        db.signal("like", EntityId(e), 1.0, Timestamp(NOW)).unwrap();
        *model.entry(e).or_default() += 1;
    }
}

fn check_state(db: &TidalDb, model: &BTreeMap<u64, i64>) {
    for e in 0..17 {
        let want = model.get(&e).copied().unwrap_or(0);
        assert_eq!(
            db.read_count(EntityId(e), "like").unwrap(),
            want,
            "entity {e}"
        );
    }
}

#[test]
fn manual_checkpoints_keep_two_snapshots_and_the_segments_since_the_older() {
    let sim = SimStorage::new();
    let db = open(&sim, 1 << 40);
    let mut model = BTreeMap::new();
    let mut taken: Vec<SeqNo> = Vec::new();
    for round in 0..6 {
        // About 1.5 segments of log per round.
        write_round(&db, round, 80, &mut model);
        let before = seqnos(&sim, WAL, ".seg");
        taken.push(db.checkpoint().unwrap());
        let what = format!("after checkpoint {round}");
        let kept: Vec<u64> = taken.iter().rev().take(2).rev().map(|s| s.0).collect();
        assert_eq!(seqnos(&sim, SNAPS, ".snap"), kept, "{what}");
        check_segments(&sim, kept[0], &what);
        let after = seqnos(&sim, WAL, ".seg");
        if round >= 2 {
            assert!(after.len() < before.len(), "{what}: old segments deleted");
        }
        // Nothing but whole segments older than the older snapshot went.
        assert!(after.iter().all(|s| before.contains(s)), "{what}");
        assert_eq!(
            after.last(),
            before.last(),
            "{what}: the current segment stays"
        );
        check_state(&db, &model);
    }
    let last = db.last_position();
    db.close().unwrap();

    let db = open(&sim, 1 << 40);
    check_state(&db, &model);
    assert_eq!(db.last_position(), last);
    let r = db.status().recovery;
    let newest = *taken.last().unwrap();
    assert_eq!(r.snapshot.as_ref().map(|s| s.1), Some(newest));
    assert_eq!(r.records_replayed, last.seqno.0 - newest.0);
    db.close().unwrap();
}

#[test]
fn automatic_snapshots_start_after_snapshot_every_bytes_of_log() {
    const EVERY: u64 = 8192;
    const BATCH_BYTES: u64 = 48 + 27; // one signal
    let sim = SimStorage::new();
    let db = open(&sim, EVERY);
    let mut model = BTreeMap::new();

    // Just under the threshold (the EpochStart batch included): none yet.
    let below = (EVERY - 200) / BATCH_BYTES;
    write_round(&db, 0, below, &mut model);
    std::thread::sleep(Duration::from_millis(50));
    assert!(seqnos(&sim, SNAPS, ".snap").is_empty(), "no snapshot yet");

    // Past it: one appears without any checkpoint call.
    write_round(&db, 1, 10, &mut model);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seqnos(&sim, SNAPS, ".snap").is_empty() {
        assert!(Instant::now() < deadline, "no automatic snapshot");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Several thresholds more: still exactly two, with their segments.
    for round in 2..12 {
        write_round(&db, round, EVERY / BATCH_BYTES / 2, &mut model);
    }
    let last = db.last_position();
    db.close().unwrap(); // joins the checkpoint threads
    let snaps = seqnos(&sim, SNAPS, ".snap");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    check_segments(&sim, snaps[0], "after automatic snapshots");

    let db = open(&sim, EVERY);
    check_state(&db, &model);
    assert_eq!(db.last_position(), last);
    assert_eq!(
        db.status().recovery.snapshot.map(|s| s.1),
        Some(SeqNo(snaps[1]))
    );
    db.close().unwrap();
}
