//! Tests of `Wal::truncate_after`: the divergence cut of the log.

use super::tests::{batch, cfg};
use super::*;

/// A log of 40 batches of 3 records (SeqNos 1..=120) over several segments.
fn filled(dir: &Path) -> Wal {
    let (mut wal, _) = Wal::open(cfg(dir, 1_024), SeqNo(0), &mut |_, _| {}).unwrap();
    for b in 0..40u64 {
        let (meta, _, bytes) = batch(b * 3 + 1, 3);
        wal.append(&meta, &bytes).unwrap();
    }
    wal.sync().unwrap();
    wal
}

fn replayed(dir: &Path) -> (Wal, Vec<SeqNo>) {
    let mut firsts = Vec::new();
    let (wal, _) = Wal::open(cfg(dir, 1_024), SeqNo(0), &mut |m, _| {
        firsts.push(m.first_seqno)
    })
    .unwrap();
    (wal, firsts)
}

#[test]
fn a_cut_at_a_batch_boundary_removes_later_segments_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = filled(tmp.path());
    let before = wal.segments().len();
    assert!(before > 3, "several segments");
    // SeqNo 30 ends batch 10 (28..=30), somewhere in an early segment.
    wal.truncate_after(SeqNo(30)).unwrap();
    assert_eq!(wal.next_seqno(), SeqNo(31));
    assert!(wal.segments().len() < before);
    // Appending continues right after the cut, with new content.
    let (meta, _, bytes) = batch(31, 2);
    wal.append(&meta, &bytes).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, firsts) = replayed(tmp.path());
    let mut expected: Vec<SeqNo> = (0..10u64).map(|b| SeqNo(b * 3 + 1)).collect();
    expected.push(SeqNo(31));
    assert_eq!(firsts, expected);
    assert_eq!(wal.next_seqno(), SeqNo(33));
}

#[test]
fn a_cut_at_the_start_of_a_segment_and_a_cut_of_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = filled(tmp.path());
    let second = wal.segments()[1].first_seqno;
    wal.truncate_after(SeqNo(second.0 - 1)).unwrap();
    assert_eq!(wal.next_seqno(), second);
    drop(wal);
    let (mut wal, firsts) = replayed(tmp.path());
    assert_eq!(firsts.last().map(|f| f.0 + 2), Some(second.0 - 1));
    wal.truncate_after(SeqNo(0)).unwrap();
    assert_eq!(wal.next_seqno(), SeqNo(1));
    let (meta, _, bytes) = batch(1, 1);
    wal.append(&meta, &bytes).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, firsts) = replayed(tmp.path());
    assert_eq!(firsts, vec![SeqNo(1)]);
}

#[test]
fn a_cut_inside_a_batch_is_corruption_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = filled(tmp.path());
    let segments = wal.segments();
    let err = wal.truncate_after(SeqNo(29)).unwrap_err();
    assert!(matches!(err, TidalError::Corruption { .. }), "{err:?}");
    assert_eq!(wal.segments(), segments);
    assert_eq!(wal.next_seqno(), SeqNo(121));
    // A cut at or past the end is nothing to do.
    wal.truncate_after(SeqNo(120)).unwrap();
    wal.truncate_after(SeqNo(500)).unwrap();
    drop(wal);
    let (_, firsts) = replayed(tmp.path());
    assert_eq!(firsts.len(), 40);
}
