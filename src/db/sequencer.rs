//! The group committer's work: validate a group against the state plus the
//! batch being built, log it as one batch, sync, apply, acknowledge.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::{Durability, duration_ms};
use crate::crdt::hlc::Hlc;
use crate::db::core::Core;
use crate::db::overlay::Overlay;
use crate::db::view::{CATCH_UP_MIN_RECORDS, SharedChange};
use crate::error::{Result, TidalError};
use crate::state::mirror::Batches;
use crate::storage::StorageFile;
use crate::types::{Epoch, Position, SeqNo, ShardId};
use crate::wal::commit::{Publisher, Ticket, Weighted};
use crate::wal::format::{BatchMeta, encode_batch};
use crate::wal::log::Wal;
use crate::wal::record::Record;

/// One writer's request: records that are admitted (or refused) together,
/// with the idempotency key and content digest if the write carries one.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) records: Vec<Record>,
    pub(crate) idem: Option<(Vec<u8>, [u8; 16])>,
    /// The key is a reconciliation's, for a request of a diverged suffix
    /// (logged with `merged` set).
    pub(crate) merged_key: bool,
}

impl Weighted for Request {
    fn records(&self) -> usize {
        self.records.len() + usize::from(self.idem.is_some())
    }
}

/// The conflict error of `key`, held by the write at `original`.
fn conflict(key: &[u8], original: Position) -> TidalError {
    TidalError::IdempotencyConflict {
        key_len: key.len(),
        key_prefix: String::from_utf8_lossy(&key[..key.len().min(16)]).into_owned(),
        original,
    }
}

/// A sync of the log taken out of the committer ([`Committer::begin_sync`]).
pub(crate) struct OpenSync {
    pub(crate) file: Arc<dyn StorageFile>,
    path: PathBuf,
    upto: Position,
    started: Instant,
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

    /// Starts a sync that runs without the committer (`Core::flush` under
    /// `Periodic`): writes out what the log holds in memory and returns the
    /// segment to sync and the position that sync makes durable.
    pub(crate) fn begin_sync(&mut self) -> Result<Option<OpenSync>> {
        self.check_writable()?;
        match self.wal.sync_target() {
            Ok(target) => Ok(target.map(|(file, path)| OpenSync {
                file,
                path,
                upto: self.last_appended,
                started: Instant::now(),
            })),
            Err(e) => Err(self.poison(&e)),
        }
    }

    /// Ends a sync begun by [`Committer::begin_sync`] with its result: a
    /// failure poisons; a success counts only if nothing poisoned the log
    /// meanwhile (a roll's sync of the same file may have taken the error
    /// this one would have seen).
    pub(crate) fn end_sync(
        &mut self,
        core: &Core,
        open: OpenSync,
        result: std::io::Result<()>,
    ) -> Result<()> {
        if let Err(e) = result {
            return Err(self.poison(&TidalError::io("sync segment", &open.path, e)));
        }
        self.check_writable()?;
        core.metrics.record_fsync(open.started.elapsed());
        core.on_durable(open.upto);
        Ok(())
    }

    /// Writes the batches the log holds back in memory to its file (before
    /// anything reads the log files); a failure poisons.
    pub(crate) fn write_out(&mut self) -> Result<()> {
        self.check_writable()?;
        self.wal.write_out().map_err(|e| self.poison(&e))
    }

    /// Appends a batch received from the leader (its exact bytes), not yet
    /// synced (the caller syncs a run of them once); a failure poisons.
    pub(crate) fn append_received(&mut self, meta: &BatchMeta, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        if let Err(e) = self.wal.append(meta, bytes) {
            return Err(self.poison(&e));
        }
        self.last_appended = Position::new(meta.epoch, meta.last_seqno());
        self.epoch = meta.epoch;
        Ok(())
    }

    /// Logs `records` as one batch stamped `hlc` (a fresh reading of the
    /// node's clock), syncs it under `Durability::Sync`, and applies it;
    /// `acknowledge` runs once readers can see it.
    pub(crate) fn commit(
        &mut self,
        core: &Core,
        hlc: Hlc,
        records: Vec<Record>,
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
        let count = records.len();
        let batch = Arc::new(Batches::one(meta, records));
        let change: SharedChange = batch.clone();
        let syncs = self.durability.syncs_each_batch();
        // A large batch that waits for its sync is applied meanwhile, to
        // the copy readers do not see, and published after the sync
        // returned (`View::apply_early`). The apply starts before the
        // batch is encoded and written, which it does not need.
        let early = syncs && count >= CATCH_UP_MIN_RECORDS && core.view.apply_early(&change);
        self.buf.clear();
        encode_batch(&meta, batch.first_records(), &mut self.buf);
        if let Err(e) = self.wal.append(&meta, &self.buf) {
            if early {
                core.view.discard_early();
            }
            return Err(self.poison(&e));
        }
        self.last_appended = Position::new(meta.epoch, meta.last_seqno());
        if syncs && let Err(e) = self.sync(core) {
            if early {
                core.view.discard_early();
            }
            return Err(e);
        }
        self.bytes_since_snapshot += self.buf.len() as u64;
        let published = || {
            core.applied_tx
                .send_replace(Position::new(meta.epoch, meta.last_seqno()));
            acknowledge(&meta)
        };
        if early {
            core.view.publish_early(count, change, published);
        } else {
            core.view.apply(count, change, published);
        }
        core.metrics.record_batch(count);
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
    let log_ms = hlc.physical_ms();
    let ttl_ms = duration_ms(config.idempotency_ttl);
    let mut overlay = Overlay::new(config, log_ms);
    let mut records = Vec::new();
    let mut ends: Vec<(Ticket, usize)> = Vec::with_capacity(group.len());
    // Refusals, and retries answered from the store, published at once.
    let mut rejected = Vec::new();
    // Keys this group logs: digest and the end of their request.
    let mut keys: HashMap<Vec<u8>, ([u8; 16], usize)> = HashMap::new();
    let next = c.wal.next_seqno().0;
    let at = |end: usize| Position::new(c.epoch, SeqNo(next + end as u64 - 1));
    core.view.read(|state| {
        let store = state.idempotency();
        for (ticket, mut req) in group {
            if let Some((key, digest)) = &req.idem {
                // A retry of a request of this group: the same end, so the
                // same Position, once the batch is logged.
                if let Some((d, end)) = keys.get(key) {
                    if d == digest {
                        ends.push((ticket, *end));
                    } else {
                        rejected.push((ticket, Err(conflict(key, at(*end)))));
                    }
                    continue;
                }
                // Keys expired by this batch's log time are gone for it.
                if let Some(e) = store.get(key, log_ms, ttl_ms) {
                    let answer = if e.digest == *digest {
                        Ok(e.position)
                    } else {
                        Err(conflict(key, e.position))
                    };
                    rejected.push((ticket, answer));
                    continue;
                }
                if store.live_at(log_ms, ttl_ms) + keys.len() >= config.idempotency_capacity {
                    rejected.push((
                        ticket,
                        Err(TidalError::IdempotencyFull {
                            capacity: config.idempotency_capacity,
                        }),
                    ));
                    continue;
                }
            }
            match overlay.admit(state, config, &mut req.records) {
                Ok(()) => {
                    // Requests are bounded by `max_batch_records`.
                    let span = req.records.len() as u32;
                    records.append(&mut req.records);
                    // The key is the request's last record: its SeqNo is
                    // the request's Position, and only admitted requests
                    // store one.
                    if let Some((key, digest)) = req.idem.take() {
                        records.push(Record::IdempotencyKey {
                            key: key.clone(),
                            digest,
                            span,
                            merged: req.merged_key,
                        });
                        keys.insert(key, (digest, records.len()));
                    }
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
    let result = c.commit(core, hlc, records, |meta| {
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
