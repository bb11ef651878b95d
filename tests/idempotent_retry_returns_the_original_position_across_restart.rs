//! A keyed batch retried on the same node, after a restart replaying the
//! log, and after a restart from a snapshot (the keys' own section), and
//! through `AnyDb`: every retry returns the original `Position` and applies
//! nothing.

use std::time::Duration;

use tidal::{AnyDb, Config, EntityId, TidalDb, Timestamp, WriteBatch};

fn config(dir: &std::path::Path) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .build()
        .unwrap()
}

fn batch(at: Timestamp) -> WriteBatch {
    WriteBatch::new()
        .write_item(EntityId(1), None, &[("lang", "en")])
        .signal("like", EntityId(1), 1.0, at)
        .signal("like", EntityId(2), 1.0, at)
        .idempotency_key("order-42")
}

#[test]
fn retries_return_the_original_position_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let at = Timestamp::now();
    let db = TidalDb::open(config(dir.path())).unwrap();
    let original = db.write(batch(at)).unwrap();
    assert_eq!(db.status().idempotency_keys, 1);
    // The same key and content: the same Position, nothing applied.
    assert_eq!(db.write(batch(at)).unwrap(), original);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
    // Other writes move the log on; a retry still answers the original.
    let later = db.signal("like", EntityId(3), 1.0, at).unwrap();
    assert!(later > original);
    assert_eq!(db.write(batch(at)).unwrap(), original);
    assert_eq!(db.last_position(), later, "a retry logs nothing");
    db.close().unwrap();

    // Restart: the key comes back by replaying the log.
    let db = TidalDb::open(config(dir.path())).unwrap();
    assert_eq!(db.status().idempotency_keys, 1);
    assert_eq!(db.write(batch(at)).unwrap(), original);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
    assert_eq!(db.read_count(EntityId(2), "like").unwrap(), 1);
    // A snapshot, then a restart from it: the key is in the snapshot.
    let snap = db.checkpoint().unwrap();
    assert!(snap >= later.seqno);
    db.close().unwrap();
    let db = AnyDb::open(config(dir.path()), None).unwrap();
    assert!(
        db.status().recovery.snapshot.is_some(),
        "restarted from the snapshot"
    );
    assert_eq!(db.status().idempotency_keys, 1);
    assert_eq!(db.write(batch(at)).unwrap(), original);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
    assert_eq!(db.last_position(), later);
    // A new key applies.
    let fresh = db
        .write(
            WriteBatch::new()
                .signal("like", EntityId(1), 1.0, at)
                .idempotency_key("order-43"),
        )
        .unwrap();
    assert!(fresh > later);
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 2);
    assert_eq!(db.status().idempotency_keys, 2);
}
