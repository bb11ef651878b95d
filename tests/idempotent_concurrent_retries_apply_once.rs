//! Racing writers with one key and the same content: exactly one
//! application (counts prove it) and every writer gets the same Position,
//! whether the racers land in one commit group (the second gets the
//! first's Position) or in later ones (answered from the store). Racers
//! with one key and other content: one applies, the others conflict.
//! How free threads fall into groups depends on the scheduler; the
//! one-group case is lined up deterministically by the unit test
//! `db::idem::tests::one_key_in_one_group_applies_once`.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tidal::{Config, EntityId, TidalDb, TidalError, Timestamp, WriteBatch};

const THREADS: usize = 8;
const ROUNDS: u64 = 25;

#[test]
fn racing_retries_apply_once_and_share_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        TidalDb::open(
            Config::builder(dir.path())
                .signal_type("like", Duration::from_secs(3_600))
                .build()
                .unwrap(),
        )
        .unwrap(),
    );
    let at = Timestamp::now();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut same = Vec::new();
                let mut other = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Same key, same content.
                    let batch = WriteBatch::new()
                        .signal("like", EntityId(round), 1.0, at)
                        .signal("like", EntityId(1_000), 1.0, at)
                        .idempotency_key(format!("same-{round}"));
                    same.push(db.write(batch).unwrap());
                    barrier.wait();
                    // Same key, content that differs per thread.
                    let batch = WriteBatch::new()
                        .signal("like", EntityId(2_000 + round), t as f64 + 1.0, at)
                        .idempotency_key(format!("other-{round}"));
                    other.push(db.write(batch));
                }
                (same, other)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..ROUNDS as usize {
        let first = results[0].0[round];
        for (same, _) in &results {
            assert_eq!(same[round], first, "round {round}: one Position for all");
        }
        let ok: Vec<_> = results
            .iter()
            .filter_map(|(_, o)| o[round].as_ref().ok().copied())
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "round {round}: exactly one writer of other content wins"
        );
        for (_, o) in &results {
            match &o[round] {
                Ok(_) => {}
                Err(TidalError::IdempotencyConflict { original, .. }) => {
                    assert_eq!(*original, ok[0])
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        // Applied exactly once.
        assert_eq!(db.read_count(EntityId(round as u64), "like").unwrap(), 1);
        assert_eq!(
            db.read_count(EntityId(2_000 + round as u64), "like")
                .unwrap(),
            1
        );
    }
    assert_eq!(
        db.read_count(EntityId(1_000), "like").unwrap(),
        ROUNDS as i64
    );
    assert_eq!(db.status().idempotency_keys, 2 * ROUNDS as usize);
}
