//! A follower killed mid-stream (dropped while the leader keeps writing from
//! another task) and reopened with `open_follower` on the same directory
//! resumes from its own log: it reaches the leader's last Position, every
//! count equals the leader's and the number of signals written (each signal
//! has weight 1, so a doubly applied batch would inflate a count and a lost
//! one would shrink it), and its log holds exactly the leader's batch bytes
//! for the same SeqNos.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidal::{
    ClusterConfig, Config, Durability, EntityId, InProcessTransport, NodeId, NodeRole, TidalDb,
    Timestamp, WriteBatch,
};

const ENTITIES: u64 = 2_000;
/// Batches written after the last restart.
const AFTER: u64 = 200;
/// A bound on the batches written, so a stuck follower fails the test.
const MAX_BATCHES: u64 = 50_000;
const PER_BATCH: u64 = 100;
const RESTARTS: usize = 3;

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .segment_bytes(1 << 20)
        .build()
        .unwrap()
}

fn entity(b: u64, i: u64) -> EntityId {
    EntityId((b * 31 + i * 17) % ENTITIES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_resumes_with_no_lost_and_no_doubly_applied_record() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let leader = Arc::new(
        TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), transport.clone()).unwrap(),
    );
    let mut follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), transport.clone())
            .unwrap();
    let now = Timestamp::now();

    // The writer streams batches of weight-1 signals from its own task while
    // the follower is killed and reopened.
    // It writes until the restarts are over, then `AFTER` batches more, so
    // every kill happens while it writes; it returns how many it wrote.
    let restarts_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let leader = leader.clone();
        let restarts_done = restarts_done.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut b = 0;
            while after < AFTER {
                if restarts_done.load(Ordering::Acquire) {
                    after += 1;
                }
                assert!(b < MAX_BATCHES, "the restarts never finished");
                let mut batch = WriteBatch::new();
                for i in 0..PER_BATCH {
                    batch = batch.signal("like", entity(b, i), 1.0, now);
                }
                leader.write_async(batch).await.unwrap();
                if b % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                b += 1;
            }
            b
        })
    };
    let mut killed_at = Vec::new();
    for r in 0..RESTARTS {
        // Let the follower get some way into the stream, then kill it.
        let target = leader.last_position().seqno.0 / 2 + 20 * (r as u64 + 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while follower.last_position().seqno.0 < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower never reached SeqNo {target}: {:?}",
                follower.status().applied
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let at = follower.last_position();
        assert!(
            !writer.is_finished(),
            "restart {r}: the leader must still be writing"
        );
        killed_at.push(at);
        drop(follower);
        // The leader writes on while the follower is gone.
        tokio::time::sleep(Duration::from_millis(30)).await;
        follower =
            TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), transport.clone())
                .unwrap();
        // Recovery brought it back exactly where it stood (or later: a batch
        // being appended when it was killed may have been logged).
        assert!(follower.last_position() >= at, "{killed_at:?}");
    }
    restarts_done.store(true, Ordering::Release);
    let batches = writer.await.unwrap();
    let mut expected: BTreeMap<u64, i64> = BTreeMap::new();
    for b in 0..batches {
        for i in 0..PER_BATCH {
            *expected.entry(entity(b, i).0).or_default() += 1;
        }
    }
    let last = leader.last_position();
    // Every kill happened mid-stream: the leader had more to send.
    for at in &killed_at {
        assert!(
            at.seqno < last.seqno,
            "killed at {at:?}, leader ends at {last:?}"
        );
    }

    follower
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.last_position(), last);
    assert_eq!(follower.status().applied, leader.status().applied);
    for e in 0..ENTITIES {
        let want = expected.get(&e).copied().unwrap_or(0);
        let on_leader = leader.read_count(EntityId(e), "like").unwrap();
        let on_follower = follower.read_count(EntityId(e), "like").unwrap();
        assert_eq!(on_leader, want, "leader count of entity {e}");
        assert_eq!(on_follower, want, "follower count of entity {e}");
        assert_eq!(
            follower
                .read_decay_score(EntityId(e), "like", now)
                .unwrap()
                .to_bits(),
            leader
                .read_decay_score(EntityId(e), "like", now)
                .unwrap()
                .to_bits(),
            "score of entity {e}"
        );
    }

    leader.flush().unwrap();
    let leader_bytes = common::batch_bytes(ld.path());
    drop(follower);
    drop(leader);
    let follower_bytes = common::batch_bytes(fd.path());
    assert_eq!(
        follower_bytes.len(),
        leader_bytes.len(),
        "follower log length"
    );
    assert!(follower_bytes == leader_bytes, "follower log bytes differ");
}
