use super::*;
use crash::SplitMix64;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// A sim with `/d` created and `/d/f` holding `bytes`, name and data durable.
fn with_durable_file(bytes: &[u8]) -> Arc<SimStorage> {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/d")).unwrap();
    sim.sync_dir(&p("/")).unwrap();
    let f = sim.open(&p("/d/f"), OpenMode::CreateNew).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(&p("/d")).unwrap();
    sim
}

#[test]
fn synced_write_survives_and_unsynced_write_does_not() {
    let sim = with_durable_file(b"durable");
    let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"-lost", 7).unwrap();
    assert_eq!(sim.read("/d/f").unwrap(), b"durable-lost");
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/d/f").unwrap(), b"durable");
    // The old handle died with the crash.
    assert!(f.len().is_err());
    assert!(f.write_all_at(b"x", 0).is_err());
}

#[test]
fn created_file_without_dir_sync_vanishes() {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/d")).unwrap();
    sim.sync_dir(&p("/")).unwrap();
    let f = sim.open(&p("/d/new"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(sim.list_dir(&p("/d")).unwrap(), vec!["new".to_string()]);
    sim.crash(CrashMode::DropUnsynced);
    assert!(!sim.exists(&p("/d/new")));
    assert!(sim.exists(&p("/d")), "its directory was synced in /");
    assert!(sim.list_dir(&p("/d")).unwrap().is_empty());
}

#[test]
fn rename_without_dir_sync_reverts() {
    let sim = with_durable_file(b"old");
    let t = sim.open(&p("/d/f.tmp"), OpenMode::CreateNew).unwrap();
    t.write_all_at(b"new", 0).unwrap();
    t.sync_data().unwrap();
    sim.rename(&p("/d/f.tmp"), &p("/d/f")).unwrap();
    assert_eq!(sim.read("/d/f").unwrap(), b"new");
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/d/f").unwrap(), b"old");
    assert!(!sim.exists(&p("/d/f.tmp")));

    // With the directory synced, the rename sticks.
    let t = sim.open(&p("/d/f.tmp"), OpenMode::CreateNew).unwrap();
    t.write_all_at(b"new", 0).unwrap();
    t.sync_data().unwrap();
    sim.rename(&p("/d/f.tmp"), &p("/d/f")).unwrap();
    sim.sync_dir(&p("/d")).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/d/f").unwrap(), b"new");
    assert_eq!(sim.list_dir(&p("/d")).unwrap(), vec!["f".to_string()]);
}

#[test]
fn removal_without_dir_sync_reverts() {
    let sim = with_durable_file(b"keep");
    sim.remove_file(&p("/d/f")).unwrap();
    assert!(!sim.exists(&p("/d/f")));
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/d/f").unwrap(), b"keep");
    sim.remove_file(&p("/d/f")).unwrap();
    sim.sync_dir(&p("/d")).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    assert!(!sim.exists(&p("/d/f")));
}

#[test]
fn torn_prefix_keeps_a_prefix_in_write_order() {
    let mut seen = BTreeSet::new();
    for seed in 0..64 {
        let sim = with_durable_file(b"");
        let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
        for (i, chunk) in [b"aaaa", b"bbbb", b"cccc"].iter().enumerate() {
            f.write_all_at(*chunk, i as u64 * 4).unwrap();
        }
        sim.crash(CrashMode::TornPrefix { seed });
        let got = sim.read("/d/f").unwrap();
        assert!(b"aaaabbbbcccc".starts_with(&got), "seed {seed}: {got:?}");
        seen.insert(got.len());
    }
    // Different seeds cut at different places, whole and torn writes alike.
    assert!(seen.len() > 4, "{seen:?}");
}

#[test]
fn random_pages_keep_a_subset_of_pages() {
    let page = PAGE_BYTES as usize;
    let mut outcomes = BTreeSet::new();
    for seed in 0..32 {
        let sim = with_durable_file(&vec![0u8; 4 * page]);
        let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
        for i in 0..4u8 {
            f.write_all_at(&vec![i + 1; page], u64::from(i) * PAGE_BYTES)
                .unwrap();
        }
        sim.crash(CrashMode::RandomPages { seed });
        let got = sim.read("/d/f").unwrap();
        assert_eq!(got.len(), 4 * page);
        let mut mask = 0u8;
        for i in 0..4 {
            let pg = &got[i * page..(i + 1) * page];
            let new = pg.iter().all(|&b| b == i as u8 + 1);
            assert!(new || pg.iter().all(|&b| b == 0), "page {i} is mixed");
            mask |= u8::from(new) << i;
        }
        outcomes.insert(mask);
    }
    // Out of order: some later page survives while an earlier one is lost.
    assert!(outcomes.len() > 4, "{outcomes:?}");
    assert!(outcomes.iter().any(|m| m & 1 == 0 && m & 8 != 0));
}

#[test]
fn fail_next_fires_once_and_fail_always_until_cleared() {
    let sim = with_durable_file(b"x");
    sim.fail_next(FaultKind::SyncData, "/d/f");
    let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"y", 0).unwrap();
    assert!(f.sync_data().is_err());
    f.sync_data().unwrap();

    sim.fail_next(FaultKind::Write, "other");
    f.write_all_at(b"z", 0).unwrap();
    sim.fail_always(FaultKind::Write, "f");
    assert!(f.write_all_at(b"w", 0).is_err());
    assert!(f.write_all_at(b"w", 0).is_err());
    assert_eq!(
        sim.read("/d/f").unwrap(),
        b"z",
        "a failed write changes nothing"
    );
    sim.clear_faults();
    f.write_all_at(b"w", 0).unwrap();

    // fail_after lets n matching calls through, then fails one.
    sim.fail_after(2, FaultKind::SyncData, "/d/f");
    f.sync_data().unwrap();
    f.sync_data().unwrap();
    assert!(f.sync_data().is_err());
    f.sync_data().unwrap();

    for (kind, call) in [
        (FaultKind::Create, 0),
        (FaultKind::Open, 1),
        (FaultKind::Rename, 2),
        (FaultKind::Remove, 3),
        (FaultKind::SyncDir, 4),
    ] {
        sim.fail_next(kind, "");
        let run = |sim: &SimStorage| -> io::Result<()> {
            match call {
                0 => sim.open(&p("/d/g"), OpenMode::CreateNew).map(drop),
                1 => sim.open(&p("/d/f"), OpenMode::Read).map(drop),
                2 => sim.rename(&p("/d/g"), &p("/d/h")),
                3 => sim.remove_file(&p("/d/h")),
                _ => sim.sync_dir(&p("/d")),
            }
        };
        assert!(run(&sim).is_err(), "{kind:?} did not fire");
        run(&sim).unwrap();
    }
}

#[test]
fn capacity_gives_storage_full() {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/d")).unwrap();
    sim.sync_dir(&p("/")).unwrap();
    sim.set_capacity_bytes(Some(10));
    let f = sim.open(&p("/d/f"), OpenMode::CreateNew).unwrap();
    f.write_all_at(&[1; 8], 0).unwrap();
    let e = f.write_all_at(&[1; 4], 8).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    assert_eq!(
        f.set_len(11).unwrap_err().kind(),
        io::ErrorKind::StorageFull
    );
    // Overwriting in place does not grow the file.
    f.write_all_at(&[2; 8], 0).unwrap();
    sim.set_capacity_bytes(None);
    f.write_all_at(&[1; 4], 8).unwrap();
}

#[test]
fn lock_is_exclusive_until_dropped_or_crash() {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/d")).unwrap();
    sim.sync_dir(&p("/")).unwrap();
    let l = sim.lock(&p("/d/LOCK")).unwrap();
    let e = sim.lock(&p("/d//LOCK")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    drop(l);
    let l = sim.lock(&p("/d/LOCK")).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    let l2 = sim.lock(&p("/d/LOCK")).unwrap();
    // The stale guard must not release the new holder's lock.
    drop(l);
    assert!(sim.lock(&p("/d/LOCK")).is_err());
    drop(l2);
}

#[test]
fn paths_normalize_and_list_dir_is_sorted() {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("a//b/c")).unwrap();
    sim.write_raw("a/b/z", b"1");
    sim.write_raw("a/b/m", b"2");
    assert!(sim.exists(&p("a/b/c/")));
    assert_eq!(sim.list_dir(&p("a//b")).unwrap(), vec!["c", "m", "z"]);
    assert_eq!(sim.file_len("a/b//m"), Some(1));
    assert_eq!(
        sim.list_dir(&p("missing")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        sim.open(&p("a/b/m"), OpenMode::CreateNew)
            .unwrap_err()
            .kind(),
        io::ErrorKind::AlreadyExists
    );
}

#[test]
fn unlinked_file_stays_readable_through_its_handle() {
    let sim = with_durable_file(b"abc");
    let f = sim.open(&p("/d/f"), OpenMode::Read).unwrap();
    sim.remove_file(&p("/d/f")).unwrap();
    assert_eq!(f.read_all().unwrap(), b"abc");
    assert!(f.write_all_at(b"x", 0).is_err(), "opened read-only");
}

#[test]
fn send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimStorage>();
}

/// Random operations with crashes in every mode between them; whatever
/// happened, once every file and the directory are synced, a crash in any
/// mode loses nothing (checked against the pre-crash view as the model).
#[test]
fn after_full_sync_no_crash_mode_loses_anything() {
    for seed in 0..24u64 {
        let mut rng = SplitMix64(seed);
        let sim = SimStorage::new();
        sim.create_dir_all(&p("/d")).unwrap();
        sim.sync_dir(&p("/")).unwrap();
        sim.sync_dir(&p("/")).unwrap();
        for step in 0..60 {
            let name = p(&format!("/d/f{}", rng.up_to(3)));
            let other = p(&format!("/d/f{}", rng.up_to(3)));
            match rng.up_to(7) {
                0 => drop(sim.open(&name, OpenMode::CreateNew)),
                1 | 2 => {
                    if let Ok(f) = sim.open(&name, OpenMode::ReadWrite) {
                        let len = usize::try_from(rng.up_to(9000)).unwrap();
                        let off = rng.up_to(6000);
                        f.write_all_at(&vec![step as u8; len], off).unwrap();
                        if rng.coin() {
                            f.sync_data().unwrap();
                        }
                    }
                }
                3 => drop(sim.rename(&name, &other)),
                4 => drop(sim.remove_file(&name)),
                5 => sim.sync_dir(&p("/d")).unwrap(),
                _ => {
                    let mode = match rng.up_to(2) {
                        0 => CrashMode::DropUnsynced,
                        1 => CrashMode::TornPrefix { seed: step },
                        _ => CrashMode::RandomPages { seed: step },
                    };
                    sim.crash(mode);
                }
            }
        }
        for name in sim.list_dir(&p("/d")).unwrap() {
            let f = sim.open(&p("/d").join(name), OpenMode::ReadWrite).unwrap();
            f.sync_data().unwrap();
        }
        sim.sync_dir(&p("/d")).unwrap();
        let before: Vec<(String, Option<Vec<u8>>)> = sim
            .list_dir(&p("/d"))
            .unwrap()
            .into_iter()
            .map(|n| (n.clone(), sim.read(p("/d").join(n))))
            .collect();
        sim.crash(CrashMode::RandomPages { seed });
        let after: Vec<(String, Option<Vec<u8>>)> = sim
            .list_dir(&p("/d"))
            .unwrap()
            .into_iter()
            .map(|n| (n.clone(), sim.read(p("/d").join(n))))
            .collect();
        assert_eq!(before, after, "seed {seed}");
    }
}

#[test]
fn faults_at_a_point_fire_once_there_and_a_writeback_error_loses_the_data() {
    use crate::storage::SyncPoint;
    let sim = with_durable_file(b"old");
    let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    sim.fail_at(SyncPoint::LogAppend, FaultKind::Write);
    sim.fail_at(SyncPoint::SnapshotDir, FaultKind::DiskFull);
    sim.fail_at(SyncPoint::SnapshotRename, FaultKind::Rename);
    // Other points are untouched.
    sim.sync_dir_at(SyncPoint::MetaDir, &p("/d")).unwrap();
    let e = sim.sync_file(SyncPoint::LogAppend, f.as_ref()).unwrap_err();
    assert!(e.to_string().contains("LogAppend"), "{e}");
    // The retry "succeeds", but the data is gone: no silent retry can save it.
    sim.sync_file(SyncPoint::LogAppend, f.as_ref()).unwrap();
    let e = sim
        .sync_dir_at(SyncPoint::SnapshotDir, &p("/d"))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    assert!(
        sim.rename_at(SyncPoint::SnapshotRename, &p("/d/f"), &p("/d/g"))
            .is_err()
    );
    assert_eq!(
        sim.read("/d/f").unwrap(),
        b"new",
        "a failed rename changes nothing"
    );
    assert_eq!(sim.sync_point_hits(SyncPoint::LogAppend), 2);
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/d/f").unwrap(), b"old");
}

#[test]
fn a_disabled_point_syncs_nothing_until_enabled() {
    use crate::storage::SyncPoint;
    let sim = with_durable_file(b"old");
    let f = sim.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    sim.disable_sync(SyncPoint::SegmentDir);
    sim.open(&p("/d/g"), OpenMode::CreateNew).unwrap();
    sim.sync_dir_at(SyncPoint::SegmentDir, &p("/d")).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    sim.sync_file(SyncPoint::LogAppend, f.as_ref()).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(
        sim.read("/d/f").unwrap(),
        b"new",
        "another point still syncs"
    );
    assert!(!sim.exists(&p("/d/g")), "the disabled point synced nothing");
    sim.enable_all_syncs();
    sim.open(&p("/d/g"), OpenMode::CreateNew).unwrap();
    sim.sync_dir_at(SyncPoint::SegmentDir, &p("/d")).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    assert!(sim.exists(&p("/d/g")));
}

#[test]
#[should_panic(expected = "cannot be skipped")]
fn a_rename_point_cannot_be_disabled() {
    SimStorage::default().disable_sync(crate::storage::SyncPoint::SnapshotRename);
}

#[test]
fn created_dir_without_parent_sync_vanishes_with_its_files() {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/a/b")).unwrap();
    let f = sim.open(&p("/a/b/f"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(&p("/a/b")).unwrap();
    // `b` is durable in `a`, but `a` is not in `/`.
    sim.sync_dir(&p("/a")).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    assert!(!sim.exists(&p("/a")));
    assert!(!sim.exists(&p("/a/b/f")));

    sim.create_dir_all(&p("/a/b")).unwrap();
    let f = sim.open(&p("/a/b/f"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_data().unwrap();
    for d in ["/a/b", "/a", "/"] {
        sim.sync_dir(&p(d)).unwrap();
    }
    sim.crash(CrashMode::DropUnsynced);
    assert_eq!(sim.read("/a/b/f").unwrap(), b"data");
}
