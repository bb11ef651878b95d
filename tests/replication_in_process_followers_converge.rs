//! In-process replication: a leader takes signals, two followers opened with
//! the same `InProcessTransport` reach the leader's last Position through
//! `wait_for`, every read agrees, and each follower's log holds the exact
//! bytes of the leader's batches for the same SeqNos. Writes on a follower
//! through `AnyDb` are `ReadOnly`.

mod common;

use std::time::Duration;

use tidal::{
    AnyDb, ClusterConfig, Config, Durability, EntityId, InProcessTransport, NodeId, NodeRole,
    Retrieve, TidalDb, TidalError, Timestamp, WriteBatch,
};

fn config(dir: &std::path::Path, node: u64, role: NodeRole, durability: Durability) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(durability)
        .segment_bytes(1 << 20)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_reach_the_leader_and_hold_its_exact_batches() {
    let (ld, f1d, f2d) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let transport = InProcessTransport::new();
    let leader = TidalDb::open_leader(
        config(ld.path(), 1, NodeRole::Leader, Durability::Sync),
        transport.clone(),
    )
    .unwrap();
    let f1 = TidalDb::open_follower(
        config(f1d.path(), 2, NodeRole::Follower, Durability::Sync),
        transport.clone(),
    )
    .unwrap();
    let f2 = TidalDb::open_follower(
        config(f2d.path(), 3, NodeRole::Follower, Durability::Sync),
        transport.clone(),
    )
    .unwrap();
    let now = Timestamp::now();
    let mut last = leader.last_position();
    for b in 0..100u64 {
        let mut batch = WriteBatch::new();
        for i in 0..1_000u64 {
            let e = EntityId((b * 7 + i * 13) % 5_000);
            batch = batch.signal(
                if i % 3 == 0 { "view" } else { "like" },
                e,
                1.0 + (i % 5) as f64,
                now,
            );
        }
        last = leader.write_async(batch).await.unwrap();
    }
    leader
        .write_item(EntityId(1), None, &[("lang", "en")])
        .unwrap();
    last = leader
        .write_creator(EntityId(9_999), &[("name", "ada")])
        .unwrap()
        .max(last);
    for f in [&f1, &f2] {
        f.wait_for(last, Duration::from_secs(60)).await.unwrap();
        assert_eq!(f.last_position(), leader.last_position());
        for e in (0..5_000).step_by(97) {
            let e = EntityId(e);
            assert_eq!(
                f.read_count(e, "like").unwrap(),
                leader.read_count(e, "like").unwrap()
            );
            assert_eq!(
                f.read_decay_score(e, "view", now).unwrap().to_bits(),
                leader.read_decay_score(e, "view", now).unwrap().to_bits()
            );
        }
        assert_eq!(
            f.retrieve(&Retrieve::top(20, "like", now)).unwrap(),
            leader.retrieve(&Retrieve::top(20, "like", now)).unwrap()
        );
        assert_eq!(f.get_item(EntityId(1)), leader.get_item(EntityId(1)));
    }
    let followers = leader.followers();
    assert_eq!(followers.len(), 2, "{followers:?}");
    // A follower through AnyDb refuses writes at run time and changes nothing.
    let any: AnyDb = f1.into();
    let before = any.last_position();
    assert!(matches!(
        any.signal("like", EntityId(1), 1.0, now),
        Err(TidalError::ReadOnly)
    ));
    assert_eq!(any.last_position(), before);
    let f1 = any.into_follower().unwrap();
    leader.flush().unwrap();
    let leader_bytes = common::batch_bytes(ld.path());
    drop((f1, f2, leader));
    assert_eq!(
        common::batch_bytes(f1d.path()),
        leader_bytes,
        "follower 1 log bytes"
    );
    assert_eq!(
        common::batch_bytes(f2d.path()),
        leader_bytes,
        "follower 2 log bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_waits_for_an_ack_and_times_out_without_followers() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let durability = Durability::Replicated {
        acks: 1,
        timeout: Duration::from_millis(300),
    };
    let leader = TidalDb::open_leader(
        config(ld.path(), 1, NodeRole::Leader, durability),
        transport.clone(),
    )
    .unwrap();
    let now = Timestamp::now();
    // No follower yet: the write is durable on the leader but not acknowledged.
    let err = leader
        .write_async(WriteBatch::new().signal("like", EntityId(1), 1.0, now))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TidalError::ReplicationTimeout { acks: 1, .. }),
        "{err:?}"
    );
    let follower = TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower, Durability::Sync),
        transport.clone(),
    )
    .unwrap();
    // With a follower, the write returns once it holds the batch durably.
    let pos = leader
        .write_async(WriteBatch::new().signal("like", EntityId(1), 1.0, now))
        .await
        .unwrap();
    assert!(leader.status().hwm >= pos.seqno);
    follower
        .wait_for(pos, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(follower.read_count(EntityId(1), "like").unwrap(), 2);
}

#[test]
fn opening_a_leader_needs_a_multi_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let t = InProcessTransport::new();
    let no_runtime = TidalDb::open_leader(
        config(dir.path(), 1, NodeRole::Leader, Durability::Sync),
        t.clone(),
    );
    assert!(matches!(no_runtime, Err(TidalError::NoRuntime { .. })));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let current_thread = TidalDb::open_follower(
        config(dir.path(), 2, NodeRole::Follower, Durability::Sync),
        t,
    );
    assert!(matches!(current_thread, Err(TidalError::NoRuntime { .. })));
}
