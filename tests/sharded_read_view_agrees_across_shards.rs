//! `ShardedDb::read_view` holds one published state per shard for the
//! whole closure: while writers ingest on every shard, a merged top-k and
//! the point reads of every entity taken in one sharded view agree bit for
//! bit (the top-k is exactly the k best of the point reads, ties by id),
//! and no shard's position in successive views goes back. Separate calls
//! (a `retrieve` then point reads) give no such promise while writes land.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tidal::{
    Config, EntityId, ManualClock, Position, Retrieve, ShardedDb, ShardedReadView, SimStorage,
    Single, Timestamp, WriteBatch,
};

const SHARDS: u32 = 3;
const ENTITIES: u64 = 60;
const K: usize = 10;
const NOW: u64 = 1_700_000_000_000;

fn look(v: &ShardedReadView<'_, Single>, at: Timestamp) -> Result<Vec<Position>, String> {
    let top: Vec<(EntityId, u64)> = v
        .retrieve(&Retrieve::top(K, "like", at))
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.id, s.score.to_bits()))
        .collect();
    let mut best: Vec<(EntityId, u64)> = Vec::new();
    for e in (0..ENTITIES).map(EntityId) {
        let score = v
            .read_decay_score(e, "like", at)
            .map_err(|e| e.to_string())?;
        let count = v.read_count(e, "like").map_err(|e| e.to_string())?;
        if (count > 0) != (score > 0.0) {
            return Err(format!("{e:?}: count {count}, score {score}"));
        }
        if count > 0 {
            best.push((e, score.to_bits()));
        }
    }
    best.sort_by(|a, b| {
        f64::from_bits(b.1)
            .total_cmp(&f64::from_bits(a.1))
            .then(a.0.cmp(&b.0))
    });
    best.truncate(K);
    if top != best {
        return Err(format!("top-k {top:?} but the point reads rank {best:?}"));
    }
    Ok(v.positions())
}

#[test]
fn a_merged_top_k_and_point_reads_in_one_sharded_view_agree() {
    let base = Config::builder("/sharded")
        .signal_type("like", Duration::from_secs(60))
        .storage(SimStorage::new())
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap();
    let db = Arc::new(ShardedDb::open(base, SHARDS).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let looks = Arc::new(AtomicU64::new(0));
    let reader = {
        let (db, stop, looks) = (db.clone(), stop.clone(), looks.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut last = vec![Position::default(); SHARDS as usize];
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let at = Timestamp(NOW + (i % 5) * 7_000);
                let positions = db.read_view(|v| look(v, at))?;
                if positions
                    .iter()
                    .zip(&last)
                    .any(|(now, before)| now < before)
                {
                    return Err(format!("a shard went back: {last:?} -> {positions:?}"));
                }
                last = positions;
                looks.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            db.read_view(|v| look(v, Timestamp(NOW))).map(drop)
        })
    };
    // Batches touching every shard, with weights that make ties and
    // reorderings frequent.
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..150u64 {
                    let mut b = WriteBatch::new();
                    for j in 0..6u64 {
                        let e = (w * 31 + i * 7 + j * 11) % ENTITIES;
                        let weight = 1.0 + ((i + j) % 3) as f64;
                        b = b.signal("like", EntityId(e), weight, Timestamp(NOW + i * 100));
                    }
                    db.write(b).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // Let the reader take a few looks after the last write too.
    let seen = looks.load(Ordering::Relaxed);
    while looks.load(Ordering::Relaxed) < seen + 3 && !reader.is_finished() {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Release);
    reader.join().unwrap().unwrap();
    assert!(looks.load(Ordering::Relaxed) > 3, "the reader looked");
    // Every shard took writes, so the check spanned shards.
    db.read_view(|v| {
        for p in v.positions() {
            assert!(p.seqno.0 > 0, "{:?}", v.positions());
        }
    });
}
