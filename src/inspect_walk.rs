//! The walk behind [`super::inspect_with`]: snapshots, segments and
//! `diverged/`, in the order recovery needs them (the newest valid
//! snapshot decides where the log must continue from).

use std::path::Path;

use super::{
    BatchReport, DirReport, DivergedReport, EpochReport, InspectOptions, SegmentReport,
    ShardReport, SnapshotReport, TornTail, batch_report, decode_state, next_valid_batch, read_file,
    read_into, section_payload_offsets, seqno_at, snapshot_damage,
};
use crate::snapshot::{decode_snapshot, list_snapshots, snapshot_dir};
use crate::state::StateParams;
use crate::storage::Storage;
use crate::types::{Position, SeqNo, ShardId};
use crate::wal::format::{
    BATCH_HEADER_LEN, BatchMeta, Schema, decode_header, decode_records, verify_crc,
};
use crate::wal::reader::list_segments;
use crate::wal::record::Record;
use crate::wal::segment::{
    SEGMENT_HEADER_LEN, decode_segment_header, parse_segment_name, segment_gap,
    seqno_jump_in_segment, wal_dir,
};

pub(super) struct Walker<'a> {
    pub(super) storage: &'a dyn Storage,
    pub(super) options: InspectOptions,
    pub(super) schema: Option<Schema>,
    pub(super) report: &'a mut DirReport,
    pub(super) buf: Vec<u8>,
    pub(super) epochs: Vec<EpochReport>,
}

/// How a walk over concatenated batches ended.
enum End {
    /// Every byte after `end` is zero, or there is none.
    Clean { end: usize },
    /// A bad or cut batch at `offset`, and where a valid batch follows.
    Bad {
        offset: usize,
        what: String,
        next_valid: Option<usize>,
    },
}

/// What a walk reads: a segment's batches end at zeros and start at its
/// first SeqNo in its shard; a diverged file is batches to its end.
struct How {
    zeros_end: bool,
    first: Option<SeqNo>,
    shard: Option<ShardId>,
    /// Whether `EpochStart` records join the epoch history (not for cut
    /// suffixes, which are no longer history).
    history: bool,
}

/// One step of a walk.
enum Step {
    /// A batch whose header and CRC hold.
    Batch(BatchMeta, u32),
    /// Where the batches end.
    End(End),
}

/// What one walk over batches found.
#[derive(Default)]
struct Batches {
    count: u64,
    records: u64,
    first: Option<SeqNo>,
    last: Option<Position>,
    end: usize,
    list: Vec<BatchReport>,
}

impl Walker<'_> {
    /// Verifies a shard's snapshots (newest first) and returns the SeqNo of
    /// the newest valid one (0 if none): the log must continue after it.
    pub(super) fn snapshots(
        &mut self,
        dir: &Path,
        shard: ShardId,
        params: Option<&StateParams>,
        s: &mut ShardReport,
    ) -> SeqNo {
        let sdir = snapshot_dir(dir, shard);
        self.others(&sdir, |n| n.ends_with(".snap") && n.len() == 25);
        let list = match list_snapshots(self.storage, dir, shard) {
            Ok(l) => l,
            Err(e) => {
                self.report.damage(&sdir, 0, e.to_string());
                return SeqNo(0);
            }
        };
        let mut newest_valid = None;
        for (seqno, path) in list {
            let Some(bytes) = read_file(self.storage, &path, self.report) else {
                continue;
            };
            let mut snap = SnapshotReport {
                file: path.clone(),
                seqno,
                size_bytes: bytes.len() as u64,
                ..SnapshotReport::default()
            };
            if let Some((offset, what)) = snapshot_damage(&bytes) {
                self.report.damage(&path, offset, what);
                s.snapshots.push(snap);
                continue;
            }
            let Ok((header, sections)) = decode_snapshot(&bytes) else {
                continue; // snapshot_damage said it decodes
            };
            snap.epoch = Some(header.epoch);
            snap.hlc = Some(header.hlc);
            snap.sections = sections
                .iter()
                .map(|x| (x.id, x.version, x.bytes.len() as u64))
                .collect();
            let mut ok = true;
            if header.shard != shard {
                self.report.damage(
                    &path,
                    8,
                    format!("header names shard {}, its directory {shard}", header.shard),
                );
                ok = false;
            }
            if header.seqno != seqno {
                let what = format!("header names SeqNo {}, the file name {seqno}", header.seqno);
                self.report.damage(&path, 12, what);
                ok = false;
            }
            if let Some(p) = params {
                match decode_state(p, &sections) {
                    Ok(state) if ok && newest_valid.is_none() => {
                        newest_valid = Some(seqno);
                        self.epochs
                            .extend(state.epochs().iter().map(|e| EpochReport {
                                epoch: e.epoch,
                                start: e.start,
                                leader_node: e.leader_node,
                                replicated: e.replicated,
                                source: path.clone(),
                            }));
                    }
                    Ok(_) => {}
                    Err((id, e)) => {
                        let at = sections.iter().position(|x| x.id == id).map_or(0, |i| {
                            section_payload_offsets(&snap.sections)[i] + e.offset as u64
                        });
                        let what = format!("section {id} does not decode: {}", e.reason);
                        self.report.damage(&path, at, what);
                        ok = false;
                    }
                }
            } else if ok && newest_valid.is_none() {
                newest_valid = Some(seqno);
            }
            snap.ok = ok;
            s.snapshots.push(snap);
        }
        newest_valid.unwrap_or(SeqNo(0))
    }

    /// Verifies a shard's segments in SeqNo order; the log must continue
    /// without a gap after the snapshot at `after`.
    pub(super) fn segments(
        &mut self,
        dir: &Path,
        shard: ShardId,
        after: SeqNo,
        s: &mut ShardReport,
    ) {
        let wdir = wal_dir(dir, shard);
        self.others(&wdir, |n| parse_segment_name(n).is_some());
        let segments = match list_segments(self.storage, dir, shard) {
            Ok(l) => l,
            Err(e) => {
                self.report.damage(&wdir, 0, e.to_string());
                return;
            }
        };
        // The SeqNo the log must continue at, as recovery expects it.
        let mut next = after.next();
        let mut prev_end: Option<SeqNo> = None;
        // The previous segment and the end of its valid batches, where a
        // gap is named (as recovery names it).
        let mut prev_seg: Option<(std::path::PathBuf, u64)> = None;
        // After damage the SeqNos reached are unknown: the next segment is
        // not checked against them (the damage is reported already).
        let mut known = true;
        let count = segments.len();
        for (i, (first, name)) in segments.into_iter().enumerate() {
            let path = wdir.join(&name);
            let mut buf = std::mem::take(&mut self.buf);
            if let Err(e) = read_into(self.storage, &path, &mut buf) {
                self.report.damage(&path, 0, format!("cannot read: {e}"));
                self.buf = buf;
                known = false;
                continue;
            }
            match prev_end {
                _ if !known => {}
                _ if first > next => {
                    let prev = prev_seg.as_ref().map(|(p, end)| (p.as_path(), *end));
                    let (file, offset, what) = segment_gap(&path, first, next, prev);
                    self.report.damage(&file, offset, what);
                }
                Some(end) if end.next() != first && first > after => {
                    let what = format!(
                        "segment starts at SeqNo {first}, the previous one ends at {end}"
                    );
                    self.report.damage(&path, 0, what);
                }
                Some(end) if end.next() != first => self.report.notes.push(format!(
                    "{}: starts at SeqNo {first}, the previous segment ends at {end} (below the snapshot, not replayed)",
                    path.display()
                )),
                _ => {}
            }
            let mut seg = SegmentReport {
                file: path.clone(),
                first_seqno: first,
                size_bytes: buf.len() as u64,
                ..SegmentReport::default()
            };
            let how = How {
                zeros_end: true,
                first: Some(first),
                shard: Some(shard),
                history: true,
            };
            let (found, end) = match decode_segment_header(&buf) {
                Err(e) => {
                    let end = End::Bad {
                        offset: 0,
                        what: format!("bad segment header: {e}"),
                        next_valid: next_valid_batch(&buf, 1),
                    };
                    (Batches::default(), end)
                }
                Ok((_, f)) if f != first => {
                    let end = End::Bad {
                        offset: 0,
                        what: format!(
                            "segment header names first SeqNo {f}, the file name {first}"
                        ),
                        next_valid: next_valid_batch(&buf, 1),
                    };
                    (Batches::default(), end)
                }
                Ok((sh, _)) => {
                    if sh != shard {
                        let what =
                            format!("segment header names shard {sh}, its directory {shard}");
                        self.report.damage(&path, 8, what);
                    }
                    self.walk(&path, &buf, SEGMENT_HEADER_LEN, how)
                }
            };
            seg.batch_count = found.count;
            seg.record_count = found.records;
            seg.last = found.last;
            seg.end_offset = found.end as u64;
            seg.batches = found.list;
            known = matches!(end, End::Clean { .. });
            self.finish(&path, end, i + 1 == count, &mut seg);
            prev_seg = Some((path.clone(), seg.end_offset));
            match seg.last {
                Some(l) => {
                    next = if known {
                        next.max(l.seqno.next())
                    } else {
                        l.seqno.next()
                    };
                    prev_end = Some(l.seqno);
                    s.last = Some(l);
                }
                None => prev_end = Some(SeqNo(first.0.saturating_sub(1))),
            }
            s.segments.push(seg);
            self.buf = buf;
        }
    }

    /// Verifies every suffix kept in `dir` (`diverged/`).
    pub(super) fn diverged(&mut self, dir: &Path) {
        let Ok(names) = self.storage.list_dir(dir) else {
            return;
        };
        for name in names {
            let path = dir.join(&name);
            if !name.ends_with(".batches") && !name.ends_with(".merged") {
                self.report.other_files.push(path);
                continue;
            }
            let Some(bytes) = read_file(self.storage, &path, self.report) else {
                continue;
            };
            let how = How {
                zeros_end: false,
                first: None,
                shard: None,
                history: false,
            };
            let (found, end) = self.walk(&path, &bytes, 0, how);
            let mut d = DivergedReport {
                file: path.clone(),
                size_bytes: bytes.len() as u64,
                first_seqno: found.first,
                last_seqno: found.last.map(|p| p.seqno),
                epoch: found.list.first().map(|b| b.epoch),
                merged: name.ends_with(".merged"),
                batch_count: found.count,
                record_count: found.records,
                batches: found.list,
            };
            if d.epoch.is_none()
                && let Ok((meta, _, _)) = decode_header(&bytes)
            {
                d.epoch = Some(meta.epoch);
            }
            if let End::Bad { offset, what, .. } = end {
                self.report.damage(&path, offset as u64, what);
            }
            self.report.diverged.push(d);
        }
    }

    /// Reports how a segment's walk ended: a torn tail in the last segment
    /// when nothing valid follows, damage otherwise.
    fn finish(&mut self, path: &Path, end: End, last_segment: bool, seg: &mut SegmentReport) {
        let End::Bad {
            offset,
            what,
            next_valid,
        } = end
        else {
            return;
        };
        seg.end_offset = offset as u64;
        if last_segment && next_valid.is_none() {
            self.report.torn_tails.push(TornTail {
                file: path.to_path_buf(),
                offset: offset as u64,
                what,
            });
            return;
        }
        let why = if next_valid.is_some() {
            "a valid batch follows it: media damage, not a torn write"
        } else {
            "damage before the last segment"
        };
        self.report
            .damage(path, offset as u64, format!("{what}; {why}"));
    }

    /// Walks the batches of `buf` from `start`, checking each as recovery
    /// does and recording what it holds. After a bad place the walk resumes
    /// at the next valid batch, so every damaged place is listed; the first
    /// bad place is returned for the caller to judge (torn tail or damage),
    /// later ones are reported as damage here.
    fn walk(&mut self, path: &Path, buf: &[u8], start: usize, how: How) -> (Batches, End) {
        let mut found = Batches::default();
        let mut records: Vec<Record> = Vec::new();
        let mut expect = how.first;
        let mut first_bad: Option<End> = None;
        let mut o = start;
        loop {
            match self.step(path, buf, o, &how, expect, &mut records) {
                Step::Batch(meta, len) => {
                    if how.history {
                        self.history(path, &meta, &records);
                    }
                    found.count += 1;
                    found.records += u64::from(meta.record_count);
                    found.first.get_or_insert(meta.first_seqno);
                    found.last = Some(Position::new(meta.epoch, meta.last_seqno()));
                    if self.options.batches || self.options.records {
                        let render = self.options.records;
                        found
                            .list
                            .push(batch_report(o, &meta, len, &records, render));
                    }
                    expect = Some(meta.last_seqno().next());
                    o += BATCH_HEADER_LEN + len as usize;
                    if first_bad.is_none() {
                        found.end = o;
                    }
                }
                Step::End(End::Clean { end }) => {
                    if first_bad.is_none() {
                        found.end = end;
                    }
                    return (found, first_bad.unwrap_or(End::Clean { end }));
                }
                Step::End(End::Bad {
                    offset,
                    what,
                    next_valid,
                }) => {
                    if first_bad.is_some() {
                        let what = format!("{what}; after earlier damage");
                        self.report.damage(path, offset as u64, what);
                    } else {
                        first_bad = Some(End::Bad {
                            offset,
                            what,
                            next_valid,
                        });
                    }
                    let Some(p) = next_valid else {
                        let end = first_bad.unwrap_or(End::Clean { end: o });
                        return (found, end);
                    };
                    self.report.notes.push(format!(
                        "{}: a valid batch at offset {p} follows the damage at {offset}; listed from there",
                        path.display()
                    ));
                    o = p;
                    // SeqNos across the damage are unknown.
                    expect = None;
                }
            }
        }
    }

    /// Reads the batch at `o`: a good one (its records decoded into
    /// `records`, problems behind a valid CRC reported as damage), or how
    /// the batches end there.
    fn step(
        &mut self,
        path: &Path,
        buf: &[u8],
        o: usize,
        how: &How,
        expect: Option<SeqNo>,
        records: &mut Vec<Record>,
    ) -> Step {
        let rest = buf.get(o..).unwrap_or_default();
        let clean = || how.zeros_end && crate::wal::segment::is_zero(rest);
        let bad = |what: String| {
            Step::End(End::Bad {
                offset: o,
                what,
                next_valid: next_valid_batch(buf, o + 1),
            })
        };
        if rest.is_empty() || (rest.len() < BATCH_HEADER_LEN && clean()) {
            return Step::End(End::Clean { end: o });
        }
        let Some(header) = rest.get(..BATCH_HEADER_LEN) else {
            return bad("batch header cut short by the end of the file".into());
        };
        let (meta, len) = match decode_header(header) {
            Ok((meta, len, _)) => (meta, len),
            Err(_) if clean() => return Step::End(End::Clean { end: o }),
            Err(e) => return bad(format!("bad batch header: {e}")),
        };
        let Some(payload) = rest.get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + len as usize) else {
            return bad(format!(
                "batch payload of {len} bytes cut short by the end of the file"
            ));
        };
        if !verify_crc(header, payload) {
            return bad(format!(
                "batch CRC mismatch (its header says SeqNos {}..={}, {len} payload bytes)",
                meta.first_seqno,
                meta.last_seqno()
            ));
        }
        let at = o as u64;
        if let Some(shard) = how.shard.filter(|s| *s != meta.shard) {
            let what = format!("batch of shard {} in the log of shard {shard}", meta.shard);
            self.report.damage(path, at, what);
        }
        if let Some(e) = expect.filter(|e| *e != meta.first_seqno) {
            // In a segment, worded as recovery words it.
            let what = if how.first.is_some() {
                seqno_jump_in_segment(meta.first_seqno, e)
            } else {
                format!(
                    "SeqNos not contiguous: batch starts at {}, expected {e}",
                    meta.first_seqno
                )
            };
            self.report.damage(path, at, what);
        }
        records.clear();
        if let Some(schema) = &self.schema
            && let Err(e) = decode_records(payload, meta.record_count, schema, records)
        {
            let what = format!(
                "batch records do not decode: {} at payload offset {} (its CRC holds: written whole)",
                e.reason, e.offset
            );
            self.report.damage(path, at, what);
        }
        Step::Batch(meta, len)
    }

    /// Adds a batch's `EpochStart` records to the epoch history.
    fn history(&mut self, path: &Path, meta: &BatchMeta, records: &[Record]) {
        for (i, r) in records.iter().enumerate() {
            if let Record::EpochStart {
                epoch,
                leader_node,
                replicated,
                ..
            } = r
            {
                let start = seqno_at(meta, i);
                if self
                    .epochs
                    .iter()
                    .any(|e| e.epoch == *epoch && e.start == start)
                {
                    continue;
                }
                self.epochs.push(EpochReport {
                    epoch: *epoch,
                    start,
                    leader_node: *leader_node,
                    replicated: *replicated,
                    source: path.to_path_buf(),
                });
            }
        }
    }

    /// Lists the files of `dir` that `wanted` does not accept.
    fn others(&mut self, dir: &Path, wanted: impl Fn(&str) -> bool) {
        if let Ok(names) = self.storage.list_dir(dir) {
            let extra = names
                .into_iter()
                .filter(|n| !wanted(n))
                .map(|n| dir.join(n));
            self.report.other_files.extend(extra);
        }
    }
}
