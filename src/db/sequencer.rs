//! The group committer's work: validate a group against the state plus the
//! batch being built, log it as one batch, sync, apply, acknowledge.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::Durability;
use crate::crdt::hlc::Hlc;
use crate::db::core::Core;
use crate::db::validate::Overlay;
use crate::error::{Result, TidalError};
use crate::types::{Epoch, Position, SeqNo, ShardId};
use crate::wal::commit::{Publisher, Ticket, Weighted};
use crate::wal::format::{BatchMeta, encode_batch};
use crate::wal::log::Wal;
use crate::wal::record::Record;

/// One writer's request: records that are admitted (or refused) together.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) records: Vec<Record>,
}

impl Weighted for Request {
    fn records(&self) -> usize {
        self.records.len()
    }
}

/// State owned by whichever writer leads the current group.
#[derive(Debug)]
pub(crate) struct Committer {
    pub(crate) wal: Wal,
    pub(crate) shard: ShardId,
    pub(crate) epoch: Epoch,
    pub(crate) durability: Durability,
    /// Set by a failed write or sync: later writes are refused until reopen.
    pub(crate) poisoned: Option<String>,
    /// Set by shutdown once the log is synced: nothing touches the log
    /// after it, so the directory lock can be released even while a
    /// straggling task still holds the core.
    pub(crate) closed: bool,
    /// Log bytes appended since the last snapshot.
    pub(crate) bytes_since_snapshot: u64,
    /// The last batch appended (durable once `sync` returns).
    pub(crate) last_appended: Position,
    /// Reused encode buffer: the hot path allocates nothing per record.
    buf: Vec<u8>,
}

pub(crate) type CommitResult = Result<Position>;

impl Committer {
    pub(crate) fn new(wal: Wal, shard: ShardId, epoch: Epoch, durability: Durability) -> Self {
        Committer {
            wal,
            shard,
            epoch,
            durability,
            poisoned: None,
            closed: false,
            bytes_since_snapshot: 0,
            last_appended: Position::default(),
            buf: Vec::with_capacity(64 << 10),
        }
    }

    /// Whether the log may be written: `Closed` after shutdown, `Poisoned`
    /// after a failed write or sync.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(TidalError::Closed);
        }
        if let Some(cause) = &self.poisoned {
            return Err(TidalError::Poisoned {
                cause: cause.clone(),
            });
        }
        Ok(())
    }

    fn poison(&mut self, e: &TidalError) -> TidalError {
        let cause = e.to_string();
        tracing::error!(%cause, "write path failed; the database is poisoned until reopened");
        self.poisoned = Some(cause.clone());
        TidalError::Poisoned { cause }
    }

    /// Syncs the log; a failure poisons.
    pub(crate) fn sync(&mut self, core: &Core) -> Result<()> {
        self.check_writable()?;
        let start = Instant::now();
        match self.wal.sync() {
            Ok(()) => {
                core.metrics.record_fsync(start.elapsed());
                core.on_durable(self.last_appended);
                Ok(())
            }
            Err(e) => Err(self.poison(&e)),
        }
    }

    /// Appends a batch received from the leader (its exact bytes) and syncs
    /// it; a failure poisons.
    pub(crate) fn append_received(
        &mut self,
        core: &Core,
        meta: &BatchMeta,
        bytes: &[u8],
    ) -> Result<()> {
        self.check_writable()?;
        if let Err(e) = self.wal.append(meta, bytes) {
            return Err(self.poison(&e));
        }
        self.last_appended = Position::new(meta.epoch, meta.last_seqno());
        self.epoch = meta.epoch;
        self.sync(core)
    }

    /// Logs `records` as one batch stamped `hlc` (a fresh reading of the
    /// node's clock), syncs it under `Durability::Sync`, and applies it;
    /// `acknowledge` runs once readers can see it.
    pub(crate) fn commit(
        &mut self,
        core: &Core,
        hlc: Hlc,
        records: &[Record],
        acknowledge: impl FnOnce(&BatchMeta),
    ) -> Result<BatchMeta> {
        self.check_writable()?;
        let meta = BatchMeta {
            shard: self.shard,
            first_seqno: self.wal.next_seqno(),
            epoch: self.epoch,
            hlc,
            record_count: records.len() as u32,
        };
        self.buf.clear();
        encode_batch(&meta, records, &mut self.buf);
        if let Err(e) = self.wal.append(&meta, &self.buf) {
            return Err(self.poison(&e));
        }
        self.last_appended = Position::new(meta.epoch, meta.last_seqno());
        if self.durability.syncs_each_batch() {
            self.sync(core)?;
        }
        self.bytes_since_snapshot += self.buf.len() as u64;
        core.view.apply(
            |state| state.apply_batch(&meta, records),
            || {
                core.applied_tx
                    .send_replace(Position::new(meta.epoch, meta.last_seqno()));
                acknowledge(&meta)
            },
        );
        core.metrics.record_batch(records.len());
        Ok(meta)
    }
}

/// Processes one group: the function every group leader runs.
pub(crate) fn process(
    core: &Core,
    c: &mut Committer,
    group: Vec<(Ticket, Request)>,
    publisher: &Publisher<'_, Committer, Request, CommitResult>,
) {
    if c.check_writable().is_err() {
        publisher.publish(
            group
                .into_iter()
                .map(|(t, _)| (t, c.check_writable().map(|()| Position::default()))),
        );
        return;
    }
    let config = core.prepare.config();
    // The batch's HLC is taken before validation, so validation sees the
    // sessions as the batch's apply will (expired by its log time).
    let hlc = core.hlc.now();
    let mut overlay = Overlay::new(config, hlc.physical_ms());
    let mut records = Vec::new();
    let mut ends: Vec<(Ticket, usize)> = Vec::with_capacity(group.len());
    let mut rejected = Vec::new();
    core.view.read(|state| {
        for (ticket, mut req) in group {
            match overlay.admit(state, config, &mut req.records) {
                Ok(()) => {
                    records.append(&mut req.records);
                    ends.push((ticket, records.len()));
                }
                Err(e) => rejected.push((ticket, Err(e))),
            }
        }
    });
    if !rejected.is_empty() {
        publisher.publish(rejected);
    }
    if records.is_empty() {
        return;
    }
    let tickets: Vec<Ticket> = ends.iter().map(|(t, _)| *t).collect();
    let result = c.commit(core, hlc, &records, |meta| {
        publisher.publish(ends.iter().map(|(t, end)| {
            let seqno = SeqNo(meta.first_seqno.0 + *end as u64 - 1);
            (*t, Ok(Position::new(meta.epoch, seqno)))
        }));
    });
    match result {
        Ok(_) => {
            if c.bytes_since_snapshot >= config.snapshot_every_bytes {
                core.snapshot_due.store(true, Ordering::Release);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            publisher.publish(tickets.into_iter().map(|t| {
                (
                    t,
                    Err(match &e {
                        TidalError::Poisoned { cause } => TidalError::Poisoned {
                            cause: cause.clone(),
                        },
                        _ => TidalError::Poisoned { cause: msg.clone() },
                    }),
                )
            }));
        }
    }
}
