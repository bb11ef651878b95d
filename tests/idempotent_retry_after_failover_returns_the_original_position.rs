//! A keyed write on leader L replicates to follower F (the key is a logged
//! record, applied by the same function); L goes away; F is promoted; the
//! client's retry on F returns the original Position (epoch 1) and applies
//! nothing; other content under the key is a conflict on F too. Also under
//! `Durability::Replicated`: a retry waits for the HWM like a write.

use std::time::Duration;

use tidal::{
    ClusterConfig, Config, Durability, EntityId, Epoch, InProcessTransport, NodeId, NodeRole,
    TidalDb, TidalError, Timestamp, WriteBatch,
};

fn config(dir: &std::path::Path, node: u64, role: NodeRole, durability: Durability) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(durability)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_the_promoted_follower_returns_the_original_position() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t = InProcessTransport::new();
    let replicated = Durability::Replicated {
        acks: 1,
        timeout: Duration::from_secs(30),
    };
    let follower = TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower, Durability::Sync),
        t.clone(),
    )
    .unwrap();
    let leader = TidalDb::open_leader(
        config(ld.path(), 1, NodeRole::Leader, replicated),
        t.clone(),
    )
    .unwrap();
    let at = Timestamp::now();
    let keyed = |w: f64| {
        WriteBatch::new()
            .signal("like", EntityId(7), w, at)
            .signal("like", EntityId(8), w, at)
            .idempotency_key(b"\x00\x01payment-9")
    };
    let original = leader.write_async(keyed(1.0)).await.unwrap();
    assert_eq!(original.epoch, Epoch(1));
    // Returned under Replicated: the follower has acknowledged it.
    assert!(leader.status().hwm >= original.seqno);
    // A retry on the leader, under Replicated, answers after the HWM.
    assert_eq!(leader.write_async(keyed(1.0)).await.unwrap(), original);
    let after = leader
        .write_async(WriteBatch::new().signal("like", EntityId(9), 1.0, at))
        .await
        .unwrap();
    follower
        .wait_for(after, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.status().idempotency_keys, 1);
    drop(leader);

    let promoted = follower.promote(Epoch(2)).unwrap();
    assert_eq!(promoted.write_async(keyed(1.0)).await.unwrap(), original);
    assert_eq!(promoted.read_count(EntityId(7), "like").unwrap(), 1);
    assert_eq!(promoted.read_count(EntityId(8), "like").unwrap(), 1);
    match promoted.write_async(keyed(3.0)).await {
        Err(TidalError::IdempotencyConflict { original: o, .. }) => assert_eq!(o, original),
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    assert_eq!(promoted.read_count(EntityId(7), "like").unwrap(), 1);
    // The new epoch logs new keys as usual.
    let fresh = promoted
        .write_async(
            WriteBatch::new()
                .signal("like", EntityId(7), 1.0, at)
                .idempotency_key("payment-10"),
        )
        .await
        .unwrap();
    assert_eq!(fresh.epoch, Epoch(2));
    assert_eq!(promoted.read_count(EntityId(7), "like").unwrap(), 2);
    assert_eq!(promoted.status().idempotency_keys, 2);
}
