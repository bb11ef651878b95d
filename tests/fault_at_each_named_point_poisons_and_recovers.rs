//! A storage fault at each named sync point, of each kind that applies
//! there (the sync failing, a writeback error that loses the data, a
//! rename failing, a full disk): the operation that hits it returns a clear
//! error naming the operation, the file and the point; a fault on the
//! write path poisons the database (later writes get `Poisoned` with that
//! cause, reads go on and show every acknowledged write); after a crash
//! that drops unsynced data a reopen recovers exactly the acknowledged
//! writes and accepts new ones.
//!
//! The scenario is single-node, as in `lost_write_needs_every_sync_point`;
//! points it does not reach (replication and point-in-time paths) are
//! skipped, and the test checks it reaches every other one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidal::storage::{CrashMode, FaultKind, Storage, SyncPoint};
use tidal::{
    Config, Durability, EntityId, ManualClock, SimStorage, TidalDb, TidalError, Timestamp,
    WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/data/db";
const BACKUP: &str = "/backups/b1";
const SPARE: &str = "/data/db/wal/shard-00000/spare.prealloc";

/// Points only the replication and point-in-time paths reach.
const NOT_REACHED: &[SyncPoint] = &[
    SyncPoint::LogCutDir,
    SyncPoint::LogCutFile,
    SyncPoint::SnapshotCutDir,
    SyncPoint::DivergedCreateDir,
    SyncPoint::DivergedFile,
    SyncPoint::DivergedRename,
    SyncPoint::DivergedDir,
    SyncPoint::LogRestartDir,
    SyncPoint::EpochFile,
    SyncPoint::EpochRename,
    SyncPoint::EpochDir,
    SyncPoint::MergedRename,
    SyncPoint::MergedDir,
    SyncPoint::RecoveryDamagedRename,
    SyncPoint::RecoveryDamagedDir,
];

/// Counts per entity; each step writes its own entities, so a step that
/// fails leaves only its own entities uncertain.
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

/// Where the fault struck.
struct Struck {
    error: TidalError,
    /// The db, if the fault struck an open one (not its open).
    db: Option<TidalDb>,
    /// The entity the failing step wrote, and how many times at most.
    uncertain: Option<(u64, i64)>,
}

/// Writes `n` batches on entity `e` and flushes; the model takes them once
/// the flush returns.
fn write_step(
    db: &TidalDb,
    sim: &SimStorage,
    model: &mut Model,
    e: u64,
    n: i64,
) -> Result<(), TidalError> {
    let at = Timestamp(NOW);
    let mut waited = false;
    for _ in 0..n {
        let mut b = WriteBatch::new();
        for _ in 0..6 {
            b = b.signal("like", EntityId(e), 1.0, at);
        }
        db.write(b)?;
        if !waited && sim.exists(Path::new(SPARE)) {
            // A spare is being built in the background: give it time to be
            // ready for the next roll (once per step).
            waited = true;
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    db.flush()?;
    *model.entry(e).or_default() += 6 * n;
    Ok(())
}

/// Runs the scenario until the fault strikes; `Ok` if it never did.
fn scenario(
    sim: &Arc<SimStorage>,
    model: &mut Model,
    inject: impl FnOnce(),
) -> Result<TidalDb, Struck> {
    let opened = |uncertain| {
        move |error| Struck {
            error,
            db: None,
            uncertain,
        }
    };
    let mut db = TidalDb::open(config(DIR, sim)).map_err(opened(None))?;
    inject();
    macro_rules! step {
        ($db:ident, $e:expr, $uncertain:expr) => {
            if let Err(error) = $e {
                return Err(Struck {
                    error,
                    db: Some($db),
                    uncertain: $uncertain,
                });
            }
        };
    }
    let mut e = 0;
    // Rolls, with and without the spare.
    // (A fault that fails the spare leaves its file behind, which fools the
    // wait for the next one: hence a bound, not an assertion; a fault at an
    // adoption point that is never reached fails the test below.)
    let enough = |sim: &SimStorage| {
        sim.sync_point_hits(SyncPoint::SpareAdoptDir) >= 2
            && sim.sync_point_hits(SyncPoint::SegmentDir) >= 3
    };
    while e < 6 || (!enough(sim) && e < 60) {
        // Every third step writes two and a half segments at once: its
        // second roll comes before any spare can be ready.
        let n = if e % 3 == 0 { 20 } else { 6 };
        step!(db, write_step(&db, sim, model, e, n), Some((e, 6 * n)));
        // Let the spare thread (if this step started one) start and finish,
        // so the next roll can adopt it; every third step rolls without.
        if e % 3 != 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        e += 1;
    }
    // Checkpoints with retention.
    for _ in 0..3 {
        step!(db, write_step(&db, sim, model, e, 10), Some((e, 60)));
        e += 1;
        step!(db, db.checkpoint(), None);
    }
    // Unflushed writes, a torn crash, a reopen that cuts the torn tail.
    let cuts = sim.sync_point_hits(SyncPoint::RecoveryCutFile);
    for seed in 0..20 {
        if sim.sync_point_hits(SyncPoint::RecoveryCutFile) > cuts {
            break;
        }
        for _ in 0..4 {
            step!(
                db,
                db.write(WriteBatch::new().signal("like", EntityId(e), 1.0, Timestamp(NOW))),
                Some((e, 4))
            );
        }
        sim.crash(CrashMode::TornPrefix { seed });
        drop(db);
        db = TidalDb::open(config(DIR, sim)).map_err(opened(Some((e, 4))))?;
        let held = db.read_count(EntityId(e), "like").unwrap();
        model.insert(e, held);
    }
    e += 1;
    step!(db, write_step(&db, sim, model, e, 2), Some((e, 12)));
    // A backup into new directories.
    step!(db, db.backup(BACKUP).map(drop), None);
    Ok(db)
}

fn check(db: &TidalDb, model: &Model, uncertain: Option<(u64, i64)>, what: &str) -> Model {
    let mut model = model.clone();
    for e in 0..80 {
        let got = db.read_count(EntityId(e), "like").unwrap();
        let want = model.get(&e).copied().unwrap_or(0);
        match uncertain {
            Some((u, most)) if u == e => {
                assert!(
                    (want..=want + most).contains(&got),
                    "{what}: entity {e} has {got}, acknowledged {want} (+{most} in flight)"
                );
                model.insert(e, got);
            }
            _ => assert_eq!(got, want, "{what}: entity {e}"),
        }
    }
    model
}

fn run(point: SyncPoint, kind: FaultKind) -> String {
    let what = format!("{kind:?} at {point}");
    let sim = SimStorage::new();
    // Points only an open of a new database reaches fail there; the others
    // once the database is open, so the fault strikes a running one (an
    // open makes its own first log sync and segment).
    let at_open = matches!(point, SyncPoint::DataDirCreate | SyncPoint::LogCreateDirs);
    if at_open {
        sim.fail_at(point, kind);
    }
    let mut model = Model::new();
    let struck = match scenario(&sim, &mut model, || {
        if !at_open {
            sim.fail_at(point, kind)
        }
    }) {
        Ok(db) => {
            // A fault the engine absorbs: only the background spare may.
            assert_eq!(
                point,
                SyncPoint::SpareFile,
                "{what}: the fault never surfaced ({} calls there)",
                sim.sync_point_hits(point)
            );
            check(&db, &model, None, &what);
            return format!("{what}: absorbed (the roll pre-allocates on the commit path)");
        }
        Err(s) => s,
    };
    // A clear error: the operation, the file, the point and the fault.
    let msg = struck.error.to_string();
    assert!(
        msg.contains(&format!("at sync point {point}")),
        "{what}: unclear error {msg}"
    );
    if kind == FaultKind::DiskFull {
        assert!(msg.contains("DiskFull"), "{what}: {msg}");
    }
    let mut outcome = format!("{what}: {msg}");
    if let Some(db) = struck.db {
        // Poisoned: later writes are refused with the cause.
        let poisoned = db.status().poisoned;
        match db.write(WriteBatch::new().signal("like", EntityId(79), 1.0, Timestamp(NOW))) {
            Err(TidalError::Poisoned { cause }) => {
                assert!(cause.contains(&point.to_string()), "{what}: cause {cause}");
                assert_eq!(poisoned.as_deref(), Some(cause.as_str()), "{what}");
                outcome.push_str(" -> poisoned");
            }
            Ok(_) => {
                // Only a failed snapshot or backup may leave the log
                // writable: nothing of the log depends on it.
                assert!(
                    matches!(
                        point,
                        SyncPoint::SnapshotCreateDirs
                            | SyncPoint::SnapshotFile
                            | SyncPoint::SnapshotRename
                            | SyncPoint::SnapshotDir
                            | SyncPoint::SnapshotRetireDir
                            | SyncPoint::LogRetireDir
                            | SyncPoint::BackupCreateDirs
                            | SyncPoint::MetaFile
                            | SyncPoint::MetaRename
                            | SyncPoint::MetaDir
                    ),
                    "{what}: a fault on the write path must poison"
                );
                *model.entry(79).or_default() += 1;
                db.flush().unwrap();
                outcome.push_str(" -> not poisoned (log untouched)");
            }
            Err(e) => panic!("{what}: expected Poisoned, got {e}"),
        }
        // Reads go on, with every acknowledged write.
        check(&db, &model, struck.uncertain, &what);
        sim.crash(CrashMode::DropUnsynced);
        drop(db);
    } else {
        outcome.push_str(" -> open refused");
        sim.crash(CrashMode::DropUnsynced);
    }
    // A reopen recovers the acknowledged writes and takes new ones.
    sim.clear_faults();
    let db = TidalDb::open(config(DIR, &sim)).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let model = check(&db, &model, struck.uncertain, &what);
    let mut model = model;
    write_step(&db, &sim, &mut model, 78, 2).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    drop(db);
    let db = TidalDb::open(config(DIR, &sim)).unwrap();
    check(&db, &model, None, &what);
    outcome
}

#[test]
fn a_fault_at_each_named_point_poisons_and_a_reopen_recovers() {
    let mut reached = 0;
    for &point in SyncPoint::ALL {
        if NOT_REACHED.contains(&point) {
            continue;
        }
        reached += 1;
        for &kind in point.faults() {
            eprintln!("{}", run(point, kind));
        }
    }
    assert_eq!(reached + NOT_REACHED.len(), SyncPoint::ALL.len());
}
