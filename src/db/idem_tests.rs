//! Unit tests of `idem.rs`: the content digest, and keyed requests lined
//! up in one commit group.

use std::time::{Duration, Instant};

use super::*;
use crate::SimStorage;
use crate::config::{Config, NodeRole};
use crate::db::batch::WriteBatch;
use crate::types::{EntityId, Position, Timestamp};

fn signal(w: f64) -> Record {
    Record::Signal {
        signal_type: 0,
        entity: EntityId(1),
        weight: w,
        at: Timestamp(5),
    }
}

#[test]
fn digest_depends_on_content_and_order_only() {
    let a = content_digest(&[signal(1.0), signal(2.0)]);
    assert_eq!(a, content_digest(&[signal(1.0), signal(2.0)]));
    assert_ne!(a, content_digest(&[signal(2.0), signal(1.0)]));
    assert_ne!(a, content_digest(&[signal(1.0)]));
    assert_ne!(a, content_digest(&[signal(1.0), signal(2.5)]));
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Racers with one key queued behind a group in progress form the next
/// group together: the first logs the key, the others get its Position
/// (and a racer with other content a conflict), in one batch.
#[test]
fn one_key_in_one_group_applies_once() {
    const RACERS: usize = 5;
    let config = Config::builder("/db")
        .signal_type("like", Duration::from_secs(60))
        .storage(SimStorage::new())
        .build()
        .expect("config");
    let core = Core::open(config, NodeRole::Single).expect("open");
    let at = Timestamp::now();
    let keyed = move |w: f64| {
        WriteBatch::new()
            .signal("like", EntityId(7), w, at)
            .idempotency_key("k")
    };
    let batches_before = core.metrics.batches.load(Ordering::Relaxed);
    let handles = core.commit.with_committer(|_| {
        // A blocker leads a group and waits for the committer we hold.
        let c = core.clone();
        let blocker = std::thread::spawn(move || {
            c.write(WriteBatch::new().signal("like", EntityId(1), 1.0, at))
        });
        wait_until("the blocker leads a group", || core.commit.busy());
        let mut racers: Vec<std::thread::JoinHandle<Result<Position>>> = (0..RACERS)
            .map(|_| {
                let c = core.clone();
                std::thread::spawn(move || c.write(keyed(1.0)))
            })
            .collect();
        let c = core.clone();
        racers.push(std::thread::spawn(move || c.write(keyed(2.0))));
        wait_until("every racer is queued", || {
            core.commit.queue_depth() == RACERS + 1
        });
        (blocker, racers)
    });
    let (blocker, racers) = handles;
    blocker.join().expect("blocker").expect("blocker write");
    let results: Vec<Result<Position>> = racers
        .into_iter()
        .map(|h| h.join().expect("racer"))
        .collect();
    let first = *results[0].as_ref().expect("first racer");
    for r in &results[..RACERS] {
        assert_eq!(*r.as_ref().expect("same content"), first);
    }
    match &results[RACERS] {
        Err(TidalError::IdempotencyConflict { original, .. }) => assert_eq!(*original, first),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        core.metrics.batches.load(Ordering::Relaxed) - batches_before,
        2,
        "the blocker's batch and one for every racer"
    );
    let (count, keys) = core
        .view
        .read(|s| (s.signals.count(0, EntityId(7)), s.idempotency().len()));
    assert_eq!(count, 1);
    assert_eq!(keys, 1);
    core.shutdown().expect("shutdown");
}

#[test]
fn config_refuses_bad_idempotency_settings() {
    let field = |edit: &dyn Fn(crate::config::ConfigBuilder) -> crate::config::ConfigBuilder| {
        let b = Config::builder("/db").signal_type("like", Duration::from_secs(60));
        match edit(b).build() {
            Err(TidalError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    };
    assert_eq!(
        field(&|b| b.idempotency_ttl(Duration::ZERO)),
        "idempotency_ttl"
    );
    assert_eq!(
        field(&|b| b.idempotency_capacity(0)),
        "idempotency_capacity"
    );
    let limits = |n: usize| crate::Limits {
        max_idempotency_key_bytes: n,
        ..crate::Limits::default()
    };
    for n in [0, 1025] {
        assert_eq!(
            field(&|b| b.limits(limits(n))),
            "limits.max_idempotency_key_bytes"
        );
    }
    let c = Config::builder("/db")
        .signal_type("like", Duration::from_secs(60))
        .limits(limits(1024))
        .build()
        .expect("1024 is the codec's bound");
    assert_eq!(c.idempotency_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(c.idempotency_capacity, 1_000_000);
}
