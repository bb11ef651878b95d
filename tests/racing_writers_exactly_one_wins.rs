//! Stateful validation runs in the sequencer against the state plus the
//! batch being built: 8 threads racing to open the same sessions and to
//! claim the same ids as items or as creators never both pass. Exactly one
//! wins each, and the log (replayed on reopen) holds no invalid record.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tidal::{Config, EntityId, SessionId, TidalDb, TidalError, Timestamp, UserId};

const THREADS: usize = 8;
const CONTESTED: u64 = 300;

fn open(dir: &std::path::Path) -> TidalDb {
    TidalDb::open(
        Config::builder(dir)
            .signal_type("like", Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn eight_threads_racing_for_sessions_and_kinds_one_wins_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path()));
    let barrier = Arc::new(Barrier::new(THREADS));
    let at = Timestamp::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut sessions_won = Vec::new();
                let mut kinds_won = Vec::new();
                for i in 0..CONTESTED {
                    match db.open_session(SessionId(i), UserId(t as u64), at) {
                        Ok(_) => sessions_won.push(i),
                        Err(TidalError::SessionExists { .. }) => {}
                        Err(e) => panic!("open_session: {e}"),
                    }
                    // Even threads claim ids as items, odd ones as creators.
                    let id = EntityId(i);
                    let r = if t % 2 == 0 {
                        db.write_item(id, None, &[("by", "item-thread")])
                    } else {
                        db.write_creator(id, &[("by", "creator-thread")])
                    };
                    match r {
                        Ok(_) => kinds_won.push((i, t % 2 == 0)),
                        Err(TidalError::KindMismatch { .. }) => {}
                        Err(e) => panic!("write: {e}"),
                    }
                }
                (t as u64, sessions_won, kinds_won)
            })
        })
        .collect();
    let mut session_owner = vec![None; CONTESTED as usize];
    let mut kind_claims = vec![(0u32, 0u32); CONTESTED as usize];
    for h in handles {
        let (t, sessions, kinds) = h.join().unwrap();
        for s in sessions {
            assert!(
                session_owner[s as usize].is_none(),
                "session {s} opened twice"
            );
            session_owner[s as usize] = Some(t);
        }
        for (i, as_item) in kinds {
            let c = &mut kind_claims[i as usize];
            if as_item { c.0 += 1 } else { c.1 += 1 }
        }
    }
    // Every contested id was claimed by one kind only (several writers of
    // the winning kind may upsert it; none of the other kind got through).
    for (i, (items, creators)) in kind_claims.iter().enumerate() {
        assert!(
            (*items > 0) != (*creators > 0),
            "id {i}: {items} item writes and {creators} creator writes succeeded"
        );
    }
    let db = Arc::try_unwrap(db).unwrap();
    db.close().unwrap();

    // Replaying the log gives the same answers: no invalid record was logged.
    let db = open(dir.path());
    for i in 0..CONTESTED {
        let owner = session_owner[i as usize].expect("every session opened once");
        assert_eq!(db.session(SessionId(i)).unwrap().user, UserId(owner));
        let (items, _) = kind_claims[i as usize];
        let id = EntityId(i);
        assert_eq!(db.get_item(id).is_some(), items > 0, "id {i}");
        assert_eq!(db.get_creator(id).is_some(), items == 0, "id {i}");
    }
}

#[test]
fn racing_session_events_get_distinct_gap_free_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path()));
    let at = Timestamp::now();
    db.open_session(SessionId(1), UserId(1), at).unwrap();
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    db.record_session_event(SessionId(1), EntityId(t * 1000 + i), "like", 1.0, at)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let events = db.session_events(SessionId(1), 1, 10_000);
    assert_eq!(events.len(), THREADS * 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq as usize, i + 1);
    }
}
