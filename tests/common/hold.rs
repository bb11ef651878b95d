//! A `SimStorage` that, once armed, stops at the next sync at one named
//! point (of a file or a directory): it tells the test it got there and
//! waits for the test's go. How a scenario looks at the database in the
//! middle of one step.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal::storage::{OpenMode, StorageFile, StorageLock, SyncPoint};
use tidal::{SimStorage, Storage};

#[derive(Debug)]
pub struct HoldAt {
    pub inner: Arc<SimStorage>,
    point: SyncPoint,
    armed: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

/// The test's side of an armed hold: `reached` gets a message when the
/// sync is reached; a message on `go` lets it run.
pub struct Armed {
    pub reached: mpsc::Receiver<()>,
    pub go: mpsc::Sender<()>,
}

impl HoldAt {
    pub fn new(point: SyncPoint) -> Arc<HoldAt> {
        Arc::new(HoldAt {
            inner: SimStorage::new(),
            point,
            armed: Mutex::new(None),
        })
    }

    /// Stops the next sync at the point.
    pub fn arm(&self) -> Armed {
        let (reached_tx, reached) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *self.armed.lock().unwrap() = Some((reached_tx, go_rx));
        Armed { reached, go }
    }

    /// Runs `held` on a thread until it reaches the point, then `during`
    /// on another while `held` waits there, then lets `held` go: its
    /// result, and whether `during` finished within 10 s (it does not when
    /// it waits for something `held` holds).
    pub fn while_held<T: Send>(
        &self,
        held: impl FnOnce() -> T + Send,
        during: impl FnOnce() + Send,
    ) -> (T, bool) {
        let armed = self.arm();
        std::thread::scope(|s| {
            let held = s.spawn(held);
            armed.reached.recv_timeout(Duration::from_secs(20)).unwrap();
            let (done_tx, done) = mpsc::channel();
            s.spawn(move || {
                during();
                done_tx.send(()).unwrap();
            });
            let finished = done.recv_timeout(Duration::from_secs(10)).is_ok();
            armed.go.send(()).unwrap();
            (held.join().unwrap(), finished)
        })
    }

    fn hold(&self, point: SyncPoint) {
        if point != self.point {
            return;
        }
        let armed = self.armed.lock().unwrap().take();
        if let Some((reached, go)) = armed {
            reached.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(20)).unwrap();
        }
    }
}

impl Storage for HoldAt {
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
        self.hold(point);
        self.inner.sync_file(point, file)
    }
    fn sync_dir_at(&self, point: SyncPoint, path: &Path) -> io::Result<()> {
        self.hold(point);
        self.inner.sync_dir_at(point, path)
    }
    fn rename_at(&self, point: SyncPoint, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename_at(point, from, to)
    }
}
