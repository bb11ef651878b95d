//! A second failover before the first reconciliation finished loses
//! nothing and counts nothing twice (DESIGN.md section 7).
//!
//! A leads epoch 1 and takes writes S1 that neither B nor C gets. B is
//! promoted (epoch 2) and does not reconcile (`auto_reconcile` off: the
//! first reconciliation has not finished when the next failover comes); A
//! rejoins B, is cut and hands S1 to B, which only holds it. B takes writes
//! W2 that reach C and writes W2' that do not, then fails. C is promoted
//! (epoch 3) and takes writes; B and A rejoin C. B hands C its own cut
//! suffix W2' and the S1 it still holds unmerged; A hands S1 too. C merges
//! them all (automatically), and every replica ends with exactly the
//! counts of a model that applied every acknowledged write once, with
//! session 1 gap-free and its merged events after C's.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::config;
use tidal::{
    EntityId, Epoch, InProcessTransport, NodeRole, Position, SessionId, TidalDb, Timestamp, UserId,
    WriteBatch,
};

const ENTITIES: u64 = 20;

type Model = BTreeMap<u64, i64>;

async fn write<R: tidal::Writable>(
    db: &TidalDb<R>,
    seed: u64,
    session_event: bool,
    model: &mut Model,
) -> Position {
    let now = Timestamp::now();
    let mut last = Position::default();
    for b in 0..5u64 {
        let mut batch = WriteBatch::new();
        for i in 0..8u64 {
            let x = seed * 1_000 + b * 8 + i;
            let e = (x * 7919) % ENTITIES;
            let w = if x.is_multiple_of(4) { -1.0 } else { 1.0 };
            batch = batch.signal("like", EntityId(e), w, now);
            *model.entry(e).or_default() += if w > 0.0 { 1 } else { -1 };
        }
        if session_event && b == 0 {
            let e = seed % ENTITIES;
            batch = batch.record_session_event(SessionId(1), EntityId(e), "like", 1.0, now);
            *model.entry(e).or_default() += 1;
        }
        last = db.write_async(batch).await.unwrap();
    }
    last
}

fn check<R: tidal::Role>(db: &TidalDb<R>, model: &Model, who: &str) {
    for e in 0..ENTITIES {
        assert_eq!(
            db.read_count(EntityId(e), "like").unwrap(),
            model.get(&e).copied().unwrap_or(0),
            "{who}: count of {e}"
        );
    }
}

async fn wait_merged(db: &TidalDb<tidal::Leader>, suffixes: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = db.status().diverged;
        if held.len() >= suffixes && held.iter().all(|d| d.merged) {
            return;
        }
        assert!(Instant::now() < deadline, "{held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_held_unmerged_reaches_the_next_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ad, bd, cd) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let mut model = Model::new();

    // Epoch 1: A leads; B and C get the first writes only.
    let t1 = InProcessTransport::new();
    let a = TidalDb::open_leader(config(ad, 1, NodeRole::Leader), t1.clone()).unwrap();
    let b = TidalDb::open_follower(config(bd, 2, NodeRole::Follower), t1.clone()).unwrap();
    let c = TidalDb::open_follower(config(cd, 3, NodeRole::Follower), t1.clone()).unwrap();
    a.open_session(SessionId(1), UserId(7), Timestamp::now())
        .unwrap();
    let shipped = write(&a, 1, true, &mut model).await;
    b.wait_for(shipped, Duration::from_secs(20)).await.unwrap();
    c.wait_for(shipped, Duration::from_secs(20)).await.unwrap();
    b.close().unwrap();
    c.close().unwrap();
    write(&a, 2, true, &mut model).await; // S1
    a.close().unwrap();

    // Epoch 2: B leads without reconciling; A hands it S1; C follows.
    let t2 = InProcessTransport::new();
    let mut b_config = config(bd, 2, NodeRole::Follower);
    b_config.auto_reconcile = false;
    let b = TidalDb::open_follower(b_config, t2.clone()).unwrap();
    let b = b.promote(Epoch(2)).unwrap();
    let c = TidalDb::open_follower(config(cd, 3, NodeRole::Follower), t2.clone()).unwrap();
    let a = TidalDb::open_follower(config(ad, 1, NodeRole::Follower), t2.clone()).unwrap();
    let w2 = write(&b, 3, true, &mut model).await;
    c.wait_for(w2, Duration::from_secs(20)).await.unwrap();
    a.wait_for(w2, Duration::from_secs(20)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.status().diverged.is_empty() {
        assert!(Instant::now() < deadline, "A never handed S1 over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.status().diverged.iter().all(|d| !d.merged));
    c.close().unwrap();
    a.close().unwrap();
    write(&b, 4, false, &mut model).await; // W2', never shipped
    b.close().unwrap();

    // Epoch 3: C leads; B and A rejoin and hand over what they hold.
    let t3 = InProcessTransport::new();
    let c = TidalDb::open_follower(config(cd, 3, NodeRole::Follower), t3.clone()).unwrap();
    let c = c.promote(Epoch(3)).unwrap();
    write(&c, 5, true, &mut model).await;
    let b = TidalDb::open_follower(config(bd, 2, NodeRole::Follower), t3.clone()).unwrap();
    let a = TidalDb::open_follower(config(ad, 1, NodeRole::Follower), t3.clone()).unwrap();
    // S1 (from B and from A) and W2' (from B).
    wait_merged(&c, 2).await;
    let end = c.last_position();
    b.wait_for(end, Duration::from_secs(20)).await.unwrap();
    a.wait_for(end, Duration::from_secs(20)).await.unwrap();
    check(&c, &model, "C");
    check(&b, &model, "B");
    check(&a, &model, "A");

    // Session 1: gap-free on every replica; the events of S1 come after
    // the ones C had, marked merged; the same everywhere.
    let events = c.session_events(SessionId(1), 1, 100);
    let seqs: Vec<u32> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u32).collect::<Vec<_>>());
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events.iter().map(|e| e.merged).collect::<Vec<_>>(),
        vec![false, false, false, true],
        "{events:?}"
    );
    assert_eq!(b.session_events(SessionId(1), 1, 100), events);
    assert_eq!(a.session_events(SessionId(1), 1, 100), events);

    // Nothing is left to merge, and merging again changes nothing.
    let again = c.reconcile().unwrap();
    assert_eq!(again.suffixes, 0, "{again:?}");
    check(&c, &model, "C again");
}
