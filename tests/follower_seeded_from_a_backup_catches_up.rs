//! Issue 6 item 9, second half: a follower seeded from a backup catches up
//! from the backup's Position. The leader takes writes while a backup is
//! taken. The backup cannot be opened in place as another node (its `META`
//! is the leader's); `restore_backup` seeds node 2's directory from it
//! (refusing a directory that is not empty and a config of another
//! identity). Opened alone, the seeded follower holds exactly the backup's
//! Position; connected, it receives only the batches after that Position
//! (no snapshot, no earlier batch), ends with the leader's answers bit for
//! bit and the leader's exact batch bytes, and keeps following.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{batch_bytes_after, batches, config, snapshots};
use tidal::{
    EntityId, InProcessTransport, NodeRole, Role, TidalDb, TidalError, Timestamp, WriteBatch,
};

const ENTITIES: u64 = 64;

fn batch(i: u64, now: Timestamp) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..5 {
        let e = EntityId((i * 11 + j * 7) % ENTITIES);
        let ty = if (i + j).is_multiple_of(3) {
            "view"
        } else {
            "like"
        };
        let w = if (i + j) % 7 == 3 {
            -1.0
        } else {
            1.0 + j as f64
        };
        b = b.signal(ty, e, w, now);
    }
    b
}

/// Counts and score bits of every entity, in one view.
fn answers<R: Role>(db: &TidalDb<R>, now: Timestamp) -> Vec<(i64, u64, i64, u64)> {
    db.read_view(|v| {
        (0..ENTITIES)
            .map(|e| {
                let e = EntityId(e);
                (
                    v.read_count(e, "like").unwrap(),
                    v.read_decay_score(e, "like", now).unwrap().to_bits(),
                    v.read_count(e, "view").unwrap(),
                    v.read_decay_score(e, "view", now).unwrap().to_bits(),
                )
            })
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_seeded_from_a_backup_catches_up_from_its_position() {
    let (ld, bd, fd) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let backup = bd.path().join("backup");
    let t = InProcessTransport::new();
    let leader =
        Arc::new(TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t.clone()).unwrap());
    let now = Timestamp::now();
    for i in 0..100 {
        leader.write(batch(i, now)).unwrap();
    }

    // The backup is taken while a writer keeps writing.
    let done = Arc::new(AtomicU64::new(100));
    let writer = {
        let (leader, done) = (leader.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 100..400 {
                leader.write(batch(i, now)).unwrap();
                done.store(i + 1, Ordering::Release);
            }
        })
    };
    while done.load(Ordering::Acquire) < 150 {
        std::thread::yield_now();
    }
    let at = leader.backup(&backup).unwrap();
    writer.join().unwrap();
    assert!(
        leader.last_position().seqno > at.seqno,
        "writes went on after the backup"
    );

    // Opened in place as node 2 it is refused: it is node 1's directory.
    let follower_config = || config(fd.path(), 2, NodeRole::Follower);
    let mut in_place = follower_config();
    in_place.data_dir = backup.clone();
    match TidalDb::open_follower(in_place, InProcessTransport::new()) {
        Err(TidalError::ConfigMismatch { field, .. }) => assert_eq!(field, "node_id"),
        other => panic!("expected a node_id mismatch, got {other:?}"),
    }
    // A config of another identity is refused by the restore too.
    let mut other_types = follower_config();
    other_types.signal_types.pop();
    match tidal::restore_backup(&backup, &other_types) {
        Err(TidalError::ConfigMismatch { field, .. }) => assert_eq!(field, "signal_types"),
        other => panic!("expected a signal_types mismatch, got {other:?}"),
    }
    assert!(std::fs::read_dir(fd.path()).unwrap().next().is_none());

    // Seeded: node 2's directory holds the backup's state at its Position.
    assert_eq!(
        tidal::restore_backup(&backup, &follower_config()).unwrap(),
        at
    );
    assert!(
        tidal::restore_backup(&backup, &follower_config()).is_err(),
        "restoring into a directory that is not empty"
    );
    let alone = TidalDb::open_follower(follower_config(), InProcessTransport::new()).unwrap();
    assert_eq!(alone.last_position(), at);
    assert_eq!(alone.status().node, tidal::NodeId(2));
    alone.close().unwrap();

    // Connected, it catches up from there, and keeps following.
    let follower = TidalDb::open_follower(follower_config(), t.clone()).unwrap();
    follower
        .wait_for(leader.last_position(), Duration::from_secs(30))
        .await
        .unwrap();
    for i in 400..450 {
        leader.write(batch(i, now)).unwrap();
    }
    let end = leader.last_position();
    follower
        .wait_for(end, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.last_position(), end);
    assert_eq!(answers(&follower, now), answers(&*leader, now));
    let f = follower.status();
    assert_eq!(f.recovery.snapshot.map(|(_, s)| s), Some(at.seqno));
    follower.close().unwrap();
    Arc::try_unwrap(leader).unwrap().close().unwrap();

    // Only the batches after the backup's Position came over: its log
    // starts right after it, no snapshot was sent, and the bytes are the
    // leader's.
    let held = batches(fd.path());
    assert_eq!(held.first().map(|b| b.first), Some(at.seqno.0 + 1));
    assert_eq!(held.last().map(|b| b.last()), Some(end.seqno.0));
    assert_eq!(snapshots(fd.path()), vec![at.seqno.0]);
    assert_eq!(
        batch_bytes_after(fd.path(), at.seqno.0),
        batch_bytes_after(ld.path(), at.seqno.0)
    );
    assert_eq!(
        held.len(),
        batches(ld.path())
            .iter()
            .filter(|b| b.first > at.seqno.0)
            .count()
    );
}
