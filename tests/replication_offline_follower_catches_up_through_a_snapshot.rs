//! A follower offline while its leader retires segments (two checkpoints
//! with no retention budget for followers) is behind the retained log when
//! it comes back: the leader sends its newest snapshot, the follower
//! installs it, restarts its log after it and streams the rest. It ends with
//! every read equal to the leader's, the leader's snapshot on disk, and
//! exactly the leader's batch bytes for every SeqNo after the snapshot;
//! it keeps following live writes, and reopens to the same state.

mod common;

use std::time::Duration;

use common::{batch_bytes_after, batches, config, snapshots};
use tidal::{Config, EntityId, InProcessTransport, NodeRole, TidalDb, Timestamp, WriteBatch};

const ENTITIES: u64 = 500;

fn small_log(dir: &std::path::Path, node: u64, role: NodeRole, retention: u64) -> Config {
    let mut c = config(dir, node, role);
    c.segment_bytes = 64 << 10;
    c.retention_bytes = retention;
    c
}

async fn write(leader: &TidalDb<tidal::Leader>, from: u64, batches: u64, now: Timestamp) {
    for b in from..from + batches {
        let mut batch = WriteBatch::new();
        for i in 0..50 {
            let e = EntityId((b * 7 + i * 13) % ENTITIES);
            batch = batch.signal(if i % 3 == 0 { "view" } else { "like" }, e, 1.0, now);
        }
        leader.write_async(batch).await.unwrap();
    }
}

/// The follower holds the start of the log and goes away; the leader
/// writes on and checkpoints twice (so retention may retire what the
/// follower needs). Returns where the follower left and the newest snapshot.
async fn follower_leaves_while_leader_checkpoints(
    leader: &TidalDb<tidal::Leader>,
    follower_config: Config,
    transport: &std::sync::Arc<InProcessTransport>,
    now: Timestamp,
) -> (tidal::Position, tidal::SeqNo) {
    let follower = TidalDb::open_follower(follower_config, transport.clone()).unwrap();
    write(leader, 0, 20, now).await;
    follower
        .wait_for(leader.last_position(), Duration::from_secs(20))
        .await
        .unwrap();
    let left_at = follower.last_position();
    follower.close().unwrap();
    write(leader, 20, 400, now).await;
    leader.checkpoint().unwrap();
    write(leader, 420, 200, now).await;
    let snap = leader.checkpoint().unwrap();
    (left_at, snap)
}

fn assert_same_reads<A: tidal::Role, B: tidal::Role>(a: &TidalDb<A>, b: &TidalDb<B>) {
    for e in 0..ENTITIES {
        for ty in ["like", "view"] {
            assert_eq!(
                a.read_count(EntityId(e), ty).unwrap(),
                b.read_count(EntityId(e), ty).unwrap(),
                "count of {e} {ty}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_retained_log_catches_up_through_a_snapshot() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let leader = TidalDb::open_leader(
        small_log(ld.path(), 1, NodeRole::Leader, 0),
        transport.clone(),
    )
    .unwrap();
    let now = Timestamp::now();
    let follower_config = || small_log(fd.path(), 2, NodeRole::Follower, 0);

    // With no budget, the leader retires the segments the follower needs.
    let (left_at, snap) =
        follower_leaves_while_leader_checkpoints(&leader, follower_config(), &transport, now).await;
    write(&leader, 620, 50, now).await;
    let first_retained = leader.status().first_retained;
    assert!(
        first_retained.0 > left_at.seqno.0 + 1,
        "the leader still holds SeqNo {} (its log starts at {first_retained})",
        left_at.seqno.0 + 1
    );

    // Back: the snapshot first, then the log after it.
    let follower = TidalDb::open_follower(follower_config(), transport.clone()).unwrap();
    let end = leader.last_position();
    follower
        .wait_for(end, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(follower.last_position(), end);
    assert_same_reads(&leader, &follower);
    assert!(
        snapshots(fd.path()).contains(&snap.0),
        "{:?}",
        snapshots(fd.path())
    );

    // Live writes keep flowing to it.
    write(&leader, 670, 30, now).await;
    let end = leader.last_position();
    follower
        .wait_for(end, Duration::from_secs(20))
        .await
        .unwrap();
    assert_same_reads(&leader, &follower);
    let status = follower.status();
    assert!(status.first_retained.0 > left_at.seqno.0 + 1, "{status:?}");
    follower.close().unwrap();
    leader.close().unwrap();

    // Its log restarted right after the snapshot and holds the leader's
    // exact batch bytes from there on.
    let installed = snapshots(fd.path())
        .into_iter()
        .filter(|s| *s <= snap.0)
        .max()
        .unwrap();
    let held = batches(fd.path());
    assert_eq!(held.first().map(|b| b.first), Some(installed + 1));
    assert_eq!(
        batch_bytes_after(fd.path(), installed),
        batch_bytes_after(ld.path(), installed)
    );

    // Reopened, both give the same answers.
    let leader = TidalDb::open_leader(
        small_log(ld.path(), 1, NodeRole::Leader, 0),
        transport.clone(),
    )
    .unwrap();
    let follower = TidalDb::open_follower(follower_config(), transport.clone()).unwrap();
    assert_eq!(follower.last_position(), leader.last_position());
    assert_same_reads(&leader, &follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_the_log_for_an_offline_follower_within_its_budget() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let budget = 1 << 30;
    let leader = TidalDb::open_leader(
        small_log(ld.path(), 1, NodeRole::Leader, budget),
        transport.clone(),
    )
    .unwrap();
    let now = Timestamp::now();
    let follower_config = || small_log(fd.path(), 2, NodeRole::Follower, budget);
    let (left_at, _) =
        follower_leaves_while_leader_checkpoints(&leader, follower_config(), &transport, now).await;
    // The leader kept what the follower needs instead of retiring it.
    let first_retained = leader.status().first_retained;
    assert!(
        first_retained.0 <= left_at.seqno.0 + 1,
        "retired SeqNo {} needed by the follower (log starts at {first_retained})",
        left_at.seqno.0 + 1
    );

    let follower = TidalDb::open_follower(follower_config(), transport.clone()).unwrap();
    let end = leader.last_position();
    follower
        .wait_for(end, Duration::from_secs(30))
        .await
        .unwrap();
    assert_same_reads(&leader, &follower);
    // It caught up from the log: no snapshot was installed, and its log is
    // whole from the start, byte for byte the leader's where both hold it.
    assert!(
        snapshots(fd.path()).is_empty(),
        "{:?}",
        snapshots(fd.path())
    );
    follower.close().unwrap();
    leader.close().unwrap();
    assert_eq!(batches(fd.path()).first().map(|b| b.first), Some(1));
    let from = first_retained.0 - 1;
    assert_eq!(
        batch_bytes_after(fd.path(), from),
        batch_bytes_after(ld.path(), from)
    );
}
