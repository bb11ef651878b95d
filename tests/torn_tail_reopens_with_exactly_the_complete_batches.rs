//! A crash in the middle of writing the last batch leaves a torn tail. For
//! every byte offset inside the last batch of the last segment, cutting the
//! file there (zeroing the rest, as a pre-allocated segment looks, and
//! separately truncating the file) and reopening gives exactly the batches
//! before the cut: the counts, the items and `last_position()` of a model
//! of those batches, with the torn tail reported in `status().recovery.cuts`.
//! The reopened database accepts a write, and a further reopen holds it and
//! reports no new cut (the cut was made durable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::CutKind;
use tidal::storage::Storage;
use tidal::{Config, EntityId, ManualClock, Position, SimStorage, TidalDb, Timestamp, WriteBatch};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const WAL: &str = "/db/wal/shard-00000";
const BATCHES: u64 = 40;
const SIGNALS_PER_BATCH: u64 = 7;

fn open(storage: &Arc<SimStorage>) -> tidal::Result<TidalDb> {
    TidalDb::open(
        Config::builder(DIR)
            .signal_type("like", Duration::from_secs(3_600))
            .dimension(2)
            .segment_bytes(4096)
            .storage(storage.clone())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()?,
    )
}

/// Every file under `dir`, with its current bytes.
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

/// `(offset, len)` of every batch in a segment, read straight from the
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

/// What the first `n` batches hold: signal counts per entity and items.
#[derive(Debug, Default, PartialEq)]
struct Model {
    counts: BTreeMap<u64, i64>,
    items: BTreeMap<u64, String>,
}

fn batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..SIGNALS_PER_BATCH {
        let w = if (i + j).is_multiple_of(3) { -1.0 } else { 1.0 };
        b = b.signal("like", EntityId((i + j) % 5), w, Timestamp(NOW));
    }
    // Last in the batch, so the batch's last byte is a non-zero character
    // and every cut inside it changes the file.
    let v = format!("v{i}");
    b.write_item(EntityId(100 + i), None, &[("v", &v)])
}

fn model(n: u64) -> Model {
    let mut m = Model::default();
    for i in 0..n {
        for j in 0..SIGNALS_PER_BATCH {
            let w = if (i + j).is_multiple_of(3) { -1 } else { 1 };
            *m.counts.entry((i + j) % 5).or_default() += w;
        }
        m.items.insert(100 + i, format!("v{i}"));
    }
    m
}

fn state(db: &TidalDb) -> Model {
    let mut m = Model::default();
    for e in 0..5 {
        let c = db.read_count(EntityId(e), "like").unwrap();
        if c != 0 {
            m.counts.insert(e, c);
        }
    }
    for i in 0..BATCHES + 1 {
        if let Some(item) = db.get_item(EntityId(100 + i)) {
            m.items.insert(100 + i, item.metadata["v"].clone());
        }
    }
    m
}

fn check_cut(
    files: &[(PathBuf, Vec<u8>)],
    seg: &Path,
    offset: usize,
    truncate: bool,
    want: &Model,
    before_last: Position,
) {
    let mut files = files.to_vec();
    let (_, bytes) = files.iter_mut().find(|(p, _)| p == seg).unwrap();
    let original = bytes.clone();
    if truncate {
        bytes.truncate(offset);
    } else {
        bytes[offset..].iter_mut().for_each(|b| *b = 0);
    }
    assert_ne!(*bytes, original, "the cut at {offset} must change the file");
    let how = if truncate { "truncated" } else { "zeroed" };
    let sim = restore(&files);

    let db = open(&sim).unwrap_or_else(|e| panic!("reopen {how} at {offset}: {e}"));
    assert_eq!(&state(&db), want, "{how} at {offset}");
    assert_eq!(db.last_position(), before_last, "{how} at {offset}");
    let cuts = db.status().recovery.cuts;
    let (start, _) = *batches(&original).last().unwrap();
    if offset == start {
        // Nothing of the batch is left: the segment simply ends there.
        assert!(cuts.is_empty(), "{how} at {offset}: {cuts:?}");
    } else {
        assert_eq!(cuts.len(), 1, "{how} at {offset}: {cuts:?}");
        assert_eq!(cuts[0].path, seg, "{how} at {offset}");
        assert_eq!(cuts[0].offset, start as u64, "{how} at {offset}");
        assert_eq!(cuts[0].kind, CutKind::TornTail, "{how} at {offset}");
    }

    // The log continues right after the last complete batch.
    let p = db.signal("like", EntityId(4), 1.0, Timestamp(NOW)).unwrap();
    assert_eq!(p.seqno.0, before_last.seqno.0 + 1, "{how} at {offset}");
    db.close().unwrap();
    let db = open(&sim).unwrap_or_else(|e| panic!("second reopen {how} at {offset}: {e}"));
    assert!(db.status().recovery.cuts.is_empty(), "{how} at {offset}");
    assert_eq!(db.last_position(), p, "{how} at {offset}");
    let mut want = Model {
        counts: want.counts.clone(),
        items: want.items.clone(),
    };
    *want.counts.entry(4).or_default() += 1;
    want.counts.retain(|_, c| *c != 0);
    assert_eq!(state(&db), want, "{how} at {offset}");
    db.close().unwrap();
}

#[test]
fn every_cut_inside_the_last_batch_reopens_with_the_batches_before_it() {
    let sim = SimStorage::new();
    let db = open(&sim).unwrap();
    let mut positions = Vec::new();
    for i in 0..BATCHES {
        positions.push(db.write(batch(i)).unwrap());
    }
    assert_eq!(state(&db), model(BATCHES));
    db.close().unwrap();

    let mut files = Vec::new();
    image(&sim, Path::new(DIR), &mut files);
    let mut segs: Vec<&(PathBuf, Vec<u8>)> = files
        .iter()
        .filter(|(p, _)| p.starts_with(WAL) && p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(segs.len() >= 3, "small segments: {} of them", segs.len());
    let (seg, bytes) = segs.last().unwrap();
    let seg = seg.clone();
    let (start, len) = *batches(bytes).last().unwrap();
    let first = u64::from_le_bytes(bytes[start + 16..start + 24].try_into().unwrap());
    let last = positions[BATCHES as usize - 1];
    assert_eq!(
        first + SIGNALS_PER_BATCH,
        last.seqno.0,
        "the last batch is the last write"
    );
    assert!(len < 512, "a small batch: {len} bytes");

    let want = model(BATCHES - 1);
    let before_last = positions[BATCHES as usize - 2];
    for offset in start..start + len {
        check_cut(&files, &seg, offset, false, &want, before_last);
        check_cut(&files, &seg, offset, true, &want, before_last);
    }
}
