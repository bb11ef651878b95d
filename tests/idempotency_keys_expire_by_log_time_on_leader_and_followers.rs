//! Keys expire after `idempotency_ttl` of LOG time: the HLC of the batch
//! being built, not the wall clock of whoever reads. With a manual clock
//! shared by a leader and its follower: past the TTL but before any new
//! batch, both still hold the key; the next batch expires it on both (the
//! follower by replaying it); a retry then applies again, and the store
//! counts agree on both nodes. A different TTL is a `ConfigMismatch`.

use std::sync::Arc;
use std::time::Duration;

use tidal::{
    ClusterConfig, Config, Durability, EntityId, InProcessTransport, ManualClock, NodeId, NodeRole,
    TidalDb, TidalError, Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 60_000;

fn config(dir: &std::path::Path, node: u64, role: NodeRole, clock: &Arc<ManualClock>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .idempotency_ttl(Duration::from_millis(TTL_MS))
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_at_the_same_batch_on_leader_and_follower() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(NOW));
    let t = InProcessTransport::new();
    let leader =
        TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader, &clock), t.clone()).unwrap();
    let follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower, &clock), t.clone())
            .unwrap();
    // The client's request: the same event time on every retry.
    let keyed = || {
        WriteBatch::new()
            .signal("like", EntityId(1), 1.0, Timestamp(NOW))
            .idempotency_key("k1")
    };
    let plain = |at: u64| WriteBatch::new().signal("like", EntityId(2), 1.0, Timestamp(at));
    let original = leader.write_async(keyed()).await.unwrap();

    // Within the TTL (one ms short of it): a retry.
    clock.set_ms(NOW + TTL_MS - 1);
    assert_eq!(leader.write_async(keyed()).await.unwrap(), original);
    assert_eq!(leader.read_count(EntityId(1), "like").unwrap(), 1);
    // A second key, written later, outlives the first.
    let second = leader
        .write_async(
            WriteBatch::new()
                .signal("like", EntityId(3), 1.0, Timestamp(NOW + TTL_MS - 1))
                .idempotency_key("k2"),
        )
        .await
        .unwrap();
    follower
        .wait_for(second, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(leader.status().idempotency_keys, 2);
    assert_eq!(follower.status().idempotency_keys, 2);

    // Past the TTL of k1 on the wall clock, but no batch yet: log time has
    // not moved, and both nodes still hold both keys.
    clock.set_ms(NOW + TTL_MS + 5_000);
    assert_eq!(leader.status().idempotency_keys, 2);
    assert_eq!(follower.status().idempotency_keys, 2);

    // The next batch (any write) is at log time past k1's TTL: it expires
    // k1 on the leader, and on the follower when it replays the batch.
    let p = leader
        .write_async(plain(NOW + TTL_MS + 5_000))
        .await
        .unwrap();
    follower.wait_for(p, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leader.status().idempotency_keys, 1);
    assert_eq!(follower.status().idempotency_keys, 1);

    // A retry of k1 now applies again, under a new Position; k2 still
    // answers its retries.
    let again = leader.write_async(keyed()).await.unwrap();
    assert!(again > original);
    assert_eq!(leader.read_count(EntityId(1), "like").unwrap(), 2);
    assert_eq!(
        leader
            .write_async(
                WriteBatch::new()
                    .signal("like", EntityId(3), 1.0, Timestamp(NOW + TTL_MS - 1))
                    .idempotency_key("k2"),
            )
            .await
            .unwrap(),
        second
    );
    follower
        .wait_for(again, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.read_count(EntityId(1), "like").unwrap(), 2);
    assert_eq!(follower.status().idempotency_keys, 2);

    // The TTL is pinned by META: replay depends on it.
    drop(follower);
    let other = Config {
        idempotency_ttl: Duration::from_millis(TTL_MS * 2),
        ..config(fd.path(), 2, NodeRole::Follower, &clock)
    };
    match TidalDb::open_follower(other, t.clone()) {
        Err(TidalError::ConfigMismatch { field, .. }) => assert_eq!(field, "idempotency_ttl"),
        other => panic!("expected ConfigMismatch, got {:?}", other.err()),
    }
}
