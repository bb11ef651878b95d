//! The corruption sweep (issue 6, item 4). A small database (30 batches
//! over three log segments, two snapshots, `META`) is built once; then
//! bits of every segment, snapshot and `META` are flipped, and every one
//! of those files is truncated at every offset, each case on a fresh
//! in-memory copy of the pristine files, reopened through the real
//! `TidalDb::open`. A second layout puts the newest snapshot inside the
//! last segment and sweeps that segment.
//!
//! Flipped: every bit of `META` and of all framing (segment headers,
//! batch headers, the snapshot header, section framings and CRCs), and
//! one bit of every other byte (bit `offset % 8`: payloads and the
//! zero-filled tail), so the normal run stays near ten seconds on two
//! threads (a reopen costs about 0.4 ms, most of it allocating the empty
//! score index). Every bit of every file (156,078 cases for the
//! three-segment layout, about 30 s) is behind `--ignored`:
//! `cargo test --release --test corruption_sweep_every_bit_and_offset_reopens_safely -- --ignored`.
//!
//! No reopen may panic, and each must end in exactly the outcome an oracle
//! derives from the documented recovery rules (`src/wal/recovery.rs`,
//! DESIGN.md section 4) and the file layout:
//!
//! - **Prefix**: damage in the last segment with no valid batch after it
//!   (a torn tail): `Ok`, with exactly the answers the database gave after
//!   the last complete batch before the damage (or the newest snapshot's
//!   state, if that is further), and the cut reported as `TornTail` at the
//!   damaged batch's offset.
//! - **Corruption**: damage anywhere else in the log (a sealed segment, a
//!   bad batch with a valid one after it) or in `META`:
//!   `Err(Corruption)` naming the damaged file and the exact offset of the
//!   damaged batch (0 for a segment header, the end of the last batch for
//!   garbage in the zero-filled tail).
//! - **Fallback**: damage in the newest snapshot: `Ok` from the previous
//!   snapshot plus the log, with the full state, the damaged snapshot
//!   named in `skipped_snapshots`.
//! - **Not needed**: the older snapshot is not read while the newest is
//!   valid, and a sealed segment cut at a batch boundary below the newest
//!   snapshot only loses batches the snapshot holds: `Ok` with the full
//!   state. (Recovery does not notice that second case; it loses nothing.)
//!
//! Every `Ok` reopen also takes a write, which must land right after the
//! recovered position. Anything else fails the test, naming the file and
//! the bit or offset of every failing case.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal::storage::Storage;
use tidal::{
    Config, CutKind, EntityId, ManualClock, Position, SeqNo, SimStorage, TidalDb, TidalError,
    Timestamp, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIR: &str = "/db";
const WAL: &str = "/db/wal/shard-00000";
const SNAPS: &str = "/db/snapshots/shard-00000";
/// Enough writes for every item id `answers` looks at.
const MAX_WRITES: usize = 40;
const ENTITIES: u64 = 6;

fn config(sim: &Arc<SimStorage>) -> Config {
    Config::builder(DIR)
        .signal_type("like", Duration::from_secs(3_600))
        .dimension(2)
        .segment_bytes(4096)
        .storage(sim.clone())
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap()
}

/// The `i`th write: signals of both types (one a skip) and an item, about
/// 300 bytes of log, so a 4 KiB segment holds a dozen batches.
fn batch(i: usize) -> WriteBatch {
    let i = i as u64;
    let mut b = WriteBatch::new();
    for j in 0..6u64 {
        let e = EntityId((i + j) % ENTITIES);
        let w = if (i + j) % 5 == 2 {
            -1.0
        } else {
            0.5 + j as f64
        };
        b = b.signal("like", e, w, Timestamp(NOW - 1_000 + i * 10 + j));
    }
    let v = format!("value-{i:04}-{}", "x".repeat(40));
    b.write_item(EntityId(100 + i), None, &[("v", &v)])
}

/// Everything the reads say; scores bit for bit.
#[derive(Clone, Debug, PartialEq)]
struct Answers {
    last: Position,
    signals: Vec<(i64, u64)>,
    items: BTreeMap<u64, String>,
}

fn answers(db: &TidalDb) -> Answers {
    let at = Timestamp(NOW);
    let signals = (0..ENTITIES)
        .map(|e| {
            let e = EntityId(e);
            (
                db.read_count(e, "like").unwrap(),
                db.read_decay_score(e, "like", at).unwrap().to_bits(),
            )
        })
        .collect();
    let items = (0..MAX_WRITES as u64)
        .filter_map(|i| {
            db.get_item(EntityId(100 + i))
                .map(|it| (100 + i, it.metadata["v"].clone()))
        })
        .collect();
    Answers {
        last: db.last_position(),
        signals,
        items,
    }
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

/// One batch in a segment, read from the bytes (DESIGN.md section 4).
#[derive(Clone, Copy, Debug)]
struct BatchAt {
    start: usize,
    end: usize,
    last_seqno: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seqno: u64,
    batches: Vec<BatchAt>,
    /// End of the last batch: zeros from here on.
    end: usize,
}

fn parse_segment(path: &Path, seg: &[u8]) -> Segment {
    let first_seqno = u64::from_le_bytes(seg[16..24].try_into().unwrap());
    let mut batches = Vec::new();
    let mut o = 32;
    while o + 48 <= seg.len() && &seg[o..o + 4] == b"TDB2" {
        let count = u32::from_le_bytes(seg[o + 12..o + 16].try_into().unwrap()) as u64;
        let first = u64::from_le_bytes(seg[o + 16..o + 24].try_into().unwrap());
        let payload = u32::from_le_bytes(seg[o + 40..o + 44].try_into().unwrap()) as usize;
        batches.push(BatchAt {
            start: o,
            end: o + 48 + payload,
            last_seqno: first + count - 1,
        });
        o += 48 + payload;
    }
    assert!(seg[o..].iter().all(|b| *b == 0), "{}", path.display());
    Segment {
        path: path.to_path_buf(),
        first_seqno,
        batches,
        end: o,
    }
}

/// What a reopen must end in.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// `Ok` with the answers after `writes` writes, and this torn-tail cut.
    Prefix {
        writes: usize,
        cut: Option<(PathBuf, u64)>,
    },
    /// `Err(Corruption)` naming this file, at this offset (`None`: any
    /// offset inside the file).
    Corruption { path: PathBuf, offset: Option<u64> },
    /// `Ok` with the full state, recovered from the older snapshot after
    /// skipping the newest.
    Fallback,
    /// `Ok` with the full state from the newest snapshot: the damage is in
    /// bytes recovery has no need to read.
    NotNeeded,
}

impl Expect {
    fn class(&self) -> &'static str {
        match self {
            Expect::Prefix { .. } => "prefix (torn tail)",
            Expect::Corruption { .. } => "corruption",
            Expect::Fallback => "previous snapshot plus log",
            Expect::NotNeeded => "full state, damage not needed",
        }
    }
}

struct Pristine {
    files: Vec<(PathBuf, Vec<u8>)>,
    segments: Vec<Segment>,
    /// Answers after 0, 1, ... writes.
    after: Vec<Answers>,
    snaps: [PathBuf; 2],
    snap_seqnos: [u64; 2],
}

impl Pristine {
    /// How many writes a log ending at `seqno` holds.
    fn writes_through(&self, seqno: u64) -> usize {
        self.after
            .iter()
            .rposition(|a| a.last.seqno.0 <= seqno)
            .unwrap()
    }

    /// The outcome of a reopen with segment `i` damaged at `at` (the
    /// offset where recovery meets the damage), or cleanly ending there
    /// (`clean_end`: a truncation at a batch boundary).
    fn segment_outcome(&self, i: usize, at: usize, len: usize, clean_end: bool) -> Expect {
        let seg = &self.segments[i];
        let is_last = i + 1 == self.segments.len();
        let newest = self.snap_seqnos[1];
        // The log left in this segment before the damage.
        let kept_end = seg
            .batches
            .iter()
            .take_while(|b| b.end <= at)
            .last()
            .map_or(seg.first_seqno - 1, |b| b.last_seqno);
        let full_segment = seg.batches.last().is_none_or(|b| b.end <= at);
        if clean_end {
            if full_segment {
                return Expect::NotNeeded;
            }
            if is_last {
                return Expect::Prefix {
                    writes: self.writes_through(kept_end.max(newest)),
                    cut: None,
                };
            }
            // The next segment starts after a hole: refused, naming the
            // cut segment and its end, unless the snapshot holds every
            // batch lost.
            let lost_last = seg.batches.last().unwrap().last_seqno;
            return if lost_last <= newest {
                Expect::NotNeeded
            } else {
                Expect::Corruption {
                    path: seg.path.clone(),
                    offset: Some(at as u64),
                }
            };
        }
        // A valid batch after the damage makes it media damage.
        let valid_after = seg.batches.iter().any(|b| b.start > at && b.end <= len);
        if is_last && !valid_after {
            Expect::Prefix {
                writes: self.writes_through(kept_end.max(newest)),
                cut: Some((seg.path.clone(), at as u64)),
            }
        } else {
            Expect::Corruption {
                path: seg.path.clone(),
                offset: Some(at as u64),
            }
        }
    }

    /// Where recovery meets damage to byte `b` of segment `i`: the start of
    /// its unit (header, batch, or the zero tail).
    fn unit_start(&self, i: usize, b: usize) -> usize {
        let seg = &self.segments[i];
        if b < 32 {
            return 0;
        }
        seg.batches
            .iter()
            .find(|x| x.start <= b && b < x.end)
            .map_or(seg.end, |x| x.start)
    }

    fn expect(&self, path: &Path, damage: Damage) -> Expect {
        if let Some(i) = self.segments.iter().position(|s| s.path == path) {
            return match damage {
                Damage::Flip(bit) => {
                    self.segment_outcome(i, self.unit_start(i, bit / 8), usize::MAX, false)
                }
                Damage::Truncate(t) => {
                    let seg = &self.segments[i];
                    if t >= seg.end {
                        Expect::NotNeeded
                    } else if t < 32 {
                        self.segment_outcome(i, 0, t, false)
                    } else if seg.batches.iter().any(|b| b.start == t) {
                        self.segment_outcome(i, t, t, true)
                    } else {
                        self.segment_outcome(i, self.unit_start(i, t), t, false)
                    }
                }
            };
        }
        if path == self.snaps[1] {
            Expect::Fallback
        } else if path == self.snaps[0] {
            Expect::NotNeeded
        } else {
            Expect::Corruption {
                path: path.to_path_buf(),
                offset: None,
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip(usize),
    Truncate(usize),
}

/// Builds the database: `writes` batches, checkpoints after the writes
/// numbered in `snap_after`.
fn build(writes: usize, snap_after: [usize; 2]) -> Pristine {
    let sim = SimStorage::new();
    let db = TidalDb::open(config(&sim)).unwrap();
    let mut after = vec![answers(&db)];
    let mut snap_seqnos = Vec::new();
    for i in 0..writes {
        db.write(batch(i)).unwrap();
        after.push(answers(&db));
        if snap_after.contains(&(i + 1)) {
            snap_seqnos.push(db.checkpoint().unwrap().0);
        }
    }
    db.close().unwrap();
    let mut files = Vec::new();
    image(&sim, Path::new(DIR), &mut files);
    files.retain(|(p, _)| !p.ends_with("LOCK"));
    let mut segments: Vec<Segment> = files
        .iter()
        .filter(|(p, _)| p.starts_with(WAL) && p.extension().is_some_and(|x| x == "seg"))
        .map(|(p, b)| parse_segment(p, b))
        .collect();
    segments.sort_by_key(|s| s.first_seqno);
    let snap = |s: u64| Path::new(SNAPS).join(format!("{s:020}.snap"));
    let snaps = [snap(snap_seqnos[0]), snap(snap_seqnos[1])];
    Pristine {
        files,
        segments,
        after,
        snaps,
        snap_seqnos: [snap_seqnos[0], snap_seqnos[1]],
    }
}

/// What a reopen ended in, as the checks see it.
enum Got {
    Panicked(String),
    Opened {
        answers: Answers,
        snapshot: Option<PathBuf>,
        skipped: Vec<PathBuf>,
        cuts: Vec<(PathBuf, u64, CutKind)>,
        next_write: tidal::Result<Position>,
    },
    Failed(TidalError),
}

fn reopen(files: &[(PathBuf, Vec<u8>)], path: &Path, bytes: &[u8]) -> Got {
    let sim = SimStorage::new();
    for (p, b) in files {
        sim.write_raw(p, if p == path { bytes } else { b });
    }
    let run = catch_unwind(AssertUnwindSafe(|| match TidalDb::open(config(&sim)) {
        Err(e) => Got::Failed(e),
        Ok(db) => {
            let answers = answers(&db);
            let r = db.status().recovery;
            let next_write = db.signal("like", EntityId(0), 1.0, Timestamp(NOW));
            drop(db);
            Got::Opened {
                answers,
                snapshot: r.snapshot.map(|(p, _)| p),
                skipped: r.skipped_snapshots.into_iter().map(|(p, _)| p).collect(),
                cuts: r
                    .cuts
                    .into_iter()
                    .map(|c| (c.path, c.offset, c.kind))
                    .collect(),
                next_write,
            }
        }
    }));
    run.unwrap_or_else(|p| {
        Got::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        )
    })
}

/// Checks one outcome against the expectation; `Err` says what differs.
fn check(p: &Pristine, want: &Expect, got: Got) -> Result<(), String> {
    let full = p.after.last().unwrap();
    let (answers, snapshot, skipped, cuts, next_write) = match got {
        Got::Panicked(msg) => return Err(format!("panicked: {msg}")),
        Got::Failed(e) => {
            return match (want, &e) {
                (
                    Expect::Corruption { path, offset },
                    TidalError::Corruption {
                        path: got_path,
                        offset: got_offset,
                        ..
                    },
                ) if got_path == path && offset.is_none_or(|o| o == *got_offset) => Ok(()),
                _ => Err(format!("expected {want:?}, got Err({e})")),
            };
        }
        Got::Opened {
            answers,
            snapshot,
            skipped,
            cuts,
            next_write,
        } => (answers, snapshot, skipped, cuts, next_write),
    };
    let (want_answers, want_snap, want_skipped, want_cut) = match want {
        Expect::Corruption { .. } => {
            return Err(format!(
                "expected {want:?}, got Ok at {:?} (cuts {cuts:?})",
                answers.last
            ));
        }
        Expect::Prefix { writes, cut } => (&p.after[*writes], None, vec![], cut.clone()),
        Expect::Fallback => (full, Some(&p.snaps[0]), vec![p.snaps[1].clone()], None),
        Expect::NotNeeded => (full, Some(&p.snaps[1]), vec![], None),
    };
    if answers != *want_answers {
        return Err(format!(
            "expected {want:?}: answers at {:?}, got answers at {:?}{}",
            want_answers.last,
            answers.last,
            if answers.last == want_answers.last {
                " (same position, other state)"
            } else {
                ""
            }
        ));
    }
    // A prefix reopens from the newest snapshot, unless the whole log
    // after it was cut and the snapshot alone is the state.
    if let Some(s) = want_snap
        && snapshot.as_ref() != Some(s)
    {
        return Err(format!("expected {want:?}: recovered from {snapshot:?}"));
    }
    if skipped != want_skipped {
        return Err(format!("expected {want:?}: skipped {skipped:?}"));
    }
    let got_cut: Vec<_> = cuts.iter().map(|(p, o, _)| (p.clone(), *o)).collect();
    if got_cut != want_cut.iter().cloned().collect::<Vec<_>>()
        || cuts.iter().any(|c| c.2 != CutKind::TornTail)
    {
        return Err(format!("expected {want:?}: cuts {cuts:?}"));
    }
    match next_write {
        Ok(pos) if pos.seqno == SeqNo(answers.last.seqno.0 + 1) => Ok(()),
        other => Err(format!(
            "expected {want:?}: the next write after {:?} gave {other:?}",
            answers.last
        )),
    }
}

/// The bits flipped in one file: every bit of the framing (segment and batch headers; the snapshot header,
/// section framings and CRCs; all of `META`) and one bit of every other
/// byte (bit `offset % 8`), which keeps the sweep within seconds; with
/// `all`, every bit of the file.
fn bits_to_flip(p: &Pristine, path: &Path, bytes: &[u8], all: bool) -> Vec<usize> {
    let mut framing = vec![false; bytes.len()];
    let mut mark = |from: usize, len: usize| {
        let to = (from + len).min(framing.len());
        framing[from..to].iter_mut().for_each(|f| *f = true);
    };
    if path.ends_with("META") {
        mark(0, bytes.len());
    } else if let Some(seg) = p.segments.iter().find(|s| s.path == path) {
        mark(0, 32);
        seg.batches.iter().for_each(|b| mark(b.start, 48));
    } else {
        // Snapshot: 44 header bytes, sections (id, version, length,
        // payload, crc), a trailing crc (src/snapshot.rs).
        mark(0, 44);
        let mut o = 44;
        while o + 12 <= bytes.len() - 4 {
            let len = u64::from_le_bytes(bytes[o + 4..o + 12].try_into().unwrap()) as usize;
            mark(o, 12);
            mark(o + 12 + len, 4);
            o += 12 + len + 4;
        }
        mark(bytes.len() - 4, 4);
    }
    (0..bytes.len() * 8)
        .filter(|bit| all || framing[bit / 8] || bit % 8 == (bit / 8) % 8)
        .collect()
}

#[derive(Default)]
struct Tally {
    cases: usize,
    by_class: BTreeMap<&'static str, usize>,
    failures_by: BTreeMap<(PathBuf, &'static str, &'static str), usize>,
    failures: Vec<String>,
}

/// Sweeps `files` of `p` (flips as [`bits_to_flip`] says, truncations at
/// every offset) on two threads.
fn sweep(p: &Pristine, files: &[&(PathBuf, Vec<u8>)], all_bits: bool) -> Tally {
    let mut cases = Vec::new();
    for (path, bytes) in files {
        for bit in bits_to_flip(p, path, bytes, all_bits) {
            cases.push((path, bytes, Damage::Flip(bit)));
        }
        for t in 0..bytes.len() {
            cases.push((path, bytes, Damage::Truncate(t)));
        }
    }
    let run = |part: usize| {
        let mut tally = Tally::default();
        for (path, bytes, damage) in cases.iter().skip(part).step_by(2) {
            let mut bad = bytes.to_vec();
            let kind = match *damage {
                Damage::Flip(bit) => {
                    bad[bit / 8] ^= 1 << (bit % 8);
                    "flip"
                }
                Damage::Truncate(t) => {
                    bad.truncate(t);
                    "truncate"
                }
            };
            let want = p.expect(path, *damage);
            tally.cases += 1;
            *tally.by_class.entry(want.class()).or_default() += 1;
            if let Err(why) = check(p, &want, reopen(&p.files, path, &bad)) {
                let group = tally
                    .failures_by
                    .entry((path.to_path_buf(), kind, want.class()))
                    .or_insert(0);
                *group += 1;
                if *group <= 3 {
                    tally
                        .failures
                        .push(format!("{} {damage:?}: {why}", path.display()));
                }
            }
        }
        tally
    };
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| run(1));
        (run(0), other.join().unwrap())
    });
    let mut t = a;
    t.cases += b.cases;
    for (k, v) in b.by_class {
        *t.by_class.entry(k).or_default() += v;
    }
    for (k, v) in b.failures_by {
        *t.failures_by.entry(k).or_default() += v;
    }
    t.failures.extend(b.failures);
    t
}

fn assert_clean(what: &str, p: &Pristine, t: &Tally) {
    eprintln!(
        "{what}: snapshots at {:?}; segments (first SeqNo, batches, end, file bytes) {:?}",
        p.snap_seqnos,
        p.segments
            .iter()
            .map(|s| {
                let len = p.files.iter().find(|f| f.0 == s.path).unwrap().1.len();
                (s.first_seqno, s.batches.len(), s.end, len)
            })
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{what}: {} cases, expected outcomes {:?}",
        t.cases, t.by_class
    );
    assert!(
        t.failures.is_empty(),
        "{what}: failing cases by (file, damage, expected class): {:?}; the first of each:\n{}",
        t.failures_by,
        t.failures.join("\n")
    );
}

/// 30 writes over three segments; the older snapshot in the first
/// segment, the newest in the second, so a sealed segment holds batches
/// above the newest snapshot (a hole there is refused). Every segment,
/// snapshot and `META`.
#[test]
fn every_file_flipped_and_truncated_reopens_to_an_allowed_outcome() {
    sweep_three_segments(false);
}

/// The same with every bit of every file flipped (about a minute):
/// `cargo test --release --test corruption_sweep_every_bit_and_offset_reopens_safely -- --ignored`.
#[test]
#[ignore = "every bit of every file: about a minute"]
fn every_bit_of_every_file_flipped_reopens_to_an_allowed_outcome() {
    sweep_three_segments(true);
}

fn sweep_three_segments(all_bits: bool) {
    let p = build(30, [8, 26]);
    assert_eq!(p.segments.len(), 3, "{:?}", p.segments);
    let newest = p.snap_seqnos[1];
    assert!(p.segments[1].first_seqno <= newest && newest < p.segments[2].first_seqno);
    let swept: Vec<&(PathBuf, Vec<u8>)> = p
        .files
        .iter()
        .filter(|(path, _)| {
            p.segments.iter().any(|s| s.path == *path)
                || path.starts_with(SNAPS)
                || path.ends_with("META")
        })
        .collect();
    assert_eq!(swept.len(), 3 + 2 + 1, "{:?}", p.files);
    let t = sweep(&p, &swept, all_bits);
    assert_clean("all files", &p, &t);
    for class in [
        "prefix (torn tail)",
        "corruption",
        "previous snapshot plus log",
        "full state, damage not needed",
    ] {
        assert!(t.by_class.get(class).copied().unwrap_or(0) > 0, "{class}");
    }
}

/// 32 writes with the newest snapshot inside the last segment: a torn
/// tail may cut batches the snapshot already holds (the state is the
/// snapshot's, and the next write lands right after it). The last
/// segment only.
#[test]
fn every_bit_of_a_last_segment_straddling_the_snapshot_reopens_to_an_allowed_outcome() {
    let p = build(32, [8, 30]);
    let last = p.segments.last().unwrap();
    let newest = p.snap_seqnos[1];
    assert!(last.first_seqno <= newest && newest < last.batches.last().unwrap().last_seqno);
    let swept: Vec<&(PathBuf, Vec<u8>)> = p
        .files
        .iter()
        .filter(|(path, _)| *path == last.path)
        .collect();
    let t = sweep(&p, &swept, false);
    assert_clean("last segment", &p, &t);
}
