//! Under `Durability::Periodic` a flush syncs the log without holding the
//! committer: writes go on while its fdatasync waits for the disk (they
//! used to wait with it: 25-45 ms under a checkpoint's writeback, W10).
//! The flush still makes durable what was written before it, and a failed
//! flush still poisons the database.
//!
//! The storage holds the flush at its log sync until the test lets it go.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal::storage::{CrashMode, FaultKind, OpenMode, StorageFile, StorageLock, SyncPoint};
use tidal::{Config, Durability, EntityId, SimStorage, Storage, TidalDb, TidalError, Timestamp};

/// A `SimStorage` that, once armed, stops at the next sync of the log: it
/// tells the test and waits for its go.
#[derive(Debug)]
struct HoldAtLogSync {
    inner: Arc<SimStorage>,
    armed: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl Storage for HoldAtLogSync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        self.inner.lock(path)
    }
    fn sync_file(&self, point: SyncPoint, file: &dyn StorageFile) -> io::Result<()> {
        if point == SyncPoint::LogAppend
            && let Some((reached, go)) = self.armed.lock().unwrap().take()
        {
            reached.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        self.inner.sync_file(point, file)
    }
    fn sync_dir_at(&self, point: SyncPoint, path: &Path) -> io::Result<()> {
        self.inner.sync_dir_at(point, path)
    }
    fn rename_at(&self, point: SyncPoint, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename_at(point, from, to)
    }
}

fn open(storage: &Arc<HoldAtLogSync>) -> TidalDb {
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
    let storage = Arc::new(HoldAtLogSync {
        inner: SimStorage::new(),
        armed: Mutex::new(None),
    });
    let db = open(&storage);
    let now = Timestamp::now();
    let before = db.signal("like", EntityId(1), 1.0, now).unwrap();
    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *storage.armed.lock().unwrap() = Some((reached_tx, go_rx));
    std::thread::scope(|s| {
        let flush = s.spawn(|| db.flush());
        reached.recv_timeout(Duration::from_secs(20)).unwrap();
        // The flush is inside its sync: writes still complete.
        let (done_tx, done) = mpsc::channel();
        let db = &db;
        s.spawn(move || {
            for e in 2..12 {
                db.signal("like", EntityId(e), 1.0, now).unwrap();
            }
            done_tx.send(()).unwrap();
        });
        let went_on = done.recv_timeout(Duration::from_secs(10)).is_ok();
        go.send(()).unwrap();
        flush.join().unwrap().unwrap();
        assert!(went_on, "writes waited for the flush's sync");
    });
    // What was written before the flush is durable: a crash keeps it.
    assert!(db.status().hwm >= before.seqno, "{:?}", db.status());
    storage.inner.crash(CrashMode::DropUnsynced);
    drop(db); // its shutdown fails against the crashed files
    let db = open(&storage);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
}

#[test]
fn a_failed_flush_poisons() {
    let storage = Arc::new(HoldAtLogSync {
        inner: SimStorage::new(),
        armed: Mutex::new(None),
    });
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
