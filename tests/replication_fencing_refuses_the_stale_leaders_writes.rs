//! Fencing (DESIGN.md section 6): a leader that meets a follower which has
//! seen a higher epoch stops taking writes with `TidalError::Fenced`, and
//! the follower never applies its batches. The follower's newer epoch is
//! written into its stopped log as the `EpochStart` a leader of epoch 2
//! (node 9, never reachable here) would have shipped it. The epoch that
//! fenced it is persisted: reopened as a leader it is still fenced.

mod common;

use std::time::Duration;

use common::{append_epoch_start, batches, config};
use tidal::{
    EntityId, Epoch, InProcessTransport, NodeRole, Position, SeqNo, TidalDb, TidalError, Timestamp,
    WriteBatch,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_meeting_a_follower_of_a_newer_epoch_is_fenced() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Timestamp::now();
    let t = InProcessTransport::new();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t.clone()).unwrap();
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t.clone()).unwrap();
    let a = leader
        .write_async(WriteBatch::new().signal("like", EntityId(1), 1.0, now))
        .await
        .unwrap();
    f.wait_for(a, Duration::from_secs(30)).await.unwrap();
    drop(f);

    // Written while the follower is away: it must never apply these.
    for _ in 0..5 {
        leader
            .write_async(WriteBatch::new().signal("like", EntityId(2), 1.0, now))
            .await
            .unwrap();
    }

    // Meanwhile the follower learned of epoch 2 (led by node 9).
    let start = append_epoch_start(fd.path(), 2, 9);
    assert_eq!(start, a.seqno.0 + 1);
    let held = Position::new(Epoch(2), SeqNo(start));
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t.clone()).unwrap();
    assert_eq!(f.last_position(), held);

    // The old leader is fenced as soon as the follower says hello.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fenced = loop {
        let before = leader.last_position();
        match leader
            .write_async(WriteBatch::new().signal("like", EntityId(3), 1.0, now))
            .await
        {
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(p) => panic!("still writable at {p:?}"),
            Err(e) => {
                // A refused write changes nothing.
                assert_eq!(leader.last_position(), before);
                break e;
            }
        }
    };
    assert!(
        matches!(
            fenced,
            TidalError::Fenced {
                ours: Epoch(1),
                seen: Epoch(2)
            }
        ),
        "{fenced:?}"
    );
    // And stays fenced.
    assert!(matches!(
        leader.signal("like", EntityId(4), 1.0, now),
        Err(TidalError::Fenced { .. })
    ));

    // The follower never applied the stale leader's batches.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.last_position(), held);
    assert_eq!(f.status().epoch, Epoch(2));
    assert_eq!(f.read_count(EntityId(1), "like").unwrap(), 1);
    assert_eq!(f.read_count(EntityId(2), "like").unwrap(), 0);
    assert_eq!(f.read_count(EntityId(3), "like").unwrap(), 0);
    drop(f);
    let held_batches = batches(fd.path());
    assert_eq!(leader.status().highest_epoch_seen, Epoch(2));

    // Restarted as a leader, it is fenced from the start: it kept epoch 2
    // on disk (written in the background once fenced, so wait for the file).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ld.path().join("EPOCH").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    leader.close().unwrap();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t.clone()).unwrap();
    assert_eq!(leader.status().highest_epoch_seen, Epoch(2));
    let before = leader.last_position();
    assert!(
        matches!(
            leader.signal("like", EntityId(5), 1.0, now),
            Err(TidalError::Fenced {
                ours: Epoch(1),
                seen: Epoch(2)
            })
        ),
        "a restarted stale leader took a write"
    );
    assert_eq!(leader.last_position(), before);
    assert_eq!(held_batches.last().unwrap().first, start);
    assert!(held_batches.iter().all(|b| b.last() <= start));
}
