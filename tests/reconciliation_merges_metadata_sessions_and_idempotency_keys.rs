//! Failover over TCP loopback with reconciliation of every kind of record
//! (DESIGN.md section 7): the old leader L takes metadata upserts, an embedding, a delete,
//! session events, a new session, keyed requests and signals that its
//! follower F never gets; F is promoted and writes over some of them; L
//! rejoins with `open_follower` and F merges L's suffix.
//!
//! Both replicas end with: counts equal to a model that applied every
//! acknowledged write once (a keyed request L took and the client retried
//! on F counts once); metadata last-writer-wins per field by the original
//! stamps; a delete older than a write here leaves the entity live, and a
//! delete here newer than the old leader's embedding keeps the id out of
//! search; L's session events appended after F's, marked merged, gap-free;
//! the old leader's like of an entity F deleted later dropped with it;
//! the suffix's keys known on F (a retry is answered, not applied again),
//! a key F used for other content reported as a conflict; an id that F
//! bound to the other kind dropped and reported. Reconciling again, or a
//! copy of the suffix, changes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::{
    ClusterConfig, Config, Durability, EntityId, Epoch, NodeId, NodeRole, ReconcileConflict,
    Search, SessionId, TcpOptions, TcpTransport, TidalDb, TidalError, Timestamp, Transport, UserId,
    WriteBatch,
};

const SECRET: &[u8] = b"reconciliation over tcp, test secret";

fn connector(addr: &str) -> Arc<dyn Transport> {
    TcpTransport::connector(addr.to_string(), SECRET, TcpOptions::default()).unwrap()
}

fn listener() -> (Arc<dyn Transport>, String) {
    let l = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn config(dir: &Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .dimension(3)
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .build()
        .unwrap()
}

/// Counts per entity of the acknowledged likes (+1) and skips (-1).
type Model = BTreeMap<u64, i64>;

fn like(model: &mut Model, b: WriteBatch, e: u64, w: f64, at: Timestamp) -> WriteBatch {
    *model.entry(e).or_default() += if w > 0.0 { 1 } else { -1 };
    b.signal("like", EntityId(e), w, at)
}

fn keyed(key: &str, e: u64, at: Timestamp) -> WriteBatch {
    WriteBatch::new()
        .idempotency_key(key)
        .signal("like", EntityId(e), 1.0, at)
}

fn check<R: tidal::Role>(db: &TidalDb<R>, model: &Model, who: &str) {
    for (e, count) in model {
        assert_eq!(
            db.read_count(EntityId(*e), "like").unwrap(),
            *count,
            "{who}: count of {e}"
        );
    }
    let meta = |id: u64| {
        db.get_item(EntityId(id))
            .map(|i| i.metadata.into_iter().collect::<BTreeMap<_, _>>())
    };
    let m1 = meta(1).expect("item 1 live");
    assert_eq!(m1.get("title").map(String::as_str), Some("F"), "{who}");
    assert_eq!(m1.get("color").map(String::as_str), Some("red"), "{who}");
    // L's older delete of 2 loses to F's later write: live, F's fields.
    let m2 = meta(2).expect("item 2 live");
    assert_eq!(m2.get("title").map(String::as_str), Some("again"), "{who}");
    // F deleted 3 after L embedded it: gone, and never found by search.
    assert!(meta(3).is_none(), "{who}: item 3");
    let found = db.search(&Search::new(vec![0.0, 0.0, 1.0], 10)).unwrap();
    assert!(
        found.iter().all(|s| s.id != EntityId(3)),
        "{who}: {found:?}"
    );
    // L's embedding of 4 (no write here) is merged and found.
    assert_eq!(
        found.first().map(|s| s.id),
        Some(EntityId(4)),
        "{who}: {found:?}"
    );
    // 20 is F's creator; L's item upsert of it was dropped.
    assert!(db.get_creator(EntityId(20)).is_some(), "{who}");
    assert!(db.get_item(EntityId(20)).is_none(), "{who}");

    // Session 1: event 1 shipped, 2 from F, 3 and 4 merged from L.
    let s1 = db.session_events(SessionId(1), 1, 100);
    let got: Vec<(u32, u64, bool)> = s1.iter().map(|e| (e.seq, e.entity.0, e.merged)).collect();
    assert_eq!(
        got,
        vec![(1, 1, false), (2, 6, false), (3, 1, true), (4, 5, true)],
        "{who}"
    );
    assert_eq!(db.session(SessionId(1)).unwrap().event_count, 4, "{who}");
    // Session 3 only L had: opened, two merged events, closed.
    let s3 = db.session(SessionId(3)).expect("session 3 merged");
    assert_eq!((s3.user, s3.event_count), (UserId(9), 2), "{who}");
    assert!(s3.closed_at.is_some(), "{who}");
    assert!(
        db.session_events(SessionId(3), 1, 10)
            .iter()
            .all(|e| e.merged)
    );
    // Session 2 was closed by L only.
    assert!(
        db.session(SessionId(2)).unwrap().closed_at.is_some(),
        "{who}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_record_is_merged_once() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Timestamp::now();
    let mut model = Model::new();
    let (l_listener, l_addr) = listener();
    let l = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), l_listener).unwrap();
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), connector(&l_addr))
        .unwrap();

    // Shipped to F.
    let mut b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "a")])
        .write_item(EntityId(2), None, &[("title", "b")])
        .open_session(SessionId(1), UserId(7), now)
        .open_session(SessionId(2), UserId(8), now)
        .record_session_event(SessionId(1), EntityId(1), "like", 1.0, now);
    *model.entry(1).or_default() += 1;
    for e in 1..=5 {
        b = like(&mut model, b, e, 1.0, now);
    }
    let shipped = l.write_async(b).await.unwrap();
    f.wait_for(shipped, Duration::from_secs(20)).await.unwrap();
    f.close().unwrap();

    // Acknowledged by L, never shipped.
    let mut b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "L"), ("color", "red")])
        .write_item_embedding(EntityId(3), &[0.0, 0.0, 1.0])
        .write_item_embedding(EntityId(4), &[0.0, 0.1, 1.0])
        .delete_item(EntityId(2))
        .write_item(EntityId(20), None, &[("kind", "item")])
        .record_session_event(SessionId(1), EntityId(1), "like", 1.0, now)
        .record_session_event(SessionId(1), EntityId(5), "like", -1.0, now)
        .open_session(SessionId(3), UserId(9), now)
        .record_session_event(SessionId(3), EntityId(6), "like", 1.0, now)
        .record_session_event(SessionId(3), EntityId(7), "like", 1.0, now)
        .close_session(SessionId(3), now)
        .close_session(SessionId(2), now);
    for (e, w) in [(1, 1.0), (5, -1.0), (6, 1.0), (7, 1.0)] {
        *model.entry(e).or_default() += if w > 0.0 { 1 } else { -1 };
    }
    for e in 1..=8 {
        b = like(&mut model, b, e, 1.0, now);
    }
    l.write_async(b).await.unwrap();
    let k1 = l.write_async(keyed("k1", 10, now)).await.unwrap();
    let k2 = l.write_async(keyed("k2", 11, now)).await.unwrap();
    l.write_async(keyed("k3", 12, now)).await.unwrap();
    for e in [10, 11, 12] {
        *model.entry(e).or_default() += 1;
    }
    l.close().unwrap();

    // F is promoted and writes, later in time than all of L's writes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), connector(&l_addr))
        .unwrap();
    let (f_listener, f_addr) = listener();
    let f = f.promote_on(Epoch(2), f_listener).unwrap();
    let mut b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "F")])
        .write_item(EntityId(2), None, &[("title", "again")])
        .delete_item(EntityId(3))
        .write_creator(EntityId(20), &[("name", "c")])
        .record_session_event(SessionId(1), EntityId(6), "like", 1.0, now);
    *model.entry(6).or_default() += 1;
    // The delete takes 3's count with it, L's older like included.
    model.insert(3, 0);
    for e in 2..=9 {
        b = like(&mut model, b, e, -1.0, now);
    }
    f.write_async(b).await.unwrap();
    // The client retries k1 on F (same content): applied here, not by L.
    let k1_here = f.write_async(keyed("k1", 10, now)).await.unwrap();
    assert_ne!(k1_here, k1);
    // k3 is used on F for other content.
    f.write_async(keyed("k3", 13, now)).await.unwrap();
    *model.entry(13).or_default() += 1;

    // L rejoins: cut, handed over, merged, replicated back.
    let l = TidalDb::open_follower(config(ld.path(), 1, NodeRole::Follower), connector(&f_addr))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.status().last_reconcile.is_none_or(|r| r.suffixes == 0) {
        assert!(Instant::now() < deadline, "{:?}", f.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = f.status().last_reconcile.unwrap();
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_eq!(
        report.already_here.get("idempotency key"),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(report.merged.get("idempotency key"), Some(&1), "{report:?}");
    assert_eq!(report.merged.get("session event"), Some(&4), "{report:?}");
    assert_eq!(report.merged.get("session open"), Some(&1), "{report:?}");
    assert_eq!(report.merged.get("session close"), Some(&2), "{report:?}");
    assert_eq!(report.merged.get("embedding"), Some(&2), "{report:?}");
    assert_eq!(report.merged.get("delete"), Some(&1), "{report:?}");
    assert_eq!(
        report
            .dropped
            .get("metadata upsert: an id is now of the other kind"),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        report
            .dropped
            .get("signal: its entity was deleted after it"),
        Some(&1),
        "{report:?}"
    );
    assert!(
        matches!(&report.conflicts[..], [ReconcileConflict::KeyUsed { key, .. }] if key == b"k3"),
        "{report:?}"
    );

    let end = f.last_position();
    l.wait_for(end, Duration::from_secs(20)).await.unwrap();
    check(&f, &model, "new leader");
    check(&l, &model, "old leader");

    // Retries after the merge are answered, never applied again.
    assert_eq!(f.write_async(keyed("k1", 10, now)).await.unwrap(), k1_here);
    let k2_here = f.write_async(keyed("k2", 11, now)).await.unwrap();
    assert_ne!(k2_here, k2, "the merged key answers with its Position here");
    assert!(matches!(
        f.write_async(keyed("k3", 12, now)).await,
        Err(TidalError::IdempotencyConflict { .. })
    ));
    check(&f, &model, "new leader after retries");

    // Again, and with a copy of the suffix: nothing changes.
    let again = f.reconcile().unwrap();
    assert_eq!(again.suffixes, 0, "{again:?}");
    let merged = f
        .status()
        .diverged
        .into_iter()
        .find(|d| d.merged)
        .unwrap()
        .path;
    let copy = merged.with_file_name("00000000000000000001-00000000000000000001-n9.batches");
    std::fs::copy(&merged, &copy).unwrap();
    let dup = f.reconcile().unwrap();
    assert_eq!(dup.suffixes, 1, "{dup:?}");
    assert!(!dup.merged.contains_key("session event"), "{dup:?}");
    assert_eq!(dup.already_here.get("session event"), Some(&4), "{dup:?}");
    let end = f.last_position();
    l.wait_for(end, Duration::from_secs(20)).await.unwrap();
    check(&f, &model, "new leader after a copy");
    check(&l, &model, "old leader after a copy");
    let options = tidal::inspect::InspectOptions::default();
    for dir in [fd.path(), ld.path()] {
        let report = tidal::inspect::inspect_dir(dir, options);
        assert!(report.damage.is_empty(), "{:?}", report.damage);
    }
}
