//! Helpers shared by the replication scenario tests: configs, reading the
//! batches a node's log holds, and writing an `EpochStart` into a stopped
//! node's log (how these tests stand in for a leader of an epoch that never
//! reached this node).
#![allow(dead_code)]

pub mod hold;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use tidal::{ClusterConfig, Config, Durability, NodeId, NodeRole};

pub fn config(dir: &Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .segment_bytes(1 << 20)
        .build()
        .unwrap()
}

/// One stored batch: first SeqNo, record count, epoch, hlc, exact bytes.
pub struct Batch {
    pub first: u64,
    pub count: u64,
    pub epoch: u64,
    pub hlc: u64,
    pub bytes: Vec<u8>,
}

impl Batch {
    pub fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let wal = dir.join("wal/shard-00000");
    let mut names: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names.into_iter().map(|n| wal.join(n)).collect()
}

/// Every batch of a (closed or flushed) node's log, in SeqNo order, with
/// the offset after it in its segment.
fn scan(dir: &Path) -> Vec<(std::path::PathBuf, usize, Batch)> {
    let mut out = Vec::new();
    for path in segments(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let mut o = 32;
        while o + 48 <= bytes.len() && bytes[o..o + 4] == *b"TDB2" {
            let len = 48 + u32_at(&bytes, o + 40) as usize;
            let batch = Batch {
                first: u64_at(&bytes, o + 16),
                count: u64::from(u32_at(&bytes, o + 12)),
                epoch: u64_at(&bytes, o + 24),
                hlc: u64_at(&bytes, o + 32),
                bytes: bytes[o..o + len].to_vec(),
            };
            o += len;
            out.push((path.clone(), o, batch));
        }
    }
    out
}

/// The batches of a node's log, in SeqNo order.
pub fn batches(dir: &Path) -> Vec<Batch> {
    scan(dir).into_iter().map(|(_, _, b)| b).collect()
}

/// The concatenated bytes of every batch (segment boundaries may differ
/// between nodes; the batch sequence may not).
pub fn batch_bytes(dir: &Path) -> Vec<u8> {
    batches(dir).into_iter().flat_map(|b| b.bytes).collect()
}

/// The concatenated bytes of the batches holding SeqNos above `seqno`.
pub fn batch_bytes_after(dir: &Path, seqno: u64) -> Vec<u8> {
    batches(dir)
        .into_iter()
        .filter(|b| b.first > seqno)
        .flat_map(|b| b.bytes)
        .collect()
}

/// Appends, to the log of a stopped node, a batch holding one
/// `EpochStart { epoch, leader_node, replicated: true }` right after its
/// last batch, synced. Returns the SeqNo of the record. This is the record
/// `promote` logs (when `leader_node` is the node itself) or that a leader
/// of that epoch would have shipped (when it is another node).
pub fn append_epoch_start(dir: &Path, epoch: u64, leader_node: u64) -> u64 {
    let (path, end, last) = scan(dir).pop().expect("a log with batches");
    let seqno = last.last() + 1;
    let hlc = last.hlc + 1;
    let mut payload = vec![1u8]; // TAG_EPOCH_START
    payload.extend_from_slice(&epoch.to_le_bytes());
    payload.extend_from_slice(&leader_node.to_le_bytes());
    payload.extend_from_slice(&hlc.to_le_bytes());
    payload.push(1); // replicated
    let mut batch = Vec::new();
    batch.extend_from_slice(b"TDB2");
    batch.extend_from_slice(&2u16.to_le_bytes());
    batch.extend_from_slice(&0u16.to_le_bytes());
    batch.extend_from_slice(&0u32.to_le_bytes()); // shard
    batch.extend_from_slice(&1u32.to_le_bytes()); // records
    batch.extend_from_slice(&seqno.to_le_bytes());
    batch.extend_from_slice(&epoch.to_le_bytes());
    batch.extend_from_slice(&hlc.to_le_bytes());
    batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&batch);
    h.update(&payload);
    batch.extend_from_slice(&h.finalize().to_le_bytes());
    batch.extend_from_slice(&payload);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(end as u64)).unwrap();
    f.write_all(&batch).unwrap();
    f.sync_all().unwrap();
    seqno
}

/// The files in `<dir>/diverged/` (name, contents), sorted by name: held
/// suffixes (`.batches`) and merged ones (`.merged`).
pub fn diverged(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir.join("diverged")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".batches") || name.ends_with(".merged")
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// SeqNos of the snapshot files in `dir`.
pub fn snapshots(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir.join("snapshots/shard-00000")) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".snap")?.parse().ok()
        })
        .collect();
    out.sort();
    out
}
