//! Preference export: closed sessions as JSON Lines of (chosen, rejected)
//! pairs, for training rankers (DPO-style preference data).
//!
//! Format, one JSON object per line, every value an integer:
//!
//! ```text
//! {"user":7,"session":42,"chosen":1001,"rejected":1003,"closed_seqno":1234}
//! ```
//!
//! - `chosen`: an entity with a positive event in that session (its first
//!   occurrence order), unless it is one of the user's hard negatives.
//! - `rejected`: one of the user's hard negatives (an entity the user gave a
//!   negative event in any session on this shard) that this session showed.
//! - One line per (chosen, rejected) pair of the session; a session with no
//!   chosen or no rejected entity writes nothing.
//! - Sessions come in the order their `CloseSession` records were logged
//!   after `since`; `closed_seqno` is that record's SeqNo, so the next
//!   export can start from the last one written.
//!
//! The closes are read from the log (`since` must be within the retained
//! log, else [`TidalError::NotRetained`]), the sessions from the current
//! state: a session expired meanwhile (`session_retention`) is skipped and
//! counted in [`ExportReport::expired`].

use std::io::Write;
use std::sync::atomic::Ordering;

use super::Core;
use crate::error::{Result, TidalError};
use crate::types::{Position, SeqNo, SessionId};
use crate::wal::format::{BATCH_HEADER_LEN, Schema, decode_records};
use crate::wal::reader::read_batches;
use crate::wal::record::Record;

/// Bytes of log read per step.
const CHUNK_BYTES: usize = 4 << 20;

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Closed sessions found after `since`.
    pub sessions: u64,
    /// Lines written.
    pub lines: u64,
    /// Sessions closed after `since` but expired since (not written).
    pub expired: u64,
    /// The last SeqNo read: pass it as the next export's `since`.
    pub through: SeqNo,
}

impl Core {
    pub(crate) fn export_preferences(
        &self,
        since: Position,
        out: &mut dyn Write,
    ) -> Result<ExportReport> {
        let first_retained = SeqNo(self.marks.first_retained.load(Ordering::Acquire));
        if since.seqno.next() < first_retained {
            return Err(TidalError::NotRetained {
                field: "since",
                since: since.seqno,
                first_retained,
            });
        }
        // The log may hold more than is applied for a moment; read only
        // what reads can see, once the log has written it to its files.
        self.commit.with_committer(|c| match c.check_writable() {
            Ok(()) => c.write_out(),
            // Closed: written at shutdown. Poisoned: nothing more is written.
            Err(_) => Ok(()),
        })?;
        let through = self.view.read(|s| s.applied().seqno);
        let config = self.config();
        let schema = Schema {
            signal_type_count: config.signal_types.len() as u16,
            dimension: config.dimension as u32,
        };
        let shard = config.cluster.shard_id;
        let mut closes: Vec<(SessionId, SeqNo)> = Vec::new();
        let mut from = since.seqno.next();
        let mut records = Vec::new();
        while from <= through {
            let batches = read_batches(
                self.storage.as_ref(),
                &self.data_dir,
                shard,
                from,
                through,
                CHUNK_BYTES,
            )?
            .ok_or(TidalError::NotRetained {
                field: "since",
                since: since.seqno,
                first_retained,
            })?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                records.clear();
                let payload = b.bytes.get(BATCH_HEADER_LEN..).unwrap_or_default();
                decode_records(payload, b.meta.record_count, &schema, &mut records).map_err(
                    |e| TidalError::corruption(&self.data_dir, e.offset as u64, e.reason),
                )?;
                for (i, r) in records.iter().enumerate() {
                    let seqno = SeqNo(b.meta.first_seqno.0 + i as u64);
                    if let Record::CloseSession { session, .. } = r
                        && seqno > since.seqno
                        && seqno <= through
                    {
                        closes.push((*session, seqno));
                    }
                }
                from = b.meta.last_seqno().next();
            }
        }
        let io = |e: std::io::Error| TidalError::io("write preference export", &self.data_dir, e);
        let mut report = ExportReport {
            through,
            ..ExportReport::default()
        };
        for (session, closed) in closes {
            report.sessions += 1;
            let Some((user, chosen, rejected)) = self.view.read(|s| s.sessions.preference(session))
            else {
                report.expired += 1;
                continue;
            };
            for c in &chosen {
                for r in &rejected {
                    writeln!(
                        out,
                        "{{\"user\":{},\"session\":{},\"chosen\":{},\"rejected\":{},\"closed_seqno\":{}}}",
                        user.0, session.0, c.0, r.0, closed.0
                    )
                    .map_err(io)?;
                    report.lines += 1;
                }
            }
        }
        out.flush().map_err(io)?;
        Ok(report)
    }
}
