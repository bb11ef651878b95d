use std::path::Path;

use super::*;

fn field_reason(e: TidalError) -> (&'static str, String) {
    match e {
        TidalError::InvalidConfig { field, reason } => (field, reason),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn config_durations_parse() {
    assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
    assert_eq!(
        parse_duration("7d").unwrap(),
        Duration::from_secs(7 * 86_400)
    );
    for bad in [
        "",
        "ms",
        "10",
        "1.5s",
        "10 parsecs",
        "-1s",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_duration("10").unwrap_err().contains("no unit"));
}

#[test]
fn config_durability_parse() {
    assert_eq!(parse_durability("sync").unwrap(), Durability::Sync);
    assert_eq!(
        parse_durability("periodic:100ms").unwrap(),
        Durability::Periodic(Duration::from_millis(100))
    );
    assert_eq!(
        parse_durability("replicated:2:1s").unwrap(),
        Durability::Replicated {
            acks: 2,
            timeout: Duration::from_secs(1)
        }
    );
    for bad in [
        "",
        "periodic",
        "sync:1s",
        "replicated:1",
        "replicated:x:1s",
        "async",
    ] {
        assert!(parse_durability(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn config_role_parse() {
    assert_eq!("single".parse::<NodeRole>().unwrap(), NodeRole::Single);
    assert_eq!("leader".parse::<NodeRole>().unwrap(), NodeRole::Leader);
    assert_eq!(
        " Follower ".parse::<NodeRole>().unwrap(),
        NodeRole::Follower
    );
    let (field, _) = field_reason("primary".parse::<NodeRole>().unwrap_err());
    assert_eq!(field, "cluster.role");
}

#[test]
fn config_env_overrides_apply_and_name_their_key() {
    let b = Config::builder("/tmp/a")
        .signal_type("view", Duration::from_secs(60))
        .overrides_from([
            ("TIDAL_DATA_DIR", "/tmp/b"),
            ("TIDAL_NODE_ID", "9"),
            ("TIDAL_ROLE", "leader"),
            ("TIDAL_SHARD_ID", "2"),
            ("TIDAL_SHARD_COUNT", "4"),
            ("TIDAL_DURABILITY", "replicated:1:500ms"),
            ("TIDAL_DIMENSION", "8"),
            ("TIDAL_SEGMENT_BYTES", "1_048_576"),
            ("TIDAL_SIGNAL_TYPES", "view=1h, like=1d"),
            ("TIDAL_LIMITS_MAX_RESULTS", "50"),
            ("TIDAL_RECOVERY_MODE", "point_in_time"),
            ("TIDAL_BENCH_DIR", "ignored"),
            ("TIDAL_SCORE_FLOOR", ""),
        ])
        .unwrap();
    let c = b.build().unwrap();
    assert_eq!(c.data_dir, Path::new("/tmp/b"));
    assert_eq!(c.node_id, NodeId(9));
    assert_eq!(c.cluster.role, NodeRole::Leader);
    assert_eq!(c.cluster.shard_id, ShardId(2));
    assert_eq!(c.cluster.shard_count, 4);
    assert_eq!(
        c.durability,
        Durability::Replicated {
            acks: 1,
            timeout: Duration::from_millis(500)
        }
    );
    assert_eq!(c.dimension, 8);
    assert_eq!(c.segment_bytes, 1 << 20);
    assert_eq!(c.signal_types.len(), 2);
    assert_eq!(c.signal_types[1].half_life_ms, 86_400_000);
    assert_eq!(c.limits.max_results, 50);
    assert_eq!(c.recovery_mode, RecoveryMode::PointInTime);
    assert_eq!(c.score_floor, 0.0);

    for (var, val, key) in [
        ("TIDAL_ROLE", "boss", "cluster.role"),
        ("TIDAL_NODE_ID", "-1", "node_id"),
        ("TIDAL_DURABILITY", "periodic:1", "durability"),
        ("TIDAL_MAX_CLOCK_DRIFT", "1y", "max_clock_drift"),
        ("TIDAL_SIGNAL_TYPES", "like", "signal_types"),
        ("TIDAL_LIMITS_MAX_KEY_BYTES", "lots", "limits.max_key_bytes"),
        ("TIDAL_VECTOR_INDEX_PROBES", "-3", "vector_index.probes"),
        (
            "TIDAL_VECTOR_INDEX_MIN_VECTORS",
            "many",
            "vector_index.min_vectors",
        ),
    ] {
        let e = Config::builder("/tmp/a")
            .overrides_from([(var, val)])
            .unwrap_err();
        let (field, reason) = field_reason(e);
        assert_eq!(field, key, "{var}");
        assert!(reason.contains(var), "{reason}");
    }
    // Every variable maps to a documented key.
    for (_, key) in env_variables() {
        assert!(CONFIG_KEYS.contains(&key), "{key}");
    }
}

#[cfg(feature = "toml-config")]
mod toml_file {
    use super::*;

    const FULL: &str = r#"
data_dir = "data"
node_id = 7
dimension = 32
durability = "periodic:250ms"
segment_bytes = 8_388_608
retention_bytes = 100_000_000
snapshot_every_bytes = 50_000_000
recovery_mode = "point_in_time"
max_future_skew = "30s"
score_floor = 0.001
session_retention = "2d"
landmark_half_lives = 32
max_clock_drift = "5s"
idempotency_ttl = "2h"
idempotency_capacity = 5000

[cluster]
role = "follower"
shard_id = 1
shard_count = 3

[limits]
max_name_bytes = 32
max_key_bytes = 64
max_value_bytes = 512
max_metadata_fields = 16
max_batch_records = 1000
commit_queue_depth = 128
max_session_events = 500
max_results = 100
max_idempotency_key_bytes = 64

[vector_index]
min_vectors = 5000
probes = 8

[[signal_types]]
name = "view"
half_life = "1h"

[[signal_types]]
name = "like"
half_life = "7d"
"#;

    #[test]
    fn config_full_file_round_trips() {
        let c = Config::from_toml_str(FULL, Some(Path::new("/etc/tidal"))).unwrap();
        let expected = Config::builder("/etc/tidal/data")
            .node_id(NodeId(7))
            .dimension(32)
            .durability(Durability::Periodic(Duration::from_millis(250)))
            .segment_bytes(8 << 20)
            .retention_bytes(100_000_000)
            .snapshot_every_bytes(50_000_000)
            .recovery_mode(RecoveryMode::PointInTime)
            .max_future_skew(Duration::from_secs(30))
            .score_floor(0.001)
            .session_retention(Duration::from_secs(2 * 86_400))
            .landmark_half_lives(32)
            .max_clock_drift(Duration::from_secs(5))
            .idempotency_ttl(Duration::from_secs(7_200))
            .idempotency_capacity(5_000)
            .cluster(crate::ClusterConfig {
                role: NodeRole::Follower,
                shard_id: ShardId(1),
                shard_count: 3,
            })
            .limits(crate::Limits {
                max_name_bytes: 32,
                max_key_bytes: 64,
                max_value_bytes: 512,
                max_metadata_fields: 16,
                max_batch_records: 1000,
                commit_queue_depth: 128,
                max_session_events: 500,
                max_results: 100,
                max_idempotency_key_bytes: 64,
            })
            .vector_index(crate::VectorIndex {
                min_vectors: 5_000,
                probes: 8,
            })
            .signal_type("view", Duration::from_secs(3_600))
            .signal_type("like", Duration::from_secs(7 * 86_400))
            .build()
            .unwrap();
        assert_same(&c, &expected);
    }

    fn assert_same(a: &Config, b: &Config) {
        assert_eq!(a.data_dir, b.data_dir);
        assert_eq!(a.node_id, b.node_id);
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(a.signal_types, b.signal_types);
        assert_eq!(a.dimension, b.dimension);
        assert_eq!(a.durability, b.durability);
        assert_eq!(a.segment_bytes, b.segment_bytes);
        assert_eq!(a.retention_bytes, b.retention_bytes);
        assert_eq!(a.snapshot_every_bytes, b.snapshot_every_bytes);
        assert_eq!(a.recovery_mode, b.recovery_mode);
        assert_eq!(a.limits, b.limits);
        assert_eq!(a.max_future_skew, b.max_future_skew);
        assert_eq!(a.score_floor, b.score_floor);
        assert_eq!(a.session_retention, b.session_retention);
        assert_eq!(a.landmark_half_lives, b.landmark_half_lives);
        assert_eq!(a.max_clock_drift, b.max_clock_drift);
        assert_eq!(a.idempotency_ttl, b.idempotency_ttl);
        assert_eq!(a.idempotency_capacity, b.idempotency_capacity);
        assert_eq!(a.vector_index, b.vector_index);
    }

    #[test]
    fn config_example_file_parses_to_the_defaults() {
        let text = include_str!("../examples/node.toml");
        let c = Config::from_toml_str(text, Some(Path::new("/srv"))).unwrap();
        let d = Config::builder("/srv/tidal-data")
            .signal_type("view", Duration::from_secs(3_600))
            .signal_type("like", Duration::from_secs(86_400))
            .build()
            .unwrap();
        assert_same(&c, &d);
    }

    fn err(text: &str) -> (&'static str, String) {
        field_reason(Config::from_toml_str(text, None).unwrap_err())
    }

    const HEAD: &str =
        "data_dir = \"/tmp/x\"\n[[signal_types]]\nname = \"like\"\nhalf_life = \"1d\"\n";

    #[test]
    fn config_bad_values_name_key_and_line() {
        // (text after HEAD (lines 1-4), key, line)
        let cases: &[(&str, &str, usize)] = &[
            ("[cluster]\nrole = \"boss\"\n", "cluster.role", 6),
            (
                "[cluster]\n\nshard_count = \"three\"\n",
                "cluster.shard_count",
                7,
            ),
            ("[cluster]\nshard_id = -1\n", "cluster.shard_id", 6),
            ("[limits]\nmax_results = 1.5\n", "limits.max_results", 6),
            ("[limits]\nmax_results = 0\n", "limits.max_results", 6),
            ("[cluster]\nshard_id = 5\n", "cluster.shard_id", 6),
            (
                "[[signal_types]]\nname = \"view\"\nhalf_life = \"1y\"\n",
                "signal_types.half_life",
                7,
            ),
            (
                "[[signal_types]]\nname = \"view\"\nhalf_life = 60\n",
                "signal_types.half_life",
                7,
            ),
        ];
        for (tail, key, line) in cases {
            let (field, reason) = err(&format!("{HEAD}{tail}"));
            assert_eq!(field, *key, "{tail}: {reason}");
            assert!(reason.contains(&format!("line {line}")), "{tail}: {reason}");
        }
        // Top-level keys must come before the first table.
        let top: &[(&str, &str, usize)] = &[
            ("durability = \"eventually\"\n", "durability", 2),
            ("max_future_skew = \"10\"\n", "max_future_skew", 2),
            ("session_retention = 3\n", "session_retention", 2),
            ("dimension = 0\n", "dimension", 2),
            ("node_id = \"one\"\n", "node_id", 2),
            ("recovery_mode = \"lenient\"\n", "recovery_mode", 2),
            ("segment_bytes = 100\n", "segment_bytes", 2),
            ("durability = \"replicated:1:1s\"\n", "durability", 2),
        ];
        for (head, key, line) in top {
            let (field, reason) = err(&format!("data_dir = \"/tmp/x\"\n{head}{}", &HEAD[20..]));
            assert_eq!(field, *key, "{head}: {reason}");
            assert!(reason.contains(&format!("line {line}")), "{head}: {reason}");
        }
    }

    #[test]
    fn config_unknown_keys_refused() {
        let (field, reason) = err(&format!("{HEAD}[cluster]\nrol = \"leader\"\n"));
        assert_eq!(field, "cluster");
        assert!(
            reason.contains("line 6") && reason.contains("cluster.rol"),
            "{reason}"
        );
        let (field, reason) = err(&format!("colour = 1\n{HEAD}"));
        assert_eq!(field, "config");
        assert!(
            reason.contains("line 1") && reason.contains("colour"),
            "{reason}"
        );
        let (field, reason) = err(&format!("{HEAD}weight = 2\n"));
        assert_eq!(field, "signal_types");
        assert!(
            reason.contains("line 5") && reason.contains("signal_types.weight"),
            "{reason}"
        );
        let (field, reason) = err(&format!("{HEAD}[storage]\nkind = \"sim\"\n"));
        assert_eq!(field, "config");
        assert!(
            reason.contains("line 5") && reason.contains("storage"),
            "{reason}"
        );
    }

    #[test]
    fn config_syntax_error_names_the_line() {
        let (_, reason) = err(&format!("{HEAD}[cluster\n"));
        assert!(reason.contains("line 5"), "{reason}");
        let (field, reason) = err("data_dir = \"/tmp/x\"\ndata_dir = \"/tmp/y\"\n");
        assert!(reason.contains("line 2"), "{field}: {reason}");
    }

    #[test]
    fn config_missing_data_dir_and_types() {
        let (field, _) = err("[[signal_types]]\nname = \"like\"\nhalf_life = \"1d\"\n");
        assert_eq!(field, "data_dir");
        let (field, _) = err("data_dir = \"x\"\n");
        assert_eq!(field, "signal_types");
    }

    #[test]
    fn config_env_overrides_file() {
        let b = Config::builder("")
            .apply_toml(FULL, Some(Path::new("/etc/tidal")))
            .unwrap()
            .overrides_from([
                ("TIDAL_ROLE", "leader"),
                ("TIDAL_DURABILITY", "replicated:1:500ms"),
                ("TIDAL_DIMENSION", "16"),
                ("TIDAL_DATA_DIR", "/var/lib/tidal"),
            ])
            .unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.cluster.role, NodeRole::Leader);
        assert_eq!(c.cluster.shard_id, ShardId(1)); // from the file
        assert_eq!(c.dimension, 16);
        assert_eq!(c.data_dir, Path::new("/var/lib/tidal"));
        assert_eq!(c.node_id, NodeId(7)); // from the file
        assert_eq!(
            c.durability,
            Durability::Replicated {
                acks: 1,
                timeout: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn config_from_file_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, FULL).unwrap();
        let c = Config::from_toml_file(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.node_id, NodeId(7));
        let e = Config::from_toml_file(dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(e, TidalError::Io { .. }), "{e:?}");
    }
}
