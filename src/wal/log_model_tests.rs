//! Model and robustness tests of the shard log: random operation
//! sequences checked against a plain `Vec`, and arbitrary segment bytes.

use proptest::prelude::*;

use super::tests::{SHARD, batch, cfg, open};
use super::*;
use crate::wal::segment::{encode_segment_header, segment_name};

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Append a batch of this many records.
    Append(u32),
    /// Sync, drop and reopen.
    Reopen,
    /// Crash while writing a batch of this many records: only this
    /// fraction (per mille) of its bytes reach the file.
    TornAppend(u32, u32),
    /// Delete segments below the SeqNo this fraction (per mille) into the log.
    RemoveBelow(u32),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..40).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        1 => (1u32..40, 0u32..1000).prop_map(|(n, f)| Op::TornAppend(n, f)),
        1 => (0u32..1000).prop_map(Op::RemoveBelow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random appends, torn appends, retention and reopens, checked
    /// against a plain `Vec` of the batches that must survive.
    #[test]
    fn the_log_matches_a_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), 2048);
        let (mut wal, ..) = open(c.clone(), 0).unwrap();
        let mut model: Vec<(BatchMeta, Vec<Record>)> = Vec::new();
        let mut snapshot = 0u64; // everything at or below is "in a snapshot"
        for op in ops {
            match op {
                Op::Append(n) => {
                    let (m, r, b) = batch(wal.next_seqno().0, n);
                    wal.append(&m, &b).unwrap();
                    model.push((m, r));
                }
                Op::Reopen | Op::TornAppend(..) => {
                    if let Op::TornAppend(n, f) = op {
                        let (m, r, b) = batch(wal.next_seqno().0, n);
                        wal.append(&m, &b).unwrap();
                        wal.sync().unwrap();
                        let c = wal.current.as_ref().unwrap();
                        let (path, end) = (c.path.clone(), c.end_offset as usize);
                        let keep = b.len() * f as usize / 1000;
                        let mut bytes = std::fs::read(&path).unwrap();
                        bytes[end - b.len() + keep..end].fill(0);
                        std::fs::write(&path, bytes).unwrap();
                        // Cutting bytes that were zero anyway leaves it whole.
                        if b[keep..].iter().all(|&x| x == 0) {
                            model.push((m, r));
                        }
                    }
                    wal.sync().unwrap();
                    drop(wal);
                    let (w, report, seen) = open(c.clone(), snapshot).unwrap();
                    let want: Vec<_> = model
                        .iter()
                        .filter(|(m, _)| m.first_seqno.0 > snapshot)
                        .cloned()
                        .collect();
                    prop_assert_eq!(seen, want);
                    prop_assert!(report.cuts.iter().all(|c| c.kind == CutKind::TornTail));
                    let next = model.last().map_or(SeqNo(1), |(m, _)| m.last_seqno().next());
                    prop_assert_eq!(w.next_seqno(), next.max(SeqNo(snapshot + 1)));
                    wal = w;
                }
                Op::RemoveBelow(f) => {
                    let end = wal.next_seqno().0 - 1;
                    let below = SeqNo(end * u64::from(f) / 1000);
                    wal.remove_segments_below(below).unwrap();
                    // Replay must start at a batch boundary: snapshot at the
                    // last batch ending below the first kept segment.
                    if let Some(oldest) = wal.segments().first() {
                        snapshot = snapshot.max(oldest.first_seqno.0 - 1);
                    }
                }
            }
        }
    }

    /// Whatever bytes a segment holds, open returns a result, never panics.
    #[test]
    fn any_segment_content_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        keep_header in any::<bool>(),
        splice_batch in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = wal_dir(tmp.path(), SHARD);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        if keep_header {
            bytes.extend_from_slice(&encode_segment_header(SHARD, SeqNo(1)));
        }
        if splice_batch {
            bytes.extend_from_slice(&batch(1, 3).2);
        }
        bytes.extend_from_slice(&junk);
        std::fs::write(dir.join(segment_name(SeqNo(1))), bytes).unwrap();
        for strict in [true, false] {
            let mut c = cfg(tmp.path(), 4096);
            c.strict_tail = strict;
            let _ = open(c, 0);
        }
    }
}
