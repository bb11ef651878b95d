//! The `META` file: the identity a data directory was created with.
//!
//! The log and snapshots only mean what they mean under one identity: the
//! shard layout, the signal types and their half-lives (a signal type's id
//! is its position), the embedding dimension and the state machine's
//! parameters. `META` records that identity when the directory is created;
//! every later open checks the `Config` against it, and a difference is
//! [`TidalError::ConfigMismatch`] naming the first differing field, never a
//! silent reinterpretation of the log.
//!
//! Format, little-endian, with a trailing CRC over everything before it:
//!
//! | field | type |
//! |---|---|
//! | magic `b"TDBM"` | [u8; 4] |
//! | format version = 3 (1 and 2 are read too) | u16 |
//! | node id | u64 |
//! | shard id | u32 |
//! | shard count | u32 |
//! | signal type count, then per type: name (u32 length + UTF-8), half-life ms u64 | |
//! | dimension | u32 |
//! | landmark half-lives | u32 |
//! | score floor | f64 |
//! | session retention ms | u64 |
//! | idempotency TTL ms (version 2 on) | u64 |
//! | vector index `min_vectors` (version 3 on) | u64 |
//! | crc32 of every byte before it | u32 |
//!
//! Version 2 adds the idempotency TTL: which keys are live at a batch is
//! part of what replay computes. A version 1 file was written before
//! idempotency keys existed, so it reads as the default TTL (24 h), and
//! it is left as it is. Version 3 adds the vector index's `min_vectors`
//! (when a kind's embeddings are first indexed decides the index every
//! later search reads); versions 1 and 2 read as the default (100,000).
//! The fingerprint covers it only when it is not the default, so the
//! fingerprints of existing clusters do not change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::codec::{DecodeError, Put, Reader};
use crate::config::{Config, VectorIndex, duration_ms};
use crate::error::{Result, TidalError};
use crate::storage::{self, Storage};
use crate::types::{NodeId, ShardId};

/// Magic bytes at the start of `META`.
pub const META_MAGIC: [u8; 4] = *b"TDBM";
/// The `META` format version this build writes and reads.
pub const META_FORMAT_VERSION: u16 = 3;

/// The idempotency TTL a version 1 `META` stands for (the default).
const V1_IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;
/// The file name of `META` in the data directory.
pub const META_FILE_NAME: &str = "META";

/// The identity of a data directory, as stored in `META`.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// The format version the file was written in.
    pub format_version: u16,
    /// The node that owns this directory (part of every record's stamp).
    pub node_id: NodeId,
    /// The shard this directory holds.
    pub shard_id: ShardId,
    /// How many shards the entity space is split into: routing depends on it.
    pub shard_count: u32,
    /// Signal types in id order, with their half-lives in milliseconds.
    pub signal_types: Vec<(String, u64)>,
    /// The embedding dimension.
    pub dimension: u32,
    /// Half-lives between landmark moves: replay must reproduce it.
    pub landmark_half_lives: u32,
    /// Decayed magnitude below which entries are dropped: replay must reproduce it.
    pub score_floor: f64,
    /// How long closed sessions are kept, in log time: replay must reproduce it.
    pub session_retention_ms: u64,
    /// How long idempotency keys are kept, in log time: replay must reproduce it.
    pub idempotency_ttl_ms: u64,
    /// When a kind's embeddings are indexed: replay must reproduce the index.
    pub vector_min_vectors: u64,
}

/// Smallest encoding of one signal type: an empty name's length and a half-life.
const MIN_SIGNAL_TYPE_BYTES: usize = 4 + 8;

fn show_types(types: &[(String, u64)]) -> String {
    let mut s = String::from("[");
    for (i, (name, half_life_ms)) in types.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(s, "{sep}{name:?}: {half_life_ms} ms");
    }
    s.push(']');
    s
}

impl Meta {
    /// The identity a `Config` describes, in the current format version.
    pub fn from_config(config: &Config) -> Meta {
        Meta {
            format_version: META_FORMAT_VERSION,
            node_id: config.node_id,
            shard_id: config.cluster.shard_id,
            shard_count: config.cluster.shard_count,
            signal_types: config
                .signal_types
                .iter()
                .map(|t| (t.name.clone(), t.half_life_ms))
                .collect(),
            // `Config::validate` bounds the dimension at 65536.
            dimension: u32::try_from(config.dimension).unwrap_or(u32::MAX),
            landmark_half_lives: config.landmark_half_lives,
            score_floor: config.score_floor,
            session_retention_ms: duration_ms(config.session_retention),
            idempotency_ttl_ms: duration_ms(config.idempotency_ttl),
            vector_min_vectors: config.vector_index.min_vectors,
        }
    }

    /// The replicated identity (everything but the node id and the format
    /// version), in a fixed layout shared by `encode` and `fingerprint`.
    /// `version` is the file's: 1 has no TTL, below 3 no `min_vectors`.
    fn put_replicated(&self, b: &mut Vec<u8>, version: u16) {
        b.put_u32(self.shard_id.0);
        b.put_u32(self.shard_count);
        b.put_u32(self.signal_types.len() as u32);
        for (name, half_life_ms) in &self.signal_types {
            b.put_str(name);
            b.put_u64(*half_life_ms);
        }
        b.put_u32(self.dimension);
        b.put_u32(self.landmark_half_lives);
        b.put_f64(self.score_floor);
        b.put_u64(self.session_retention_ms);
        if version >= 2 {
            b.put_u64(self.idempotency_ttl_ms);
        }
        if version >= 3 {
            b.put_u64(self.vector_min_vectors);
        }
    }

    /// Encodes `META`, trailing CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&META_MAGIC);
        b.put_u16(self.format_version);
        b.put_u64(self.node_id.0);
        self.put_replicated(&mut b, self.format_version);
        let crc = crc32fast::hash(&b);
        b.put_u32(crc);
        b
    }

    /// Decodes `META`, checking the CRC first; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Meta, DecodeError> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(DecodeError {
                offset: 0,
                reason: format!("{} bytes is too short for META", bytes.len()),
            });
        };
        let (body, tail) = bytes.split_at(body_len);
        let stored = Reader::new(tail).u32()?;
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(DecodeError {
                offset: body_len,
                reason: format!(
                    "META crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                ),
            });
        }
        let mut r = Reader::new(body);
        if r.take(4)? != META_MAGIC {
            return Err(DecodeError {
                offset: 0,
                reason: "bad magic: not a META file".into(),
            });
        }
        let format_version = r.u16()?;
        if !(1..=META_FORMAT_VERSION).contains(&format_version) {
            return Err(DecodeError {
                offset: 4,
                reason: format!("unsupported META format version {format_version}"),
            });
        }
        let node_id = NodeId(r.u64()?);
        let shard_id = ShardId(r.u32()?);
        let shard_count = r.u32()?;
        let n = r.count(MIN_SIGNAL_TYPE_BYTES)?;
        let mut signal_types = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?.to_string();
            signal_types.push((name, r.u64()?));
        }
        let meta = Meta {
            format_version,
            node_id,
            shard_id,
            shard_count,
            signal_types,
            dimension: r.u32()?,
            landmark_half_lives: r.u32()?,
            score_floor: r.f64()?,
            session_retention_ms: r.u64()?,
            idempotency_ttl_ms: if format_version >= 2 {
                r.u64()?
            } else {
                V1_IDEMPOTENCY_TTL_MS
            },
            vector_min_vectors: if format_version >= 3 {
                r.u64()?
            } else {
                VectorIndex::default().min_vectors
            },
        };
        if !r.is_empty() {
            return Err(r.error(format!("{} bytes after the last field", r.remaining())));
        }
        Ok(meta)
    }

    /// Checks a `Config` against this stored identity. The error names the
    /// first differing field, in the order node_id, shard_id, shard_count,
    /// signal_types (names, order and half-lives), dimension,
    /// landmark_half_lives, score_floor, session_retention, idempotency_ttl,
    /// vector_index.min_vectors.
    pub fn check(&self, config: &Config) -> Result<()> {
        let given = Meta::from_config(config);
        let mismatch = |field: &'static str, stored: String, given: String| {
            Err(TidalError::ConfigMismatch {
                field,
                stored,
                given,
            })
        };
        if self.node_id != given.node_id {
            return mismatch(
                "node_id",
                self.node_id.to_string(),
                given.node_id.to_string(),
            );
        }
        if self.shard_id != given.shard_id {
            return mismatch(
                "shard_id",
                self.shard_id.to_string(),
                given.shard_id.to_string(),
            );
        }
        if self.shard_count != given.shard_count {
            return mismatch(
                "shard_count",
                self.shard_count.to_string(),
                given.shard_count.to_string(),
            );
        }
        if self.signal_types != given.signal_types {
            return mismatch(
                "signal_types",
                show_types(&self.signal_types),
                show_types(&given.signal_types),
            );
        }
        if self.dimension != given.dimension {
            return mismatch(
                "dimension",
                self.dimension.to_string(),
                given.dimension.to_string(),
            );
        }
        if self.landmark_half_lives != given.landmark_half_lives {
            return mismatch(
                "landmark_half_lives",
                self.landmark_half_lives.to_string(),
                given.landmark_half_lives.to_string(),
            );
        }
        // Bit equality: replay must reproduce the state bit for bit.
        if self.score_floor.to_bits() != given.score_floor.to_bits() {
            return mismatch(
                "score_floor",
                self.score_floor.to_string(),
                given.score_floor.to_string(),
            );
        }
        if self.session_retention_ms != given.session_retention_ms {
            return mismatch(
                "session_retention",
                format!("{} ms", self.session_retention_ms),
                format!("{} ms", given.session_retention_ms),
            );
        }
        if self.idempotency_ttl_ms != given.idempotency_ttl_ms {
            return mismatch(
                "idempotency_ttl",
                format!("{} ms", self.idempotency_ttl_ms),
                format!("{} ms", given.idempotency_ttl_ms),
            );
        }
        if self.vector_min_vectors != given.vector_min_vectors {
            return mismatch(
                "vector_index.min_vectors",
                self.vector_min_vectors.to_string(),
                given.vector_min_vectors.to_string(),
            );
        }
        Ok(())
    }

    /// The identity a follower must share with its leader: everything but
    /// the node id (and the file's format version, which is about the file,
    /// not the data).
    ///
    /// Defined as two CRC-32s (crc32fast, the IEEE polynomial) of the
    /// replicated fields in `META`'s version 2 layout, from shard id to the
    /// idempotency TTL (whatever version the file is), then `min_vectors`
    /// as a u64 only if it is not the default: the high 32 bits over those
    /// bytes, the low 32 bits over the same bytes followed by their length
    /// as a u64. Stable across builds and platforms, so two nodes can
    /// compare it over the wire.
    pub fn fingerprint(&self) -> u64 {
        let mut b = Vec::with_capacity(64);
        self.put_replicated(&mut b, 2);
        if self.vector_min_vectors != VectorIndex::default().min_vectors {
            b.put_u64(self.vector_min_vectors);
        }
        let high = crc32fast::hash(&b);
        let len = b.len() as u64;
        b.put_u64(len);
        let low = crc32fast::hash(&b);
        (u64::from(high) << 32) | u64::from(low)
    }
}

/// Reads `<data_dir>/META` and checks `config` against it, or creates it
/// atomically if the directory is new.
///
/// A damaged `META` is `TidalError::Corruption` naming the file; a
/// different identity is `TidalError::ConfigMismatch`. A missing `META`
/// in a directory that already holds log segments or snapshots is
/// `Corruption` too: writing a fresh identity over an existing log would
/// be exactly the silent reinterpretation `META` exists to prevent.
pub fn load_or_create(storage: &dyn Storage, config: &Config) -> Result<Meta> {
    let dir = &config.data_dir;
    let path = dir.join(META_FILE_NAME);
    if storage.exists(&path) {
        let bytes = storage::read_file(storage, &path)?;
        let meta = Meta::decode(&bytes)
            .map_err(|e| TidalError::corruption(&path, e.offset as u64, e.reason))?;
        meta.check(config)?;
        return Ok(meta);
    }
    if let Some(found) = holds_data(storage, dir)? {
        return Err(TidalError::corruption(
            &path,
            0,
            format!(
                "META is missing but the directory holds {}",
                found.display()
            ),
        ));
    }
    // The new directory's own entry (and those of any new parents) must be
    // durable for META to be.
    storage::create_dir_durable(storage, storage::SyncPoint::DataDirCreate, dir)?;
    let meta = Meta::from_config(config);
    storage::write_file_atomic(storage, storage::AtomicPoints::META, &path, &meta.encode())?;
    Ok(meta)
}

/// The first file under `<dir>/wal/*/` or `<dir>/snapshots/*/`, if any.
fn holds_data(storage: &dyn Storage, dir: &Path) -> Result<Option<PathBuf>> {
    for sub in ["wal", "snapshots"] {
        let top = dir.join(sub);
        if !storage.exists(&top) {
            continue;
        }
        let shards = storage
            .list_dir(&top)
            .map_err(|e| TidalError::io("list", &top, e))?;
        for shard in shards {
            let shard_dir = top.join(&shard);
            // Anything that is not a listable directory is a file: data.
            match storage.list_dir(&shard_dir) {
                Ok(files) => {
                    if let Some(f) = files.first() {
                        return Ok(Some(shard_dir.join(f)));
                    }
                }
                Err(_) => return Ok(Some(shard_dir)),
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
