//! Reading stored batches back, as the exact bytes of the log.
//!
//! A leader streams its stored batches to a follower from an agreed SeqNo
//! (then the live tail); an inspection tool walks the log. Both read
//! through their own file handles, so reading never holds the committer:
//! batches at or below the durable SeqNo never change while they are read.
//! Every batch read is CRC-checked (the same codec the log and recovery
//! use); anything else ends the read with an error naming file and offset.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Result, TidalError};
use crate::storage::{OpenMode, Storage};
use crate::types::{SeqNo, ShardId};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, decode_header, verify_crc};
use crate::wal::segment::{SEGMENT_HEADER_LEN, parse_segment_name, wal_dir};

/// One stored batch: its header fields and its exact bytes (header + payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// The decoded header.
    pub meta: BatchMeta,
    /// The batch exactly as logged.
    pub bytes: Bytes,
}

/// The segments of a shard's log, `(first SeqNo, file name)`, in SeqNo order.
pub(crate) fn list_segments(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
) -> Result<Vec<(SeqNo, String)>> {
    let dir = wal_dir(data_dir, shard);
    let mut segments: Vec<(SeqNo, String)> = match storage.list_dir(&dir) {
        Ok(names) => names
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|s| (s, n)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(TidalError::io("list", &dir, e)),
    };
    segments.sort();
    Ok(segments)
}

/// Reads the batches holding SeqNos `from..=up_to`, starting with the batch
/// that contains `from`, stopping after `max_bytes` (at least one batch is
/// returned when any is available). Returns `Ok(None)` when `from` is older
/// than the oldest retained segment: the reader must be sent a snapshot.
pub(crate) fn read_batches(
    storage: &dyn Storage,
    data_dir: &Path,
    shard: ShardId,
    from: SeqNo,
    up_to: SeqNo,
    max_bytes: usize,
) -> Result<Option<Vec<StoredBatch>>> {
    let segments = list_segments(storage, data_dir, shard)?;
    let Some(start) = segments.iter().rposition(|(first, _)| *first <= from) else {
        return Ok(if segments.is_empty() && from > up_to {
            Some(Vec::new())
        } else {
            None
        });
    };
    let dir = wal_dir(data_dir, shard);
    let mut out = Vec::new();
    let mut total = 0usize;
    for (_, name) in &segments[start..] {
        let path = dir.join(name);
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| TidalError::io("open", &path, e))?;
        let len = file.len().map_err(|e| TidalError::io("stat", &path, e))?;
        let mut offset = SEGMENT_HEADER_LEN as u64;
        let mut header = [0u8; BATCH_HEADER_LEN];
        while offset + BATCH_HEADER_LEN as u64 <= len {
            file.read_exact_at(&mut header, offset)
                .map_err(|e| TidalError::io("read", &path, e))?;
            if header.iter().all(|&b| b == 0) {
                break; // the pre-allocated zeros: end of this segment's data
            }
            let (meta, payload_len, _) = decode_header(&header)
                .map_err(|e| TidalError::corruption(&path, offset, e.reason))?;
            if meta.first_seqno > up_to {
                return Ok(Some(out));
            }
            let total_len = BATCH_HEADER_LEN + payload_len as usize;
            if meta.last_seqno() >= from {
                let mut buf = vec![0u8; total_len];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| TidalError::io("read", &path, e))?;
                if !verify_crc(&buf[..BATCH_HEADER_LEN], &buf[BATCH_HEADER_LEN..]) {
                    return Err(TidalError::corruption(&path, offset, "batch CRC mismatch"));
                }
                total += total_len;
                out.push(StoredBatch {
                    meta,
                    bytes: Bytes::from(buf),
                });
                if total >= max_bytes || meta.last_seqno() >= up_to {
                    return Ok(Some(out));
                }
            }
            offset += total_len as u64;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecoveryMode;
    use crate::crdt::hlc::Hlc;
    use crate::storage::SimStorage;
    use crate::types::{EntityId, Epoch, Timestamp};
    use crate::wal::format::{Schema, encode_batch};
    use crate::wal::log::{LogConfig, Wal};
    use crate::wal::record::Record;
    use std::sync::Arc;

    fn log(storage: Arc<SimStorage>) -> (Wal, Vec<Bytes>) {
        let cfg = LogConfig {
            storage,
            data_dir: "/db".into(),
            shard: ShardId(0),
            segment_bytes: 4096,
            strict_tail: true,
            recovery_mode: RecoveryMode::Strict,
            schema: Schema {
                signal_type_count: 1,
                dimension: 4,
            },
        };
        let (mut wal, _) = Wal::open(cfg, SeqNo(0), &mut |_, _| {}).unwrap();
        let mut written = Vec::new();
        for b in 0..200u64 {
            let records: Vec<Record> = (0..(b % 5 + 1))
                .map(|i| Record::Signal {
                    signal_type: 0,
                    entity: EntityId(b * 10 + i),
                    weight: 1.0,
                    at: Timestamp(b),
                })
                .collect();
            let meta = BatchMeta {
                shard: ShardId(0),
                first_seqno: wal.next_seqno(),
                epoch: Epoch(1),
                hlc: Hlc::new(b, 0),
                record_count: records.len() as u32,
            };
            let mut bytes = Vec::new();
            encode_batch(&meta, &records, &mut bytes);
            wal.append(&meta, &bytes).unwrap();
            written.push(Bytes::from(bytes));
        }
        wal.sync().unwrap();
        (wal, written)
    }

    #[test]
    fn reads_the_exact_bytes_from_any_seqno_across_segments() {
        let storage = SimStorage::new();
        let (wal, written) = log(storage.clone());
        assert!(wal.segments().len() > 3, "several segments");
        let last = SeqNo(wal.next_seqno().0 - 1);
        let all = read_batches(
            storage.as_ref(),
            "/db".as_ref(),
            ShardId(0),
            SeqNo(1),
            last,
            usize::MAX,
        )
        .unwrap()
        .unwrap();
        let got: Vec<Bytes> = all.iter().map(|b| b.bytes.clone()).collect();
        assert_eq!(got, written);
        // From a SeqNo inside a batch: that batch first.
        let from = all[17].meta.first_seqno.next();
        let some = read_batches(storage.as_ref(), "/db".as_ref(), ShardId(0), from, last, 1)
            .unwrap()
            .unwrap();
        assert_eq!(some.len(), 1, "max_bytes stops after one batch");
        if all[17].meta.record_count > 1 {
            assert_eq!(some[0], all[17]);
        }
        // Bounded above.
        let upto = all[30].meta.last_seqno();
        let head = read_batches(
            storage.as_ref(),
            "/db".as_ref(),
            ShardId(0),
            SeqNo(1),
            upto,
            usize::MAX,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.len(), 31);
    }

    #[test]
    fn a_seqno_older_than_the_retained_log_asks_for_a_snapshot() {
        let storage = SimStorage::new();
        let (mut wal, _) = log(storage.clone());
        let segs = wal.segments();
        wal.remove_segments_below(segs[2].first_seqno).unwrap();
        let r = read_batches(
            storage.as_ref(),
            "/db".as_ref(),
            ShardId(0),
            SeqNo(1),
            SeqNo(1_000),
            1 << 20,
        )
        .unwrap();
        assert!(r.is_none());
    }

    #[test]
    fn a_damaged_stored_batch_is_corruption_naming_the_file() {
        let storage = SimStorage::new();
        let (wal, _) = log(storage.clone());
        let seg = &wal.segments()[1];
        let mut bytes = storage.read(&seg.path).unwrap();
        bytes[SEGMENT_HEADER_LEN + BATCH_HEADER_LEN + 3] ^= 0x10;
        storage.write_raw(&seg.path, &bytes);
        let err = read_batches(
            storage.as_ref(),
            "/db".as_ref(),
            ShardId(0),
            seg.first_seqno,
            SeqNo(1_000),
            1 << 20,
        )
        .unwrap_err();
        assert!(
            matches!(err, TidalError::Corruption { ref path, offset: 32, .. } if *path == seg.path),
            "{err:?}"
        );
    }
}
