//! Keys travel in snapshots too: a follower offline while its leader
//! retires the segments holding a keyed write catches up by installing the
//! leader's snapshot (whose idempotency section holds the key), is promoted,
//! and answers the client's retry with the original Position, applying
//! nothing.

mod common;

use std::time::Duration;

use common::{config, snapshots};
use tidal::{
    Config, EntityId, Epoch, InProcessTransport, NodeRole, TidalDb, Timestamp, WriteBatch,
};

fn small_log(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    let mut c = config(dir, node, role);
    c.segment_bytes = 64 << 10;
    c.retention_bytes = 0;
    c
}

async fn write(leader: &TidalDb<tidal::Leader>, from: u64, batches: u64, now: Timestamp) {
    for b in from..from + batches {
        let batch = (0..50u64).fold(WriteBatch::new(), |batch, i| {
            batch.signal("view", EntityId(100 + (b * 7 + i * 13) % 300), 1.0, now)
        });
        leader.write_async(batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_follower_seeded_by_a_snapshot_recognises_the_retry() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let leader =
        TidalDb::open_leader(small_log(ld.path(), 1, NodeRole::Leader), transport.clone()).unwrap();
    let now = Timestamp::now();
    let follower = TidalDb::open_follower(
        small_log(fd.path(), 2, NodeRole::Follower),
        transport.clone(),
    )
    .unwrap();
    write(&leader, 0, 2, now).await;
    follower
        .wait_for(leader.last_position(), Duration::from_secs(20))
        .await
        .unwrap();
    let left_at = follower.last_position();
    follower.close().unwrap();

    let keyed = || {
        WriteBatch::new()
            .signal("like", EntityId(1), 1.0, now)
            .idempotency_key("transfer-77")
    };
    let original = leader.write_async(keyed()).await.unwrap();
    write(&leader, 2, 150, now).await;
    leader.checkpoint().unwrap();
    write(&leader, 152, 50, now).await;
    leader.checkpoint().unwrap();
    write(&leader, 202, 5, now).await;
    assert!(
        leader.status().first_retained.0 > original.seqno.0,
        "the segment holding the keyed write is retired"
    );

    let follower = TidalDb::open_follower(
        small_log(fd.path(), 2, NodeRole::Follower),
        transport.clone(),
    )
    .unwrap();
    follower
        .wait_for(leader.last_position(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(follower.last_position().seqno > left_at.seqno);
    assert_eq!(follower.status().idempotency_keys, 1);
    assert!(
        snapshots(fd.path()).iter().any(|s| *s > original.seqno.0),
        "the follower installed a snapshot past the keyed write"
    );
    drop(leader);

    let promoted = follower.promote(Epoch(2)).unwrap();
    assert_eq!(promoted.write_async(keyed()).await.unwrap(), original);
    assert_eq!(promoted.read_count(EntityId(1), "like").unwrap(), 1);
}
