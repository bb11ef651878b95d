//! `AnyDb::open` picks the role from `config.cluster.role`: a follower
//! refuses every write with `ReadOnly` and its state and log stay as they
//! were; a leader takes writes; a single node needs no transport; a
//! replicated role without one is a clear error.

use std::sync::Arc;
use std::time::Duration;

use tidal::{
    AnyDb, ClusterConfig, Config, EntityId, InProcessTransport, NodeId, NodeRole, SessionId,
    TidalError, Timestamp, Transport, UserId, WriteBatch,
};

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .dimension(2)
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .build()
        .unwrap()
}

/// Every segment file's bytes, by name.
fn log_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let wal = dir.join("wal/shard-00000");
    let mut files: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_every_write_and_a_leader_takes_them() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t: Arc<dyn Transport> = InProcessTransport::new();
    let leader = AnyDb::open(config(ld.path(), 1, NodeRole::Leader), Some(t.clone())).unwrap();
    assert_eq!(leader.role(), NodeRole::Leader);
    let follower = AnyDb::open(config(fd.path(), 2, NodeRole::Follower), Some(t.clone())).unwrap();
    assert_eq!(follower.role(), NodeRole::Follower);

    let now = Timestamp::now();
    let (e, s, u) = (EntityId(1), SessionId(1), UserId(1));
    leader.write_item(e, None, &[("k", "v")]).unwrap();
    leader.write_creator(EntityId(2), &[("k", "v")]).unwrap();
    leader.signal("like", e, 1.0, now).unwrap();
    leader.open_session(s, u, now).unwrap();
    let last = leader.record_session_event(s, e, "like", 1.0, now).unwrap();
    follower
        .as_follower()
        .unwrap()
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    follower.flush().unwrap();
    let (position, count, item, events) = (
        follower.last_position(),
        follower.read_count(e, "like").unwrap(),
        follower.get_item(e),
        follower.session_events(s, 0, 100),
    );
    let files = log_files(fd.path());

    let results = [
        follower.signal("like", e, 1.0, now),
        follower.write_item(e, None, &[("k", "w")]),
        follower.write_creator(EntityId(2), &[("k", "w")]),
        follower.write_item_embedding(e, &[1.0, 0.0]),
        follower.write_creator_embedding(EntityId(2), &[1.0, 0.0]),
        follower.delete_item(e),
        follower.delete_creator(EntityId(2)),
        follower.open_session(SessionId(2), u, now),
        follower.record_session_event(s, e, "like", 1.0, now),
        follower.close_session(s, now),
        follower.delete_user(u),
        follower.write(WriteBatch::new().signal("like", e, 1.0, now)),
    ];
    for r in results {
        assert!(matches!(r, Err(TidalError::ReadOnly)), "{r:?}");
    }
    follower.flush().unwrap();
    assert_eq!(follower.last_position(), position);
    assert_eq!(follower.read_count(e, "like").unwrap(), count);
    assert_eq!(follower.get_item(e), item);
    assert_eq!(follower.session_events(s, 0, 100), events);
    assert_eq!(log_files(fd.path()), files, "the follower's log changed");

    // The leader takes every write.
    leader.write_item_embedding(e, &[1.0, 0.0]).unwrap();
    leader.close_session(s, now).unwrap();
    leader.delete_user(u).unwrap();
    leader.delete_item(e).unwrap();
    let p = leader
        .write(WriteBatch::new().signal("like", EntityId(3), 1.0, now))
        .unwrap();
    assert_eq!(leader.last_position(), p);
    assert!(leader.as_leader().is_some() && leader.as_follower().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_needs_no_transport_and_replicated_roles_need_one() {
    let dir = tempfile::tempdir().unwrap();
    let single = AnyDb::open(config(dir.path(), 1, NodeRole::Single), None).unwrap();
    assert_eq!(single.role(), NodeRole::Single);
    single
        .signal("like", EntityId(1), 1.0, Timestamp::now())
        .unwrap();
    single.close().unwrap();
    for role in [NodeRole::Leader, NodeRole::Follower] {
        let d = tempfile::tempdir().unwrap();
        let r = AnyDb::open(config(d.path(), 1, role), None);
        assert!(
            matches!(
                r,
                Err(TidalError::InvalidConfig {
                    field: "transport",
                    ..
                })
            ),
            "{role:?}: {r:?}"
        );
    }
}
