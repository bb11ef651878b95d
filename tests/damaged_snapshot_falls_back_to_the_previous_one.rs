//! Recovery starts from the newest valid snapshot. With two checkpoints
//! taken (writes between and after), damaging the newest snapshot file (a
//! flipped byte, a truncation, zeros) makes recovery fall back to the older
//! one and replay the log since it: the reopened database answers exactly
//! as before (counts, decay scores, items, sessions and their events, last
//! position), and `status().recovery.skipped_snapshots` names the damaged
//! file. With both snapshots damaged, reopening is `Corruption` rather than
//! a silent start from whatever log is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::storage::Storage;
use tidal::{
    Config, EntityId, ManualClock, Position, SessionEvent, SessionId, SessionInfo, SimStorage,
    TidalDb, TidalError, Timestamp, UserId,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const SNAPS: &str = "/db/snapshots/shard-00000";

fn open(storage: &Arc<SimStorage>) -> tidal::Result<TidalDb> {
    TidalDb::open(
        Config::builder(DIR)
            .signal_type("view", Duration::from_secs(600))
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(4096)
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW + 10_000)))
            .build()?,
    )
}

fn image(sim: &SimStorage, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for name in sim.list_dir(dir).unwrap() {
        let p = dir.join(name);
        match sim.read(&p) {
            Some(bytes) => out.push((p, bytes)),
            None => image(sim, &p, out),
        }
    }
}

fn restore(files: &[(PathBuf, Vec<u8>)]) -> Arc<SimStorage> {
    let sim = SimStorage::new();
    for (p, bytes) in files {
        sim.write_raw(p, bytes);
    }
    sim
}

/// Writes of phase `phase`: signals of both types, items, one session.
fn phase(db: &TidalDb, phase: u64) {
    for i in 0..30u64 {
        let at = Timestamp(NOW + phase * 1_000 + i);
        let w = if i % 7 == 3 {
            -1.0
        } else {
            0.5 + i as f64 / 8.0
        };
        db.signal("view", EntityId(i % 11), w, at).unwrap();
        db.signal("like", EntityId(i % 5), 1.0, at).unwrap();
    }
    for i in 0..5u64 {
        db.write_item(EntityId(100 + i), None, &[("phase", &phase.to_string())])
            .unwrap();
    }
    let s = SessionId(phase);
    db.open_session(s, UserId(phase), Timestamp(NOW + phase * 1_000))
        .unwrap();
    for i in 0..4u64 {
        db.record_session_event(
            s,
            EntityId(i),
            "view",
            1.0,
            Timestamp(NOW + phase * 1_000 + i),
        )
        .unwrap();
    }
    if phase != 2 {
        db.close_session(s, Timestamp(NOW + phase * 1_000 + 10))
            .unwrap();
    }
}

type Answers = (
    Position,
    Vec<(i64, i64, u64, u64)>,
    Vec<Option<String>>,
    Vec<(Option<SessionInfo>, Vec<SessionEvent>)>,
);

/// Everything the reads say, scores compared bit for bit.
fn answers(db: &TidalDb) -> Answers {
    let at = Timestamp(NOW + 5_000);
    let signals = (0..12)
        .map(|e| {
            let e = EntityId(e);
            (
                db.read_count(e, "view").unwrap(),
                db.read_count(e, "like").unwrap(),
                db.read_decay_score(e, "view", at).unwrap().to_bits(),
                db.read_decay_score(e, "like", at).unwrap().to_bits(),
            )
        })
        .collect();
    let items = (100..106)
        .map(|i| {
            db.get_item(EntityId(i))
                .map(|it| it.metadata["phase"].clone())
        })
        .collect();
    let sessions = (0..4)
        .map(|s| {
            (
                db.session(SessionId(s)),
                db.session_events(SessionId(s), 1, 100),
            )
        })
        .collect();
    (db.last_position(), signals, items, sessions)
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one_plus_the_log() {
    let sim = SimStorage::new();
    let db = open(&sim).unwrap();
    phase(&db, 0);
    let older = db.checkpoint().unwrap();
    phase(&db, 1);
    let newer = db.checkpoint().unwrap();
    phase(&db, 2);
    let want = answers(&db);
    assert!(older < newer && newer < want.0.seqno);
    db.close().unwrap();

    let mut files = Vec::new();
    image(&sim, Path::new(DIR), &mut files);
    let snap = |s: tidal::SeqNo| Path::new(SNAPS).join(format!("{:020}.snap", s.0));
    let (older_path, newer_path) = (snap(older), snap(newer));
    let snaps: Vec<&PathBuf> = files
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(SNAPS))
        .collect();
    assert_eq!(snaps, vec![&older_path, &newer_path]);

    // The intact files reopen from the newest snapshot.
    let db = open(&restore(&files)).unwrap();
    assert_eq!(answers(&db), want);
    let r = db.status().recovery;
    assert_eq!(r.snapshot, Some((newer_path.clone(), newer)));
    assert!(r.skipped_snapshots.is_empty());
    db.close().unwrap();

    let newer_bytes = files
        .iter()
        .find(|(p, _)| *p == newer_path)
        .unwrap()
        .1
        .clone();
    let n = newer_bytes.len();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte in the middle", {
            let mut b = newer_bytes.clone();
            b[n / 2] ^= 0x20;
            b
        }),
        ("a flipped bit in the header", {
            let mut b = newer_bytes.clone();
            b[9] ^= 0x01;
            b
        }),
        ("a flipped bit in the checksum", {
            let mut b = newer_bytes.clone();
            b[n - 1] ^= 0x80;
            b
        }),
        ("a truncation", newer_bytes[..n - 7].to_vec()),
        ("zeros", vec![0; n]),
        ("an empty file", Vec::new()),
    ];
    for (what, bad) in damages {
        let mut files = files.clone();
        files.iter_mut().find(|(p, _)| *p == newer_path).unwrap().1 = bad;
        let sim = restore(&files);
        let db = open(&sim).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answers(&db), want, "{what}");
        let r = db.status().recovery;
        assert_eq!(r.snapshot, Some((older_path.clone(), older)), "{what}");
        assert_eq!(
            r.skipped_snapshots.len(),
            1,
            "{what}: {:?}",
            r.skipped_snapshots
        );
        assert_eq!(r.skipped_snapshots[0].0, newer_path, "{what}");
        assert!(r.batches_replayed > 0, "{what}");
        // Writes continue, and a reopen still gives the same answers.
        let p = db
            .signal("like", EntityId(1), 1.0, Timestamp(NOW + 3_000))
            .unwrap();
        let after = answers(&db);
        assert_eq!(after.0, p);
        db.close().unwrap();
        let db = open(&sim).unwrap_or_else(|e| panic!("{what}, second reopen: {e}"));
        assert_eq!(answers(&db), after, "{what}");
        db.close().unwrap();
    }

    // Both damaged: refused, naming the newest, rather than starting empty.
    let mut both = files.clone();
    for (p, b) in both.iter_mut() {
        if p.starts_with(SNAPS) {
            let n = b.len();
            b[n / 2] ^= 0x20;
        }
    }
    match open(&restore(&both)) {
        Err(TidalError::Corruption { path, .. }) => assert_eq!(path, newer_path),
        other => panic!("expected Corruption, got {other:?}"),
    }
}
