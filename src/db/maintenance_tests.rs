//! Backups taken while a writer moves entries between buckets and grows
//! the tables, with the snapshot's copy in slices of 8 slots (`cfg(test)`
//! in `state::score_slots`): each backup opens with exactly the counts and
//! scores of the batches at or below its position. This checks the wiring
//! (which copy is read, slice by slice, under which lock); how the slices
//! interleave with the writer's batches is up to the scheduler here (with
//! the copy-before-write save removed, 1 run in 3 failed), so the
//! deterministic check of the save is `state::copy_tests`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Config, EntityId, ManualClock, Position, SimStorage, TidalDb, Timestamp, WriteBatch};

const NOW: u64 = 1_700_000_000_000;

/// A batch's signals: (entity, type index, weight).
type Signals = Vec<(u64, usize, f64)>;

fn open(dir: &str, storage: &Arc<SimStorage>, clock: &Arc<ManualClock>) -> TidalDb {
    TidalDb::open(
        Config::builder(dir)
            .signal_type("like", Duration::from_secs(3_600))
            .signal_type("view", Duration::from_secs(60))
            .storage(storage.clone())
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Batch `i`: 20 signals over a range of entities that grows with `i`
/// (so tables grow during backups), weights that move entries across
/// buckets, both types.
fn batch(i: u64, at: Timestamp) -> (WriteBatch, Signals) {
    let sigs: Signals = (0..20u64)
        .map(|j| {
            let e = (i * 7 + j * 13) % (50 + i * 3);
            let w = if j % 5 == 0 {
                -1.0
            } else {
                (1 + (i + j) % 9) as f64
            };
            (e, (j % 2) as usize, w)
        })
        .collect();
    let b = sigs.iter().fold(WriteBatch::new(), |b, &(e, t, w)| {
        b.signal(["like", "view"][t], EntityId(e), w, at)
    });
    (b, sigs)
}

#[test]
fn backups_during_writes_hold_the_state_at_their_position_across_many_slices() {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let db = Arc::new(open("/db", &storage, &clock));
    let at = Timestamp(NOW);
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<(Position, Signals)>>> = Arc::default();
    let writer = {
        let (db, stop, log) = (db.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) || i < 300 {
                let (b, sigs) = batch(i, at);
                let p = db.write(b).unwrap();
                log.lock().unwrap().push((p, sigs));
                i += 1;
            }
        })
    };
    let mut backups = Vec::new();
    for k in 0..6 {
        while log.lock().unwrap().len() < 50 + k * 40 {
            std::thread::yield_now();
        }
        let dir = format!("/backup-{k}");
        backups.push((dir.clone(), db.backup(&dir).unwrap()));
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let log = log.lock().unwrap().clone();
    for (dir, pos) in &backups {
        // (entity, type) -> (count, sum of weights): every weight lands at
        // the same time, so the score is the sum.
        let mut want: BTreeMap<(u64, usize), (i64, f64)> = BTreeMap::new();
        for (p, sigs) in &log {
            if p.seqno <= pos.seqno {
                for &(e, t, w) in sigs {
                    let c = want.entry((e, t)).or_default();
                    c.0 += if w > 0.0 { 1 } else { -1 };
                    c.1 += w;
                }
            }
        }
        assert!(log.iter().any(|(p, _)| p.seqno > pos.seqno), "{dir}");
        let b = open(dir, &storage, &clock);
        assert_eq!(b.last_position(), *pos, "{dir}");
        for (&(e, t), &(count, sum)) in &want {
            let name = ["like", "view"][t];
            assert_eq!(
                b.read_count(EntityId(e), name).unwrap(),
                count,
                "{dir} {e} {name}"
            );
            let score = b.read_decay_score(EntityId(e), name, at).unwrap();
            assert!(
                (score - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{dir} {e} {name}: {score} vs {sum}"
            );
        }
    }
}
