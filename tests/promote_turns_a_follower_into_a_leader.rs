//! Promotion: a follower of leader L takes L's writes; L goes away; the
//! follower is promoted to epoch 2 and takes writes in epoch 2; a new
//! follower of the promoted node catches up with the whole history; a
//! promotion with an epoch not above the history is refused; the promoted
//! node reopens as a leader.

use std::time::Duration;

use tidal::{
    ClusterConfig, Config, Durability, EntityId, Epoch, InProcessTransport, NodeId, NodeRole,
    TidalDb, TidalError, Timestamp, WriteBatch,
};

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_follower_leads_epoch_two_and_a_new_follower_catches_up() {
    let (ld, fd, gd) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let old = InProcessTransport::new();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), old.clone()).unwrap();
    let follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), old.clone()).unwrap();
    let now = Timestamp::now();
    let mut last = leader.last_position();
    for b in 0..20u64 {
        let mut batch = WriteBatch::new();
        for i in 0..50u64 {
            batch = batch.signal("like", EntityId((b * 50 + i) % 300), 1.0, now);
        }
        last = leader.write_async(batch).await.unwrap();
    }
    assert_eq!(last.epoch, Epoch(1));
    follower
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.last_position(), leader.last_position());
    let before: Vec<i64> = (0..300)
        .map(|e| leader.read_count(EntityId(e), "like").unwrap())
        .collect();
    drop(leader);

    let new_leader = follower.promote(Epoch(2)).unwrap();
    assert_eq!(new_leader.status().epoch, Epoch(2));
    let pos = new_leader
        .signal("like", EntityId(1), 1.0, Timestamp::now())
        .unwrap();
    assert_eq!(pos.epoch, Epoch(2));
    assert!(
        pos.seqno > last.seqno.next(),
        "{pos:?} after the EpochStart past {last:?}"
    );
    assert_eq!(
        new_leader.read_count(EntityId(1), "like").unwrap(),
        before[1] + 1
    );

    // A second follower, on the promoted node's transport, catches up with
    // both epochs.
    let second =
        TidalDb::open_follower(config(gd.path(), 3, NodeRole::Follower), old.clone()).unwrap();
    let mut batch = WriteBatch::new();
    for e in 0..300u64 {
        batch = batch.signal("like", EntityId(e), 2.0, Timestamp::now());
    }
    let end = new_leader.write_async(batch).await.unwrap();
    assert_eq!(end.epoch, Epoch(2));
    second.wait_for(end, Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.last_position(), new_leader.last_position());
    for e in 0..300 {
        let e = EntityId(e);
        assert_eq!(
            second.read_count(e, "like").unwrap(),
            new_leader.read_count(e, "like").unwrap()
        );
    }
    assert_eq!(second.status().epoch, Epoch(2));

    // The second follower has seen epoch 2: promoting it to 2 is stale.
    match second.promote(Epoch(2)) {
        Err(TidalError::StaleEpoch { given, highest }) => {
            assert_eq!((given, highest), (Epoch(2), Epoch(2)));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    // It logged nothing: reopened as a follower it still holds `end`.
    let second =
        TidalDb::open_follower(config(gd.path(), 3, NodeRole::Follower), old.clone()).unwrap();
    assert_eq!(second.last_position(), end);
    drop(second);

    // The persisted role: the promoted node reopens as a leader (and not
    // as a follower-turned-leader without promote).
    new_leader.close().unwrap();
    let reopened = TidalDb::open_leader(
        config(fd.path(), 2, NodeRole::Leader),
        InProcessTransport::new(),
    )
    .unwrap();
    assert_eq!(reopened.last_position(), end);
    let p = reopened
        .signal("like", EntityId(2), 1.0, Timestamp::now())
        .unwrap();
    assert_eq!(p.epoch, Epoch(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cannot_be_promoted_to_its_own_epoch() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t = InProcessTransport::new();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t.clone()).unwrap();
    let follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t.clone()).unwrap();
    let pos = leader
        .signal("like", EntityId(1), 1.0, Timestamp::now())
        .unwrap();
    follower
        .wait_for(pos, Duration::from_secs(30))
        .await
        .unwrap();
    drop(leader);
    let r = follower.promote(Epoch(1));
    assert!(
        matches!(
            r,
            Err(TidalError::StaleEpoch {
                given: Epoch(1),
                highest: Epoch(1)
            })
        ),
        "{r:?}"
    );
    // Nothing was logged; it reopens as the follower it was.
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t.clone()).unwrap();
    assert_eq!(f.last_position(), pos);
    drop(f);
    // Without promote, a follower's log does not open as a leader.
    assert!(matches!(
        TidalDb::open_leader(config(fd.path(), 2, NodeRole::Leader), t.clone()),
        Err(TidalError::RoleMismatch { .. })
    ));
}
