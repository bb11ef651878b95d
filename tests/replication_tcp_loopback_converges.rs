//! Replication over authenticated TCP on loopback: a leader on a port bound
//! with `TcpTransport::bind`, two followers with `TcpTransport::connector`;
//! 100,000 signals; both followers reach the leader's last Position, every
//! read agrees, and the sequence of batch bytes each holds equals the
//! leader's. A follower with the wrong secret never receives anything.

mod common;

use std::time::Duration;

use common::batch_bytes;
use tidal::{
    ClusterConfig, Config, Durability, EntityId, NodeId, NodeRole, Retrieve, SeqNo, TcpOptions,
    TcpTransport, TidalDb, Timestamp, WriteBatch,
};

const SECRET: &[u8] = b"loopback cluster secret, 32 byte";

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tcp_followers_reach_the_leader_and_a_wrong_secret_gets_nothing() {
    let (ld, f1d, f2d, bad) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), listener).unwrap();
    let connect = |secret: &[u8]| {
        TcpTransport::connector(addr.clone(), secret, TcpOptions::default()).unwrap()
    };
    let f1 =
        TidalDb::open_follower(config(f1d.path(), 2, NodeRole::Follower), connect(SECRET)).unwrap();
    let f2 =
        TidalDb::open_follower(config(f2d.path(), 3, NodeRole::Follower), connect(SECRET)).unwrap();
    let intruder = TidalDb::open_follower(
        config(bad.path(), 4, NodeRole::Follower),
        connect(b"not the cluster secret at all!!!"),
    )
    .unwrap();

    let now = Timestamp::now();
    let mut last = leader.last_position();
    for b in 0..200u64 {
        let mut batch = WriteBatch::new();
        for i in 0..500u64 {
            let e = EntityId((b * 31 + i * 17) % 2_000);
            batch = batch.signal(if i % 4 == 0 { "view" } else { "like" }, e, 1.0, now);
        }
        last = leader.write_async(batch).await.unwrap();
    }
    assert_eq!(last, leader.last_position());
    for f in [&f1, &f2] {
        f.wait_for(last, Duration::from_secs(60)).await.unwrap();
        assert_eq!(f.last_position(), last);
        for e in 0..2_000 {
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
            f.retrieve(&Retrieve::top(50, "like", now)).unwrap(),
            leader.retrieve(&Retrieve::top(50, "like", now)).unwrap()
        );
    }
    assert_eq!(leader.followers().len(), 2, "{:?}", leader.followers());
    // The wrong-secret follower was never admitted and holds nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(intruder.last_position().seqno, SeqNo(0));
    assert_eq!(intruder.read_count(EntityId(0), "like").unwrap(), 0);
    assert!(
        intruder
            .wait_for(last, Duration::from_millis(300))
            .await
            .is_err()
    );
    // Byte for byte the leader's log, batch by batch.
    f1.close().unwrap();
    f2.close().unwrap();
    leader.close().unwrap();
    let held = batch_bytes(ld.path());
    assert!(held.len() > 100_000 * 27, "{} bytes", held.len());
    assert!(batch_bytes(f1d.path()) == held, "follower 1's log differs");
    assert!(batch_bytes(f2d.path()) == held, "follower 2's log differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_follower_promoted_on_a_listener_serves_a_new_follower() {
    let (ld, fd, gd) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let old = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let old_addr = old.local_addr().unwrap().to_string();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), old).unwrap();
    let follower = TidalDb::open_follower(
        config(fd.path(), 2, NodeRole::Follower),
        TcpTransport::connector(old_addr, SECRET, TcpOptions::default()).unwrap(),
    )
    .unwrap();
    let now = Timestamp::now();
    let mut batch = WriteBatch::new();
    for e in 0..100u64 {
        batch = batch.signal("like", EntityId(e), 1.0, now);
    }
    let last = leader.write_async(batch).await.unwrap();
    follower
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    drop(leader);

    let listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let promoted = follower.promote_on(tidal::Epoch(2), listener).unwrap();
    let end = promoted
        .signal("like", EntityId(5), 1.0, Timestamp::now())
        .unwrap();
    assert_eq!(end.epoch, tidal::Epoch(2));
    let second = TidalDb::open_follower(
        config(gd.path(), 3, NodeRole::Follower),
        TcpTransport::connector(addr, SECRET, TcpOptions::default()).unwrap(),
    )
    .unwrap();
    second.wait_for(end, Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.last_position(), promoted.last_position());
    assert_eq!(second.read_count(EntityId(5), "like").unwrap(), 2);
}
