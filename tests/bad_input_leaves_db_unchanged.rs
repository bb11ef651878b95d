//! Every kind of bad input gets its own `TidalError` variant naming the
//! field and the limit, and leaves the database unchanged: the log does not
//! grow and every read answers as before.

use std::sync::Arc;
use std::time::Duration;

use tidal::{
    ClusterConfig, Config, EntityId, ManualClock, NodeRole, Position, Retrieve, Scored, Search,
    SessionId, ShardId, ShardRouter, TidalDb, TidalError, Timestamp, UserId, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;

fn config(dir: &std::path::Path) -> tidal::ConfigBuilder {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .dimension(4)
        .clock(Arc::new(ManualClock::new(NOW)))
}

#[derive(Debug, PartialEq)]
struct Reads {
    last: Position,
    records: u64,
    score: f64,
    count: i64,
    top: Vec<Scored>,
    similar: Vec<Scored>,
    item: Option<tidal::Item>,
    creator: Option<tidal::Creator>,
    open: Option<tidal::SessionInfo>,
    closed: Option<tidal::SessionInfo>,
    events: usize,
}

fn reads(db: &TidalDb) -> Reads {
    let at = Timestamp(NOW);
    Reads {
        last: db.last_position(),
        records: db.status().records,
        score: db.read_decay_score(EntityId(1), "like", at).unwrap(),
        count: db.read_count(EntityId(1), "like").unwrap(),
        top: db.retrieve(&Retrieve::top(10, "like", at)).unwrap(),
        similar: db
            .search(&Search::new(vec![1.0, 0.0, 0.0, 0.0], 5))
            .unwrap(),
        item: db.get_item(EntityId(1)),
        creator: db.get_creator(EntityId(2)),
        open: db.session(SessionId(1)),
        closed: db.session(SessionId(2)),
        events: db.session_events(SessionId(1), 1, 100).len(),
    }
}

/// A bad input: its name, what the write returned, and the expected error.
type Case<'a> = (&'a str, tidal::Result<Position>, fn(&TidalError) -> bool);

#[test]
fn every_bad_input_is_refused_with_its_own_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = TidalDb::open(config(dir.path()).build().unwrap()).unwrap();
    let at = Timestamp(NOW);
    db.write_item(EntityId(1), Some(EntityId(2)), &[("lang", "en")])
        .unwrap();
    db.write_creator(EntityId(2), &[("name", "ada")]).unwrap();
    db.write_item_embedding(EntityId(1), &[1.0, 0.0, 0.0, 0.0])
        .unwrap();
    db.signal("like", EntityId(1), 2.0, at).unwrap();
    db.open_session(SessionId(1), UserId(1), at).unwrap();
    db.record_session_event(SessionId(1), EntityId(1), "like", 1.0, at)
        .unwrap();
    db.open_session(SessionId(2), UserId(1), at).unwrap();
    db.close_session(SessionId(2), at).unwrap();
    let before = reads(&db);

    let long = "x".repeat(65);
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(1025);
    let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let future = Timestamp(NOW + 61_000);

    let cases: Vec<Case> = vec![
        (
            "NaN weight",
            db.signal("like", EntityId(1), f64::NAN, at),
            |e| {
                matches!(
                    e,
                    TidalError::NonFinite {
                        field: "weight",
                        ..
                    }
                )
            },
        ),
        (
            "infinite weight",
            db.signal("like", EntityId(1), f64::INFINITY, at),
            |e| {
                matches!(
                    e,
                    TidalError::NonFinite {
                        field: "weight",
                        ..
                    }
                )
            },
        ),
        (
            "-inf weight",
            db.signal("like", EntityId(1), f64::NEG_INFINITY, at),
            |e| {
                matches!(
                    e,
                    TidalError::NonFinite {
                        field: "weight",
                        ..
                    }
                )
            },
        ),
        (
            "unknown signal type",
            db.signal("share", EntityId(1), 1.0, at),
            |e| matches!(e, TidalError::UnknownSignalType { name } if name == "share"),
        ),
        (
            "empty signal type",
            db.signal("", EntityId(1), 1.0, at),
            |e| {
                matches!(
                    e,
                    TidalError::Empty {
                        field: "signal_type"
                    }
                )
            },
        ),
        (
            "oversized signal type",
            db.signal(&long, EntityId(1), 1.0, at),
            |e| {
                matches!(
                    e,
                    TidalError::TooLong {
                        field: "signal_type",
                        len: 65,
                        limit: 64
                    }
                )
            },
        ),
        (
            "empty key",
            db.write_item(EntityId(1), None, &[("", "v")]),
            |e| {
                matches!(
                    e,
                    TidalError::Empty {
                        field: "metadata key"
                    }
                )
            },
        ),
        (
            "oversized key",
            db.write_item(EntityId(1), None, &[(&long_key, "v")]),
            |e| {
                matches!(
                    e,
                    TidalError::TooLong {
                        field: "metadata key",
                        len: 129,
                        limit: 128
                    }
                )
            },
        ),
        (
            "empty value",
            db.write_item(EntityId(1), None, &[("k", "")]),
            |e| {
                matches!(
                    e,
                    TidalError::Empty {
                        field: "metadata value"
                    }
                )
            },
        ),
        (
            "oversized value",
            db.write_creator(EntityId(2), &[("k", &long_value)]),
            |e| {
                matches!(
                    e,
                    TidalError::TooLong {
                        field: "metadata value",
                        len: 1025,
                        limit: 1024
                    }
                )
            },
        ),
        (
            "too many fields",
            db.write_item(EntityId(1), None, &many),
            |e| {
                matches!(
                    e,
                    TidalError::TooManyFields {
                        count: 65,
                        limit: 64,
                        ..
                    }
                )
            },
        ),
        (
            "wrong dimension",
            db.write_item_embedding(EntityId(1), &[1.0, 0.0]),
            |e| {
                matches!(
                    e,
                    TidalError::DimensionMismatch {
                        expected: 4,
                        got: 2,
                        ..
                    }
                )
            },
        ),
        (
            "zero vector",
            db.write_item_embedding(EntityId(1), &[0.0; 4]),
            |e| matches!(e, TidalError::ZeroVector { .. }),
        ),
        (
            "NaN in embedding",
            db.write_creator_embedding(EntityId(2), &[1.0, f32::NAN, 0.0, 0.0]),
            |e| matches!(e, TidalError::NonFiniteVector { index: 1, .. }),
        ),
        (
            "timestamp too far ahead",
            db.signal("like", EntityId(1), 1.0, future),
            |e| {
                matches!(
                    e,
                    TidalError::TimestampTooFarAhead {
                        limit_ms: 60_000,
                        ahead_ms: 61_000,
                        ..
                    }
                )
            },
        ),
        (
            "item id as creator",
            db.write_creator(EntityId(1), &[("k", "v")]),
            |e| {
                matches!(
                    e,
                    TidalError::KindMismatch {
                        id: EntityId(1),
                        ..
                    }
                )
            },
        ),
        (
            "creator id as item",
            db.write_item(EntityId(2), None, &[("k", "v")]),
            |e| {
                matches!(
                    e,
                    TidalError::KindMismatch {
                        id: EntityId(2),
                        ..
                    }
                )
            },
        ),
        (
            "creator id as item embedding",
            db.write_item_embedding(EntityId(2), &[1.0; 4]),
            |e| matches!(e, TidalError::KindMismatch { .. }),
        ),
        (
            "delete item as creator",
            db.delete_creator(EntityId(1)),
            |e| matches!(e, TidalError::KindMismatch { .. }),
        ),
        (
            "event on unknown session",
            db.record_session_event(SessionId(9), EntityId(1), "like", 1.0, at),
            |e| {
                matches!(
                    e,
                    TidalError::UnknownSession {
                        session: SessionId(9)
                    }
                )
            },
        ),
        (
            "event on closed session",
            db.record_session_event(SessionId(2), EntityId(1), "like", 1.0, at),
            |e| {
                matches!(
                    e,
                    TidalError::SessionClosed {
                        session: SessionId(2)
                    }
                )
            },
        ),
        (
            "close unknown session",
            db.close_session(SessionId(9), at),
            |e| matches!(e, TidalError::UnknownSession { .. }),
        ),
        (
            "close closed session",
            db.close_session(SessionId(2), at),
            |e| matches!(e, TidalError::SessionClosed { .. }),
        ),
        (
            "open session twice",
            db.open_session(SessionId(1), UserId(1), at),
            |e| {
                matches!(
                    e,
                    TidalError::SessionExists {
                        session: SessionId(1)
                    }
                )
            },
        ),
        ("empty batch", db.write(WriteBatch::new()), |e| {
            matches!(e, TidalError::BatchSize { records: 0, .. })
        }),
        (
            "batch with one bad write",
            db.write(
                WriteBatch::new()
                    .signal("like", EntityId(1), 1.0, at)
                    .signal("like", EntityId(1), f64::NAN, at),
            ),
            |e| matches!(e, TidalError::NonFinite { .. }),
        ),
        (
            "batch failing a stateful check",
            db.write(
                WriteBatch::new()
                    .signal("like", EntityId(1), 1.0, at)
                    .open_session(SessionId(1), UserId(1), at),
            ),
            |e| matches!(e, TidalError::SessionExists { .. }),
        ),
    ];
    for (name, result, expected) in cases {
        match result {
            Err(e) => assert!(expected(&e), "{name}: unexpected error {e:?}"),
            Ok(p) => panic!("{name}: accepted at {p}"),
        }
        assert_eq!(reads(&db), before, "{name}: the database changed");
    }
    drop(db);
    // Nothing reached the log: a reopen reads the same.
    let db = TidalDb::open(config(dir.path()).build().unwrap()).unwrap();
    let mut after = reads(&db);
    after.records = before.records;
    assert_eq!(after, before);
}

#[test]
fn an_oversized_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = tidal::Limits {
        max_batch_records: 10,
        ..Default::default()
    };
    let db = TidalDb::open(config(dir.path()).limits(limits).build().unwrap()).unwrap();
    let before = db.last_position();
    let mut batch = WriteBatch::new();
    for i in 0..11 {
        batch = batch.signal("like", EntityId(i), 1.0, Timestamp(NOW));
    }
    let err = db.write(batch).unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::BatchSize {
                records: 11,
                limit: 10
            }
        ),
        "{err:?}"
    );
    assert_eq!(db.last_position(), before);
}

#[test]
fn an_entity_of_another_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterConfig {
        role: NodeRole::Single,
        shard_id: ShardId(1),
        shard_count: 4,
    };
    let db = TidalDb::open(config(dir.path()).cluster(cluster).build().unwrap()).unwrap();
    let router = ShardRouter::new(4);
    let foreign = (0..)
        .map(EntityId)
        .find(|e| router.route(e.0) != ShardId(1))
        .unwrap();
    let local = (0..)
        .map(EntityId)
        .find(|e| router.route(e.0) == ShardId(1))
        .unwrap();
    let before = db.last_position();
    let err = db.signal("like", foreign, 1.0, Timestamp(NOW)).unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::WrongShard {
                field: "entity",
                this: ShardId(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        db.write_item(foreign, None, &[]),
        Err(TidalError::WrongShard { .. })
    ));
    assert_eq!(db.last_position(), before);
    db.signal("like", local, 1.0, Timestamp(NOW)).unwrap();
}

#[test]
fn invalid_configs_are_refused() {
    let d = std::path::Path::new("/nonexistent");
    let no_types = Config::builder(d).build().unwrap_err();
    assert!(matches!(
        no_types,
        TidalError::InvalidConfig {
            field: "signal_types",
            ..
        }
    ));
    let dup = Config::builder(d)
        .signal_type("a", Duration::from_secs(1))
        .signal_type("a", Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert!(
        matches!(dup, TidalError::InvalidConfig { field: "signal_types", ref reason } if reason.contains("twice"))
    );
    let zero_half_life = Config::builder(d)
        .signal_type("a", Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(zero_half_life, TidalError::InvalidConfig { ref reason, .. } if reason.contains("zero half-life"))
    );
    let zero_dim = Config::builder(d)
        .signal_type("a", Duration::from_secs(1))
        .dimension(0)
        .build()
        .unwrap_err();
    assert!(matches!(
        zero_dim,
        TidalError::InvalidConfig {
            field: "dimension",
            ..
        }
    ));
    let huge_write_behind = Config::builder(d)
        .signal_type("a", Duration::from_secs(1))
        .write_behind_bytes(tidal::config::MAX_WRITE_BEHIND_BYTES + 1)
        .build()
        .unwrap_err();
    assert!(
        matches!(huge_write_behind, TidalError::InvalidConfig { field: "write_behind_bytes", ref reason } if reason.contains("67108864"))
    );
}
