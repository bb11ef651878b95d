//! Failover with reconciliation (DESIGN.md section 7): leader L takes
//! writes its follower F never gets; F is promoted (epoch 2) and takes
//! writes; L comes back with `open_follower`, cuts its suffix, hands it to
//! F, which merges it (automatically) as `Merge` records that replicate
//! back to L. Every replica ends with exactly the counts of a model that
//! applied every acknowledged write once, and scores within the documented
//! precision of it. Merging the same suffix again (as if another replica
//! sent a copy) changes nothing, also after a checkpoint and a reopen, which
//! shows the merged contributions are kept in snapshots.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::config;
use tidal::{
    EntityId, Epoch, InProcessTransport, NodeRole, Position, TidalDb, Timestamp, WriteBatch,
};

const ENTITIES: u64 = 40;

type Model = BTreeMap<(u64, &'static str), (i64, f64, f64)>;

/// Writes `n` batches of mixed likes and skips and records them in `model`
/// (count, signed sum of decayed weights at `read`, sum of |w| decayed).
async fn write<R: tidal::Writable>(
    db: &TidalDb<R>,
    seed: u64,
    n: u64,
    now: Timestamp,
    read: Timestamp,
    model: &mut Model,
) -> Position {
    let mut last = Position::default();
    for b in 0..n {
        let mut batch = WriteBatch::new();
        for i in 0..10u64 {
            let x = seed * 1_000 + b * 10 + i;
            let e = (x * 7919) % ENTITIES;
            let ty = if x.is_multiple_of(3) { "view" } else { "like" };
            let w = if x.is_multiple_of(5) {
                -0.5
            } else {
                1.0 + (x % 4) as f64
            };
            let at = Timestamp(now.0 - (x % 17) * 60_000);
            batch = batch.signal(ty, EntityId(e), w, at);
            let h = if ty == "like" { 3_600_000.0 } else { 600_000.0 };
            let decay = (-((read.0 - at.0) as f64) / h).exp2();
            let cell = model.entry((e, ty)).or_insert((0, 0.0, 0.0));
            cell.0 += if w > 0.0 { 1 } else { -1 };
            cell.1 += w * decay;
            cell.2 += w.abs() * decay;
        }
        last = db.write_async(batch).await.unwrap();
    }
    last
}

fn assert_model<R: tidal::Role>(db: &TidalDb<R>, model: &Model, read: Timestamp, who: &str) {
    for ((e, ty), (count, score, mass)) in model {
        assert_eq!(
            db.read_count(EntityId(*e), ty).unwrap(),
            *count,
            "{who}: count of {e} {ty}"
        );
        let got = db.read_decay_score(EntityId(*e), ty, read).unwrap();
        assert!(
            (got - score).abs() <= 1e-9 * mass.max(1e-300),
            "{who}: score of {e} {ty}: {got} vs {score}"
        );
    }
}

fn counts<R: tidal::Role>(db: &TidalDb<R>) -> Vec<(i64, u64)> {
    let now = Timestamp(0);
    (0..ENTITIES)
        .flat_map(|e| {
            ["like", "view"].map(|ty| {
                (
                    db.read_count(EntityId(e), ty).unwrap(),
                    db.read_decay_score(EntityId(e), ty, now).unwrap().to_bits(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leaders_unshipped_writes_are_merged_exactly_once() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Timestamp::now();
    let read = Timestamp(now.0 + 1_000);
    let mut model = Model::new();
    let t1 = InProcessTransport::new();
    let l = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t1.clone()).unwrap();
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t1.clone()).unwrap();
    let shipped = write(&l, 1, 20, now, read, &mut model).await;
    f.wait_for(shipped, Duration::from_secs(20)).await.unwrap();
    f.close().unwrap();
    // Acknowledged by L, never shipped: this is what reconciliation saves.
    write(&l, 2, 15, now, read, &mut model).await;
    l.close().unwrap();

    // F is promoted to epoch 2 on a new transport and takes writes.
    let t2 = InProcessTransport::new();
    let f = TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t2.clone()).unwrap();
    let f = f.promote(Epoch(2)).unwrap();
    write(&f, 3, 15, now, read, &mut model).await;

    // L comes back as F's follower: cut, handed over, merged, replicated.
    let l = TidalDb::open_follower(config(ld.path(), 1, NodeRole::Follower), t2.clone()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while f.status().last_reconcile.is_none_or(|r| r.suffixes == 0) {
        assert!(std::time::Instant::now() < deadline, "{:?}", f.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = f.status().last_reconcile.unwrap();
    assert_eq!(report.signals, 150, "{report:?}");
    assert!(
        report.contributions > 0 && report.damaged.is_empty(),
        "{report:?}"
    );
    let end = f.last_position();
    l.wait_for(end, Duration::from_secs(20)).await.unwrap();
    assert_model(&f, &model, read, "new leader");
    assert_model(&l, &model, read, "old leader");
    assert_eq!(counts(&f), counts(&l));
    let held = f.status().diverged;
    assert!(
        held.iter().all(|d| d.merged) && !held.is_empty(),
        "{held:?}"
    );

    // The inspection tool sees the merged suffix on the new leader and the
    // epoch the old leader was told of, and no damage on either.
    let options = tidal::inspect::InspectOptions::default();
    let new_dir = tidal::inspect::inspect_dir(fd.path(), options);
    assert!(new_dir.damage.is_empty(), "{:?}", new_dir.damage);
    assert!(new_dir.diverged.iter().all(|d| d.merged) && !new_dir.diverged.is_empty());
    let old_dir = tidal::inspect::inspect_dir(ld.path(), options);
    assert!(old_dir.damage.is_empty(), "{:?}", old_dir.damage);
    assert_eq!(old_dir.highest_epoch_seen, Some(Epoch(2)));

    // Reconciling again merges nothing new.
    let again = f.reconcile().unwrap();
    assert_eq!((again.suffixes, again.contributions), (0, 0));
    // The same suffix arriving once more (a copy from another replica)
    // is merged, and changes nothing.
    let before = counts(&f);
    let merged = &held[0].path;
    let copy = merged.with_file_name("00000000000000000001-00000000000000000001-n9.batches");
    std::fs::copy(merged, &copy).unwrap();
    let dup = f.reconcile().unwrap();
    assert_eq!(dup.suffixes, 1, "{dup:?}");
    assert_eq!(counts(&f), before);

    // After a checkpoint and a reopen the contributions are still known:
    // one more copy still changes nothing.
    f.checkpoint().unwrap();
    drop(l);
    f.close().unwrap();
    let f = TidalDb::open_leader(config(fd.path(), 2, NodeRole::Leader), t2.clone()).unwrap();
    assert_eq!(counts(&f), before);
    let copy = merged.with_file_name("00000000000000000001-00000000000000000001-n8.batches");
    std::fs::copy(merged, &copy).unwrap();
    assert_eq!(f.reconcile().unwrap().suffixes, 1);
    assert_eq!(counts(&f), before);
    assert_model(&f, &model, read, "reopened leader");
}
