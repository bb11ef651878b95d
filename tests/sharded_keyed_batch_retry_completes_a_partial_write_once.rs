//! A keyed `WriteBatch` on a `ShardedDb` carries its key to every shard's
//! part. When a shard fails mid-way (an injected write fault on shard 2's
//! log), the earlier shards' parts are written and the later ones are not;
//! after a reopen, retrying the same batch with the same key returns the
//! original Positions on the shards that had it, applies the missing parts,
//! and every entity ends with exactly one signal.

use std::time::Duration;

use tidal::storage::FaultKind;
use tidal::{Config, EntityId, Position, ShardId, ShardedDb, SimStorage, Timestamp, WriteBatch};

const SHARDS: u32 = 4;

#[test]
fn a_retry_applies_only_the_missing_shards() {
    let storage = SimStorage::new();
    let config = Config::builder("/data/sharded")
        .signal_type("like", Duration::from_secs(3_600))
        .storage(storage.clone())
        .segment_bytes(1 << 20)
        .build()
        .unwrap();
    let at = Timestamp::now();
    let batch = || {
        (0..40u64)
            .fold(WriteBatch::new(), |b, e| {
                b.signal("like", EntityId(e), 1.0, at)
            })
            .idempotency_key("import-2026-11-24")
    };
    let db = ShardedDb::open(config.clone(), SHARDS).unwrap();
    let before: Vec<Position> = db.shards().iter().map(|s| s.last_position()).collect();
    // Shard 2's next log write fails: shards 0 and 1 are written first.
    storage.fail_next(FaultKind::Write, "shard-2/wal");
    assert!(db.write(batch()).is_err());
    storage.clear_faults();
    let written: Vec<Position> = db.shards().iter().map(|s| s.last_position()).collect();
    assert!(written[0] > before[0] && written[1] > before[1]);
    assert_eq!((written[2], written[3]), (before[2], before[3]));
    drop(db);

    let db = ShardedDb::open(config, SHARDS).unwrap();
    let retry = db.write(batch()).unwrap();
    assert_eq!(retry.len(), SHARDS as usize);
    for (shard, pos) in &retry {
        let i = shard.0 as usize;
        if i < 2 {
            assert_eq!(*pos, written[i], "shard {i} answers the original");
        } else {
            assert!(*pos > written[i], "shard {i} applies its part now");
        }
    }
    for e in 0..40u64 {
        assert_eq!(db.read_count(EntityId(e), "like").unwrap(), 1, "entity {e}");
    }
    // Retrying again changes nothing anywhere.
    assert_eq!(db.write(batch()).unwrap(), retry);
    assert!(db.shard(ShardId(2)).unwrap().status().idempotency_keys == 1);
}
