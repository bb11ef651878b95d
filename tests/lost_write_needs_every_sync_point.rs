//! Every named sync point earns its place: a seeded lost-write scenario
//! (writes, segment rolls with and without the pre-allocated spare,
//! checkpoints with retention, a failed roll reopened without a crash, a
//! backup, crashes that drop unsynced data, a torn prefix or random pages)
//! passes with every point on, and with any one durability point disabled
//! (`SimStorage::disable_sync`, the test-only switch) it loses an
//! acknowledged write, diverges from the model, or fails to reopen.
//!
//! Points that do not guard durability on their own, and the renames
//! (which cannot be disabled), are listed with the reason; the replication points (divergence cut, snapshot
//! install, EPOCH, reconciliation) are proved by
//! `lost_write_replication_sync_points`, and the point-in-time one by
//! `lost_write_point_in_time_sync_points`, whose lists live in
//! `sync_points/`. The test checks that its three lists and those cover
//! `SyncPoint::ALL` exactly once, so a new point cannot be
//! forgotten, that
//! the scenario reaches every point it claims and none it says it does not,
//! and that a "covered elsewhere" point really loses nothing when disabled
//! (the claim is tested, not assumed).

#[path = "sync_points/point_in_time.rs"]
mod point_in_time;
#[path = "sync_points/replication.rs"]
mod replication;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidal::storage::{CrashMode, FaultKind, PointKind, Storage, SyncPoint};
use tidal::{
    Config, Durability, EntityId, ManualClock, SimStorage, TidalDb, Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/data/db";
const BACKUP: &str = "/backups/b1";
const SPARE: &str = "/data/db/wal/shard-00000/spare.prealloc";
/// Entity written while a fault is pending: its outcome is uncertain.
const IN_FLIGHT: u64 = 999;
/// Entity written without a flush before a crash: never acknowledged, so
/// any prefix of it may survive (recovery cuts the torn tail).
const UNFLUSHED: u64 = 998;

/// Points that, disabled alone, must make the scenario fail.
const GUARDS: &[SyncPoint] = &[
    SyncPoint::LogAppend,
    SyncPoint::LogRoll,
    SyncPoint::SegmentDir,
    SyncPoint::SpareAdoptDir,
    SyncPoint::LogOpenDir,
    SyncPoint::LogCreateDirs,
    SyncPoint::SnapshotCreateDirs,
    SyncPoint::SnapshotFile,
    SyncPoint::SnapshotDir,
    SyncPoint::DataDirCreate,
    SyncPoint::BackupCreateDirs,
    SyncPoint::MetaFile,
];

/// Points whose effect another sync always covers; disabled alone they
/// lose nothing (checked below). Each says what covers it and why it
/// exists anyway.
const COVERED_ELSEWHERE: &[(SyncPoint, &str)] = &[
    (
        SyncPoint::SegmentFile,
        "the first LogAppend/LogRoll fdatasync of the segment syncs its header and zeros too; \
         it exists for speed: an fdatasync into pre-written zeros costs half (PERFORMANCE-NOTES)",
    ),
    (
        SyncPoint::SpareFile,
        "as SegmentFile, off the commit path: the spare's zeros are on disk before it is adopted",
    ),
    (
        SyncPoint::RecoveryCutFile,
        "the zeros over a cut tail are synced by the next LogAppend into that segment; until \
         then a crash shows the same torn tail, which the next open cuts again",
    ),
    (
        SyncPoint::LogRetireDir,
        "a removal: a crash brings an old segment back, older than the snapshots, which \
         recovery skips and the next checkpoint deletes again; it keeps freed space freed",
    ),
    (
        SyncPoint::SnapshotRetireDir,
        "a removal: a crash brings an older snapshot back, never chosen over the newest",
    ),
    (
        SyncPoint::MetaDir,
        "the data directory is synced again before anything depends on META (LogCreateDirs \
         when the log directory is made, SnapshotCreateDirs in a backup); kept so META is \
         durable on its own, whatever the order of what follows",
    ),
];

/// Renames: they are not syncs and cannot be disabled (their failures are
/// injected in
/// `fault_at_each_named_point_poisons_and_recovers`). The replication
/// points are proved in `lost_write_replication_sync_points`
/// (`replication::GUARDS` and `replication::COVERED`; its renames,
/// `replication::RENAMES`, are failed once each there).
const NOT_REACHED: &[(SyncPoint, &str)] = &[
    (SyncPoint::SpareRename, "a rename"),
    (SyncPoint::SnapshotRename, "a rename"),
    (SyncPoint::MetaRename, "a rename"),
];

type Model = BTreeMap<u64, i64>;

fn config(dir: &str, sim: &Arc<SimStorage>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .dimension(2)
        .segment_bytes(4096)
        .retention_bytes(0)
        .snapshot_every_bytes(1 << 30)
        .durability(Durability::Periodic(Duration::from_secs(3_600)))
        .storage(sim.clone())
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap()
}

fn open(dir: &str, sim: &Arc<SimStorage>) -> Result<TidalDb, String> {
    TidalDb::open(config(dir, sim)).map_err(|e| format!("reopen failed: {e}"))
}

fn check(db: &TidalDb, model: &Model, when: &str) -> Result<(), String> {
    for e in (0..40).chain([IN_FLIGHT, UNFLUSHED]) {
        let got = db
            .read_count(EntityId(e), "like")
            .map_err(|e| e.to_string())?;
        let want = model.get(&e).copied().unwrap_or(0);
        if got != want {
            return Err(format!("{when}: entity {e} has {got}, acknowledged {want}"));
        }
    }
    Ok(())
}

/// Writes `n` batches and flushes: under `Periodic` the flush is the
/// acknowledgement, so the model takes the writes once it returns.
fn write_and_flush(
    db: &TidalDb,
    model: &mut Model,
    n: u64,
    salt: u64,
    mut wait_for_spare: Option<&SimStorage>,
) -> Result<(), String> {
    let at = Timestamp(NOW);
    let mut pending = Model::new();
    let spare_syncs = wait_for_spare.map(|sim| sim.sync_point_hits(SyncPoint::SpareFile));
    for i in 0..n {
        let mut b = WriteBatch::new();
        for k in 0..8 {
            let e = (i * 7 + k * 3 + salt) % 40;
            b = b.signal("like", EntityId(e), 1.0, at);
            *pending.entry(e).or_default() += 1;
        }
        db.write(b).map_err(|e| format!("write failed: {e}"))?;
        if wait_for_spare.is_some_and(|sim| !sim.exists(Path::new(SPARE))) {
            // The log starts the spare's thread once the segment is half
            // full, and these writes take microseconds: on a loaded machine
            // the segment filled before the thread ran, and no round ever
            // adopted a spare. Leave it the CPU between writes.
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(sim) = wait_for_spare.take_if(|sim| sim.exists(Path::new(SPARE))) {
            // A spare is being built in the background: wait until it is
            // synced, so it is ready for the next roll (once per call; on
            // a loaded machine a fixed sleep was not enough).
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while Some(sim.sync_point_hits(SyncPoint::SpareFile)) == spare_syncs
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    db.flush().map_err(|e| format!("flush failed: {e}"))?;
    for (e, c) in pending {
        *model.entry(e).or_default() += c;
    }
    Ok(())
}

fn crash_mode(round: u64) -> CrashMode {
    match round % 3 {
        0 => CrashMode::DropUnsynced,
        1 => CrashMode::RandomPages { seed: round },
        _ => CrashMode::TornPrefix { seed: round },
    }
}

/// Crashes, reopens and compares with the model.
fn crash_and_check(
    db: TidalDb,
    sim: &Arc<SimStorage>,
    model: &Model,
    round: u64,
) -> Result<TidalDb, String> {
    // The crash comes first: dropping the db would close it, and a close
    // syncs.
    sim.crash(crash_mode(round));
    drop(db);
    let db = open(DIR, sim)?;
    check(&db, model, &format!("after crash {round}"))?;
    Ok(db)
}

/// The scenario; `Err` says what was lost or refused.
fn scenario(disabled: Option<SyncPoint>) -> Result<Arc<SimStorage>, String> {
    let sim = SimStorage::new();
    if let Some(p) = disabled {
        sim.disable_sync(p);
    }
    let mut model = Model::new();
    let mut round = 0;
    // A new database in new parent directories; a crash right after open.
    let db = open(DIR, &sim)?;
    let mut db = crash_and_check(db, &sim, &model, round)?;
    // Writes that roll segments, crashes between; some rolls find the spare
    // built in the background, some do not (commit-path segment). Rounds go
    // on until three rolls adopted a spare (the thread's timing varies).
    let mut salt = 0;
    while salt < 6 || sim.sync_point_hits(SyncPoint::SpareAdoptDir) < 3 {
        if salt > 60 {
            return Err("no spare was ever adopted".into());
        }
        round += 1;
        // Every third round rolls without a spare (its build fails, so the
        // roll creates the segment on the commit path); the others wait
        // for the spare to be ready.
        if salt % 3 == 0 {
            sim.fail_at(SyncPoint::SpareFile, FaultKind::SyncData);
        }
        let wait = (salt % 3 != 0).then_some(&*sim);
        write_and_flush(&db, &mut model, 16 + salt % 6, salt, wait)?;
        db = crash_and_check(db, &sim, &model, round)?;
        salt += 1;
    }
    // Checkpoints with retention: old segments go, snapshots must hold.
    for salt in 0..3 {
        round += 1;
        write_and_flush(&db, &mut model, 10, 100 + salt, None)?;
        db.checkpoint()
            .map_err(|e| format!("checkpoint failed: {e}"))?;
        write_and_flush(&db, &mut model, 3, 200 + salt, None)?;
        db = crash_and_check(db, &sim, &model, round)?;
    }
    // A roll fails making the new segment's name durable: the db is
    // poisoned; reopened without a crash, it appends to that segment, so
    // the open must make the name durable before acknowledging anything.
    sim.fail_at(SyncPoint::SegmentDir, FaultKind::SyncDir);
    sim.fail_at(SyncPoint::SpareAdoptDir, FaultKind::SyncDir);
    let at = Timestamp(NOW);
    let mut tries = 0;
    while db
        .write(WriteBatch::new().signal("like", EntityId(IN_FLIGHT), 1.0, at))
        .and_then(|_| db.flush())
        .is_ok()
    {
        *model.entry(IN_FLIGHT).or_default() += 1;
        tries += 1;
        if tries > 200 {
            return Err("the injected roll failure never fired".into());
        }
    }
    sim.clear_faults();
    drop(db);
    db = open(DIR, &sim)?;
    // The failed write's outcome is unknown: take what the log holds.
    let held = db
        .read_count(EntityId(IN_FLIGHT), "like")
        .map_err(|e| e.to_string())?;
    let acked = model.get(&IN_FLIGHT).copied().unwrap_or(0);
    if held != acked && held != acked + 1 {
        return Err(format!("in-flight entity has {held}, acknowledged {acked}"));
    }
    model.insert(IN_FLIGHT, held);
    round += 1;
    write_and_flush(&db, &mut model, 2, 300, None)?;
    db = crash_and_check(db, &sim, &model, round)?;
    // Unflushed writes and torn crashes until recovery cuts a torn tail;
    // what follows is appended after the cut.
    let mut seed = 0;
    let cuts = sim.sync_point_hits(SyncPoint::RecoveryCutFile);
    while sim.sync_point_hits(SyncPoint::RecoveryCutFile) == cuts && seed < 20 {
        for _ in 0..4 {
            db.write(WriteBatch::new().signal("like", EntityId(UNFLUSHED), 1.0, at))
                .map_err(|e| format!("write failed: {e}"))?;
        }
        sim.crash(CrashMode::TornPrefix { seed });
        drop(db);
        seed += 1;
        db = open(DIR, &sim)?;
        let held = db
            .read_count(EntityId(UNFLUSHED), "like")
            .map_err(|e| e.to_string())?;
        let before = model.get(&UNFLUSHED).copied().unwrap_or(0);
        if !(before..=before + 4).contains(&held) {
            return Err(format!(
                "unflushed entity has {held}, had {before} plus 4 writes"
            ));
        }
        model.insert(UNFLUSHED, held);
        check(&db, &model, "after a torn crash")?;
    }
    round += 1;
    write_and_flush(&db, &mut model, 3, 400, None)?;
    db = crash_and_check(db, &sim, &model, round)?;
    // A backup into new directories, then a crash: it must open with the
    // same answers.
    db.backup(BACKUP)
        .map_err(|e| format!("backup failed: {e}"))?;
    sim.crash(CrashMode::DropUnsynced);
    drop(db);
    let backup = open(BACKUP, &sim).map_err(|e| format!("backup: {e}"))?;
    check(&backup, &model, "backup after a crash")?;
    drop(backup);
    let db = open(DIR, &sim)?;
    check(&db, &model, "after the backup")?;
    Ok(sim)
}

#[test]
fn every_sync_point_is_needed_against_lost_writes() {
    // All on: the scenario passes, and reaches every point it claims to.
    let sim = scenario(None).expect("with every sync point on nothing is lost");
    for p in GUARDS
        .iter()
        .chain(COVERED_ELSEWHERE.iter().map(|(p, _)| p))
    {
        assert!(
            sim.sync_point_hits(*p) > 0,
            "the scenario never reaches {p}"
        );
    }
    // The lists cover every point exactly once.
    let mut listed: Vec<SyncPoint> = GUARDS
        .iter()
        .copied()
        .chain(COVERED_ELSEWHERE.iter().map(|(p, _)| *p))
        .chain(NOT_REACHED.iter().map(|(p, _)| *p))
        .chain(replication::GUARDS.iter().copied())
        .chain(replication::COVERED.iter().map(|(p, _)| *p))
        .chain(replication::RENAMES.iter().copied())
        .chain(point_in_time::COVERED.iter().map(|(p, _)| *p))
        .chain(point_in_time::RENAMES.iter().copied())
        .collect();
    listed.sort();
    let mut all = SyncPoint::ALL.to_vec();
    all.sort();
    assert_eq!(listed, all, "every point is listed exactly once");
    for p in NOT_REACHED
        .iter()
        .map(|(p, _)| p)
        .chain(replication::GUARDS)
        .chain(replication::COVERED.iter().map(|(p, _)| p))
        .chain(point_in_time::COVERED.iter().map(|(p, _)| p))
    {
        assert!(
            p.kind() == PointKind::Rename || sim.sync_point_hits(*p) == 0,
            "{p} is reached: move it to GUARDS or COVERED_ELSEWHERE"
        );
    }

    let mut failures = Vec::new();
    for &p in GUARDS {
        match scenario(Some(p)) {
            Ok(_) => failures.push(format!("{p}: disabled, nothing was lost")),
            Err(e) => eprintln!("{p} disabled: {e}"),
        }
    }
    for &(p, why) in COVERED_ELSEWHERE {
        if let Err(e) = scenario(Some(p)) {
            failures.push(format!("{p} was said to be covered ({why}) but: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
