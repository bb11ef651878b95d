//! Divergence across several epochs (KIP-279): a follower whose last epoch
//! (2, led by node 9, which never reached the new leader) the new leader
//! never led is cut at the start of that epoch, not at the point the leader
//! names (which lies past it), then catches up through a second handshake
//! round and holds exactly the new leader's history.
//!
//! Epoch 1: node 1 leads; nodes 2 and 3 get A; node 3 alone gets A2. Node 2
//! then logs epoch 2 (node 9) right after A; node 3 becomes the leader of
//! epoch 3 after A2 (both `EpochStart`s are written into the stopped logs:
//! `promote` does not exist yet).

mod common;

use std::time::Duration;

use common::{append_epoch_start, batch_bytes, batch_bytes_after, config, diverged};
use tidal::{EntityId, Epoch, InProcessTransport, NodeRole, TidalDb, Timestamp, WriteBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_of_an_epoch_the_leader_never_led_is_cut_at_that_epochs_start() {
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let now = Timestamp::now();
    let t1 = InProcessTransport::new();
    let l = TidalDb::open_leader(config(d1.path(), 1, NodeRole::Leader), t1.clone()).unwrap();
    let f2 = TidalDb::open_follower(config(d2.path(), 2, NodeRole::Follower), t1.clone()).unwrap();
    let f3 = TidalDb::open_follower(config(d3.path(), 3, NodeRole::Follower), t1.clone()).unwrap();
    let mut a = l.last_position();
    for i in 0..5u64 {
        a = l
            .write_async(WriteBatch::new().signal("like", EntityId(i), 1.0, now))
            .await
            .unwrap();
    }
    f2.wait_for(a, Duration::from_secs(30)).await.unwrap();
    drop(f2);
    let mut a2 = a;
    for i in 0..5u64 {
        a2 = l
            .write_async(WriteBatch::new().signal("view", EntityId(100 + i), 1.0, now))
            .await
            .unwrap();
    }
    f3.wait_for(a2, Duration::from_secs(30)).await.unwrap();
    drop((f3, l));

    let e2 = append_epoch_start(d2.path(), 2, 9);
    assert_eq!(e2, a.seqno.0 + 1);
    let suffix = batch_bytes_after(d2.path(), a.seqno.0);
    let e3 = append_epoch_start(d3.path(), 3, 3);
    assert_eq!(e3, a2.seqno.0 + 1);

    let t2 = InProcessTransport::new();
    // This test is about the cut and the hand-over; merging the suffix is
    // the reconciliation tests' subject, so it is off here.
    let mut leader_config = config(d3.path(), 3, NodeRole::Leader);
    leader_config.auto_reconcile = false;
    let n = TidalDb::open_leader(leader_config, t2.clone()).unwrap();
    assert_eq!(n.status().epoch, Epoch(3));
    let end = n
        .write_async(WriteBatch::new().signal("like", EntityId(0), 5.0, now))
        .await
        .unwrap();

    // The leader's first answer is (1, a + 1): epoch 1 runs to a2 on the
    // leader. The follower must cut at a, where its epoch 2 starts.
    let f2 = TidalDb::open_follower(config(d2.path(), 2, NodeRole::Follower), t2.clone()).unwrap();
    f2.wait_for(end, Duration::from_secs(30)).await.unwrap();
    assert_eq!(f2.last_position(), end);
    assert_eq!(f2.status().epoch, Epoch(3));
    let name = format!("{:020}-{:020}.batches", 2, a.seqno.0 + 1);
    assert_eq!(diverged(d2.path()), vec![(name.clone(), suffix.clone())]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let kept = format!("{:020}-{:020}-n2.batches", 2, a.seqno.0 + 1);
    while diverged(d3.path()).iter().all(|(n, _)| *n != kept)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The leader names what a follower sent by that follower's node too.
    assert_eq!(diverged(d3.path()), vec![(kept, suffix)]);
    for i in 0..5u64 {
        for (e, ty) in [(i, "like"), (100 + i, "view")] {
            assert_eq!(
                f2.read_count(EntityId(e), ty).unwrap(),
                n.read_count(EntityId(e), ty).unwrap()
            );
        }
    }
    assert_eq!(f2.read_count(EntityId(100), "view").unwrap(), 1);
    n.flush().unwrap();
    drop(f2);
    assert_eq!(batch_bytes(d2.path()), batch_bytes(d3.path()));
}
