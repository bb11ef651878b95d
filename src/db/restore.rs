//! Restoring a backup into a node's data directory: how a follower (or a
//! replacement node) is seeded from [`TidalDb::backup`](crate::TidalDb::backup).
//!
//! A backup is `META` plus one snapshot, and its `META` names the node it
//! was taken from. Opening it in place as another node is
//! `ConfigMismatch { field: "node_id" }`, and that check stays: it is what
//! stops a node from being started on another node's directory, where two
//! nodes would stamp records with one identity.
//!
//! Decision: seeding is an explicit step, [`restore_backup`], as a
//! restore is in PostgreSQL (`pg_basebackup` into the standby's own
//! directory) or MySQL (a clone gets a fresh `server_uuid`). It copies the
//! backup into the new node's empty data directory and writes a `META`
//! holding the new node's id, after checking that everything else in the
//! backup's identity (shard, signal types, dimension, state-machine
//! parameters: the replicated fingerprint) is the config's. The backup
//! itself is read only, so one backup can seed many nodes. The snapshot is
//! copied byte for byte and written before `META`: a restore cut short
//! leaves a directory without `META` that refuses to open (`Corruption`)
//! rather than one that opens empty; delete it and restore again.
//!
//! The restored directory then opens with the backup's state at its
//! Position. As a follower ([`TidalDb::open_follower`](crate::TidalDb::open_follower))
//! it says hello with that Position and receives only the batches after it
//! (or a snapshot, if the leader no longer retains them). The log's epoch
//! history still names the nodes that led it, so the role checks hold: a
//! leader's backup restored under another node id opens as a follower,
//! never as a leader (that takes `promote`), and under its own id as the
//! leader it was.

use std::path::Path;

use crate::config::Config;
use crate::error::{Result, TidalError};
use crate::meta::{META_FILE_NAME, META_FORMAT_VERSION, Meta};
use crate::snapshot;
use crate::storage::{self, Storage};
use crate::types::Position;

/// Copies the backup in `backup_dir` into `config.data_dir` (missing or
/// empty) as the data directory of `config.node_id`, and returns the
/// backup's Position. Reads and writes go through `config.storage`.
///
/// Errors: a backup whose identity differs from `config` in anything but
/// the node id is [`TidalError::ConfigMismatch`] naming the field; a
/// damaged backup (`META` or snapshot) or a directory that is not a backup
/// (no snapshot, or log segments) is [`TidalError::Corruption`] naming the
/// file; a data directory that is not empty is an I/O error
/// (`AlreadyExists`), and nothing is written.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, NodeId, TidalDb, Timestamp};
/// # let tmp = tempfile::tempdir().unwrap();
/// let config = |dir: &str, node: u64| {
///     Config::builder(tmp.path().join(dir))
///         .signal_type("like", Duration::from_secs(60))
///         .node_id(NodeId(node))
///         .build()
///         .unwrap()
/// };
/// let db = TidalDb::open(config("a", 1)).unwrap();
/// db.signal("like", EntityId(1), 1.0, Timestamp::now()).unwrap();
/// let at = db.backup(tmp.path().join("backup")).unwrap();
/// // Node 2's directory, seeded from node 1's backup.
/// assert_eq!(tidal::restore_backup(tmp.path().join("backup"), &config("b", 2)).unwrap(), at);
/// // The backup itself still belongs to node 1.
/// assert!(tidal::restore_backup(tmp.path().join("backup"), &config("b", 2)).is_err()); // not empty
/// ```
pub fn restore_backup(backup_dir: impl AsRef<Path>, config: &Config) -> Result<Position> {
    config.validate()?;
    let from = backup_dir.as_ref();
    let to = config.data_dir.as_path();
    let fs: &dyn Storage = config.storage.as_ref();

    let meta_path = from.join(META_FILE_NAME);
    let bytes = storage::read_file(fs, &meta_path)?;
    let mut meta = Meta::decode(&bytes)
        .map_err(|e| TidalError::corruption(&meta_path, e.offset as u64, e.reason))?;
    // Everything but the node id must be this node's identity.
    meta.node_id = config.node_id;
    meta.check(config)?;
    meta.format_version = META_FORMAT_VERSION;

    let shard = config.cluster.shard_id;
    let wal = from.join("wal");
    if fs.exists(&wal) && !fs.list_dir(&wal).map(|n| n.is_empty()).unwrap_or(false) {
        return Err(TidalError::corruption(
            &wal,
            0,
            "not a backup: the directory holds a log (restore copies META and a snapshot only)",
        ));
    }
    let Some(loaded) = snapshot::load_newest_valid(fs, from, shard)? else {
        return Err(TidalError::corruption(
            snapshot::snapshot_dir(from, shard),
            0,
            "not a backup: no snapshot",
        ));
    };
    if let Some((path, reason)) = loaded.skipped.first() {
        return Err(TidalError::corruption(
            path,
            0,
            format!("damaged backup snapshot: {reason}"),
        ));
    }
    let snap_bytes = storage::read_file(fs, &loaded.path)?;

    if let Ok(entries) = fs.list_dir(to)
        && !entries.is_empty()
    {
        return Err(TidalError::io(
            "restore into",
            to,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "directory is not empty"),
        ));
    }
    // A new data directory, made durable in its parent (every new level).
    storage::create_dir_durable(fs, storage::SyncPoint::DataDirCreate, to)?;
    let h = loaded.header;
    snapshot::write_snapshot_bytes(fs, to, shard, h.seqno, &snap_bytes)?;
    storage::write_file_atomic(
        fs,
        storage::AtomicPoints::META,
        &to.join(META_FILE_NAME),
        &meta.encode(),
    )?;
    tracing::info!(
        from = %from.display(),
        to = %to.display(),
        node = %config.node_id,
        seqno = h.seqno.0,
        "backup restored"
    );
    Ok(Position::new(h.epoch, h.seqno))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::storage::SimStorage;
    use crate::types::{EntityId, NodeId, Timestamp};
    use crate::{Single, TidalDb};

    fn config(sim: &Arc<SimStorage>, dir: &str, node: u64) -> Config {
        Config::builder(dir)
            .signal_type("like", Duration::from_secs(60))
            .node_id(NodeId(node))
            .storage(sim.clone())
            .build()
            .unwrap()
    }

    /// A backup of node 1 in `/backup`, and its snapshot's path.
    fn backed_up(sim: &Arc<SimStorage>) -> (Position, std::path::PathBuf) {
        let db: TidalDb<Single> = TidalDb::open(config(sim, "/a", 1)).unwrap();
        db.signal("like", EntityId(1), 1.0, Timestamp::now())
            .unwrap();
        let at = db.backup("/backup").unwrap();
        db.close().unwrap();
        let snap = snapshot::snapshot_path(Path::new("/backup"), crate::ShardId(0), at.seqno);
        assert!(sim.read(&snap).is_some());
        (at, snap)
    }

    fn corruption_path(r: Result<Position>) -> std::path::PathBuf {
        match r {
            Err(TidalError::Corruption { path, .. }) => path,
            other => panic!("expected Corruption, got {other:?}"),
        }
    }

    #[test]
    fn restores_under_the_new_node_id_and_the_same_node_reopens_it() {
        let sim = SimStorage::new();
        let (at, _) = backed_up(&sim);
        assert_eq!(
            restore_backup("/backup", &config(&sim, "/b", 2)).unwrap(),
            at
        );
        let meta = Meta::decode(&sim.read("/b/META").unwrap()).unwrap();
        assert_eq!(meta.node_id, NodeId(2));
        let backup_meta = Meta::decode(&sim.read("/backup/META").unwrap()).unwrap();
        assert_eq!(backup_meta.node_id, NodeId(1), "the backup is untouched");
        assert_eq!(meta.fingerprint(), backup_meta.fingerprint());
        // Node 1 may restore its own backup too (a plain copy), and opens it.
        assert_eq!(
            restore_backup("/backup", &config(&sim, "/c", 1)).unwrap(),
            at
        );
        let db = TidalDb::open(config(&sim, "/c", 1)).unwrap();
        assert_eq!(db.last_position(), at);
    }

    #[test]
    fn a_damaged_backup_or_a_data_dir_is_refused_and_nothing_is_written() {
        let sim = SimStorage::new();
        let (_, snap) = backed_up(&sim);
        let good = sim.read(&snap).unwrap();
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 1;
        sim.write_raw(&snap, &bad);
        assert_eq!(
            corruption_path(restore_backup("/backup", &config(&sim, "/b", 2))),
            snap
        );
        sim.write_raw(&snap, &good);

        let meta = sim.read("/backup/META").unwrap();
        let mut bad = meta.clone();
        bad[10] ^= 1;
        sim.write_raw("/backup/META", &bad);
        assert_eq!(
            corruption_path(restore_backup("/backup", &config(&sim, "/b", 2))),
            Path::new("/backup/META")
        );
        sim.write_raw("/backup/META", &meta);

        // A live data directory (with a log) is not a backup.
        corruption_path(restore_backup("/a", &config(&sim, "/b", 2)));
        assert!(!sim.exists(Path::new("/b")));
    }
}
