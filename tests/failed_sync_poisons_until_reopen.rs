//! A failed write or fsync of the log, a full disk included, poisons the
//! database: the write in flight fails, every later write (and `flush`)
//! returns `TidalError::Poisoned` carrying the cause, never a silent retry,
//! and `status().poisoned` says why. Reads go on, nothing acknowledged
//! before is lost, and a reopen (faults cleared, with or without a crash
//! that drops unsynced data) recovers and accepts writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::storage::{CrashMode, FaultKind, Storage};
use tidal::{
    Config, EntityId, ManualClock, SessionId, SimStorage, TidalDb, TidalError, Timestamp, UserId,
    WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const IN_FLIGHT: EntityId = EntityId(77);
/// Signals in the large batch.
const LARGE: i64 = 300;

#[derive(Clone, Copy, Debug)]
enum Fault {
    SyncData,
    /// The sync of a batch large enough to be applied (unpublished)
    /// while it syncs (`View::apply_early`).
    SyncDataLargeBatch,
    Write,
    /// The write of a large batch, whose apply (unpublished) starts
    /// before the batch is written.
    WriteLargeBatch,
    DiskFull,
}

/// Small segments, so the disk fills soon; large enough for the large
/// batch (whose sync, not a roll, must be what fails) when `large`.
fn open(storage: &Arc<SimStorage>, large: bool) -> TidalDb {
    TidalDb::open(
        Config::builder(DIR)
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(if large { 1 << 20 } else { 4096 })
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn stored_bytes(sim: &SimStorage, dir: &Path) -> u64 {
    let mut total = 0;
    for name in sim.list_dir(dir).unwrap() {
        let p: PathBuf = dir.join(name);
        total += match sim.read(&p) {
            Some(bytes) => bytes.len() as u64,
            None => stored_bytes(sim, &p),
        };
    }
    total
}

#[track_caller]
fn check(db: &TidalDb, model: &BTreeMap<u64, i64>, what: &str) {
    for e in 0..10 {
        let want = model.get(&e).copied().unwrap_or(0);
        assert_eq!(
            db.read_count(EntityId(e), "like").unwrap(),
            want,
            "{what}: entity {e}"
        );
    }
}

fn is_poisoned_by(r: tidal::Result<tidal::Position>, cause: &str, what: &str) {
    match r {
        Err(TidalError::Poisoned { cause: c }) => assert_eq!(c, cause, "{what}"),
        other => panic!("{what}: expected Poisoned, got {other:?}"),
    }
}

fn run(fault: Fault, crash: bool) {
    let what = format!("{fault:?}, crash {crash}");
    let large = matches!(fault, Fault::SyncDataLargeBatch | Fault::WriteLargeBatch);
    let sim = SimStorage::new();
    let db = open(&sim, large);
    let at = Timestamp(NOW);
    let mut model: BTreeMap<u64, i64> = BTreeMap::new();
    // Acknowledged signals on IN_FLIGHT (only the disk-full case has some).
    let mut acked_in_flight = 0i64;
    for i in 0..40u64 {
        db.signal("like", EntityId(i % 10), 1.0, at).unwrap();
        *model.entry(i % 10).or_default() += 1;
    }
    db.open_session(SessionId(1), UserId(1), at).unwrap();

    // The write in flight when the fault strikes fails.
    let failed = match fault {
        Fault::SyncData => {
            sim.fail_next(FaultKind::SyncData, ".seg");
            db.signal("like", IN_FLIGHT, 1.0, at)
        }
        Fault::SyncDataLargeBatch => {
            sim.fail_next(FaultKind::SyncData, ".seg");
            let batch = (0..LARGE).fold(WriteBatch::new(), |b, _| {
                b.signal("like", IN_FLIGHT, 1.0, at)
            });
            db.write(batch)
        }
        Fault::Write => {
            sim.fail_next(FaultKind::Write, ".seg");
            db.signal("like", IN_FLIGHT, 1.0, at)
        }
        Fault::WriteLargeBatch => {
            sim.fail_next(FaultKind::Write, ".seg");
            let batch = (0..LARGE).fold(WriteBatch::new(), |b, _| {
                b.signal("like", IN_FLIGHT, 1.0, at)
            });
            db.write(batch)
        }
        Fault::DiskFull => {
            // Writes into the pre-allocated segment still succeed (and are
            // acknowledged); the one that needs a new segment finds the
            // disk full.
            sim.set_capacity_bytes(Some(stored_bytes(&sim, Path::new(DIR))));
            loop {
                match db.signal("like", IN_FLIGHT, 1.0, at) {
                    Ok(_) => acked_in_flight += 1,
                    Err(err) => break Err(err),
                }
                assert!(acked_in_flight < 1_000, "{what}: the disk never filled");
            }
        }
    };
    let cause = match failed {
        Err(TidalError::Poisoned { cause }) => cause,
        Err(TidalError::Io { .. }) => db.status().poisoned.expect("an Io error poisons"),
        other => panic!("{what}: the write in flight must fail, got {other:?}"),
    };
    let expected_cause = match fault {
        Fault::DiskFull => "disk full",
        _ => "injected",
    };
    assert!(cause.contains(expected_cause), "{what}: cause {cause:?}");
    assert_eq!(
        db.status().poisoned.as_deref(),
        Some(cause.as_str()),
        "{what}"
    );

    // Every later write is refused with the cause, faults gone or not.
    sim.clear_faults();
    sim.set_capacity_bytes(None);
    is_poisoned_by(db.signal("like", EntityId(1), 1.0, at), &cause, &what);
    is_poisoned_by(
        db.write_item(EntityId(50), None, &[("k", "v")]),
        &cause,
        &what,
    );
    is_poisoned_by(
        db.record_session_event(SessionId(1), EntityId(2), "like", 1.0, at),
        &cause,
        &what,
    );
    is_poisoned_by(
        db.write(WriteBatch::new().signal("like", EntityId(3), 1.0, at)),
        &cause,
        &what,
    );
    match db.flush() {
        Err(TidalError::Poisoned { cause: c }) => assert_eq!(c, cause, "{what}"),
        other => panic!("{what}: flush must be refused, got {other:?}"),
    }
    assert!(
        db.checkpoint().is_err(),
        "{what}: no snapshot of a poisoned db"
    );
    assert_eq!(
        db.status().poisoned.as_deref(),
        Some(cause.as_str()),
        "{what}"
    );
    // Reads go on, and show only acknowledged writes.
    check(&db, &model, &what);
    assert_eq!(
        db.read_count(IN_FLIGHT, "like").unwrap(),
        acked_in_flight,
        "{what}"
    );
    assert_eq!(db.session(SessionId(1)).unwrap().event_count, 0, "{what}");
    let _ = db.close();

    if crash {
        sim.crash(CrashMode::DropUnsynced);
    }
    let db = open(&sim, large);
    assert_eq!(db.status().poisoned, None, "{what}");
    check(&db, &model, &what);
    let in_flight = db.read_count(IN_FLIGHT, "like").unwrap() - acked_in_flight;
    if crash {
        // Never synced, so a crash takes it.
        assert_eq!(in_flight, 0, "{what}");
    } else {
        // Its outcome was unknown: either way is allowed, nothing else.
        let whole = if large { LARGE } else { 1 };
        assert!(in_flight == 0 || in_flight == whole, "{what}: {in_flight}");
    }
    assert_eq!(db.session(SessionId(1)).unwrap().event_count, 0, "{what}");
    let p = db.signal("like", EntityId(5), 1.0, at).unwrap();
    db.record_session_event(SessionId(1), EntityId(2), "like", 1.0, at)
        .unwrap();
    *model.entry(5).or_default() += 1;
    *model.entry(2).or_default() += 1;
    db.close().unwrap();
    sim.crash(CrashMode::DropUnsynced);
    let db = open(&sim, large);
    check(&db, &model, &what);
    assert!(db.last_position() > p, "{what}");
    assert_eq!(db.session(SessionId(1)).unwrap().event_count, 1, "{what}");
    db.close().unwrap();
}

#[test]
fn a_failed_sync_poisons_until_reopen() {
    run(Fault::SyncData, false);
    run(Fault::SyncData, true);
}

#[test]
fn a_failed_sync_of_a_large_batch_poisons_until_reopen() {
    run(Fault::SyncDataLargeBatch, false);
    run(Fault::SyncDataLargeBatch, true);
}

#[test]
fn a_failed_write_poisons_until_reopen() {
    run(Fault::Write, false);
    run(Fault::Write, true);
}

#[test]
fn a_failed_write_of_a_large_batch_poisons_until_reopen() {
    run(Fault::WriteLargeBatch, false);
    run(Fault::WriteLargeBatch, true);
}

#[test]
fn a_full_disk_poisons_until_reopen() {
    run(Fault::DiskFull, false);
    run(Fault::DiskFull, true);
}
