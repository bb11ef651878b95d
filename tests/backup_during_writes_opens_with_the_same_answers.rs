//! `backup(dir)` writes a consistent copy while a writer thread keeps
//! writing. Opening each backup gives exactly the state at the Position
//! `backup` returned: a model of the writes acknowledged at or below that
//! Position (signal counts, items, sessions and their event counts) matches,
//! and `last_position()` is that Position. Writes then continue on the
//! backup and survive its reopen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal::{
    Config, EntityId, ManualClock, Position, SessionId, SimStorage, TidalDb, Timestamp, UserId,
    WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const ENTITIES: u64 = 30;

fn open(dir: &str, storage: &Arc<SimStorage>, clock: &Arc<ManualClock>) -> TidalDb {
    TidalDb::open(
        Config::builder(dir)
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(8192)
            .storage(storage.clone())
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("open {dir}: {e}"))
}

#[derive(Clone, Debug)]
enum Op {
    Signal(u64, i64),
    Item(u64, String),
    OpenSession(u64),
    Event(u64, u64),
    Batch(Vec<(u64, i64)>),
}

#[derive(Debug, Default, PartialEq)]
struct Model {
    counts: BTreeMap<u64, i64>,
    items: BTreeMap<u64, String>,
    sessions: BTreeMap<u64, u32>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Signal(e, w) => *self.counts.entry(*e).or_default() += w.signum(),
            Op::Item(e, v) => {
                self.items.insert(*e, v.clone());
            }
            Op::OpenSession(s) => {
                self.sessions.insert(*s, 0);
            }
            Op::Event(s, e) => {
                *self.sessions.get_mut(s).unwrap() += 1;
                *self.counts.entry(*e).or_default() += 1;
            }
            Op::Batch(sigs) => {
                for (e, w) in sigs {
                    *self.counts.entry(*e).or_default() += w.signum();
                }
            }
        }
        self.counts.retain(|_, c| *c != 0);
    }
}

fn state(db: &TidalDb, sessions: u64) -> Model {
    let mut m = Model::default();
    for e in 0..ENTITIES {
        let c = db.read_count(EntityId(e), "like").unwrap();
        if c != 0 {
            m.counts.insert(e, c);
        }
    }
    for e in 100..120 {
        if let Some(item) = db.get_item(EntityId(e)) {
            m.items.insert(e, item.metadata["v"].clone());
        }
    }
    for s in 0..sessions {
        if let Some(info) = db.session(SessionId(s)) {
            assert_eq!(
                db.session_events(SessionId(s), 1, 10_000).len() as u32,
                info.event_count
            );
            m.sessions.insert(s, info.event_count);
        }
    }
    m
}

/// The `i`th write of the writer thread, and what it does to the model.
fn write(db: &TidalDb, i: u64) -> (Position, Op) {
    let at = Timestamp(NOW);
    let e = (i * 7) % ENTITIES;
    let s = i / 20;
    let op = match i % 4 {
        0 => Op::Signal(e, if i.is_multiple_of(3) { -1 } else { 1 }),
        1 => Op::Item(100 + i % 20, format!("v{i}")),
        2 if (i / 4).is_multiple_of(5) => Op::OpenSession(s),
        2 => Op::Event(s, e),
        _ => Op::Batch(vec![
            (e, 1),
            ((e + 1) % ENTITIES, -1),
            ((e + 2) % ENTITIES, 1),
        ]),
    };
    let p = match &op {
        Op::Signal(e, w) => db.signal("like", EntityId(*e), *w as f64, at),
        Op::Item(e, v) => db.write_item(EntityId(*e), None, &[("v", v)]),
        Op::OpenSession(s) => db.open_session(SessionId(*s), UserId(*s), at),
        Op::Event(s, e) => db.record_session_event(SessionId(*s), EntityId(*e), "like", 1.0, at),
        Op::Batch(sigs) => db.write(sigs.iter().fold(WriteBatch::new(), |b, (e, w)| {
            b.signal("like", EntityId(*e), *w as f64, at)
        })),
    };
    (p.unwrap_or_else(|e| panic!("write {i}: {e}")), op)
}

#[test]
fn backups_taken_during_writes_open_with_the_state_at_their_position() {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let db = Arc::new(open("/db", &storage, &clock));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<(Position, Op)>>> = Arc::default();

    let writer = {
        let (db, done, stop, log, clock) = (
            db.clone(),
            done.clone(),
            stop.clone(),
            log.clone(),
            clock.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let w = write(&db, i);
                log.lock().unwrap().push(w);
                clock.advance_ms(1);
                i += 1;
                done.store(i as usize, Ordering::Release);
            }
        })
    };
    let wait_for = |n: usize| {
        while done.load(Ordering::Acquire) < n {
            std::thread::yield_now();
        }
    };

    // Each backup waits for 400 writes after the previous one returned, so
    // writes go on before, during and after every backup.
    let mut backups = Vec::new();
    let mut next = 400;
    for k in 0..4 {
        wait_for(next);
        let dir = format!("/backup-{k}");
        if k == 2 {
            db.checkpoint().unwrap(); // a backup right after a checkpoint too
        }
        let p = db.backup(&dir).unwrap();
        backups.push((dir, p));
        next = done.load(Ordering::Acquire) + 400;
    }
    wait_for(next);
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let log = log.lock().unwrap().clone();
    let sessions = log.len() as u64 / 20 + 1;

    // The source itself matches the model of every write.
    let mut all = Model::default();
    log.iter().for_each(|(_, op)| all.apply(op));
    assert_eq!(state(&db, sessions), all);

    // A backup into a directory that is not empty is refused.
    assert!(db.backup("/backup-0").is_err());

    for (dir, at) in &backups {
        let mut want = Model::default();
        for (p, op) in &log {
            if p.seqno <= at.seqno {
                want.apply(op);
            }
        }
        assert!(
            log.iter().any(|(p, _)| p.seqno > at.seqno),
            "{dir}: writes went on after the backup"
        );
        let b = open(dir, &storage, &clock);
        assert_eq!(b.last_position(), *at, "{dir}");
        assert_eq!(state(&b, sessions), want, "{dir}");

        // Writes continue on the backup, and survive its reopen.
        let p = b.signal("like", EntityId(0), 1.0, Timestamp(NOW)).unwrap();
        assert_eq!(p.seqno, at.seqno.next(), "{dir}");
        want.apply(&Op::Signal(0, 1));
        b.close().unwrap();
        let b = open(dir, &storage, &clock);
        assert_eq!(b.last_position(), p, "{dir}");
        assert_eq!(state(&b, sessions), want, "{dir}");
        b.close().unwrap();
    }
    Arc::try_unwrap(db).unwrap().close().unwrap();
}
