//! The same key with other content is `IdempotencyConflict` (naming the
//! key's length and prefix and the original Position, not the whole key),
//! nothing is applied, and the original still answers its retries. Bad
//! keys get their own errors; a request refused by validation stores no
//! key, so the key stays free.

use std::time::Duration;

use tidal::{Config, EntityId, Limits, TidalDb, TidalError, Timestamp, WriteBatch};

#[test]
fn other_content_under_a_used_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = TidalDb::open(
        Config::builder(dir.path())
            .signal_type("like", Duration::from_secs(3_600))
            .limits(Limits {
                max_idempotency_key_bytes: 40,
                ..Limits::default()
            })
            .build()
            .unwrap(),
    )
    .unwrap();
    let at = Timestamp::now();
    let key = "checkout-0123456789-abcdefghij-SECRET";
    let like = |w: f64| {
        WriteBatch::new()
            .signal("like", EntityId(1), w, at)
            .idempotency_key(key)
    };
    let original = db.write(like(1.0)).unwrap();
    for other in [
        like(2.0),
        WriteBatch::new()
            .signal("like", EntityId(1), 1.0, at)
            .signal("like", EntityId(1), 1.0, at)
            .idempotency_key(key),
    ] {
        match db.write(other) {
            Err(e @ TidalError::IdempotencyConflict { .. }) => {
                let TidalError::IdempotencyConflict {
                    key_len,
                    ref key_prefix,
                    original: o,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(key_len, key.len());
                assert_eq!(key_prefix, "checkout-0123456");
                assert_eq!(o, original);
                let msg = e.to_string();
                assert!(!msg.contains("SECRET"), "{msg}");
                assert!(msg.contains("checkout-0123456"), "{msg}");
            }
            other => panic!("expected IdempotencyConflict, got {other:?}"),
        }
    }
    assert_eq!(db.read_count(EntityId(1), "like").unwrap(), 1);
    assert_eq!(db.last_position(), original);
    assert_eq!(db.write(like(1.0)).unwrap(), original);

    // Bad keys.
    let with_key = |k: &[u8]| {
        WriteBatch::new()
            .signal("like", EntityId(1), 1.0, at)
            .idempotency_key(k)
    };
    assert!(matches!(
        db.write(with_key(b"")),
        Err(TidalError::Empty {
            field: "idempotency_key"
        })
    ));
    assert!(matches!(
        db.write(with_key(&[7u8; 41])),
        Err(TidalError::TooLong {
            field: "idempotency_key",
            len: 41,
            limit: 40
        })
    ));
    db.write(with_key(&[7u8; 40])).unwrap();

    // Refused by validation (an item id written as a creator): no key is
    // stored, so the same key then takes other, valid content.
    db.write_item(EntityId(5), None, &[]).unwrap();
    let keys = db.status().idempotency_keys;
    let bad = WriteBatch::new()
        .write_creator(EntityId(5), &[])
        .idempotency_key("k-refused");
    assert!(matches!(
        db.write(bad),
        Err(TidalError::KindMismatch { .. })
    ));
    assert_eq!(db.status().idempotency_keys, keys);
    let p = db
        .write(
            WriteBatch::new()
                .signal("like", EntityId(5), 1.0, at)
                .idempotency_key("k-refused"),
        )
        .unwrap();
    assert_eq!(db.last_position(), p);
    assert_eq!(db.read_count(EntityId(5), "like").unwrap(), 1);
    assert_eq!(db.status().idempotency_keys, keys + 1);
}
