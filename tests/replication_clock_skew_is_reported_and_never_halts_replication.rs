//! A leader whose clock runs an hour ahead of its follower's, far beyond
//! `max_clock_drift`: replication never halts on skew. The follower applies
//! every batch and reports the skew in `status()`; the leader sees the
//! follower's clock behind its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::config;
use tidal::{EntityId, InProcessTransport, ManualClock, NodeRole, TidalDb, Timestamp, WriteBatch};

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_applies_a_skewed_leaders_log_and_reports_the_skew() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t = InProcessTransport::new();
    let now = Timestamp::now();
    let ahead = now.0 + HOUR_MS as u64;
    let mut lc = config(ld.path(), 1, NodeRole::Leader);
    lc.clock = Arc::new(ManualClock::new(ahead));
    let mut fc = config(fd.path(), 2, NodeRole::Follower);
    fc.max_clock_drift = Duration::from_secs(1);
    let leader = TidalDb::open_leader(lc, t.clone()).unwrap();
    let follower = TidalDb::open_follower(fc, t.clone()).unwrap();

    let mut last = leader.last_position();
    for b in 0..20u64 {
        let batch = WriteBatch::new().signal("like", EntityId(b % 5), 1.0, Timestamp(ahead));
        last = leader.write_async(batch).await.unwrap();
    }
    follower
        .wait_for(last, Duration::from_secs(20))
        .await
        .unwrap();
    for e in 0..5 {
        assert_eq!(follower.read_count(EntityId(e), "like").unwrap(), 4);
    }

    let skew = follower
        .status()
        .clock_skew_ms
        .expect("a skew was observed");
    assert!(skew.beyond_max_drift, "{skew:?}");
    // About an hour ahead (the test's own time passes meanwhile).
    assert!((skew.last_ms - HOUR_MS).abs() < 60_000, "{skew:?}");
    assert!(skew.max_abs_ms >= skew.last_ms.abs());
    let seen = leader
        .status()
        .clock_skew_ms
        .expect("the leader heard its follower");
    assert!(seen.last_ms < -HOUR_MS + 60_000, "{seen:?}");
}
