//! Failover over TCP loopback with overlapping diverged suffixes from two
//! replicas. Leader L has followers F1 and F2. F1 stops first; F2 gets a
//! few more batches (W2) and stops; L takes more (W3) and stops. F1 is
//! promoted (epoch 2, on a new listener) and takes W4. F2 rejoins and
//! hands over W2; L rejoins and hands over W2 + W3: both suffixes are of
//! the same origin (epoch 1, led by L), the second a longer prefix of the
//! first. Every replica ends with exactly the counts of a model applying
//! W1..W4 once: W2 is not counted twice.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::config;
use tidal::{
    EntityId, Epoch, NodeRole, Position, TcpOptions, TcpTransport, TidalDb, Timestamp, Transport,
    WriteBatch,
};

const SECRET: &[u8] = b"overlapping suffixes secret, 32b";
const ENTITIES: u64 = 30;

type Model = BTreeMap<(u64, &'static str), i64>;

async fn write<R: tidal::Writable>(
    db: &TidalDb<R>,
    seed: u64,
    n: u64,
    now: Timestamp,
    model: &mut Model,
) -> Position {
    let mut last = Position::default();
    for b in 0..n {
        let mut batch = WriteBatch::new();
        for i in 0..8u64 {
            let x = seed * 10_000 + b * 8 + i;
            let e = (x * 31) % ENTITIES;
            let ty = if x.is_multiple_of(4) { "view" } else { "like" };
            let w = if x.is_multiple_of(7) { -1.0 } else { 1.0 };
            batch = batch.signal(ty, EntityId(e), w, now);
            *model.entry((e, ty)).or_default() += if w > 0.0 { 1 } else { -1 };
        }
        last = db.write_async(batch).await.unwrap();
    }
    last
}

fn assert_counts<R: tidal::Role>(db: &TidalDb<R>, model: &Model, who: &str) {
    for e in 0..ENTITIES {
        for ty in ["like", "view"] {
            assert_eq!(
                db.read_count(EntityId(e), ty).unwrap(),
                model.get(&(e, ty)).copied().unwrap_or(0),
                "{who}: {e} {ty}"
            );
        }
    }
}

fn connector(addr: &str) -> Arc<dyn Transport> {
    TcpTransport::connector(addr.to_string(), SECRET, TcpOptions::default()).unwrap()
}

async fn merged_suffixes<R: tidal::Role>(db: &TidalDb<R>, want: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let merged = db.status().diverged.iter().filter(|d| d.merged).count();
        if merged >= want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", db.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_suffixes_of_one_origin_are_counted_once() {
    let (ld, d1, d2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let now = Timestamp::now();
    let mut model = Model::new();
    let l_listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let l_addr = l_listener.local_addr().unwrap().to_string();
    let l = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), l_listener).unwrap();
    let f1 = TidalDb::open_follower(config(d1.path(), 2, NodeRole::Follower), connector(&l_addr))
        .unwrap();
    let f2 = TidalDb::open_follower(config(d2.path(), 3, NodeRole::Follower), connector(&l_addr))
        .unwrap();
    let w1 = write(&l, 1, 10, now, &mut model).await;
    f1.wait_for(w1, Duration::from_secs(20)).await.unwrap();
    f2.wait_for(w1, Duration::from_secs(20)).await.unwrap();
    f1.close().unwrap();
    let w2 = write(&l, 2, 6, now, &mut model).await;
    f2.wait_for(w2, Duration::from_secs(20)).await.unwrap();
    f2.close().unwrap();
    write(&l, 3, 6, now, &mut model).await;
    l.close().unwrap();

    // F1 becomes the leader of epoch 2 on a new port and takes W4.
    let f1 = TidalDb::open_follower(config(d1.path(), 2, NodeRole::Follower), connector(&l_addr))
        .unwrap();
    let n_listener = TcpTransport::bind("127.0.0.1:0", SECRET, TcpOptions::default()).unwrap();
    let n_addr = n_listener.local_addr().unwrap().to_string();
    let n = f1.promote_on(Epoch(2), n_listener).unwrap();
    write(&n, 4, 6, now, &mut model).await;

    // F2 rejoins with W2, then L with W2 + W3.
    let f2 = TidalDb::open_follower(config(d2.path(), 3, NodeRole::Follower), connector(&n_addr))
        .unwrap();
    merged_suffixes(&n, 1).await;
    let l = TidalDb::open_follower(config(ld.path(), 1, NodeRole::Follower), connector(&n_addr))
        .unwrap();
    merged_suffixes(&n, 2).await;
    let report = n.status().last_reconcile.unwrap();
    assert_eq!(report.signals, 12 * 8, "the longer suffix: {report:?}");

    let end = n.last_position();
    f2.wait_for(end, Duration::from_secs(30)).await.unwrap();
    l.wait_for(end, Duration::from_secs(30)).await.unwrap();
    assert_counts(&n, &model, "new leader");
    assert_counts(&f2, &model, "F2");
    assert_counts(&l, &model, "old leader");
    // The two suffixes share their origin key.
    let held = n.status().diverged;
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|d| d.epoch == Epoch(1) && d.first == held[0].first)
    );
}
