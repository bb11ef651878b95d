//! The I/O around the sans-I/O core: Tokio tasks that move frames between
//! the transport and the [`Shipper`] (leader) or [`Receiver`] (follower),
//! read stored batches from the log, and append received ones. The tasks
//! decide nothing: every protocol decision is the state machines'.
//!
//! Tasks hold a `Weak` reference to the database core, so dropping the
//! database releases its files at once; [`ReplicationTasks`] aborts them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::db::core::Core;
use crate::error::{Result, TidalError};
use crate::replication::message::Message;
use crate::replication::shipper::{
    FollowerId, FollowerStatus, Shipper, ShipperConfig, ShipperOutput,
};
use crate::replication::transport::{FrameSender, Transport};
use crate::snapshot;
use crate::storage::read_file;
use crate::types::{Epoch, SeqNo};
use crate::wal::reader::read_batches;

/// Heartbeat interval of an idle leader (keeps lag fresh).
pub(crate) const HEARTBEAT_MS: u64 = 100;
/// Silence after which either side drops the connection.
pub(crate) const TIMEOUT_MS: u64 = 5_000;
/// Bytes of stored batches read per step when a follower catches up.
const READ_CHUNK_BYTES: usize = 4 << 20;
/// Bytes of snapshot per message, far below the transport's frame cap.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Longest pause between a follower's reconnection attempts.
pub(crate) const BACKOFF_MAX_MS: u64 = 2_000;

/// The replication tasks of a node; aborted when the node is dropped.
#[derive(Debug, Default)]
pub struct ReplicationTasks {
    tasks: Vec<JoinHandle<()>>,
    shipper: Option<Arc<Mutex<Shipper>>>,
}

impl ReplicationTasks {
    /// A follower's: its receiver task.
    pub(crate) fn follower(task: JoinHandle<()>) -> ReplicationTasks {
        ReplicationTasks {
            tasks: vec![task],
            shipper: None,
        }
    }

    /// Followers as the leader's shipper sees them (empty elsewhere).
    pub(crate) fn followers(&self) -> Vec<FollowerStatus> {
        self.shipper
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).followers())
            .unwrap_or_default()
    }
}

impl Drop for ReplicationTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The Tokio runtime replication runs on: the current one, which must be
/// multi-threaded (a blocking replicated write on a current-thread runtime
/// would deadlock the task that moves its acknowledgements).
pub(crate) fn runtime() -> Result<tokio::runtime::Handle> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| TidalError::NoRuntime {
        reason: "open leaders and followers inside a multi-threaded Tokio runtime",
    })?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(TidalError::NoRuntime {
            reason: "a current-thread runtime would deadlock replicated writes; use a multi-threaded one",
        });
    }
    Ok(handle)
}

pub(crate) fn history(core: &Core) -> Vec<(Epoch, SeqNo)> {
    core.view
        .read(|s| s.epochs().iter().map(|e| (e.epoch, e.start)).collect())
}

/// What a follower connection's writer task does, in order.
enum Work {
    Frame(Bytes),
    Read { from: SeqNo, to: SeqNo },
    Snapshot,
}

struct LeaderShared {
    core: Weak<Core>,
    shipper: Arc<Mutex<Shipper>>,
    conns: Mutex<HashMap<FollowerId, mpsc::UnboundedSender<Work>>>,
    handle: tokio::runtime::Handle,
}

impl LeaderShared {
    fn now_ms(&self) -> u64 {
        self.core.upgrade().map_or(0, |c| c.config().clock.now_ms())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shipper> {
        self.shipper.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out the shipper's outputs. Never blocks: work for a
    /// connection is queued to its writer task.
    fn dispatch(self: &Arc<Self>, outputs: Vec<ShipperOutput>) {
        for out in outputs {
            match out {
                ShipperOutput::Send(f, msg) => self.queue(f, Work::Frame(msg.encode())),
                ShipperOutput::ReadFrom { f, from, to } => self.queue(f, Work::Read { from, to }),
                ShipperOutput::SendSnapshot { f } => self.queue(f, Work::Snapshot),
                ShipperOutput::StoreDiverged {
                    f,
                    origin,
                    epoch,
                    first,
                    batches,
                } => {
                    let Some(core) = self.core.upgrade() else {
                        continue;
                    };
                    let shared = Arc::clone(self);
                    self.handle.spawn_blocking(move || {
                        match core.keep_diverged(epoch, first, origin, &batches) {
                            Ok(path) => tracing::warn!(follower = f.0, path = %path.display(), "stored a diverged suffix for reconciliation"),
                            Err(e) => {
                                // The follower hands its suffixes over once
                                // per connection: end this one, so the next
                                // sends them again (else they wait for a
                                // failover or a restart to be merged).
                                tracing::error!(follower = f.0, error = %e, "could not store a diverged suffix; dropping the follower's connection so it hands it over again");
                                return shared.disconnect(f);
                            }
                        }
                        if core.config().auto_reconcile
                            && let Err(e) = core.reconcile_if_unmerged()
                        {
                            tracing::error!(error = %e, "reconciling a diverged suffix failed; it stays in diverged/ for the next run");
                        }
                    });
                }
                ShipperOutput::Fenced { seen } => {
                    if let Some(core) = self.core.upgrade() {
                        tracing::error!(epoch = %seen, "a higher epoch exists: this leader is fenced and refuses writes");
                        *core.fenced.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
                        // Persisted, so a restart as leader stays fenced.
                        self.handle.spawn_blocking(move || {
                            if let Err(e) = core.persist_seen_epoch(seen) {
                                tracing::error!(error = %e, "could not persist the epoch that fenced this leader");
                            }
                        });
                    }
                }
                ShipperOutput::HwmAdvanced(seqno) => {
                    if let Some(core) = self.core.upgrade() {
                        core.raise_hwm(seqno);
                    }
                }
                ShipperOutput::Disconnect(f) => self.disconnect(f),
            }
        }
    }

    /// Feeds a follower's message to the shipper, with what the core knows
    /// that the shipper needs (where the retained log starts), and passes
    /// back what it learned (clock skew, the followers' retention floor).
    fn on_message(&self, f: FollowerId, msg: Message, now: u64) -> Vec<ShipperOutput> {
        let core = self.core.upgrade();
        if let Some(c) = &core {
            c.marks.observe_skew(msg.hlc(), now);
        }
        let mut shipper = self.lock();
        if let Some(c) = &core {
            shipper.set_first_retained(SeqNo(c.marks.first_retained.load(Ordering::Acquire)));
        }
        let outputs = shipper.on_message(f, msg, now);
        if let (Some(c), Some(floor)) = (&core, shipper.retention_floor()) {
            c.marks.replica_floor.store(floor.0, Ordering::Release);
        }
        outputs
    }

    fn queue(&self, f: FollowerId, work: Work) {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = conns.get(&f) {
            let _ = tx.send(work);
        }
    }

    fn disconnect(&self, f: FollowerId) {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&f);
    }

    /// A follower connection's writer: frames and stored batches, in order.
    async fn write_loop(
        self: Arc<Self>,
        f: FollowerId,
        mut sender: Box<dyn FrameSender>,
        mut rx: mpsc::UnboundedReceiver<Work>,
    ) {
        while let Some(work) = rx.recv().await {
            let sent = match work {
                Work::Frame(frame) => sender.send(frame).await,
                Work::Read { from, to } => self.ship_stored(f, sender.as_mut(), from, to).await,
                Work::Snapshot => self.ship_snapshot(f, sender.as_mut()).await,
            };
            if let Err(e) = sent {
                tracing::warn!(follower = f.0, error = %e, "follower connection failed");
                break;
            }
        }
        self.disconnect(f);
    }

    /// Sends the newest snapshot as chunks of [`SNAPSHOT_CHUNK_BYTES`]: the
    /// follower is behind the retained log. It installs the snapshot and
    /// says hello again.
    async fn ship_snapshot(&self, f: FollowerId, sender: &mut dyn FrameSender) -> Result<()> {
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        let storage = core.config().storage.clone();
        let dir = core.config().data_dir.clone();
        let shard = core.config().cluster.shard_id;
        drop(core);
        let (seqno, bytes) = tokio::task::spawn_blocking(move || {
            let newest = snapshot::list_snapshots(storage.as_ref(), &dir, shard)?
                .into_iter()
                .next();
            let Some((seqno, path)) = newest else {
                return Err(TidalError::corruption(
                    &dir,
                    0,
                    "a follower needs a snapshot, but none is on disk",
                ));
            };
            Ok((seqno, Bytes::from(read_file(storage.as_ref(), &path)?)))
        })
        .await
        .map_err(|_| TidalError::Closed)??;
        tracing::info!(
            follower = f.0,
            seqno = seqno.0,
            bytes = bytes.len(),
            "sending a snapshot"
        );
        let total = bytes.len() as u64;
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(bytes.len());
            let hlc = self.lock().stamp(self.now_ms());
            let chunk = Message::SnapshotChunk {
                seqno,
                offset: offset as u64,
                total,
                bytes: bytes.slice(offset..end),
                hlc,
            };
            sender.send(chunk.encode()).await?;
            offset = end;
            if offset >= bytes.len() {
                return Ok(());
            }
        }
    }

    /// Streams the stored batches `from..=to` as the exact log bytes.
    async fn ship_stored(
        &self,
        f: FollowerId,
        sender: &mut dyn FrameSender,
        mut from: SeqNo,
        to: SeqNo,
    ) -> Result<()> {
        while from <= to {
            let Some(core) = self.core.upgrade() else {
                return Ok(());
            };
            let storage = core.config().storage.clone();
            let dir = core.config().data_dir.clone();
            let shard = core.config().cluster.shard_id;
            drop(core);
            let batches = tokio::task::spawn_blocking(move || {
                read_batches(storage.as_ref(), &dir, shard, from, to, READ_CHUNK_BYTES)
            })
            .await
            .map_err(|_| TidalError::Closed)??;
            let Some(batches) = batches.filter(|b| !b.is_empty()) else {
                tracing::error!(
                    follower = f.0,
                    from = from.0,
                    "stored batches were retired meanwhile; the follower reconnects and gets a snapshot"
                );
                return Err(TidalError::Closed);
            };
            for b in batches {
                let hlc = self.lock().stamp(self.now_ms());
                sender
                    .send(
                        Message::Batch {
                            bytes: b.bytes,
                            hlc,
                        }
                        .encode(),
                    )
                    .await?;
                let last = b.meta.last_seqno();
                self.lock().batches_sent(f, last, self.now_ms());
                from = last.next();
            }
        }
        Ok(())
    }
}

/// Starts a leader's shipper: accepts followers on `transport`, streams them
/// its durable log, tracks their acknowledgements and the HWM.
pub(crate) fn start_leader(
    core: &Arc<Core>,
    transport: Arc<dyn Transport>,
    handle: &tokio::runtime::Handle,
) -> Result<ReplicationTasks> {
    let config = core.config();
    let acks = match config.durability {
        crate::config::Durability::Replicated { acks, .. } => acks,
        _ => 0,
    };
    let epoch = core.commit.with_committer(|c| c.epoch);
    let durable = core.view.read(|s| s.applied());
    let shipper = Shipper::new(ShipperConfig {
        epoch,
        node: config.node_id,
        fingerprint: core.meta.fingerprint(),
        history: history(core),
        durable,
        acks,
        heartbeat_ms: HEARTBEAT_MS,
        timeout_ms: TIMEOUT_MS,
        first_retained: SeqNo(core.marks.first_retained.load(Ordering::Acquire)),
        hlc_floor: core.hlc.last(),
    });
    let shipper = Arc::new(Mutex::new(shipper));
    let shared = Arc::new(LeaderShared {
        core: Arc::downgrade(core),
        shipper: shipper.clone(),
        conns: Mutex::new(HashMap::new()),
        handle: handle.clone(),
    });
    let hook = shared.clone();
    core.set_durable_hook(Box::new(move |p| {
        let now = hook.now_ms();
        let outputs = hook.lock().on_durable(p, now);
        hook.dispatch(outputs);
    }));
    let mut tasks = Vec::new();
    let acceptor = shared.clone();
    tasks.push(handle.spawn(async move {
        // Retried while the database lives: a previous leader on the same
        // transport (before a promotion) releases its listener only when its
        // aborted task is dropped, and a TCP port may be briefly in use.
        let mut backoff_ms = 10;
        let mut listener = loop {
            match transport.listen().await {
                Ok(l) => break l,
                Err(e) => {
                    if acceptor.core.strong_count() == 0 {
                        return;
                    }
                    tracing::warn!(error = %e, "the leader cannot listen for followers yet; retrying");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                }
            }
        };
        let next_id = AtomicU64::new(1);
        loop {
            let conn = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a follower failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let f = FollowerId(next_id.fetch_add(1, Ordering::Relaxed));
            tracing::info!(follower = f.0, peer = conn.peer(), "follower connected");
            let (sender, mut receiver) = conn.split();
            let (tx, rx) = mpsc::unbounded_channel();
            acceptor
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(f, tx);
            acceptor.lock().on_connect(f);
            tokio::spawn(acceptor.clone().write_loop(f, sender, rx));
            let reader = acceptor.clone();
            tokio::spawn(async move {
                loop {
                    match receiver.recv().await {
                        Ok(Some(frame)) => match Message::decode(&frame) {
                            Ok(msg) => {
                                let now = reader.now_ms();
                                let outputs = reader.on_message(f, msg, now);
                                reader.dispatch(outputs);
                            }
                            Err(e) => {
                                tracing::warn!(follower = f.0, error = %e, "undecodable message; dropping the follower");
                                break;
                            }
                        },
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(follower = f.0, error = %e, "follower connection failed");
                            break;
                        }
                    }
                    if !reader.conns.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&f) {
                        break;
                    }
                }
                reader.lock().on_disconnect(f);
                reader.disconnect(f);
            });
        }
    }));
    let ticker = shared.clone();
    tasks.push(handle.spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS / 2));
        loop {
            interval.tick().await;
            if ticker.core.strong_count() == 0 {
                return;
            }
            let now = ticker.now_ms();
            let outputs = ticker.lock().on_tick(now);
            ticker.dispatch(outputs);
        }
    }));
    Ok(ReplicationTasks {
        tasks,
        shipper: Some(shipper),
    })
}
