//! Tests of META encoding, decoding and versions.

use std::time::Duration;

use super::*;
use crate::storage::{CrashMode, SimStorage};

fn config(sim: &std::sync::Arc<SimStorage>) -> Config {
    Config::builder("/db")
        .signal_type("view", Duration::from_secs(3_600))
        .signal_type("like", Duration::from_secs(86_400))
        .dimension(8)
        .storage(sim.clone())
        .build()
        .unwrap()
}

#[test]
fn round_trip() {
    let sim = SimStorage::new();
    let m = Meta::from_config(&config(&sim));
    assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
    assert_eq!(m.signal_types[1], ("like".to_string(), 86_400_000));
    m.check(&config(&sim)).unwrap();
}

#[test]
fn every_bit_flip_and_truncation_is_detected() {
    let sim = SimStorage::new();
    let bytes = Meta::from_config(&config(&sim)).encode();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(Meta::decode(&b).is_err(), "flip of bit {bit} not detected");
    }
    for len in 0..bytes.len() {
        assert!(Meta::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
}

#[test]
fn a_bad_count_behind_a_valid_crc_is_an_error_not_a_panic() {
    let mut b = Vec::new();
    b.extend_from_slice(&META_MAGIC);
    b.put_u16(META_FORMAT_VERSION);
    b.put_u64(1);
    b.put_u32(0);
    b.put_u32(1);
    b.put_u32(u32::MAX);
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    assert!(Meta::decode(&b).is_err());
}

#[test]
fn mismatch_names_the_first_differing_field() {
    let sim = SimStorage::new();
    let stored = Meta::from_config(&config(&sim));
    let field = |edit: &dyn Fn(&mut Config)| {
        let mut c = config(&sim);
        edit(&mut c);
        match stored.check(&c) {
            Err(TidalError::ConfigMismatch { field, .. }) => field,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    };
    assert_eq!(field(&|c| c.node_id = NodeId(2)), "node_id");
    assert_eq!(field(&|c| c.cluster.shard_count = 4), "shard_count");
    assert_eq!(
        field(&|c| {
            c.cluster.shard_count = 4;
            c.cluster.shard_id = ShardId(1);
        }),
        "shard_id"
    );
    assert_eq!(field(&|c| c.signal_types.swap(0, 1)), "signal_types");
    assert_eq!(
        field(&|c| c.signal_types[0].half_life_ms += 1),
        "signal_types"
    );
    assert_eq!(field(&|c| c.signal_types.truncate(1)), "signal_types");
    assert_eq!(field(&|c| c.dimension = 16), "dimension");
    assert_eq!(
        field(&|c| c.landmark_half_lives = 32),
        "landmark_half_lives"
    );
    assert_eq!(field(&|c| c.score_floor = 0.5), "score_floor");
    assert_eq!(
        field(&|c| c.session_retention = Duration::from_secs(1)),
        "session_retention"
    );
    assert_eq!(
        field(&|c| c.idempotency_ttl = Duration::from_secs(1)),
        "idempotency_ttl"
    );
    assert_eq!(
        field(&|c| c.vector_index.min_vectors = 64),
        "vector_index.min_vectors"
    );
    // Probes only change what a read scans: not pinned.
    let mut c = config(&sim);
    c.vector_index.probes = 1;
    stored.check(&c).unwrap();
    // Two differences: the first in the documented order is named.
    assert_eq!(
        field(&|c| {
            c.dimension = 16;
            c.node_id = NodeId(9);
        }),
        "node_id"
    );
}

#[test]
fn version_1_reads_as_the_default_ttl() {
    let sim = SimStorage::new();
    let mut v1 = Meta::from_config(&config(&sim));
    v1.format_version = 1;
    let bytes = v1.encode();
    assert_eq!(
        bytes.len(),
        Meta::from_config(&config(&sim)).encode().len() - 16
    );
    let back = Meta::decode(&bytes).unwrap();
    assert_eq!(back, v1);
    assert_eq!(back.idempotency_ttl_ms, 24 * 3600 * 1000);
    back.check(&config(&sim)).unwrap();
    let mut other = config(&sim);
    other.idempotency_ttl = Duration::from_secs(60);
    assert!(matches!(
        back.check(&other),
        Err(TidalError::ConfigMismatch {
            field: "idempotency_ttl",
            ..
        })
    ));
}

#[test]
fn version_2_reads_as_the_default_min_vectors_and_keeps_its_fingerprint() {
    let sim = SimStorage::new();
    let mut v2 = Meta::from_config(&config(&sim));
    v2.format_version = 2;
    let bytes = v2.encode();
    let back = Meta::decode(&bytes).unwrap();
    assert_eq!(back, v2);
    assert_eq!(back.vector_min_vectors, 100_000);
    back.check(&config(&sim)).unwrap();
    // The default adds nothing to the fingerprint: a version 2 node and
    // a version 3 node of the same identity agree.
    assert_eq!(
        back.fingerprint(),
        Meta::from_config(&config(&sim)).fingerprint()
    );
    let mut other = config(&sim);
    other.vector_index.min_vectors = 1_000;
    assert!(matches!(
        back.check(&other),
        Err(TidalError::ConfigMismatch {
            field: "vector_index.min_vectors",
            ..
        })
    ));
    assert_ne!(Meta::from_config(&other).fingerprint(), back.fingerprint());
}

#[test]
fn fingerprint_ignores_only_the_node_id() {
    let sim = SimStorage::new();
    let a = Meta::from_config(&config(&sim));
    let mut b = a.clone();
    b.node_id = NodeId(99);
    assert_eq!(a.fingerprint(), b.fingerprint());
    b.dimension += 1;
    assert_ne!(a.fingerprint(), b.fingerprint());
    let mut c = a.clone();
    c.signal_types[0].1 += 1;
    assert_ne!(a.fingerprint(), c.fingerprint());
}

#[test]
fn load_or_create_creates_durably_then_checks() {
    let sim = SimStorage::new();
    let created = load_or_create(&*sim, &config(&sim)).unwrap();
    sim.crash(CrashMode::DropUnsynced);
    let loaded = load_or_create(&*sim, &config(&sim)).unwrap();
    assert_eq!(created, loaded);
    let mut other = config(&sim);
    other.dimension = 4;
    let e = load_or_create(&*sim, &other).unwrap_err();
    assert!(
        matches!(
            e,
            TidalError::ConfigMismatch {
                field: "dimension",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn load_or_create_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&SimStorage::new());
    c.data_dir = tmp.path().join("db");
    let real = crate::storage::RealStorage;
    let created = load_or_create(&real, &c).unwrap();
    assert_eq!(load_or_create(&real, &c).unwrap(), created);
    c.signal_types.pop();
    let e = load_or_create(&real, &c).unwrap_err();
    assert!(
        matches!(
            e,
            TidalError::ConfigMismatch {
                field: "signal_types",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn damaged_or_missing_meta_is_corruption() {
    let sim = SimStorage::new();
    load_or_create(&*sim, &config(&sim)).unwrap();
    let mut bytes = sim.read("/db/META").unwrap();
    bytes[9] ^= 0x40;
    sim.write_raw("/db/META", &bytes);
    match load_or_create(&*sim, &config(&sim)) {
        Err(TidalError::Corruption { path, .. }) => assert_eq!(path, Path::new("/db/META")),
        other => panic!("expected corruption, got {other:?}"),
    }
    // META gone but a log segment present: refuse to start a new identity.
    sim.remove_file(Path::new("/db/META")).unwrap();
    sim.write_raw("/db/wal/shard-00000/00000000000000000001.seg", b"log");
    let e = load_or_create(&*sim, &config(&sim)).unwrap_err();
    assert!(matches!(e, TidalError::Corruption { .. }), "{e}");
}
