//! A real follower (opened with `open_follower`, caught up with its leader)
//! wrapped as `AnyDb::Follower` refuses every write method with
//! `TidalError::ReadOnly`, and nothing changes: its last Position, its
//! reads and every file in its directory are as before. The same calls on
//! the leader as `AnyDb::Leader` succeed (they are valid writes), and the
//! follower then receives them through replication alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidal::{
    AnyDb, ClusterConfig, Config, Durability, EntityId, InProcessTransport, NodeId, NodeRole,
    Position, Result, Retrieve, SessionId, TidalDb, TidalError, Timestamp, UserId, WriteBatch,
};

const DIM: usize = 8;

fn config(dir: &Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .dimension(DIM)
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .segment_bytes(1 << 20)
        .build()
        .unwrap()
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Every write method of `AnyDb`, with arguments that are valid on a
/// writable node (so a refusal can only come from the role).
fn every_write(db: &AnyDb, now: Timestamp) -> Vec<(&'static str, Result<Position>)> {
    let v = [0.5f32; DIM];
    vec![
        ("signal", db.signal("like", EntityId(1), 1.0, now)),
        (
            "write_item",
            db.write_item(EntityId(500), Some(EntityId(600)), &[("lang", "fr")]),
        ),
        (
            "write_creator",
            db.write_creator(EntityId(600), &[("name", "grace")]),
        ),
        (
            "write_item_embedding",
            db.write_item_embedding(EntityId(500), &v),
        ),
        (
            "write_creator_embedding",
            db.write_creator_embedding(EntityId(600), &v),
        ),
        ("delete_item", db.delete_item(EntityId(2))),
        ("delete_creator", db.delete_creator(EntityId(20))),
        (
            "open_session",
            db.open_session(SessionId(9), UserId(9), now),
        ),
        (
            "record_session_event",
            db.record_session_event(SessionId(9), EntityId(3), "view", 1.0, now),
        ),
        ("close_session", db.close_session(SessionId(9), now)),
        ("delete_user", db.delete_user(UserId(7))),
        (
            "write",
            db.write(
                WriteBatch::new()
                    .signal("view", EntityId(4), 2.0, now)
                    .write_creator(EntityId(21), &[("name", "lin")]),
            ),
        ),
    ]
}

/// Everything a reader can see of a node's state.
#[derive(Debug, PartialEq)]
struct Observed {
    last: Position,
    applied: Position,
    counts: Vec<(i64, i64)>,
    scores: Vec<(u64, u64)>,
    top: Vec<tidal::Scored>,
    items: Vec<Option<tidal::Item>>,
    creators: Vec<Option<tidal::Creator>>,
    sessions: Vec<Option<tidal::SessionInfo>>,
    events: usize,
}

fn observe(db: &AnyDb, now: Timestamp) -> Observed {
    let ids = 0..30u64;
    Observed {
        last: db.last_position(),
        applied: db.status().applied,
        counts: ids
            .clone()
            .map(|e| {
                (
                    db.read_count(EntityId(e), "like").unwrap(),
                    db.read_count(EntityId(e), "view").unwrap(),
                )
            })
            .collect(),
        scores: ids
            .clone()
            .map(|e| {
                (
                    db.read_decay_score(EntityId(e), "like", now)
                        .unwrap()
                        .to_bits(),
                    db.read_decay_score(EntityId(e), "view", now)
                        .unwrap()
                        .to_bits(),
                )
            })
            .collect(),
        top: db.retrieve(&Retrieve::top(20, "like", now)).unwrap(),
        items: [1, 2, 500]
            .into_iter()
            .map(|i| db.get_item(EntityId(i)))
            .collect(),
        creators: [20, 21, 600]
            .into_iter()
            .map(|i| db.get_creator(EntityId(i)))
            .collect(),
        sessions: [1, 9]
            .into_iter()
            .map(|s| db.session(SessionId(s)))
            .collect(),
        events: db.session_events(SessionId(1), 0, 1_000).len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_on_a_follower_is_read_only_and_changes_nothing() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let transport = InProcessTransport::new();
    let leader =
        TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), transport.clone()).unwrap();
    let follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), transport.clone())
            .unwrap();
    let now = Timestamp::now();

    // Some state of every kind on the leader.
    for e in 0..30u64 {
        leader
            .signal("like", EntityId(e), 1.0 + e as f64, now)
            .unwrap();
        leader.signal("view", EntityId(e), 0.5, now).unwrap();
    }
    leader
        .write_creator(EntityId(20), &[("name", "ada")])
        .unwrap();
    leader
        .write_item(EntityId(1), Some(EntityId(20)), &[("lang", "en")])
        .unwrap();
    leader
        .write_item(EntityId(2), None, &[("lang", "de")])
        .unwrap();
    leader
        .write_item_embedding(EntityId(1), &[0.25; DIM])
        .unwrap();
    leader.open_session(SessionId(1), UserId(7), now).unwrap();
    leader
        .record_session_event(SessionId(1), EntityId(5), "like", 1.0, now)
        .unwrap();
    let last = leader.last_position();
    follower
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(follower.last_position(), last);

    let follower: AnyDb = follower.into();
    assert_eq!(follower.role(), NodeRole::Follower);
    let before = observe(&follower, now);
    let files_before = files(fd.path());

    for (name, result) in every_write(&follower, now) {
        assert!(
            matches!(result, Err(TidalError::ReadOnly)),
            "{name} on a follower: {result:?}"
        );
    }
    // Give anything a refused write might have set off time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(observe(&follower, now), before);
    assert_eq!(
        files(fd.path()),
        files_before,
        "the follower's files changed"
    );
    assert_eq!(leader.last_position(), last, "the leader was written to");

    // The same calls are valid writes on the leader through AnyDb, and reach
    // the follower by replication.
    let leader: AnyDb = leader.into();
    for (name, result) in every_write(&leader, now) {
        assert!(result.is_ok(), "{name} on the leader: {result:?}");
    }
    let last = leader.last_position();
    let follower = follower.into_follower().unwrap();
    follower
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let follower: AnyDb = follower.into();
    assert_eq!(observe(&follower, now), observe(&leader, now));
    assert_ne!(observe(&follower, now), before);
}
