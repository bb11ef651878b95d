//! A follower hands its diverged suffixes to its leader once per
//! connection. When the leader fails to keep one (an I/O error in
//! `diverged/`), it ends that follower's connection, so the follower
//! reconnects and hands the suffix over again; otherwise the suffix would
//! wait on the follower, unmerged, for as long as the connection lives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::storage::{FaultKind, SyncPoint};
use tidal::{
    ClusterConfig, Config, Durability, EntityId, Epoch, InProcessTransport, NodeId, NodeRole,
    SimStorage, TidalDb, Timestamp, WriteBatch,
};

fn config(dir: &str, node: u64, role: NodeRole, sim: &Arc<SimStorage>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .auto_reconcile(false)
        .storage(sim.clone())
        .build()
        .unwrap()
}

async fn signals<R: tidal::Writable>(db: &TidalDb<R>, w: f64) -> tidal::Position {
    let mut b = WriteBatch::new();
    for e in 0..8 {
        b = b.signal("like", EntityId(e), w, Timestamp::now());
    }
    db.write_async(b).await.expect("write")
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_the_leader_failed_to_keep_is_handed_over_again() {
    let sim = SimStorage::new();
    // L leads and F follows; then L takes writes F never gets.
    let t1 = InProcessTransport::new();
    let l = TidalDb::open_leader(config("/l", 1, NodeRole::Leader, &sim), t1.clone()).unwrap();
    let f = TidalDb::open_follower(config("/f", 2, NodeRole::Follower, &sim), t1.clone()).unwrap();
    let shared = signals(&l, 1.0).await;
    f.wait_for(shared, Duration::from_secs(20)).await.unwrap();
    f.close().unwrap();
    signals(&l, 2.0).await;
    l.close().unwrap();

    // F is promoted; L rejoins as its follower, cuts its suffix and hands
    // it over, but every try of F to keep it fails for now.
    let t2 = InProcessTransport::new();
    let f = TidalDb::open_follower(config("/f", 2, NodeRole::Follower, &sim), t2.clone())
        .unwrap()
        .promote(Epoch(2))
        .unwrap();
    signals(&f, -1.0).await;
    sim.fail_always(FaultKind::Rename, "/f/diverged");
    let l = TidalDb::open_follower(config("/l", 1, NodeRole::Follower, &sim), t2.clone()).unwrap();
    // L's own cut renames once; on its first connection L sends the suffix
    // twice (after the cut, and when welcomed): F fails both.
    until("F to fail to keep the suffix twice", || {
        sim.sync_point_hits(SyncPoint::DivergedRename) >= 3
    })
    .await;
    assert_eq!(l.status().diverged.len(), 1, "L holds its cut suffix");
    assert!(f.status().diverged.is_empty(), "F could keep nothing");
    sim.clear_faults();
    // Only a new connection hands the suffix over again.
    until("F to hold the suffix L handed over again", || {
        !f.status().diverged.is_empty()
    })
    .await;
    let held: Vec<u64> = f.status().diverged.iter().map(|d| d.bytes).collect();
    let sent: Vec<u64> = l.status().diverged.iter().map(|d| d.bytes).collect();
    assert_eq!(held, sent, "F holds what L cut");
    let before = f.read_count(EntityId(0), "like").unwrap();
    let report = f.reconcile().unwrap();
    assert_eq!(report.suffixes, 1, "{report:?}");
    // L's write of weight 2 is counted, once.
    assert_eq!(f.read_count(EntityId(0), "like").unwrap(), before + 1);
}
