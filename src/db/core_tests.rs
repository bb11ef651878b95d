//! Unit tests of the role checks in `core.rs`.
use super::*;
use crate::types::NodeId;
use crate::wal::format::BatchMeta;
use bytes::Bytes;
use std::time::Duration;

fn config(node: u64) -> Config {
    Config::builder("/db")
        .signal_type("like", Duration::from_secs(60))
        .node_id(NodeId(node))
        .build()
        .expect("config")
}

fn epoch(leader: u64, replicated: bool) -> Vec<EpochEntry> {
    vec![EpochEntry {
        epoch: Epoch(3),
        start: SeqNo(10),
        leader_node: NodeId(leader),
        replicated,
    }]
}

#[test]
fn a_new_log_opens_in_any_role_at_epoch_one() {
    for role in [NodeRole::Single, NodeRole::Leader, NodeRole::Follower] {
        assert_eq!(
            check_role(role, &config(1), &[]).expect("new"),
            Epoch::FIRST
        );
    }
}

#[test]
fn a_node_reopens_in_its_role_and_a_leader_may_be_demoted() {
    let c = config(1);
    assert_eq!(
        check_role(NodeRole::Single, &c, &epoch(1, false)).expect("single"),
        Epoch(3)
    );
    assert_eq!(
        check_role(NodeRole::Leader, &c, &epoch(1, true)).expect("leader"),
        Epoch(3)
    );
    assert_eq!(
        check_role(NodeRole::Follower, &c, &epoch(2, true)).expect("follower"),
        Epoch(3)
    );
    assert_eq!(
        check_role(NodeRole::Follower, &c, &epoch(1, true)).expect("demotion"),
        Epoch(3)
    );
}

#[test]
fn every_other_transition_is_a_role_mismatch() {
    let c = config(1);
    let refused = [
        (NodeRole::Leader, epoch(1, false)),   // single -> leader
        (NodeRole::Follower, epoch(1, false)), // single -> follower
        (NodeRole::Single, epoch(1, true)),    // leader -> single
        (NodeRole::Single, epoch(2, true)),    // follower -> single
        (NodeRole::Leader, epoch(2, true)),    // follower -> leader without promote
        (NodeRole::Single, epoch(2, false)),   // another single node's log
    ];
    for (role, history) in refused {
        let r = check_role(role, &c, &history);
        assert!(
            matches!(r, Err(TidalError::RoleMismatch { .. })),
            "{role:?} over {history:?}: {r:?}"
        );
    }
}

#[test]
fn shutdown_closes_the_log_and_releases_the_lock_while_a_straggler_holds_the_core() {
    let storage = std::sync::Arc::new(crate::storage::SimStorage::default());
    let cfg = Config {
        storage: storage.clone(),
        ..config(1)
    };
    let core = Core::open(cfg.clone(), NodeRole::Single).expect("open");
    // A task still holding the core (say, a replicated append on the
    // blocking pool) must not keep the directory locked once it is closed.
    let straggler = core.clone();
    core.shutdown().expect("shutdown");
    let reopened =
        Core::open(cfg, NodeRole::Single).expect("reopen while a straggler holds the old core");
    let signal = Record::Signal {
        signal_type: 0,
        entity: crate::types::EntityId(1),
        weight: 1.0,
        at: crate::types::Timestamp(0),
    };
    // The straggler can no longer touch the log the new open owns.
    let r = straggler
        .commit
        .with_committer(|c| c.commit(&straggler, straggler.hlc.now(), vec![signal], |_| {}));
    assert!(matches!(r, Err(TidalError::Closed)), "{r:?}");
    assert!(matches!(straggler.flush(), Err(TidalError::Closed)));
    reopened.shutdown().expect("shutdown");
}

#[test]
fn a_follower_appends_a_run_of_batches_with_one_sync_and_stops_at_a_refused_one() {
    use crate::crdt::hlc::Hlc;
    use crate::types::{EntityId, ShardId, Timestamp};
    use crate::wal::format::encode_batch;
    let storage = std::sync::Arc::new(crate::storage::SimStorage::default());
    let mut cfg = Config {
        storage: storage.clone(),
        ..config(2)
    };
    cfg.cluster.role = NodeRole::Follower;
    let core = Core::open(cfg, NodeRole::Follower).expect("open");
    let batch = |first: u64, entity: u64| {
        let meta = BatchMeta {
            shard: ShardId(0),
            first_seqno: SeqNo(first),
            epoch: Epoch::FIRST,
            hlc: Hlc::new(1_000 + first, 0),
            record_count: 2,
        };
        let records = [entity, entity].map(|e| Record::Signal {
            signal_type: 0,
            entity: EntityId(e),
            weight: 1.0,
            at: Timestamp(1_000),
        });
        let mut bytes = Vec::new();
        encode_batch(&meta, &records, &mut bytes);
        (meta, Bytes::from(bytes))
    };
    let count = |e: u64| core.read_count(EntityId(e), "like").expect("count");
    let syncs = || storage.sync_point_hits(SyncPoint::LogAppend);
    let before = syncs();
    // Three batches, one sync.
    let (n, r) = core.append_replicated(&[batch(1, 1), batch(3, 2), batch(5, 3)]);
    assert_eq!((n, r.is_ok()), (3, true));
    assert_eq!(syncs() - before, 1, "one sync for the run");
    assert_eq!((count(1), count(2), count(3)), (2, 2, 2));
    assert_eq!(core.applied_tx.borrow().seqno, SeqNo(6));
    // A batch apply could not take (a signal type this database does not
    // have) ends the run: the batches before it are logged and applied,
    // nothing after it is.
    let (mut bad_meta, _) = batch(9, 5);
    bad_meta.record_count = 1;
    let mut bad = Vec::new();
    let wrong = Record::Signal {
        signal_type: 7,
        entity: EntityId(5),
        weight: 1.0,
        at: Timestamp(1_000),
    };
    encode_batch(&bad_meta, std::slice::from_ref(&wrong), &mut bad);
    let (n, r) = core.append_replicated(&[batch(7, 4), (bad_meta, Bytes::from(bad)), batch(10, 6)]);
    assert_eq!(n, 1);
    assert!(matches!(r, Err(TidalError::Corruption { .. })), "{r:?}");
    assert_eq!((count(4), count(5), count(6)), (2, 0, 0));
    assert_eq!(core.applied_tx.borrow().seqno, SeqNo(8));
    core.shutdown().expect("shutdown");
}

/// A first try to keep a suffix that created `diverged/` but failed to sync
/// its entry leaves the directory there; the retry must still make that
/// entry durable before it keeps the suffix (a cut then drops the log's
/// copy), or a crash loses the kept suffix with its directory.
#[test]
fn a_suffix_kept_after_a_failed_directory_sync_survives_a_crash() {
    use crate::storage::{CrashMode, FaultKind, SyncPoint};
    let storage = std::sync::Arc::new(crate::storage::SimStorage::default());
    let cfg = Config {
        storage: storage.clone(),
        ..config(1)
    };
    let core = Core::open(cfg, NodeRole::Single).expect("open");
    storage.fail_at(SyncPoint::DivergedCreateDir, FaultKind::SyncDir);
    let first = core.keep_diverged(Epoch(1), SeqNo(5), None, b"suffix");
    assert!(first.is_err(), "the injected sync failure is reported");
    assert_eq!(storage.fired_at(SyncPoint::DivergedCreateDir).len(), 1);
    let path = core
        .keep_diverged(Epoch(1), SeqNo(5), None, b"suffix")
        .expect("the retry keeps the suffix");
    storage.crash(CrashMode::DropUnsynced);
    drop(core);
    assert_eq!(
        storage.read(&path).as_deref(),
        Some(&b"suffix"[..]),
        "the kept suffix was lost in the crash with its directory's entry"
    );
}

/// The same suffix arriving twice at once (a follower sends it after its
/// cut and again in the hand-over, and each arrival is stored on its own
/// task) is stored once, and both stores succeed.
#[test]
fn the_same_suffix_stored_twice_at_once_is_kept_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::builder(dir.path())
        .signal_type("like", Duration::from_secs(60))
        .node_id(NodeId(1))
        .build()
        .expect("config");
    let core = Core::open(cfg, NodeRole::Single).expect("open");
    for first in 1..=40u64 {
        let barrier = std::sync::Barrier::new(2);
        let store = || {
            barrier.wait();
            core.keep_diverged(Epoch(1), SeqNo(first), Some(NodeId(3)), b"suffix")
        };
        let results = std::thread::scope(|s| {
            let (a, b) = (s.spawn(store), s.spawn(store));
            [a.join().expect("a"), b.join().expect("b")]
        });
        for r in results {
            r.expect("both stores of one suffix succeed");
        }
    }
    assert_eq!(core.diverged().len(), 40, "{:?}", core.diverged());
}
