//! At `idempotency_capacity` keys, a new keyed write is `IdempotencyFull`
//! (nothing applied, no key forgotten early); retries of held keys and
//! unkeyed writes go on; once the oldest keys are past the TTL in log time,
//! the batch that expires them has room again. Capacity also holds across a
//! restart (the store is rebuilt by replay).

use std::sync::Arc;
use std::time::Duration;

use tidal::{Config, EntityId, ManualClock, TidalDb, TidalError, Timestamp, WriteBatch};

const NOW: u64 = 1_700_000_000_000;

fn config(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .idempotency_ttl(Duration::from_secs(10))
        .idempotency_capacity(3)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn keyed(key: &str) -> WriteBatch {
    WriteBatch::new()
        .signal("like", EntityId(1), 1.0, Timestamp(NOW))
        .idempotency_key(key)
}

#[test]
fn full_store_refuses_new_keys_until_expiry_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let db = TidalDb::open(config(dir.path(), &clock)).unwrap();
    let a = db.write(keyed("a")).unwrap();
    clock.advance_ms(2_000);
    let b = db.write(keyed("b")).unwrap();
    let c = db.write(keyed("c")).unwrap();
    assert_eq!(db.status().idempotency_keys, 3);
    let full = |r: tidal::Result<tidal::Position>| match r {
        Err(TidalError::IdempotencyFull { capacity }) => assert_eq!(capacity, 3),
        other => panic!("expected IdempotencyFull, got {other:?}"),
    };
    full(db.write(keyed("d")));
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 3);
    assert_eq!(db.last_position(), c);
    // Held keys still answer; unkeyed writes go on.
    assert_eq!(db.write(keyed("a")).unwrap(), a);
    assert_eq!(db.write(keyed("b")).unwrap(), b);
    db.signal("like", EntityId(2), 1.0, Timestamp(NOW)).unwrap();

    // Still full after a restart.
    db.close().unwrap();
    let db = TidalDb::open(config(dir.path(), &clock)).unwrap();
    full(db.write(keyed("d")));
    assert_eq!(db.write(keyed("c")).unwrap(), c);

    // 10 s after "a" (written at NOW): the batch at that log time expires
    // it before its keys are counted, so "d" fits; "b" and "c" (at
    // NOW + 2 s) are still held, so "e" does not.
    clock.set_ms(NOW + 10_000);
    let d = db.write(keyed("d")).unwrap();
    assert!(d > c);
    assert_eq!(db.status().idempotency_keys, 3);
    full(db.write(keyed("e")));
    // "a" is gone: writing it again applies again. This batch, at
    // NOW + 12 s, also expires "b" and "c": "d" and the new "a" are left.
    clock.set_ms(NOW + 12_000);
    let a2 = db.write(keyed("a")).unwrap();
    assert!(a2 > d);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 5);
    assert_eq!(db.status().idempotency_keys, 2);
    db.write(keyed("e")).unwrap();
    assert_eq!(db.write(keyed("d")).unwrap(), d);
}
