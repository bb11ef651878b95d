//! A crash in the middle of a reconciliation loses nothing and counts
//! nothing twice (DESIGN.md section 7).
//!
//! A new leader F holds the unmerged suffix of its old leader L (signals,
//! metadata, an embedding, a delete, session events, a keyed request). On
//! copies of F's directory in a `SimStorage`, the reconciliation is made to
//! fail at every log write and every log sync in turn (the database
//! poisons itself), and at the rename that marks the suffix merged; the
//! storage then crashes, dropping everything not synced, F reopens and
//! reconciles again. Every run ends in exactly the state (counts, score
//! bits, metadata, sessions) of a reconciliation that never crashed, and a
//! third reconciliation finds nothing left to merge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::storage::{CrashMode, FaultKind, Storage};
use tidal::{
    ClusterConfig, Config, Durability, EntityId, Epoch, InProcessTransport, Limits, NodeId,
    NodeRole, SessionId, SimStorage, TidalDb, Timestamp, UserId, WriteBatch,
};

const ENTITIES: u64 = 48;

fn config(dir: &str, node: u64, role: NodeRole, sim: &Arc<SimStorage>) -> Config {
    let limits = Limits {
        // Many small merge batches: many places to crash.
        max_batch_records: 16,
        ..Limits::default()
    };
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .dimension(2)
        .limits(limits)
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        // Small segments: each crash point copies the directory.
        .segment_bytes(64 * 1024)
        .auto_reconcile(false)
        .storage(sim.clone())
        .build()
        .unwrap()
}

/// Everything a reader can see that reconciliation changes.
fn observe<R: tidal::Role>(db: &TidalDb<R>) -> String {
    let mut out = String::new();
    for e in 0..ENTITIES {
        let id = EntityId(e);
        let count = db.read_count(id, "like").unwrap();
        let score = db.read_decay_score(id, "like", Timestamp(0)).unwrap();
        let mut meta: Vec<_> = db
            .get_item(id)
            .map(|i| i.metadata.into_iter().collect())
            .unwrap_or_default();
        meta.sort();
        out += &format!("{e}: {count} {:016x} {meta:?}\n", score.to_bits());
    }
    for s in 1..=3 {
        let events: Vec<_> = db
            .session_events(SessionId(s), 1, 100)
            .into_iter()
            .map(|e| (e.seq, e.entity.0, e.merged))
            .collect();
        out += &format!("s{s}: {:?} {events:?}\n", db.session(SessionId(s)));
    }
    out += &format!("keys {}\n", db.status().idempotency_keys);
    out
}

/// Copies every file under `from` to `to`, durably.
fn copy_dir(sim: &SimStorage, from: &Path, to: &Path) {
    for name in sim.list_dir(from).unwrap() {
        let (src, dst) = (from.join(&name), to.join(&name));
        match sim.read(&src) {
            Some(bytes) => sim.write_raw(&dst, &bytes),
            None => copy_dir(sim, &src, &dst),
        }
    }
}

/// Builds `/f`: a new leader holding its old leader's unmerged suffix.
async fn new_leader_with_a_suffix(sim: &Arc<SimStorage>) {
    let now = Timestamp::now();
    let t1 = InProcessTransport::new();
    let l = TidalDb::open_leader(config("/l", 1, NodeRole::Leader, sim), t1.clone()).unwrap();
    let f = TidalDb::open_follower(config("/f", 2, NodeRole::Follower, sim), t1.clone()).unwrap();
    let b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "a")])
        .open_session(SessionId(1), UserId(7), now);
    l.write_async(b).await.unwrap();
    let shipped = signals(&l, 1.0, ENTITIES, now).await;
    f.wait_for(shipped, Duration::from_secs(20)).await.unwrap();
    f.close().unwrap();
    let b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "L"), ("color", "red")])
        .write_item_embedding(EntityId(2), &[1.0, 0.0])
        .delete_item(EntityId(3))
        .record_session_event(SessionId(1), EntityId(4), "like", 1.0, now)
        .record_session_event(SessionId(1), EntityId(5), "like", -1.0, now)
        .open_session(SessionId(2), UserId(8), now)
        .record_session_event(SessionId(2), EntityId(6), "like", 1.0, now)
        .close_session(SessionId(2), now);
    l.write_async(b).await.unwrap();
    signals(&l, 2.0, ENTITIES, now).await;
    let keyed = WriteBatch::new()
        .idempotency_key("k")
        .signal("like", EntityId(7), 3.0, now);
    l.write_async(keyed).await.unwrap();
    l.close().unwrap();

    let t2 = InProcessTransport::new();
    let f = TidalDb::open_follower(config("/f", 2, NodeRole::Follower, sim), t2.clone()).unwrap();
    let f = f.promote(Epoch(2)).unwrap();
    let b = WriteBatch::new()
        .write_item(EntityId(1), None, &[("title", "F")])
        .record_session_event(SessionId(1), EntityId(8), "like", 1.0, now);
    f.write_async(b).await.unwrap();
    signals(&f, -1.0, ENTITIES / 2, now).await;
    let l = TidalDb::open_follower(config("/l", 1, NodeRole::Follower, sim), t2.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.status().diverged.iter().all(|d| d.merged) {
        assert!(Instant::now() < deadline, "no suffix handed over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(l);
    f.close().unwrap();
}

/// One signal of weight `w` for each of the first `n` entities, in
/// writes of 8.
async fn signals<R: tidal::Writable>(
    db: &TidalDb<R>,
    w: f64,
    n: u64,
    now: Timestamp,
) -> tidal::Position {
    let mut last = tidal::Position::default();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let mut b = WriteBatch::new();
        for e in chunk {
            b = b.signal("like", EntityId(*e), w, now);
        }
        last = db.write_async(b).await.unwrap();
    }
    last
}

fn open(dir: &str, sim: &Arc<SimStorage>) -> TidalDb<tidal::Leader> {
    TidalDb::open_leader(
        config(dir, 2, NodeRole::Leader, sim),
        InProcessTransport::new(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_ends_in_the_same_state() {
    let sim = SimStorage::new();
    new_leader_with_a_suffix(&sim).await;

    // The reference: a reconciliation that never crashes.
    copy_dir(&sim, Path::new("/f"), Path::new("/ref"));
    let db = open("/ref", &sim);
    let before = observe(&db);
    let syncs = sim.sync_count();
    let report = db.reconcile().unwrap();
    let syncs = sim.sync_count() - syncs;
    assert_eq!(report.suffixes, 1, "{report:?}");
    assert!(
        report.contributions > 3 && !report.merged.is_empty(),
        "{report:?}"
    );
    let expected = observe(&db);
    assert_ne!(before, expected, "the suffix changes the state");
    assert_eq!(db.reconcile().unwrap().suffixes, 0);
    db.close().unwrap();

    // Crash at every log sync and write in turn, and at the rename.
    let mut faults: Vec<(FaultKind, u64)> = Vec::new();
    for k in 0..syncs {
        faults.push((FaultKind::SyncData, k));
        faults.push((FaultKind::Write, k));
    }
    faults.push((FaultKind::Rename, 0));
    let mut crashed = 0;
    for (i, (kind, k)) in faults.into_iter().enumerate() {
        let dir = format!("/c{i}");
        copy_dir(&sim, Path::new("/f"), &PathBuf::from(&dir));
        let db = open(&dir, &sim);
        let path = if kind == FaultKind::Rename {
            "diverged"
        } else {
            dir.as_str()
        };
        sim.fail_after(k, kind, path);
        let first = db.reconcile();
        sim.clear_faults();
        if first.is_err() {
            crashed += 1;
        }
        drop(db);
        sim.crash(CrashMode::DropUnsynced);
        let db = open(&dir, &sim);
        let again = db.reconcile().unwrap();
        assert!(again.damaged.is_empty(), "{kind:?} {k}: {again:?}");
        assert_eq!(
            observe(&db),
            expected,
            "{kind:?} after {k}: first run {first:?}, rerun {again:?}"
        );
        assert_eq!(db.reconcile().unwrap().suffixes, 0, "{kind:?} {k}");
        db.close().unwrap();
    }
    assert!(
        crashed as u64 >= syncs,
        "the faults interrupted {crashed} runs"
    );
    eprintln!("{crashed} reconciliations interrupted; one makes {syncs} syncs");
}
