//! Issue 6 item 7: top-k agrees with point reads taken at the same
//! Position. Writer threads ingest on a leader while reader threads, on
//! the leader and on a follower, take a top-k and the point reads of every
//! entity inside one `read_view`: every returned score is bit-equal to the
//! entity's point read, the top-k is exactly the k best of the point reads
//! of all entities (score descending, ties by id), every returned entity
//! has a signal count, and each reader's view position never goes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tidal::{
    ClusterConfig, Config, EntityId, ManualClock, NodeId, NodeRole, Position, ReadView, Retrieve,
    Role, SimStorage, TidalDb, Timestamp, WriteBatch,
};

const ENTITIES: u64 = 48;
const K: usize = 8;
const NOW: u64 = 1_700_000_000_000;
const WRITERS: u64 = 3;
const WRITES_PER_WRITER: u64 = 200;

fn config(dir: &str, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(60))
        .signal_type("view", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .storage(SimStorage::new())
        // Log time near the signals' times, so scores are far from underflow.
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap()
}

/// One consistent look: the top-k of `ty` and the point read of every
/// entity, all in one view.
struct Look {
    position: Position,
    top: Vec<(EntityId, u64)>,
    points: Vec<(EntityId, u64, i64)>,
}

fn look(v: &ReadView<'_>, ty: &str, at: Timestamp) -> Look {
    let top = v
        .retrieve(&Retrieve::top(K, ty, at))
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.score.to_bits()))
        .collect();
    let points = (0..ENTITIES)
        .map(|e| {
            let e = EntityId(e);
            (
                e,
                v.read_decay_score(e, ty, at).unwrap().to_bits(),
                v.read_count(e, ty).unwrap(),
            )
        })
        .collect();
    Look {
        position: v.position(),
        top,
        points,
    }
}

/// What a look must satisfy; `Err` says what differs.
fn check(l: &Look) -> Result<(), String> {
    // Weights are positive, so an entity holding a signal scores above 0.
    if let Some((e, _, _)) = l
        .points
        .iter()
        .find(|(_, bits, count)| (*count > 0) != (f64::from_bits(*bits) > 0.0))
    {
        return Err(format!("at {:?}: {e:?} has {:?}", l.position, l.points));
    }
    let mut best: Vec<(EntityId, u64)> = l
        .points
        .iter()
        .filter(|(_, _, count)| *count > 0)
        .map(|(e, bits, _)| (*e, *bits))
        .collect();
    best.sort_by(|a, b| {
        f64::from_bits(b.1)
            .total_cmp(&f64::from_bits(a.1))
            .then(a.0.cmp(&b.0))
    });
    best.truncate(K);
    if l.top != best {
        return Err(format!(
            "at {:?}: top-k {:?} but the point reads rank {:?}",
            l.position, l.top, best
        ));
    }
    Ok(())
}

fn reader<R: Role>(db: &TidalDb<R>, stop: &AtomicBool, looks: &AtomicU64) -> Result<(), String> {
    let mut last = Position::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let ty = if i.is_multiple_of(2) { "like" } else { "view" };
        let at = Timestamp(NOW + (i % 7) * 5_000);
        let l = db.read_view(|v| look(v, ty, at));
        check(&l)?;
        if l.position < last {
            return Err(format!("view went back from {last:?} to {:?}", l.position));
        }
        last = l.position;
        looks.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    // Once writes stop, a last look that sees them.
    let l = db.read_view(|v| look(v, "like", Timestamp(NOW)));
    check(&l)
}

#[test]
fn top_k_and_point_reads_in_one_view_agree_on_leader_and_follower() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _inside = rt.enter();
    let t = tidal::InProcessTransport::new();
    let leader =
        Arc::new(TidalDb::open_leader(config("/leader", 1, NodeRole::Leader), t.clone()).unwrap());
    let follower =
        Arc::new(TidalDb::open_follower(config("/follower", 2, NodeRole::Follower), t).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let looks = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (leader, follower, stop, looks) = (
                leader.clone(),
                follower.clone(),
                stop.clone(),
                looks.clone(),
            );
            std::thread::spawn(move || {
                if r % 2 == 0 {
                    reader(&leader, &stop, &looks)
                } else {
                    reader(&follower, &stop, &looks)
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let leader = leader.clone();
            std::thread::spawn(move || {
                let mut last = Position::default();
                for i in 0..WRITES_PER_WRITER {
                    // Spread over time so decay reorders entities, and over
                    // entities so the top-k keeps changing.
                    let e = (w * 17 + i * 7) % ENTITIES;
                    let at = Timestamp(NOW - 100_000 + (i * 331 + w * 97) % 100_000);
                    let weight = 0.25 + ((i + w) % 9) as f64;
                    let batch = WriteBatch::new()
                        .signal("like", EntityId(e), weight, at)
                        .signal("view", EntityId((e + 5) % ENTITIES), weight / 2.0, at)
                        .signal("like", EntityId((e + 11) % ENTITIES), 1.0, at);
                    last = leader.write(batch).unwrap();
                }
                last
            })
        })
        .collect();
    let last = writers
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    rt.block_on(follower.wait_for(last, Duration::from_secs(30)))
        .unwrap();
    stop.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap().unwrap();
    }
    assert!(
        looks.load(Ordering::Relaxed) >= 20,
        "{}",
        looks.load(Ordering::Relaxed)
    );
    // Both nodes end with the same answers, in one view each.
    let at = Timestamp(NOW);
    let l = leader.read_view(|v| look(v, "like", at));
    let f = follower.read_view(|v| look(v, "like", at));
    assert_eq!(l.position, f.position);
    assert_eq!(l.top.len(), K);
    assert_eq!((l.top, l.points), (f.top, f.points));
}
