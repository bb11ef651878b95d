//! One flipped bit in an earlier, sealed segment is damage recovery must
//! not skip: those batches were synced (a later segment exists only after
//! its predecessor was synced), so they may hold acknowledged writes. For
//! every byte of a batch in the middle of the first segment, one bit flipped
//! there makes the default `RecoveryMode::Strict` reopen fail with
//! `TidalError::Corruption` naming the file and the damaged batch's offset.
//! `RecoveryMode::PointInTime` opens instead and stops at the last good
//! batch: the state equals the state at that batch, the cut and every
//! later segment set aside (renamed `*.damaged`) are reported, and the
//! database then accepts writes and reopens strictly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::CutKind;
use tidal::storage::Storage;
use tidal::{
    Config, EntityId, ManualClock, Position, RecoveryMode, SimStorage, TidalDb, TidalError,
    Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const WAL: &str = "/db/wal/shard-00000";
const BATCHES: u64 = 60;
const SIGNALS_PER_BATCH: u64 = 6;

fn open(storage: &Arc<SimStorage>, mode: RecoveryMode) -> tidal::Result<TidalDb> {
    TidalDb::open(
        Config::builder(DIR)
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(4096)
            .recovery_mode(mode)
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()?,
    )
}

fn restore(files: &[(PathBuf, Vec<u8>)]) -> Arc<SimStorage> {
    let sim = SimStorage::new();
    for (p, bytes) in files {
        sim.write_raw(p, bytes);
    }
    sim
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
fn a_flipped_bit_in_a_sealed_segment_is_corruption_unless_point_in_time() {
    let sim = SimStorage::new();
    let db = open(&sim, RecoveryMode::Strict).unwrap();
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

    let files = files_of(&sim);
    let segs: Vec<PathBuf> = files
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| p.starts_with(WAL) && p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let seg = &segs[0];
    let bytes = &files.iter().find(|(p, _)| p == seg).unwrap().1;
    let in_seg = batches(bytes);
    let (offset, len) = in_seg[in_seg.len() / 2];
    let first = u64::from_le_bytes(bytes[offset + 16..offset + 24].try_into().unwrap());
    let damaged = positions
        .iter()
        .position(|p| p.seqno.0 + 1 - SIGNALS_PER_BATCH == first)
        .unwrap();
    assert!(damaged > 0);
    let want = model(damaged as u64);
    let last_good = positions[damaged - 1];

    for at in offset..offset + len {
        let mut files = files.clone();
        let file = &mut files.iter_mut().find(|(p, _)| p == seg).unwrap().1;
        file[at] ^= 1 << (at % 8);

        // Strict (the default): refused, naming the file and the batch.
        let sim = restore(&files);
        match open(&sim, RecoveryMode::Strict) {
            Err(TidalError::Corruption {
                path,
                offset: o,
                reason,
            }) => {
                assert_eq!(&path, seg, "bit at {at}: {reason}");
                assert_eq!(o, offset as u64, "bit at {at}: {reason}");
            }
            other => panic!("bit at {at}: expected Corruption, got {other:?}"),
        }
        assert_eq!(
            files_of(&sim),
            files,
            "bit at {at}: a refused open changes nothing"
        );

        // Point in time: stops at the last good batch and says so.
        let db = open(&sim, RecoveryMode::PointInTime)
            .unwrap_or_else(|e| panic!("bit at {at}: point-in-time open: {e}"));
        assert_eq!(counts(&db), want, "bit at {at}");
        assert_eq!(db.last_position(), last_good, "bit at {at}");
        let cuts = db.status().recovery.cuts;
        assert_eq!(cuts.len(), segs.len(), "bit at {at}: {cuts:?}");
        assert_eq!(&cuts[0].path, seg, "bit at {at}");
        assert_eq!(cuts[0].offset, offset as u64, "bit at {at}");
        for (cut, later) in cuts.iter().zip(&segs).skip(1) {
            assert_eq!(&cut.path, later, "bit at {at}");
            assert!(
                !sim.exists(later),
                "bit at {at}: {} set aside",
                later.display()
            );
            let kept = later.with_extension("seg.damaged");
            assert!(sim.read(&kept).is_some(), "bit at {at}: evidence kept");
        }
        assert!(
            cuts.iter().all(|c| c.kind == CutKind::PointInTime),
            "bit at {at}"
        );

        // Writes continue after the last good batch; a strict reopen is clean.
        let p = db.signal("like", EntityId(0), 1.0, Timestamp(NOW)).unwrap();
        assert_eq!(p.seqno, last_good.seqno.next(), "bit at {at}");
        db.close().unwrap();
        let db = open(&sim, RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("bit at {at}: strict reopen: {e}"));
        assert!(db.status().recovery.cuts.is_empty(), "bit at {at}");
        assert_eq!(db.last_position(), p, "bit at {at}");
        let mut after = want.clone();
        *after.entry(0).or_default() += 1;
        after.retain(|_, c| *c != 0);
        assert_eq!(counts(&db), after, "bit at {at}");
        db.close().unwrap();
    }
}
