//! In-memory storage that can crash and fail on purpose.
//!
//! [`SimStorage`] models POSIX durability strictly, because the point of it
//! is to catch code that relies on an fsync it never made:
//!
//! - A file's data is durable only after `sync_data` on that file. Each file
//!   keeps its current content, its last synced content and the list of
//!   writes (and length changes) made since that sync.
//! - A file's creation, rename or removal is durable only after `sync_dir`
//!   on its parent directory. Names are kept twice: the current namespace and
//!   the durable one. Files are inodes, so a rename moves the data and an
//!   unlinked file stays readable through handles opened before.
//! - A directory's creation is durable only after `sync_dir` on its
//!   parent, like a file's; a crash drops a directory that is not (and
//!   everything in it). Directories are never removed.
//!
//! [`SimStorage::crash`] rebuilds the file system from the durable namespace
//! and, per file, from the synced content plus whatever part of the unsynced
//! writes the [`CrashMode`] lets through. Every handle and lock taken before
//! the crash is invalidated: later calls on it return an error, as the
//! process that held them is gone.
//!
//! Faults ([`SimStorage::fail_next`], [`SimStorage::fail_always`]) make a
//! matching call fail without touching anything; a failed `sync_data` leaves
//! the data unsynced. [`SimStorage::fail_at`] fails the call at a named
//! [`SyncPoint`](crate::storage::SyncPoint) instead, and
//! [`SimStorage::disable_sync`] skips one (the test-only switch). [`SimStorage::set_capacity_bytes`] turns growth past a
//! byte budget into `StorageFull`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{OpenMode, Storage, StorageFile, StorageLock};

mod crash;
mod faults;
mod handle;

use crash::SplitMix64;
pub use faults::FaultKind;
use faults::{Fault, PointFaults};
use handle::{SimFile, SimLock};

/// Page size of the simulated page cache, for [`CrashMode::RandomPages`].
const PAGE_BYTES: u64 = 4096;

/// How a crash treats what was written but not synced.
///
/// In every mode, directory entries (creations, renames, removals) not made
/// durable by `sync_dir` are lost.
///
/// ```
/// use tidal::storage::{CrashMode, OpenMode, Storage};
/// let fs = tidal::SimStorage::default();
/// let f = fs.open("/f".as_ref(), OpenMode::CreateNew).unwrap();
/// fs.sync_dir("/".as_ref()).unwrap();
/// f.write_all_at(b"synced", 0).unwrap();
/// f.sync_data().unwrap();
/// f.write_all_at(b"lost!!", 0).unwrap();
/// fs.crash(CrashMode::DropUnsynced);
/// assert_eq!(fs.read("/f").unwrap(), b"synced");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write is lost: each file reverts to its last synced
    /// content. The gentlest crash, and the one `Sync` durability promises
    /// to survive without losing an acknowledged write.
    DropUnsynced,
    /// Per file, a random prefix (in write order) of the unsynced writes
    /// survives, the last surviving one possibly cut at a random byte: a
    /// crash in the middle of sequential writeback.
    TornPrefix {
        /// Seed of the deterministic PRNG, so a failing case replays.
        seed: u64,
    },
    /// Per file, a random subset of the 4 KiB pages touched since the last
    /// sync reaches the disk: out-of-order writeback, as the kernel does.
    RandomPages {
        /// Seed of the deterministic PRNG, so a failing case replays.
        seed: u64,
    },
}

/// A change to a file not yet made durable by `sync_data`.
#[derive(Debug)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
    unsynced: Vec<Op>,
    open_handles: usize,
}

type Ino = u64;

#[derive(Default)]
struct Inner {
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, Ino>,
    durable_names: BTreeMap<PathBuf, Ino>,
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    generation: u64,
    locks: BTreeSet<PathBuf>,
    faults: Vec<Fault>,
    points: PointFaults,
    capacity_bytes: Option<u64>,
    sync_count: u64,
}

/// In-memory [`Storage`] for crash and fault testing (see the module docs
/// for the durability model).
///
/// ```
/// use std::path::Path;
/// use tidal::storage::{CrashMode, OpenMode, SimStorage, Storage};
/// let sim = SimStorage::new();
/// sim.create_dir_all(Path::new("/db")).unwrap();
/// let f = sim.open(Path::new("/db/a"), OpenMode::CreateNew).unwrap();
/// f.write_all_at(b"hello", 0).unwrap();
/// sim.crash(CrashMode::DropUnsynced);
/// // Neither the data nor the directory entry was synced.
/// assert!(!sim.exists(Path::new("/db/a")));
/// ```
#[derive(Clone, Default)]
pub struct SimStorage {
    shared: Arc<Mutex<Inner>>,
}

fn norm(path: &Path) -> PathBuf {
    path.components().collect()
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn lock_inner(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A test that panicked while holding the lock must not take every later
    // call down with it: the state is still consistent between calls.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn dir_exists(&self, path: &Path) -> bool {
        path.as_os_str().is_empty()
            || (path.has_root() && path.parent().is_none())
            || self.dirs.contains(path)
    }

    fn stored_bytes(&self) -> u64 {
        let named: BTreeSet<Ino> = self.names.values().copied().collect();
        self.nodes
            .iter()
            .filter(|(ino, n)| named.contains(ino) || n.open_handles > 0)
            .map(|(_, n)| n.data.len() as u64)
            .sum()
    }

    fn check_growth(&self, old_len: u64, new_len: u64) -> io::Result<()> {
        if let Some(cap) = self.capacity_bytes
            && new_len > old_len
            && self.stored_bytes().saturating_add(new_len - old_len) > cap
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("simulated disk full: capacity {cap} bytes"),
            ));
        }
        Ok(())
    }

    /// Drops an inode nothing refers to any more.
    fn collect(&mut self, ino: Ino) {
        let referenced = self.names.values().any(|&i| i == ino)
            || self.durable_names.values().any(|&i| i == ino)
            || self.nodes.get(&ino).is_some_and(|n| n.open_handles > 0);
        if !referenced {
            self.nodes.remove(&ino);
        }
    }

    fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }
}

impl SimStorage {
    /// An empty file system, shared behind an `Arc` as `Config::storage` wants.
    pub fn new() -> Arc<SimStorage> {
        Arc::new(SimStorage::default())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock_inner(&self.shared)
    }

    /// Simulates a power loss: rebuilds the file system from what was
    /// durable (plus what `mode` lets through) and invalidates every open
    /// handle and lock.
    pub fn crash(&self, mode: CrashMode) {
        let mut g = self.inner();
        let inner = &mut *g;
        let mut rng = SplitMix64(match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::TornPrefix { seed } | CrashMode::RandomPages { seed } => seed,
        });
        let keep: BTreeSet<Ino> = inner.durable_names.values().copied().collect();
        let mut nodes = BTreeMap::new();
        for ino in keep {
            if let Some(node) = inner.nodes.get(&ino) {
                let data = node.after_crash(mode, &mut rng);
                nodes.insert(
                    ino,
                    Node {
                        synced: data.clone(),
                        data,
                        unsynced: Vec::new(),
                        open_handles: 0,
                    },
                );
            }
        }
        inner.nodes = nodes;
        // A directory survives if it and every ancestor were made durable.
        let durable_dirs = inner.durable_dirs.clone();
        let survives = |dir: &Path| {
            dir.ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && a.parent().is_some())
                .all(|a| durable_dirs.contains(a))
        };
        inner.dirs.retain(|d| survives(d));
        inner.durable_dirs.retain(|d| survives(d));
        let names: BTreeMap<PathBuf, Ino> = inner
            .durable_names
            .iter()
            .filter(|(p, _)| survives(&parent_of(p)))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        inner
            .nodes
            .retain(|ino, _| names.values().any(|i| i == ino));
        inner.durable_names = names.clone();
        inner.names = names;
        inner.locks.clear();
        inner.generation += 1;
    }

    /// Caps the bytes stored in live files: a write or `set_len` that would
    /// grow the total past it fails with `StorageFull`, like a full disk.
    /// `None` removes the cap.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.inner().capacity_bytes = capacity_bytes;
    }

    /// How many `sync_data` and `sync_dir` calls succeeded: lets tests count
    /// fsyncs per batch (group commit) without timing anything.
    pub fn sync_count(&self) -> u64 {
        self.inner().sync_count
    }

    /// The current (not necessarily durable) length of a file, if it exists.
    pub fn file_len(&self, path: impl AsRef<Path>) -> Option<u64> {
        let g = self.inner();
        let ino = g.names.get(&norm(path.as_ref()))?;
        g.nodes.get(ino).map(|n| n.data.len() as u64)
    }

    /// Whether a file exists now exactly as a [`CrashMode::DropUnsynced`]
    /// crash would leave it: its name is durable (the entry and every
    /// ancestor directory synced) and names the same file, and none of its
    /// writes is unsynced. Lets a test wait until an operation it cannot
    /// observe otherwise (a node keeping a file it was sent) is durable,
    /// rather than sleeping.
    ///
    /// ```
    /// use tidal::storage::{OpenMode, Storage};
    /// let fs = tidal::SimStorage::default();
    /// fs.create_dir_all("/d".as_ref()).unwrap();
    /// let f = fs.open("/d/a".as_ref(), OpenMode::CreateNew).unwrap();
    /// f.write_all_at(b"x", 0).unwrap();
    /// f.sync_data().unwrap();
    /// assert!(!fs.survives_crash("/d/a")); // the entry is not synced
    /// fs.sync_dir("/d".as_ref()).unwrap();
    /// assert!(!fs.survives_crash("/d/a")); // nor is /d's entry in /
    /// fs.sync_dir("/".as_ref()).unwrap();
    /// assert!(fs.survives_crash("/d/a"));
    /// f.write_all_at(b"y", 1).unwrap();
    /// assert!(!fs.survives_crash("/d/a")); // an unsynced write
    /// ```
    pub fn survives_crash(&self, path: impl AsRef<Path>) -> bool {
        let path = norm(path.as_ref());
        let g = self.inner();
        let (Some(ino), Some(durable)) = (g.names.get(&path), g.durable_names.get(&path)) else {
            return false;
        };
        let dirs_durable = parent_of(&path)
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && a.parent().is_some())
            .all(|a| g.durable_dirs.contains(a));
        ino == durable && dirs_durable && g.nodes.get(ino).is_some_and(|n| n.unsynced.is_empty())
    }

    /// The current content of a file, if it exists.
    pub fn read(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let g = self.inner();
        let ino = g.names.get(&norm(path.as_ref()))?;
        g.nodes.get(ino).map(|n| n.data.clone())
    }

    /// Replaces (or creates) a file with `bytes`, durably and at once, name
    /// and parent directories included: the way tests damage a file on
    /// "disk" behind the database's back.
    pub fn write_raw(&self, path: impl AsRef<Path>, bytes: &[u8]) {
        let path = norm(path.as_ref());
        let mut g = self.inner();
        let mut dir = parent_of(&path);
        while !dir.as_os_str().is_empty() && !g.dir_exists(&dir) {
            g.dirs.insert(dir.clone());
            g.durable_dirs.insert(dir.clone());
            dir = parent_of(&dir);
        }
        let node = Node {
            data: bytes.to_vec(),
            synced: bytes.to_vec(),
            unsynced: Vec::new(),
            open_handles: 0,
        };
        match g.names.get(&path).copied() {
            Some(ino) => {
                let open_handles = g.nodes.get(&ino).map_or(0, |n| n.open_handles);
                g.nodes.insert(
                    ino,
                    Node {
                        open_handles,
                        ..node
                    },
                );
                if let Some(old) = g.durable_names.insert(path, ino) {
                    g.collect(old);
                }
            }
            None => {
                let ino = g.new_node(node);
                g.names.insert(path.clone(), ino);
                if let Some(old) = g.durable_names.insert(path, ino) {
                    g.collect(old);
                }
            }
        }
    }

    fn handle(&self, g: &mut Inner, ino: Ino, path: PathBuf, writable: bool) -> SimFile {
        if let Some(n) = g.nodes.get_mut(&ino) {
            n.open_handles += 1;
        }
        SimFile {
            shared: Arc::clone(&self.shared),
            ino,
            generation: g.generation,
            path,
            writable,
        }
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner();
        f.debug_struct("SimStorage")
            .field("files", &g.names.len())
            .field("dirs", &g.dirs.len())
            .field("generation", &g.generation)
            .field("sync_count", &g.sync_count)
            .finish()
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.inner();
        let mut dir = path;
        while !dir.as_os_str().is_empty() && !g.dir_exists(&dir) {
            if g.names.contains_key(&dir) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", dir.display()),
                ));
            }
            g.dirs.insert(dir.clone());
            dir = parent_of(&dir);
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = norm(path);
        let g = self.inner();
        if !g.dir_exists(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            ));
        }
        let mut out: Vec<String> = g
            .names
            .keys()
            .chain(g.dirs.iter())
            .filter(|p| p.parent() == Some(path.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        let path = norm(path);
        let g = self.inner();
        g.names.contains_key(&path) || g.dir_exists(&path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let path = norm(path);
        let mut g = self.inner();
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => {
                g.check_fault(FaultKind::Open, &[&path])?;
                *g.names.get(&path).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no file {}", path.display()),
                    )
                })?
            }
            OpenMode::CreateNew => {
                g.check_fault(FaultKind::Create, &[&path])?;
                if g.names.contains_key(&path) || g.dir_exists(&path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", path.display()),
                    ));
                }
                if !g.dir_exists(&parent_of(&path)) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no parent directory for {}", path.display()),
                    ));
                }
                let ino = g.new_node(Node::default());
                g.names.insert(path.clone(), ino);
                ino
            }
        };
        let writable = mode != OpenMode::Read;
        Ok(Box::new(self.handle(&mut g, ino, path, writable)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let mut g = self.inner();
        g.check_fault(FaultKind::Rename, &[&from, &to])?;
        let ino = *g.names.get(&from).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", from.display()),
            )
        })?;
        if g.dir_exists(&to) || !g.dir_exists(&parent_of(&to)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot rename onto {}", to.display()),
            ));
        }
        if from == to {
            return Ok(());
        }
        g.names.remove(&from);
        if let Some(old) = g.names.insert(to, ino) {
            g.collect(old);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.inner();
        g.check_fault(FaultKind::Remove, &[&path])?;
        let ino = g.names.remove(&path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            )
        })?;
        g.collect(ino);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.inner();
        g.check_fault(FaultKind::SyncDir, &[&path])?;
        if !g.dir_exists(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            ));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(path.as_path());
        let dropped: Vec<Ino> = g
            .durable_names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(_, &i)| i)
            .collect();
        g.durable_names.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, Ino)> = g
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        g.durable_names.extend(now);
        let child_dirs: Vec<PathBuf> = g.dirs.iter().filter(|d| in_dir(d)).cloned().collect();
        g.durable_dirs.extend(child_dirs);
        for ino in dropped {
            g.collect(ino);
        }
        g.sync_count += 1;
        Ok(())
    }

    fn sync_file(&self, point: super::SyncPoint, file: &dyn StorageFile) -> io::Result<()> {
        self.sync_file_at(point, file)
    }

    fn sync_dir_at(&self, point: super::SyncPoint, path: &Path) -> io::Result<()> {
        self.sync_dir_at_point(point, path)
    }

    fn rename_at(&self, point: super::SyncPoint, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_at_point(point, from, to)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        let path = norm(path);
        let mut g = self.inner();
        if g.locks.contains(&path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the lock is held by another open",
            ));
        }
        if !g.names.contains_key(&path) {
            if !g.dir_exists(&parent_of(&path)) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no parent directory for {}", path.display()),
                ));
            }
            let ino = g.new_node(Node::default());
            g.names.insert(path.clone(), ino);
        }
        g.locks.insert(path.clone());
        Ok(Box::new(SimLock {
            shared: Arc::clone(&self.shared),
            generation: g.generation,
            path,
        }))
    }
}

#[cfg(test)]
mod tests;
