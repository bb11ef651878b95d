use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::crdt::hlc::ManualClock;
use crate::db::{TidalDb, WriteBatch};
use crate::snapshot::encode_snapshot;
use crate::storage::SimStorage;
use crate::types::{EntityId, Timestamp};
use crate::wal::format::encode_batch;

const NOW: u64 = 1_700_000_000_000;
const WAL: &str = "/db/wal/shard-00000";

fn config(sim: &Arc<SimStorage>) -> Config {
    Config::builder("/db")
        .signal_type("like", Duration::from_secs(3_600))
        .dimension(2)
        .segment_bytes(4096)
        .storage(sim.clone())
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap()
}

/// A database of `writes` two-signal batches, optionally checkpointed
/// after the first half.
fn db_with(writes: u64, checkpoint: bool) -> Arc<SimStorage> {
    let sim = SimStorage::new();
    let db = TidalDb::open(config(&sim)).unwrap();
    for i in 0..writes {
        let b = WriteBatch::new()
            .signal("like", EntityId(i % 5), 1.0, Timestamp(NOW))
            .signal("like", EntityId(i % 3), -1.0, Timestamp(NOW));
        db.write(b).unwrap();
        if checkpoint && i == writes / 2 {
            db.checkpoint().unwrap();
        }
    }
    db.close().unwrap();
    sim
}

fn inspect(sim: &SimStorage) -> DirReport {
    let options = InspectOptions {
        batches: true,
        records: false,
    };
    inspect_with(sim, Path::new("/db"), options)
}

fn segments(sim: &SimStorage) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = sim
        .list_dir(Path::new(WAL))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| Path::new(WAL).join(n))
        .collect();
    v.sort();
    v
}

fn flip(sim: &SimStorage, path: &Path, offset: usize) {
    let mut b = sim.read(path).unwrap();
    b[offset] ^= 0x08;
    sim.write_raw(path, &b);
}

#[test]
fn a_clean_log_is_clean_and_counts_every_batch() {
    let sim = db_with(200, false);
    let r = inspect(&sim);
    assert!(r.is_clean(), "{:#?}", r.damage);
    assert!(r.torn_tails.is_empty());
    let shard = &r.shards[0];
    assert!(shard.segments.len() >= 3, "{}", shard.segments.len());
    let batches: u64 = shard.segments.iter().map(|s| s.batch_count).sum();
    // The EpochStart batch, then one batch per write.
    assert_eq!(batches, 201);
    assert_eq!(shard.last.unwrap().seqno, SeqNo(401));
    assert_eq!(r.epochs.len(), 1);
    assert_eq!(r.epochs[0].source, segments(&sim)[0]);
}

#[test]
fn damage_in_the_last_segment_with_valid_batches_after_is_listed_with_later_damage() {
    let sim = db_with(200, false);
    let last = segments(&sim).pop().unwrap();
    let clean = inspect(&sim);
    let seg = clean.shards[0].segments.last().unwrap();
    assert!(seg.batches.len() >= 4);
    let (a, b) = (seg.batches[1].offset, seg.batches[3].offset);
    flip(&sim, &last, a as usize + 50);
    flip(&sim, &last, b as usize + 2);
    let r = inspect(&sim);
    let found: Vec<u64> = r.damage.iter().map(|d| d.offset).collect();
    assert_eq!(found, vec![a, b], "{:#?}", r.damage);
    assert!(r.damage.iter().all(|d| d.file == last));
    assert!(r.torn_tails.is_empty());
    // The walk went on after each: every other batch is still counted.
    let got = &r.shards[0].segments.last().unwrap();
    assert_eq!(got.batch_count, seg.batch_count - 2);
    assert_eq!(got.end_offset, a, "the valid data ends at the first damage");
}

#[test]
fn a_bad_tail_in_an_earlier_segment_is_damage_not_a_torn_tail() {
    let sim = db_with(200, false);
    let segs = segments(&sim);
    let clean = inspect(&sim);
    let seg = &clean.shards[0].segments[0];
    let last = seg.batches.last().unwrap().offset;
    flip(&sim, &segs[0], last as usize + 49);
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    assert_eq!(
        (r.damage[0].file.clone(), r.damage[0].offset),
        (segs[0].clone(), last)
    );
    assert!(r.damage[0].what.contains("before the last segment"));
}

#[test]
fn a_gap_between_segments_above_the_snapshot_is_damage() {
    let sim = db_with(200, false);
    let segs = segments(&sim);
    sim.remove_file(&segs[1]).unwrap();
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    // Named where the log breaks (as recovery names it), the missing
    // segment's successor in the message.
    assert_eq!(r.damage[0].file, segs[0]);
    let what = &r.damage[0].what;
    assert!(
        what.contains("gap") && what.contains(&*segs[2].to_string_lossy()),
        "{what}"
    );
}

#[test]
fn diverged_suffixes_are_verified_and_stay_out_of_the_epoch_history() {
    let sim = db_with(10, false);
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for (i, records) in [
        vec![Record::EpochStart {
            epoch: Epoch(2),
            leader_node: NodeId(9),
            hlc: Hlc::new(NOW, 0),
            replicated: true,
        }],
        vec![Record::DeleteUser {
            user: crate::types::UserId(3),
        }],
    ]
    .into_iter()
    .enumerate()
    {
        let meta = BatchMeta {
            shard: ShardId(0),
            first_seqno: SeqNo(22 + i as u64),
            epoch: Epoch(2),
            hlc: Hlc::new(NOW, 1),
            record_count: 1,
        };
        offsets.push(bytes.len() as u64);
        encode_batch(&meta, &records, &mut bytes);
    }
    let path = Path::new("/db/diverged/00000000000000000002-00000000000000000022.batches");
    sim.write_raw(path, &bytes);
    let r = inspect(&sim);
    assert!(r.is_clean(), "{:#?}", r.damage);
    assert_eq!(r.diverged.len(), 1);
    let d = &r.diverged[0];
    assert_eq!(
        (d.epoch, d.first_seqno, d.last_seqno, d.batch_count),
        (Some(Epoch(2)), Some(SeqNo(22)), Some(SeqNo(23)), 2)
    );
    assert_eq!(r.epochs.len(), 1, "a cut suffix is not history");
    flip(&sim, path, offsets[1] as usize + 50);
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    assert_eq!(
        (r.damage[0].file.as_path(), r.damage[0].offset),
        (path, offsets[1])
    );
}

#[test]
fn a_section_that_does_not_decode_behind_valid_crcs_is_damage_inside_it() {
    let sim = db_with(20, true);
    let snaps = crate::snapshot::list_snapshots(&*sim, Path::new("/db"), ShardId(0)).unwrap();
    let (seqno, path) = snaps[0].clone();
    let (header, mut sections) = decode_snapshot(&sim.read(&path).unwrap()).unwrap();
    assert_eq!(header.seqno, seqno);
    let i = sections.iter().position(|s| s.id == 2).unwrap();
    sections[i].bytes = vec![0xff; 3];
    sim.write_raw(&path, &encode_snapshot(&header, &sections));
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    let sizes: Vec<(u16, u16, u64)> = sections
        .iter()
        .map(|s| (s.id, s.version, s.bytes.len() as u64))
        .collect();
    let start = section_payload_offsets(&sizes)[i];
    let d = &r.damage[0];
    assert_eq!(d.file, path);
    assert!(
        (start..start + 3).contains(&d.offset),
        "{d:?}, section at {start}"
    );
    assert!(!r.shards[0].snapshots[0].ok);
}

#[test]
fn missing_meta_beside_data_is_damage_and_an_empty_dir_is_not() {
    let sim = db_with(3, false);
    sim.remove_file(Path::new("/db/META")).unwrap();
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].file, Path::new("/db/META"));
    let empty = SimStorage::new();
    let r = inspect_with(&*empty, Path::new("/nothing"), InspectOptions::default());
    assert!(r.is_clean() && r.shards.is_empty(), "{r:#?}");
}

#[test]
fn inspecting_an_open_database_takes_no_lock_and_writes_nothing() {
    let sim = db_with(50, true);
    let db = TidalDb::open(config(&sim)).unwrap();
    let files: Vec<PathBuf> = segments(&sim)
        .into_iter()
        .chain([PathBuf::from("/db/META")])
        .collect();
    let before: Vec<Vec<u8>> = files.iter().map(|p| sim.read(p).unwrap()).collect();
    let syncs = sim.sync_count();
    let r = inspect(&sim);
    assert!(r.is_clean(), "{:#?}", r.damage);
    let after: Vec<Vec<u8>> = files.iter().map(|p| sim.read(p).unwrap()).collect();
    assert!(before == after);
    assert_eq!(sim.sync_count(), syncs);
    db.close().unwrap();
}

#[test]
fn next_valid_batch_finds_the_first_whole_batch() {
    let meta = BatchMeta {
        shard: ShardId(0),
        first_seqno: SeqNo(1),
        epoch: Epoch(1),
        hlc: Hlc::new(NOW, 0),
        record_count: 1,
    };
    let mut b = vec![0u8; 7];
    encode_batch(
        &meta,
        &[Record::DeleteUser {
            user: crate::types::UserId(1),
        }],
        &mut b,
    );
    assert_eq!(next_valid_batch(&b, 0), Some(7));
    assert_eq!(next_valid_batch(&b, 8), None);
    assert_eq!(next_valid_batch(&b[..b.len() - 1], 0), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes in any file the walk reads never panic it, and a
    /// damaged segment is always either damage or a torn tail.
    #[test]
    fn arbitrary_bytes_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        at in 0usize..4096,
        target in 0usize..4,
    ) {
        let sim = db_with(4, true);
        let path = match target {
            0 => segments(&sim)[0].clone(),
            1 => PathBuf::from("/db/META"),
            2 => crate::snapshot::list_snapshots(&*sim, Path::new("/db"), ShardId(0))
                .unwrap()[0]
                .1
                .clone(),
            _ => PathBuf::from("/db/diverged/x.batches"),
        };
        let original = inspect(&sim);
        let mut bytes = sim.read(&path).unwrap_or_default();
        let at = at.min(bytes.len());
        let end = (at + junk.len()).min(bytes.len());
        bytes.splice(at..end, junk.iter().copied());
        let changed = sim.read(&path).is_none_or(|old| old != bytes);
        sim.write_raw(&path, &bytes);
        let r = inspect(&sim);
        if changed {
            match target {
                // A changed segment is damage, a torn tail, or zeros that
                // end it earlier (or later): its batches a prefix of before.
                0 => {
                    let was = &original.shards[0].segments[0].batches;
                    let now = &r.shards[0].segments[0].batches;
                    prop_assert!(
                        !r.is_clean() || !r.torn_tails.is_empty() || was.starts_with(now),
                        "{r:#?}"
                    );
                }
                // One CRC covers every byte of META and of a snapshot.
                1 | 2 => prop_assert!(!r.is_clean(), "{r:#?}"),
                _ => prop_assert!(bytes.is_empty() || !r.is_clean(), "{r:#?}"),
            }
        }
    }
}

/// Every file under `dir` with its bytes.
fn image(sim: &SimStorage, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for name in sim.list_dir(dir).unwrap() {
        let p = dir.join(name);
        match sim.read(&p) {
            Some(bytes) => out.push((p, bytes)),
            None => image(sim, &p, out),
        }
    }
}

/// A file and an offset in it.
type Place = Option<(PathBuf, u64)>;

/// What recovery makes of a directory, in inspect's terms: the damage it
/// refuses with, or the torn tail it cuts.
fn recovery_verdict(sim: &Arc<SimStorage>) -> (Place, Place) {
    match TidalDb::open(config(sim)) {
        Err(crate::TidalError::Corruption { path, offset, .. }) => (Some((path, offset)), None),
        Err(e) => panic!("unexpected {e}"),
        Ok(db) => {
            let cuts = db.status().recovery.cuts;
            db.close().unwrap();
            assert!(cuts.len() <= 1, "{cuts:?}");
            let torn = cuts.first().map(|c| {
                assert_eq!(c.kind, crate::CutKind::TornTail, "{c:?}");
                (c.path.clone(), c.offset)
            });
            (None, torn)
        }
    }
}

/// For a flipped bit anywhere in the log's segments, or a segment cut
/// short there (every third byte, pre-allocated zeros included), inspect
/// names the place recovery refuses (`Corruption`), or the torn tail
/// recovery cuts, or nothing when recovery finds nothing.
#[test]
fn inspect_agrees_with_recovery_on_flipped_bytes_and_cuts_of_the_log() {
    let sim = db_with(60, true);
    let mut files = Vec::new();
    image(&sim, Path::new("/db"), &mut files);
    let segs = segments(&sim);
    assert!(segs.len() >= 2);
    let (mut damage, mut torn, mut clean) = ([0; 2], [0; 2], [0; 2]);
    for (seg, cut) in segs.iter().flat_map(|s| [(s, false), (s, true)]) {
        let len = sim.read(seg).unwrap().len();
        for offset in (0..len).step_by(3) {
            let copy = SimStorage::new();
            for (p, b) in &files {
                copy.write_raw(p, b);
            }
            if cut {
                let bytes = copy.read(seg).unwrap();
                copy.write_raw(seg, &bytes[..offset]);
            } else {
                flip(&copy, seg, offset);
            }
            let r = inspect(&copy);
            let got = (
                r.damage.first().map(|d| (d.file.clone(), d.offset)),
                r.torn_tails.first().map(|t| (t.file.clone(), t.offset)),
            );
            let got = if got.0.is_some() { (got.0, None) } else { got };
            let want = recovery_verdict(&copy);
            let how = if cut { "cut" } else { "flip" };
            assert_eq!(got, want, "{how} at {} {offset}: {:#?}", seg.display(), r);
            let k = usize::from(cut);
            match want {
                (Some(_), _) => damage[k] += 1,
                (None, Some(_)) => torn[k] += 1,
                (None, None) => clean[k] += 1,
            }
        }
    }
    // Every outcome was seen. A flipped bit is never silent (the zeros
    // after the last batch are read too); a cut at a batch boundary is.
    let counts = format!("damage {damage:?}, torn {torn:?}, clean {clean:?}");
    assert!(damage[0] > 0 && torn[0] > 0 && clean[0] == 0, "{counts}");
    assert!(damage[1] > 0 && torn[1] > 0 && clean[1] > 0, "{counts}");
}

/// Opens the database on `sim` as recovery would; the corruption it
/// reports as `(file, offset, what)`.
fn recovery_says(sim: &Arc<SimStorage>) -> (PathBuf, u64, String) {
    match TidalDb::open(config(sim)) {
        Err(crate::TidalError::Corruption {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(e) => panic!("recovery reported another error: {e}"),
        Ok(_) => panic!("recovery opened the damaged log"),
    }
}

#[test]
fn a_gap_between_segments_is_named_as_recovery_names_it() {
    let sim = db_with(200, false);
    let segs = segments(&sim);
    let clean = inspect(&sim);
    sim.remove_file(&segs[1]).unwrap();
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    let d = &r.damage[0];
    let said = recovery_says(&sim);
    assert_eq!((d.file.clone(), d.offset, d.what.clone()), said);
    // Named where the log breaks: the end of the segment before the gap.
    let end = clean.shards[0].segments[0].end_offset;
    assert_eq!((said.0, said.1), (segs[0].clone(), end));
    assert!(said.2.starts_with("gap in the log: segment "), "{}", said.2);
}

#[test]
fn a_seqno_jump_inside_a_segment_is_named_as_recovery_names_it() {
    use crate::wal::format::{BATCH_HEADER_LEN, Schema, decode_header, decode_records};
    let sim = db_with(200, false);
    let last = segments(&sim).pop().unwrap();
    let clean = inspect(&sim);
    let at = clean.shards[0]
        .segments
        .last()
        .unwrap()
        .batches
        .last()
        .unwrap()
        .offset as usize;
    // The last batch, re-encoded (a valid CRC) two SeqNos further on.
    let mut bytes = sim.read(&last).unwrap();
    let (mut meta, len, _) = decode_header(&bytes[at..]).unwrap();
    let payload = &bytes[at + BATCH_HEADER_LEN..at + BATCH_HEADER_LEN + len as usize];
    let schema = Schema {
        signal_type_count: 1,
        dimension: 2,
    };
    let mut records = Vec::new();
    decode_records(payload, meta.record_count, &schema, &mut records).unwrap();
    meta.first_seqno = SeqNo(meta.first_seqno.0 + 2);
    let mut batch = Vec::new();
    encode_batch(&meta, &records, &mut batch);
    assert_eq!(batch.len(), BATCH_HEADER_LEN + len as usize);
    bytes[at..at + batch.len()].copy_from_slice(&batch);
    sim.write_raw(&last, &bytes);
    let r = inspect(&sim);
    assert_eq!(r.damage.len(), 1, "{:#?}", r.damage);
    let d = &r.damage[0];
    let said = recovery_says(&sim);
    assert_eq!((d.file.clone(), d.offset, d.what.clone()), said);
    assert_eq!((said.0, said.1), (last, at as u64));
    assert!(
        said.2.starts_with("SeqNos not contiguous in the segment"),
        "{}",
        said.2
    );
}
