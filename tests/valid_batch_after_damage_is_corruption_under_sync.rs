//! A damaged batch in the middle of the last segment, with valid batches
//! after it, is media damage, not a torn write. Under `Durability::Sync`
//! the batches after it may have been acknowledged, so reopening is
//! `TidalError::Corruption` naming the segment and the damaged batch's
//! offset, and changes nothing on disk. Under `Durability::Periodic`
//! (unsynced pages reach the disk out of order) it is a reported cut: the
//! database holds exactly the batches before the damage, and carries on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::CutKind;
use tidal::storage::Storage;
use tidal::{
    Config, Durability, EntityId, ManualClock, Position, SimStorage, TidalDb, TidalError,
    Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const WAL: &str = "/db/wal/shard-00000";
const BATCHES: u64 = 50;
const SIGNALS_PER_BATCH: u64 = 6;

fn open(storage: &Arc<SimStorage>, durability: Durability) -> tidal::Result<TidalDb> {
    TidalDb::open(
        Config::builder(DIR)
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(4096)
            .durability(durability)
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
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

fn files_of(sim: &SimStorage) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    image(sim, Path::new(DIR), &mut files);
    files.sort();
    files
}

fn batches(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut o = 32;
    while o + 48 <= seg.len() && &seg[o..o + 4] == b"TDB2" {
        let payload = u32::from_le_bytes(seg[o + 40..o + 44].try_into().unwrap()) as usize;
        out.push((o, 48 + payload));
        o += 48 + payload;
    }
    out
}

fn weight(i: u64, j: u64) -> i64 {
    if (i * 7 + j).is_multiple_of(4) { -1 } else { 1 }
}

fn model(n: u64) -> BTreeMap<u64, i64> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        for j in 0..SIGNALS_PER_BATCH {
            *m.entry(i % 9 + j).or_default() += weight(i, j);
        }
    }
    m.retain(|_, c| *c != 0);
    m
}

fn counts(db: &TidalDb) -> BTreeMap<u64, i64> {
    (0..9 + SIGNALS_PER_BATCH)
        .map(|e| (e, db.read_count(EntityId(e), "like").unwrap()))
        .filter(|(_, c)| *c != 0)
        .collect()
}

#[test]
fn damage_before_a_valid_batch_is_refused_under_sync_and_cut_under_periodic() {
    let sim = SimStorage::new();
    let db = open(&sim, Durability::Sync).unwrap();
    let mut positions: Vec<Position> = Vec::new();
    for i in 0..BATCHES {
        let mut b = WriteBatch::new();
        for j in 0..SIGNALS_PER_BATCH {
            b = b.signal(
                "like",
                EntityId(i % 9 + j),
                weight(i, j) as f64,
                Timestamp(NOW),
            );
        }
        positions.push(db.write(b).unwrap());
    }
    assert_eq!(counts(&db), model(BATCHES));
    db.close().unwrap();

    // The middle batch of the last segment, with valid batches after it.
    let files = files_of(&sim);
    let (seg, bytes) = files
        .iter()
        .filter(|(p, _)| p.starts_with(WAL) && p.extension().is_some_and(|e| e == "seg"))
        .max_by(|a, b| a.0.cmp(&b.0))
        .unwrap();
    assert_ne!(
        seg,
        &Path::new(WAL).join("00000000000000000001.seg"),
        "several segments"
    );
    let in_seg = batches(bytes);
    assert!(
        in_seg.len() >= 3,
        "{} batches in the last segment",
        in_seg.len()
    );
    let (offset, _) = in_seg[in_seg.len() / 2];
    let first = u64::from_le_bytes(bytes[offset + 16..offset + 24].try_into().unwrap());
    let damaged = positions
        .iter()
        .position(|p| p.seqno.0 + 1 - SIGNALS_PER_BATCH == first)
        .unwrap() as u64;
    assert!(damaged > 0 && damaged + 1 < BATCHES);

    // Flip one byte of its payload (a weight), behind the database's back.
    let mut bad = bytes.clone();
    bad[offset + 48 + 12] ^= 0x40;
    sim.write_raw(seg, &bad);
    let before = files_of(&sim);

    // Sync: refused, naming the segment and the damaged batch, nothing changed.
    for _ in 0..2 {
        match open(&sim, Durability::Sync) {
            Err(TidalError::Corruption {
                path,
                offset: at,
                reason,
            }) => {
                assert_eq!(&path, seg, "{reason}");
                assert_eq!(at, offset as u64, "{reason}");
            }
            other => panic!("expected Corruption, got {other:?}"),
        }
        assert_eq!(files_of(&sim), before, "a refused open changes nothing");
    }

    // Periodic: a reported cut; exactly the batches before the damage.
    let db = open(&sim, Durability::Periodic(Duration::from_millis(20))).unwrap();
    let cuts = db.status().recovery.cuts;
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!(&cuts[0].path, seg);
    assert_eq!(cuts[0].offset, offset as u64);
    assert_eq!(cuts[0].kind, CutKind::MediaDamageUnderPeriodic);
    assert_eq!(counts(&db), model(damaged));
    assert_eq!(db.last_position(), positions[damaged as usize - 1]);

    // The log continues after the cut, and a Sync reopen now reads it cleanly.
    let p = db.signal("like", EntityId(0), 1.0, Timestamp(NOW)).unwrap();
    assert_eq!(p.seqno, positions[damaged as usize - 1].seqno.next());
    db.close().unwrap();
    let db = open(&sim, Durability::Sync).unwrap();
    assert!(db.status().recovery.cuts.is_empty());
    let mut want = model(damaged);
    *want.entry(0).or_default() += 1;
    want.retain(|_, c| *c != 0);
    assert_eq!(counts(&db), want);
    assert_eq!(db.last_position(), p);
    db.close().unwrap();
}
