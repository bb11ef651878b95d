//! Crashes through the storage seam that throw away what was not synced
//! (all of it, a torn prefix of it, or a random subset of its pages): under
//! `Durability::Sync` every acknowledged write survives, and the reopened
//! state equals a model of the acknowledged writes. Segments are small so
//! crashes also land around segment rolls and checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tidal::storage::CrashMode;
use tidal::{
    Config, EntityId, ManualClock, SessionId, SimStorage, TidalDb, Timestamp, UserId, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;

fn open(storage: &Arc<SimStorage>, clock: &Arc<ManualClock>) -> TidalDb {
    let config = Config::builder("/data/db")
        .signal_type("like", Duration::from_secs(3_600))
        .dimension(2)
        .segment_bytes(8 * 1024)
        .snapshot_every_bytes(16 * 1024)
        .storage(storage.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    TidalDb::open(config).expect("reopen after a crash must succeed")
}

#[derive(Clone, Debug)]
enum Op {
    Signal(u64, i8),
    Batch(Vec<(u64, i8)>),
    Item(u64, u8),
    OpenSession(u64),
    Event(u64, u64),
    Checkpoint,
    Crash(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..40u64, -2..3i8).prop_map(|(e, w)| Op::Signal(e, w)),
        2 => prop::collection::vec((0..40u64, -2..3i8), 1..30).prop_map(Op::Batch),
        2 => (100..120u64, 0..4u8).prop_map(|(e, v)| Op::Item(e, v)),
        1 => (0..10u64).prop_map(Op::OpenSession),
        2 => (0..10u64, 0..40u64).prop_map(|(s, e)| Op::Event(s, e)),
        1 => Just(Op::Checkpoint),
        1 => (0..3u8, any::<u64>()).prop_map(|(m, s)| Op::Crash(m, s)),
    ]
}

#[derive(Default, Debug)]
struct Model {
    counts: BTreeMap<u64, i64>,
    items: BTreeMap<u64, u8>,
    sessions: BTreeMap<u64, u32>,
}

fn sign(w: i8) -> i64 {
    i64::from(w.signum())
}

fn check(db: &TidalDb, m: &Model) {
    for e in 0..40 {
        let want = m.counts.get(&e).copied().unwrap_or(0);
        assert_eq!(
            db.read_count(EntityId(e), "like").unwrap(),
            want,
            "count of {e}"
        );
    }
    for e in 100..120 {
        let got = db.get_item(EntityId(e)).map(|i| i.metadata["v"].clone());
        assert_eq!(got, m.items.get(&e).map(|v| v.to_string()), "item {e}");
    }
    for s in 0..10 {
        let got = db.session(SessionId(s)).map(|i| i.event_count);
        assert_eq!(got, m.sessions.get(&s).copied(), "session {s}");
    }
}

fn run(ops: Vec<Op>) {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let mut db = open(&storage, &clock);
    let mut m = Model::default();
    let at = Timestamp(NOW);
    for op in ops {
        clock.advance_ms(1);
        match op {
            Op::Signal(e, w) => {
                db.signal("like", EntityId(e), f64::from(w), at).unwrap();
                *m.counts.entry(e).or_default() += sign(w);
            }
            Op::Batch(sigs) => {
                let mut b = WriteBatch::new();
                for (e, w) in &sigs {
                    b = b.signal("like", EntityId(*e), f64::from(*w), at);
                }
                db.write(b).unwrap();
                for (e, w) in sigs {
                    *m.counts.entry(e).or_default() += sign(w);
                }
            }
            Op::Item(e, v) => {
                db.write_item(EntityId(e), None, &[("v", &v.to_string())])
                    .unwrap();
                m.items.insert(e, v);
            }
            Op::OpenSession(s) => {
                if db.open_session(SessionId(s), UserId(s), at).is_ok() {
                    assert!(m.sessions.insert(s, 0).is_none());
                }
            }
            Op::Event(s, e) => {
                if db
                    .record_session_event(SessionId(s), EntityId(e), "like", 1.0, at)
                    .is_ok()
                {
                    *m.sessions.get_mut(&s).unwrap() += 1;
                    *m.counts.entry(e).or_default() += 1;
                }
            }
            Op::Checkpoint => {
                db.checkpoint().unwrap();
            }
            Op::Crash(mode, seed) => {
                let mode = match mode {
                    0 => CrashMode::DropUnsynced,
                    1 => CrashMode::TornPrefix { seed },
                    _ => CrashMode::RandomPages { seed },
                };
                storage.crash(mode);
                drop(db); // its shutdown fails against the crashed files, and says so
                db = open(&storage, &clock);
                check(&db, &m);
            }
        }
    }
    check(&db, &m);
    drop(db);
    storage.crash(CrashMode::DropUnsynced);
    let db = open(&storage, &clock);
    check(&db, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_writes_survive_crashes_that_drop_unsynced_data(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
