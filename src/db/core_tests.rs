//! Unit tests of the role checks in `core.rs`.
use super::*;
use crate::types::NodeId;
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
    let r = straggler.commit.with_committer(|c| {
        c.commit(
            &straggler,
            straggler.hlc.now(),
            std::slice::from_ref(&signal),
            |_| {},
        )
    });
    assert!(matches!(r, Err(TidalError::Closed)), "{r:?}");
    assert!(matches!(straggler.flush(), Err(TidalError::Closed)));
    reopened.shutdown().expect("shutdown");
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
