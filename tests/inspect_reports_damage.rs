//! `tidal::inspect` on a real data directory written by `TidalDb<Single>`
//! (several batches, a checkpoint, segment rolls): the clean directory is
//! reported clean with the right counts and left byte for byte unchanged;
//! a flipped byte in a batch payload, in a snapshot and in `META` is damage
//! naming that file and the offset recovery names; a truncated last batch
//! is a torn tail (not damage), as recovery classifies it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::inspect::{DirReport, InspectOptions, inspect_dir};
use tidal::{
    Config, CutKind, EntityId, Epoch, ManualClock, NodeId, Position, SeqNo, TidalDb, TidalError,
    Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const BEFORE_CHECKPOINT: u64 = 25;
const AFTER_CHECKPOINT: u64 = 40;
const SIGNALS_PER_WRITE: u64 = 3;

fn config(dir: &Path) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .dimension(2)
        .node_id(NodeId(7))
        .segment_bytes(4096)
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap()
}

fn write(db: &TidalDb, i: u64) -> Position {
    let mut b = WriteBatch::new();
    for j in 0..SIGNALS_PER_WRITE {
        b = b.signal("like", EntityId((i + j) % 7), 1.0, Timestamp(NOW));
    }
    db.write(b.write_item(EntityId(100 + i), None, &[("n", &i.to_string())]))
        .unwrap()
}

struct Sample {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    snapshot_seqno: SeqNo,
    last: Position,
}

fn sample() -> Sample {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = TidalDb::open(config(&dir)).unwrap();
    for i in 0..BEFORE_CHECKPOINT {
        write(&db, i);
    }
    let snapshot_seqno = db.checkpoint().unwrap();
    let mut last = Position::default();
    for i in BEFORE_CHECKPOINT..BEFORE_CHECKPOINT + AFTER_CHECKPOINT {
        last = write(&db, i);
    }
    db.close().unwrap();
    Sample {
        _tmp: tmp,
        dir,
        snapshot_seqno,
        last,
    }
}

/// Every file under `dir` with its bytes.
fn image(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            image(&p, out);
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
}

/// A copy of the sample's directory to damage.
fn copy(s: &Sample) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("db");
    let mut files = BTreeMap::new();
    image(&s.dir, &mut files);
    for (p, bytes) in files {
        let q = to.join(p.strip_prefix(&s.dir).unwrap());
        std::fs::create_dir_all(q.parent().unwrap()).unwrap();
        std::fs::write(q, bytes).unwrap();
    }
    (tmp, to)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let wal = dir.join("wal/shard-00000");
    let mut v: Vec<PathBuf> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// `(offset, len)` of every batch of a segment, read straight from the
/// bytes (magic `TDB2`, payload length at header offset 40).
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

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

fn inspect(dir: &Path) -> DirReport {
    inspect_dir(
        dir,
        InspectOptions {
            batches: true,
            records: true,
        },
    )
}

fn the_damage(r: &DirReport) -> (PathBuf, u64) {
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    (r.damage[0].file.clone(), r.damage[0].offset)
}

/// The file and offset recovery refuses the directory with.
fn recovery_refuses(dir: &Path) -> (PathBuf, u64) {
    match TidalDb::open(config(dir)) {
        Err(TidalError::Corruption { path, offset, .. }) => (path, offset),
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn inspect_reports_a_clean_directory_then_each_kind_of_damage() {
    let s = sample();
    let mut before = BTreeMap::new();
    image(&s.dir, &mut before);

    // Clean, with the right counts.
    let r = inspect(&s.dir);
    let mut after = BTreeMap::new();
    image(&s.dir, &mut after);
    assert!(before == after, "inspect must not change a byte");
    assert!(r.is_clean(), "{:#?}", r.damage);
    assert!(r.torn_tails.is_empty(), "{:?}", r.torn_tails);
    let m = r.meta.as_ref().unwrap();
    assert_eq!(m.node_id, NodeId(7));
    assert_eq!(m.dimension, 2);
    assert_eq!(
        m.signal_types,
        vec![("like".into(), 3_600_000), ("view".into(), 600_000)]
    );
    assert_eq!(r.shards.len(), 1);
    let shard = &r.shards[0];
    assert_eq!(shard.last, Some(s.last));
    assert_eq!(shard.snapshots.len(), 1);
    assert_eq!(shard.snapshots[0].seqno, s.snapshot_seqno);
    assert!(shard.snapshots[0].ok);
    // Header, signals, entities, vectors, sessions, merged, idempotency keys.
    assert_eq!(shard.snapshots[0].sections.len(), 7);
    let segs = segments(&s.dir);
    assert!(segs.len() >= 2, "segments rolled: {segs:?}");
    assert_eq!(shard.segments.len(), segs.len());
    // The retained log runs without a gap from its first segment to the
    // last write; every batch was counted, and their records add up.
    let first = shard.segments[0].first_seqno;
    assert!(
        first <= s.snapshot_seqno.next(),
        "the log covers the snapshot"
    );
    let mut next = first;
    let (mut batch_count, mut record_count) = (0u64, 0u64);
    for (seg, path) in shard.segments.iter().zip(&segs) {
        assert_eq!(&seg.file, path);
        let bytes = std::fs::read(path).unwrap();
        let on_disk = batches(&bytes);
        assert_eq!(
            seg.batch_count as usize,
            on_disk.len(),
            "{}",
            path.display()
        );
        assert_eq!(seg.size_bytes, bytes.len() as u64);
        for (b, (offset, len)) in seg.batches.iter().zip(&on_disk) {
            assert_eq!(b.offset, *offset as u64);
            assert_eq!(b.payload_bytes as usize + 48, *len);
            assert_eq!(b.first_seqno, next);
            assert_eq!(b.records.len(), b.record_count as usize);
            next = b.last_seqno.next();
        }
        batch_count += seg.batch_count;
        record_count += seg.record_count;
    }
    assert_eq!(next, s.last.seqno.next());
    assert_eq!(record_count, s.last.seqno.0 - first.0 + 1);
    // One write, one batch of 3 signals and an item (Sync, one writer).
    let writes_retained = batch_count - u64::from(first == SeqNo(1));
    assert_eq!(
        record_count - u64::from(first == SeqNo(1)),
        writes_retained * 4
    );
    assert_eq!(r.epochs.len(), 1, "{:?}", r.epochs);
    assert_eq!((r.epochs[0].epoch, r.epochs[0].start), (Epoch(1), SeqNo(1)));
    assert_eq!(r.epochs[0].leader_node, NodeId(7));
    assert!(r.diverged.is_empty());
    let snap_rel = shard.snapshots[0]
        .file
        .strip_prefix(&s.dir)
        .unwrap()
        .to_path_buf();

    // A flipped byte in the payload of a batch that has a valid batch
    // after it: damage at that batch's first byte, where recovery refuses.
    let (_t, dir) = copy(&s);
    let seg = segments(&dir).last().unwrap().clone();
    let (offset, len) = batches(&std::fs::read(&seg).unwrap())[1];
    flip(&seg, offset + 48 + len / 3);
    let r = inspect(&dir);
    assert_eq!(the_damage(&r), (seg.clone(), offset as u64));
    assert!(r.damage[0].what.contains("CRC"), "{}", r.damage[0].what);
    assert_eq!(recovery_refuses(&dir), (seg, offset as u64));

    // A flipped byte in a snapshot section's payload: damage at the CRC of
    // that section (the header is 44 bytes; a section is id u16, version
    // u16, length u64, payload, crc u32).
    let (_t, dir) = copy(&s);
    let snap = dir.join(&snap_rel);
    let bytes = std::fs::read(&snap).unwrap();
    let mut at = 44;
    let mut crc_at = Vec::new();
    while at + 4 < bytes.len() {
        let len = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
        crc_at.push((at + 12, at + 12 + len));
        at += 12 + len + 4;
    }
    let (payload, crc) = *crc_at.iter().find(|(p, c)| c > p).unwrap();
    flip(&snap, (payload + crc) / 2);
    let r = inspect(&dir);
    assert_eq!(the_damage(&r), (snap.clone(), crc as u64));
    assert!(!r.shards[0].snapshots[0].ok);
    // A flipped SeqNo in its header: the header CRC (offset 40) names it.
    let (_t, dir) = copy(&s);
    let snap = dir.join(&snap_rel);
    flip(&snap, 13);
    assert_eq!(the_damage(&inspect(&dir)), (snap, 40));

    // A flipped byte in META: its one CRC, at its last 4 bytes, names it;
    // recovery names the same place.
    let (_t, dir) = copy(&s);
    let meta = dir.join("META");
    flip(&meta, 9);
    let crc_offset = std::fs::metadata(&meta).unwrap().len() - 4;
    let r = inspect(&dir);
    assert_eq!(the_damage(&r), (meta.clone(), crc_offset));
    assert!(r.meta.is_none());
    assert_eq!(recovery_refuses(&dir), (meta, crc_offset));

    // A truncated last batch: a torn tail at its first byte, not damage;
    // recovery cuts it there and reports a TornTail.
    let (_t, dir) = copy(&s);
    let seg = segments(&dir).last().unwrap().clone();
    let (offset, len) = *batches(&std::fs::read(&seg).unwrap()).last().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((offset + len / 2) as u64).unwrap();
    drop(f);
    let r = inspect(&dir);
    assert!(r.is_clean(), "{:#?}", r.damage);
    assert_eq!(r.torn_tails.len(), 1, "{:?}", r.torn_tails);
    assert_eq!(
        (r.torn_tails[0].file.clone(), r.torn_tails[0].offset),
        (seg.clone(), offset as u64)
    );
    let db = TidalDb::open(config(&dir)).unwrap();
    let cuts = db.status().recovery.cuts;
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!(
        (cuts[0].path.clone(), cuts[0].offset, cuts[0].kind),
        (seg, offset as u64, CutKind::TornTail)
    );
    db.close().unwrap();
    // Once recovery has cut it, the directory is clean and tail-free.
    let r = inspect(&dir);
    assert!(r.is_clean() && r.torn_tails.is_empty(), "{r:#?}");
}
