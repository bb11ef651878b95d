//! Idempotency keys on the write path.
//!
//! - Content identity is the first 16 bytes of a SHA-256 over a domain tag
//!   and the request's records in their log encoding, after the stateless
//!   checks (signal types as ids, embeddings normalized) and before the
//!   sequencer numbers session events: the same writes give the same
//!   digest on every node of the same identity, whatever their state.
//! - The key travels as the request's last record (`IdempotencyKey`), so
//!   its SeqNo is the request's `Position`, and the store is rebuilt by the
//!   one apply function on recovery and on followers.
//! - The sequencer checks keys against the state plus the batch being
//!   built (`sequencer::process`): a second request with a key of the same
//!   group gets the first one's Position; a key in the store, live at the
//!   batch's log time, answers a retry without applying it.
//! - A retry's answer is an earlier write, which may not yet be as durable
//!   as this node promises (read back after a process crash under
//!   `Periodic`, say): [`Core::ensure_durable`] syncs first, and under
//!   `Replicated` `submit` waits for the HWM as for any write.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use crate::config::Durability;
use crate::db::core::Core;
use crate::db::validate::Prepare;
use crate::error::{Result, TidalError};
use crate::types::SeqNo;
use crate::wal::format::encode_record;
use crate::wal::record::Record;

/// Domain tag of the content digest (versioned with the record encoding).
const DIGEST_TAG: &[u8] = b"tidal/idempotency-content/v1";

/// The content digest of a request's records (see the module docs).
pub(crate) fn content_digest(records: &[Record]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(DIGEST_TAG);
    h.update((records.len() as u64).to_le_bytes());
    let mut buf = Vec::with_capacity(64);
    for r in records {
        buf.clear();
        encode_record(r, &mut buf);
        h.update((buf.len() as u64).to_le_bytes());
        h.update(&buf);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

impl Prepare {
    /// Checks an idempotency key's length.
    pub(crate) fn idempotency_key(&self, key: &[u8]) -> Result<()> {
        let limit = self.config().limits.max_idempotency_key_bytes;
        if key.is_empty() {
            return Err(TidalError::Empty {
                field: "idempotency_key",
            });
        }
        if key.len() > limit {
            return Err(TidalError::TooLong {
                field: "idempotency_key",
                len: key.len(),
                limit,
            });
        }
        Ok(())
    }
}

impl Core {
    /// Makes the log durable here up to `seqno` if this node's durability
    /// promises that on return (`Sync`, `Replicated`); `Periodic` promises
    /// nothing more than the flusher gives.
    pub(crate) fn ensure_durable(&self, seqno: SeqNo) -> Result<()> {
        if matches!(self.config().durability, Durability::Periodic(_))
            || self.durable.load(Ordering::Acquire) >= seqno.0
        {
            return Ok(());
        }
        // Everything up to `seqno` is in the log (it was applied from it);
        // a sync of the current segment covers it, older segments were
        // synced before the next one was created.
        self.flush()?;
        self.durable.fetch_max(seqno.0, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
#[path = "idem_tests.rs"]
mod tests;
