//! A reconciliation's report is published together with the rename that
//! marks a suffix merged: a `status()` that lists the suffix merged also
//! has a `last_reconcile` counting it.
//!
//! The run is held at the directory sync after the rename (the storage
//! blocks there) while `status()` is read. Publishing the report only at
//! the end of the run showed the suffix merged beside the previous report
//! (here none): the cause of reconciliation_of_overlapping_suffixes_over_tcp
//! reading the report of the first suffix after waiting for the second.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hold::HoldAt;
use tidal::storage::SyncPoint;
use tidal::{
    ClusterConfig, Config, EntityId, Epoch, InProcessTransport, NodeId, NodeRole, TidalDb,
    Timestamp, WriteBatch,
};

fn config(dir: &str, node: u64, role: NodeRole, storage: &Arc<HoldAt>) -> Config {
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
    let storage = HoldAt::new(SyncPoint::MergedDir);
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

    let armed = storage.arm();
    let seen = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let run = s.spawn(|| f.reconcile().unwrap());
            armed.reached.recv_timeout(Duration::from_secs(20)).unwrap();
            // The suffix is renamed merged; its directory sync waits.
            let status = f.status();
            armed.go.send(()).unwrap();
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
