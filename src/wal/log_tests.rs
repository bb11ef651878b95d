//! Tests of the shard log: rolls, reopen, torn tails, damage and retention.

use super::*;
use crate::crdt::hlc::Hlc;
use crate::storage::RealStorage;
use crate::types::{EntityId, EntityKind, Epoch, Timestamp};
use crate::wal::format::encode_batch;
use crate::wal::segment::{encode_segment_header, segment_name};

pub(super) const SCHEMA: Schema = Schema {
    signal_type_count: 3,
    dimension: 2,
};
pub(super) const SHARD: ShardId = ShardId(7);

pub(super) fn cfg(data_dir: &Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        storage: Arc::new(RealStorage),
        data_dir: data_dir.to_path_buf(),
        shard: SHARD,
        segment_bytes,
        strict_tail: true,
        recovery_mode: RecoveryMode::Strict,
        schema: SCHEMA,
    }
}

/// A batch of `n` records starting at `first`, and its bytes.
pub(super) fn batch(first: u64, n: u32) -> (BatchMeta, Vec<Record>, Vec<u8>) {
    let meta = BatchMeta {
        shard: SHARD,
        first_seqno: SeqNo(first),
        epoch: Epoch(1),
        hlc: Hlc::new(1_000 + first, 0),
        record_count: n,
    };
    let records: Vec<Record> = (0..u64::from(n))
        .map(|i| {
            if (first + i).is_multiple_of(5) {
                Record::Upsert {
                    kind: EntityKind::Item,
                    id: EntityId(first + i),
                    creator: None,
                    fields: vec![("title".into(), format!("item {}", first + i))],
                }
            } else {
                Record::Signal {
                    signal_type: ((first + i) % 3) as u16,
                    entity: EntityId(first + i),
                    weight: i as f64 - 0.5,
                    at: Timestamp(first * 10 + i),
                }
            }
        })
        .collect();
    let mut bytes = Vec::new();
    encode_batch(&meta, &records, &mut bytes);
    (meta, records, bytes)
}

pub(super) type Replayed = Vec<(BatchMeta, Vec<Record>)>;

pub(super) fn open(cfg: LogConfig, after: u64) -> Result<(Wal, LogRecoveryReport, Replayed)> {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open(cfg, SeqNo(after), &mut |m, r| seen.push((*m, r.to_vec())))?;
    Ok((wal, report, seen))
}

/// Where one appended batch landed.
#[derive(Clone, Debug)]
struct Placed {
    meta: BatchMeta,
    records: Vec<Record>,
    path: PathBuf,
    start: u64,
    end: u64,
}

/// Appends batches of the given record counts, syncing at the end.
fn append_all(wal: &mut Wal, counts: &[u32]) -> Vec<Placed> {
    let mut placed = Vec::new();
    for &n in counts {
        let (meta, records, bytes) = batch(wal.next_seqno().0, n);
        wal.append(&meta, &bytes).unwrap();
        let c = wal.current.as_ref().unwrap();
        placed.push(Placed {
            meta,
            records,
            path: c.path.clone(),
            start: c.end_offset - bytes.len() as u64,
            end: c.end_offset,
        });
    }
    wal.sync().unwrap();
    placed
}

fn expected(placed: &[Placed]) -> Replayed {
    placed.iter().map(|p| (p.meta, p.records.clone())).collect()
}

fn corruption(e: TidalError) -> (PathBuf, u64, String) {
    match e {
        TidalError::Corruption {
            path,
            offset,
            reason,
        } => (path, offset, reason),
        other => panic!("expected Corruption, got {other:?}"),
    }
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

#[test]
fn round_trip_across_rolls_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert_eq!(
        (report.segments, seen.len(), wal.next_seqno()),
        (0, 0, SeqNo(1))
    );
    let counts: Vec<u32> = (0..60).map(|i| 1 + i % 10).chain([200, 3]).collect();
    let placed = append_all(&mut wal, &counts);
    let segs = wal.segments();
    assert!(segs.len() >= 4, "{segs:?}");
    for s in &segs {
        let name = s.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, segment_name(s.first_seqno));
        assert_eq!(s.path.parent().unwrap(), wal.dir());
    }
    // The 200-record batch is larger than a segment: alone, extending its file.
    let big = &placed[60];
    assert_eq!(big.start, SEGMENT_HEADER_LEN as u64);
    assert!(big.end > 4096);
    let appended: u64 = placed.iter().map(|p| p.end - p.start).sum();
    assert_eq!(wal.bytes_since_open(), appended);
    let next = wal.next_seqno();
    drop(wal);

    let (mut wal, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert_eq!(seen, expected(&placed));
    assert!(report.cuts.is_empty());
    assert_eq!(report.segments, segs.len());
    assert_eq!(report.batches_replayed, placed.len() as u64);
    assert_eq!(
        report.records_replayed,
        counts.iter().map(|&c| u64::from(c)).sum::<u64>()
    );
    assert_eq!(report.last, Some(placed[61].meta));
    assert_eq!(wal.next_seqno(), next);
    assert_eq!(wal.segments(), segs);
    assert_eq!(wal.bytes_since_open(), 0);

    // Appending continues in the same log; a reopen after a snapshot
    // replays only what follows it.
    let more = append_all(&mut wal, &[4, 4, 4]);
    drop(wal);
    let all: Vec<Placed> = placed.iter().chain(&more).cloned().collect();
    let after = all[9].meta.last_seqno().0;
    let (_, report, seen) = open(cfg(tmp.path(), 4096), after).unwrap();
    assert_eq!(seen, expected(&all[10..]));
    assert_eq!(report.last, Some(all[all.len() - 1].meta));

    // A snapshot SeqNo inside a batch is corruption: the snapshot and log disagree.
    assert_eq!(all[11].meta.record_count, 2);
    let inside = all[11].meta.first_seqno.0;
    let (path, offset, reason) = corruption(open(cfg(tmp.path(), 4096), inside).unwrap_err());
    assert_eq!((path, offset), (all[11].path.clone(), all[11].start));
    assert!(reason.contains("straddles"), "{reason}");
}

#[test]
fn append_refuses_a_gap_an_overlap_or_mismatched_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    let (m, _, b) = batch(2, 1);
    assert!(wal.append(&m, &b).is_err());
    let (m, _, b) = batch(1, 2);
    let (m1, ..) = batch(1, 1);
    assert!(wal.append(&m1, &b).is_err());
    wal.append(&m, &b).unwrap();
    assert!(wal.append(&m, &b).is_err());
    assert_eq!(wal.next_seqno(), SeqNo(3));
}

/// Writes three batches into one segment and returns them with the
/// segment's bytes.
fn three_batches(data_dir: &Path) -> (Vec<Placed>, Vec<u8>) {
    let (mut wal, ..) = open(cfg(data_dir, 4096), 0).unwrap();
    let placed = append_all(&mut wal, &[2, 3, 6]);
    assert_eq!(wal.segments().len(), 1);
    let bytes = std::fs::read(&placed[0].path).unwrap();
    (placed, bytes)
}

#[test]
fn torn_tail_at_every_offset_of_the_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (placed, orig) = three_batches(tmp.path());
    let last = &placed[2];
    let path = &last.path;
    for variant in ["zero-padded", "truncated", "garbage"] {
        for cut in last.start..last.end {
            let c = cut as usize;
            let mut b = orig[..c].to_vec();
            match variant {
                "zero-padded" => b.resize(orig.len(), 0),
                "truncated" => {}
                _ => {
                    b.resize(last.end as usize, 0xA5);
                    b.resize(orig.len(), 0);
                }
            }
            std::fs::write(path, &b).unwrap();
            // Cutting off bytes that were zero anyway leaves the batch whole.
            let (start, end) = (last.start as usize, last.end as usize);
            if b.len() >= end && b[start..end] == orig[start..end] {
                continue;
            }
            let (wal, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
            assert_eq!(seen, expected(&placed[..2]), "{variant} at {cut}");
            assert_eq!(wal.next_seqno(), last.meta.first_seqno);
            let clean_cut = c == last.start as usize && variant != "garbage";
            if clean_cut {
                assert!(report.cuts.is_empty(), "{variant} at {cut}");
            } else {
                assert_eq!(report.cuts.len(), 1, "{variant} at {cut}");
                let cut_rec = &report.cuts[0];
                assert_eq!(cut_rec.kind, CutKind::TornTail);
                assert_eq!((&cut_rec.path, cut_rec.offset), (path, last.start));
            }
            drop(wal);
            // The cut is durable: the next open finds a clean end.
            let after_cut = std::fs::read(path).unwrap();
            assert!(after_cut[last.start as usize..].iter().all(|&x| x == 0));
            let (_, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
            assert!(report.cuts.is_empty());
            assert_eq!(seen.len(), 2);
        }
    }
    // After a cut, the lost batch can be written again where it was.
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    let again = append_all(&mut wal, &[6]);
    assert_eq!(again[0].start, last.start);
    drop(wal);
    let (_, _, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert_eq!(seen, expected(&placed));
}

#[test]
fn a_valid_batch_after_a_damaged_one_is_media_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (placed, orig) = three_batches(tmp.path());
    let bad = &placed[1];
    let path = &bad.path;
    for at in [bad.start, bad.start + 20, bad.end - 1] {
        std::fs::write(path, &orig).unwrap();
        flip(path, at);
        // Under Sync the later batch may have been acknowledged: refuse.
        let (p, offset, reason) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
        assert_eq!((&p, offset), (path, bad.start), "{reason}");
        assert!(reason.contains("media damage"), "{reason}");
        // Under Periodic it is a reported cut at the damage.
        let mut c = cfg(tmp.path(), 4096);
        c.strict_tail = false;
        let (wal, report, seen) = open(c.clone(), 0).unwrap();
        assert_eq!(seen, expected(&placed[..1]));
        assert_eq!(report.cuts.len(), 1);
        assert_eq!(report.cuts[0].kind, CutKind::MediaDamageUnderPeriodic);
        assert_eq!(report.cuts[0].offset, bad.start);
        assert_eq!(wal.next_seqno(), bad.meta.first_seqno);
        drop(wal);
        let (_, report, seen) = open(c, 0).unwrap();
        assert!(report.cuts.is_empty());
        assert_eq!(seen.len(), 1);
    }
    // PointInTime accepts the same damage under Sync, as a point-in-time cut.
    std::fs::write(path, &orig).unwrap();
    flip(path, bad.start + 50);
    let mut c = cfg(tmp.path(), 4096);
    c.recovery_mode = RecoveryMode::PointInTime;
    let (_, report, seen) = open(c, 0).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(report.cuts[0].kind, CutKind::PointInTime);
}

#[test]
fn a_crc_valid_batch_that_does_not_decode_is_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (placed, _) = three_batches(tmp.path());
    let mut c = cfg(tmp.path(), 4096);
    c.schema.signal_type_count = 1;
    let (p, offset, _) = corruption(open(c.clone(), 0).unwrap_err());
    assert_eq!((p, offset), (placed[0].path.clone(), placed[0].start));
    c.strict_tail = false;
    let (_, report, seen) = open(c, 0).unwrap();
    assert!(seen.is_empty());
    assert_eq!(report.cuts[0].kind, CutKind::MediaDamageUnderPeriodic);
}

#[test]
fn damage_in_an_earlier_segment_is_corruption_or_a_point_in_time_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    let counts: Vec<u32> = (0..50).map(|i| 1 + i % 7).collect();
    let placed = append_all(&mut wal, &counts);
    let segs = wal.segments();
    assert!(segs.len() >= 3);
    drop(wal);
    let in_second: Vec<usize> = (0..placed.len())
        .filter(|&i| placed[i].path == segs[1].path)
        .collect();
    let bad_i = in_second[1];
    let bad = &placed[bad_i];
    flip(&bad.path, bad.start + 49);

    let (p, offset, reason) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
    assert_eq!((&p, offset), (&bad.path, bad.start));
    assert!(reason.contains("CRC"), "{reason}");
    let msg = TidalError::corruption(&p, offset, reason).to_string();
    assert!(
        msg.contains(&segment_name(segs[1].first_seqno)) && msg.contains(&bad.start.to_string())
    );

    let mut c = cfg(tmp.path(), 4096);
    c.recovery_mode = RecoveryMode::PointInTime;
    let (mut wal, report, seen) = open(c.clone(), 0).unwrap();
    assert_eq!(seen, expected(&placed[..bad_i]));
    assert_eq!(wal.next_seqno(), bad.meta.first_seqno);
    assert_eq!(report.cuts.len(), segs.len() - 1);
    assert_eq!(
        (&report.cuts[0].path, report.cuts[0].offset),
        (&bad.path, bad.start)
    );
    assert!(report.cuts.iter().all(|c| c.kind == CutKind::PointInTime));
    assert_eq!(wal.segments().len(), 2);
    for s in &segs[2..] {
        assert!(!s.path.exists());
        assert!(s.path.with_extension("seg.damaged").exists());
    }
    // Appending continues right after the last good batch, and a reopen
    // (even in Strict mode) finds a consistent log that ignores the evidence.
    let more = append_all(&mut wal, &[3, 3]);
    drop(wal);
    let (_, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty());
    let good: Vec<Placed> = placed[..bad_i].iter().chain(&more).cloned().collect();
    assert_eq!(seen, expected(&good));
}

#[test]
fn a_gap_in_seqnos_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    append_all(&mut wal, &(0..120).map(|i| 1 + i % 9).collect::<Vec<_>>());
    let segs = wal.segments();
    assert!(segs.len() >= 3);
    drop(wal);
    std::fs::remove_file(&segs[1].path).unwrap();
    // Named where the log breaks: the end of the segment before the hole,
    // with the segment after it in the reason.
    let (p, offset, reason) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
    assert_eq!(p, segs[0].path);
    assert!(
        offset > SEGMENT_HEADER_LEN as u64 && offset <= segs[0].len,
        "{offset}"
    );
    assert!(reason.contains("gap"), "{reason}");
    assert!(
        reason.contains(&*segs[2].path.file_name().unwrap().to_string_lossy()),
        "{reason}"
    );
    // A snapshot beyond the missing segment makes it unnecessary.
    let (_, _, seen) = open(cfg(tmp.path(), 4096), segs[2].first_seqno.0 - 1).unwrap();
    assert_eq!(seen[0].0.first_seqno, segs[2].first_seqno);

    // A gap inside one segment, hand-written.
    let tmp = tempfile::tempdir().unwrap();
    let dir = wal_dir(tmp.path(), SHARD);
    std::fs::create_dir_all(&dir).unwrap();
    let (_, file) = create_segment(&RealStorage, &dir, SHARD, SeqNo(1), 4096).unwrap();
    let (_, _, b1) = batch(1, 2);
    let (_, _, b2) = batch(4, 1);
    file.write_all_at(&b1, SEGMENT_HEADER_LEN as u64).unwrap();
    let second = (SEGMENT_HEADER_LEN + b1.len()) as u64;
    file.write_all_at(&b2, second).unwrap();
    let (_, offset, reason) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
    assert_eq!(offset, second, "{reason}");
}

#[test]
fn zeros_are_a_clean_end_and_a_torn_segment_creation_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = wal_dir(tmp.path(), SHARD);
    std::fs::create_dir_all(&dir).unwrap();
    // A segment holding only its header and zeros.
    create_segment(&RealStorage, &dir, SHARD, SeqNo(1), 8192).unwrap();
    let (mut wal, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty() && seen.is_empty());
    let placed = append_all(&mut wal, &[1, 2]);
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.segments()[0].len, 8192);
    drop(wal);
    let (_, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(seen, expected(&placed));

    // A crash while creating the next segment left half a header.
    let next = dir.join(segment_name(SeqNo(4)));
    std::fs::write(&next, &encode_segment_header(SHARD, SeqNo(4))[..10]).unwrap();
    let (mut wal, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(report.cuts.len(), 1);
    assert_eq!(
        (report.cuts[0].kind, report.cuts[0].offset),
        (CutKind::TornTail, 0)
    );
    let more = append_all(&mut wal, &[5]);
    assert_eq!(more[0].path, next);
    drop(wal);
    let (_, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(seen.len(), 3);
}

#[test]
fn a_segment_of_another_shard_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = wal_dir(tmp.path(), SHARD);
    std::fs::create_dir_all(&dir).unwrap();
    create_segment(&RealStorage, &dir, ShardId(8), SeqNo(1), 4096).unwrap();
    let (_, offset, reason) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
    assert_eq!(offset, 8, "{reason}");
}

#[test]
fn a_log_behind_the_snapshot_continues_in_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    append_all(&mut wal, &[3]);
    drop(wal);
    // Under Periodic a snapshot can be ahead of a torn log.
    let (mut wal, _, seen) = open(cfg(tmp.path(), 4096), 10).unwrap();
    assert!(seen.is_empty());
    assert_eq!(wal.next_seqno(), SeqNo(11));
    // The segment holding only records the snapshot covers is dropped, so
    // the retained log is contiguous from the snapshot on.
    assert!(wal.segments().is_empty());
    assert_eq!(wal.first_retained(), SeqNo(11));
    let placed = append_all(&mut wal, &[2]);
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.segments()[0].first_seqno, SeqNo(11));
    assert_eq!(wal.first_retained(), SeqNo(11));
    drop(wal);
    let (_, _, seen) = open(cfg(tmp.path(), 4096), 10).unwrap();
    assert_eq!(seen, expected(&placed));
}

#[test]
fn remove_segments_below_keeps_what_is_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    append_all(&mut wal, &(0..160).map(|i| 1 + i % 9).collect::<Vec<_>>());
    let segs = wal.segments();
    assert!(segs.len() >= 4);
    assert_eq!(
        wal.remove_segments_below(SeqNo(segs[1].first_seqno.0 - 1))
            .unwrap(),
        0
    );
    let freed = wal.remove_segments_below(segs[1].first_seqno).unwrap();
    assert_eq!(freed, segs[0].len);
    assert!(!segs[0].path.exists());
    assert_eq!(wal.segments(), segs[1..].to_vec());
    let freed = wal.remove_segments_below(SeqNo(u64::MAX)).unwrap();
    let expected_freed: u64 = segs[1..segs.len() - 1].iter().map(|s| s.len).sum();
    assert_eq!(freed, expected_freed);
    assert_eq!(wal.segments(), segs[segs.len() - 1..].to_vec());
    let next = wal.next_seqno();
    drop(wal);
    let after = segs[segs.len() - 1].first_seqno.0 - 1;
    let (wal, report, _) = open(cfg(tmp.path(), 4096), after).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(wal.next_seqno(), next);
}

#[test]
fn a_damaged_header_of_an_earlier_segment_is_damage_at_offset_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, ..) = open(cfg(tmp.path(), 4096), 0).unwrap();
    let placed = append_all(&mut wal, &(0..100).map(|i| 1 + i % 9).collect::<Vec<_>>());
    let segs = wal.segments();
    assert!(segs.len() >= 3);
    drop(wal);
    flip(&segs[1].path, 17);
    let (p, offset, _) = corruption(open(cfg(tmp.path(), 4096), 0).unwrap_err());
    assert_eq!((p, offset), (segs[1].path.clone(), 0));
    let mut c = cfg(tmp.path(), 4096);
    c.recovery_mode = RecoveryMode::PointInTime;
    let (wal, report, seen) = open(c, 0).unwrap();
    let kept: Vec<Placed> = placed
        .iter()
        .filter(|p| p.path == segs[0].path)
        .cloned()
        .collect();
    assert_eq!(seen, expected(&kept));
    assert_eq!(report.cuts[0].offset, 0);
    assert_eq!(wal.next_seqno(), segs[1].first_seqno);
    drop(wal);
    // The cut segment got a fresh header: the log is whole again.
    let (_, report, seen) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(seen.len(), kept.len());
}
