//! A reconciliation's report is published together with the rename that
//! marks a suffix merged: a `status()` that lists the suffix merged also
//! has a `last_reconcile` counting it.
//!
//! The run is held at the directory sync after the rename (the storage
//! blocks there) while `status()` is read. Publishing the report only at
//! the end of the run showed the suffix merged beside the previous report
//! (here none): the cause of reconciliation_of_overlapping_suffixes_over_tcp
//! reading the report of the first suffix after waiting for the second.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal::storage::{OpenMode, StorageFile, StorageLock, SyncPoint};
use tidal::{
    ClusterConfig, Config, EntityId, Epoch, InProcessTransport, NodeId, NodeRole, SimStorage,
    Storage, TidalDb, Timestamp, WriteBatch,
};

/// A `SimStorage` that, once armed, stops at the sync after a suffix is
/// renamed merged: it tells the test and waits for its go.
#[derive(Debug)]
struct HoldAtMergedDir {
    inner: Arc<SimStorage>,
    armed: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl Storage for HoldAtMergedDir {
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
        self.inner.sync_file(point, file)
    }
    fn sync_dir_at(&self, point: SyncPoint, path: &Path) -> io::Result<()> {
        if point == SyncPoint::MergedDir
            && let Some((reached, go)) = self.armed.lock().unwrap().take()
        {
            reached.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        self.inner.sync_dir_at(point, path)
    }
    fn rename_at(&self, point: SyncPoint, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename_at(point, from, to)
    }
}

fn config(dir: &str, node: u64, role: NodeRole, storage: &Arc<HoldAtMergedDir>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .auto_reconcile(false)
        .storage(storage.clone())
        .build()
        .unwrap()
}

async fn likes<R: tidal::Writable>(db: &TidalDb<R>, n: u64, now: Timestamp) -> tidal::Position {
    let mut last = tidal::Position::default();
    for e in 0..n {
        let b = WriteBatch::new().signal("like", EntityId(e), 1.0, now);
        last = db.write_async(b).await.unwrap();
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_showing_a_suffix_merged_has_the_report_counting_it() {
    let storage = Arc::new(HoldAtMergedDir {
        inner: SimStorage::new(),
        armed: Mutex::new(None),
    });
    let now = Timestamp::now();
    // L and F share 4 batches; L takes 3 more alone, then F leads epoch 2.
    let t1 = InProcessTransport::new();
    let l = TidalDb::open_leader(config("/l", 1, NodeRole::Leader, &storage), t1.clone()).unwrap();
    let f =
        TidalDb::open_follower(config("/f", 2, NodeRole::Follower, &storage), t1.clone()).unwrap();
    let shared = likes(&l, 4, now).await;
    f.wait_for(shared, Duration::from_secs(20)).await.unwrap();
    f.close().unwrap();
    likes(&l, 3, now).await;
    l.close().unwrap();
    let t2 = InProcessTransport::new();
    let f =
        TidalDb::open_follower(config("/f", 2, NodeRole::Follower, &storage), t2.clone()).unwrap();
    let f = f.promote(Epoch(2)).unwrap();
    let l =
        TidalDb::open_follower(config("/l", 1, NodeRole::Follower, &storage), t2.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.status().diverged.is_empty() {
        assert!(Instant::now() < deadline, "no suffix handed over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(l);
    assert_eq!(f.status().last_reconcile, None);

    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *storage.armed.lock().unwrap() = Some((reached_tx, go_rx));
    let seen = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let run = s.spawn(|| f.reconcile().unwrap());
            reached.recv_timeout(Duration::from_secs(20)).unwrap();
            // The suffix is renamed merged; its directory sync waits.
            let status = f.status();
            go.send(()).unwrap();
            let report = run.join().unwrap();
            (status, report)
        })
    });
    let (status, report) = seen;
    assert_eq!(report.suffixes, 1, "{report:?}");
    assert_eq!(report.signals, 3, "{report:?}");
    assert!(status.diverged.iter().all(|d| d.merged), "{status:?}");
    assert_eq!(status.last_reconcile, Some(report), "{status:?}");
    f.close().unwrap();
}
