//! Tests of the pre-allocated spare segment and of write-behind: a roll
//! adopts the spare, a crash right after the adoption, and when appended
//! bytes reach the file.

use super::tests::{batch, cfg, open};
use super::*;
use crate::wal::segment::SEGMENT_HEADER_LEN;

/// Appends a 3-record batch at the log's next SeqNo.
fn append3(wal: &mut Wal) {
    let (meta, _, bytes) = batch(wal.next_seqno().0, 3);
    wal.append(&meta, &bytes).unwrap();
}

/// Fills the first segment past half (the spare gets built meanwhile) and
/// waits until the spare is ready.
fn wait_for_the_spare(wal: &mut Wal) {
    append3(wal);
    while !wal.spare_pending() {
        append3(wal);
    }
    for _ in 0..400 {
        if wal.spare_ready() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(wal.spare_ready(), "the spare was never built");
}

/// Appends until the log rolls into a new segment.
fn roll(wal: &mut Wal) {
    let segments = wal.segments().len();
    while wal.segments().len() == segments {
        append3(wal);
    }
}

#[test]
fn a_roll_adopts_the_spare_pre_allocated_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = open(cfg(tmp.path(), 4096), 0).unwrap();
    let spare = wal.dir().join(crate::wal::segment::SPARE_NAME);
    wait_for_the_spare(&mut wal);
    assert!(spare.exists());
    roll(&mut wal);
    // The spare was renamed into the new segment, zero-filled to size.
    assert!(!spare.exists());
    let last = wal.segments().last().unwrap().clone();
    assert_eq!(std::fs::metadata(&last.path).unwrap().len(), 4096);
    let next = wal.next_seqno();
    drop(wal);
    let (wal, report, _) = open(cfg(tmp.path(), 4096), 0).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(wal.next_seqno(), next);
}

#[test]
fn a_crash_after_adopting_the_spare_before_any_sync_loses_nothing_synced() {
    // The adopted spare's header is synced by the segment's first
    // `Wal::sync`, not by the roll: a crash before that sync leaves a
    // segment of zeros, which recovery must read as a torn tail at offset 0.
    use crate::storage::{CrashMode, SimStorage};
    let sim = SimStorage::new();
    let sim_cfg = || LogConfig {
        storage: sim.clone(),
        data_dir: "/db".into(),
        ..cfg(Path::new("/db"), 4096)
    };
    // The data directory is made durable by the database's open, not the log's.
    crate::storage::create_dir_durable(sim.as_ref(), SyncPoint::DataDirCreate, Path::new("/db"))
        .unwrap();
    let (mut wal, _, _) = open(sim_cfg(), 0).unwrap();
    wait_for_the_spare(&mut wal);
    // The append that rolls syncs the finished segment (`LogRoll`) and
    // adopts the spare; its own batch, in the new segment, is never synced.
    roll(&mut wal);
    let synced = wal.segments().last().unwrap().first_seqno;
    assert!(wal.next_seqno() > synced);
    drop(wal);
    sim.crash(CrashMode::DropUnsynced);
    let (mut wal, report, seen) = open(sim_cfg(), 0).unwrap();
    assert_eq!(wal.next_seqno(), synced, "exactly the synced batches");
    assert_eq!(
        seen.iter().map(|(m, _)| m.record_count as u64).sum::<u64>(),
        synced.0 - 1
    );
    assert_eq!(report.cuts.len(), 1, "the zero header is one torn tail");
    // The log takes writes again at the next position, and keeps them.
    append3(&mut wal);
    wal.sync().unwrap();
    let next = wal.next_seqno();
    drop(wal);
    sim.crash(CrashMode::DropUnsynced);
    let (wal, _, _) = open(sim_cfg(), 0).unwrap();
    assert_eq!(wal.next_seqno(), next);
}

#[test]
fn appends_are_written_behind_at_a_sync_a_full_buffer_or_a_drop() {
    // Without write-behind (the default) a batch is in the file at once.
    {
        let tmp = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(cfg(tmp.path(), 8 << 20), 0).unwrap();
        let (meta, _, bytes) = batch(1, 3);
        wal.append(&meta, &bytes).unwrap();
        let on_disk = std::fs::read(&wal.segments()[0].path).unwrap();
        let at = SEGMENT_HEADER_LEN;
        assert_eq!(&on_disk[at..at + bytes.len()], &bytes[..]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = open(cfg(tmp.path(), 8 << 20), 0).unwrap();
    const WRITE_BEHIND_BYTES: usize = 256 << 10;
    wal.set_write_behind(WRITE_BEHIND_BYTES);
    let (meta, _, bytes) = batch(1, 3);
    wal.append(&meta, &bytes).unwrap();
    let path = wal.segments()[0].path.clone();
    let on_disk = |from: u64, len: usize| {
        let bytes = std::fs::read(&path).unwrap();
        bytes[from as usize..from as usize + len].to_vec()
    };
    let at = SEGMENT_HEADER_LEN as u64;
    // Held in memory: the file still has its zeros there.
    assert!(on_disk(at, bytes.len()).iter().all(|&b| b == 0));
    wal.sync().unwrap();
    assert_eq!(on_disk(at, bytes.len()), bytes);
    // A full buffer is written without a sync.
    let mut written = at + bytes.len() as u64;
    let mut held = 0;
    while held < WRITE_BEHIND_BYTES {
        let (meta, _, b) = batch(wal.next_seqno().0, 20);
        wal.append(&meta, &b).unwrap();
        held += b.len();
    }
    assert!(on_disk(written, held).iter().any(|&b| b != 0));
    written += held as u64;
    // A drop writes what is held (a reopen replays it all).
    let (meta, _, b) = batch(wal.next_seqno().0, 3);
    wal.append(&meta, &b).unwrap();
    assert!(on_disk(written, b.len()).iter().all(|&b| b == 0));
    let next = wal.next_seqno();
    drop(wal);
    assert_eq!(on_disk(written, b.len()), b);
    let (wal, report, _) = open(cfg(tmp.path(), 8 << 20), 0).unwrap();
    assert!(report.cuts.is_empty());
    assert_eq!(wal.next_seqno(), next);
}
