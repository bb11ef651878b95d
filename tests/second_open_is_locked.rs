//! The data directory is held by one open database at a time: a second
//! `TidalDb::open` of the same directory while the first is open gets
//! `TidalError::Locked` naming the `LOCK` file and leaves the first one
//! working; after `close` (or a drop) the directory opens again with
//! everything written. Checked on the real file system (`flock`) and on
//! `SimStorage`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidal::{Config, EntityId, SimStorage, Storage, TidalDb, TidalError, Timestamp};

fn config(dir: &Path, storage: Arc<dyn Storage>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .segment_bytes(8192)
        .storage(storage)
        .build()
        .unwrap()
}

fn second_open_is_locked_until_close(dir: &Path, storage: Arc<dyn Storage>) {
    let at = Timestamp::now();
    let first = TidalDb::open(config(dir, storage.clone())).unwrap();
    first.signal("like", EntityId(1), 1.0, at).unwrap();

    for _ in 0..2 {
        match TidalDb::open(config(dir, storage.clone())) {
            Err(TidalError::Locked { path }) => assert_eq!(path, dir.join("LOCK")),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
    // The refused open took nothing from the first.
    first.signal("like", EntityId(1), 1.0, at).unwrap();
    assert_eq!(first.read_count(EntityId(1), "like").unwrap(), 2);
    first.close().unwrap();

    let second = TidalDb::open(config(dir, storage.clone())).unwrap();
    assert_eq!(second.read_count(EntityId(1), "like").unwrap(), 2);
    second.signal("like", EntityId(1), 1.0, at).unwrap();
    assert!(matches!(
        TidalDb::open(config(dir, storage.clone())),
        Err(TidalError::Locked { .. })
    ));
    // A drop releases the lock as a close does.
    drop(second);
    let third = TidalDb::open(config(dir, storage)).unwrap();
    assert_eq!(third.read_count(EntityId(1), "like").unwrap(), 3);
    third.close().unwrap();
}

#[test]
fn second_open_on_the_real_file_system_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    second_open_is_locked_until_close(dir.path(), Arc::new(tidal::RealStorage));
}

#[test]
fn second_open_on_sim_storage_is_locked() {
    second_open_is_locked_until_close(Path::new("/db"), SimStorage::new());
}
