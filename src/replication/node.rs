//! The I/O around the sans-I/O core: Tokio tasks that move frames between
//! the transport and the [`Shipper`] (leader) or [`Receiver`] (follower),
//! read stored batches from the log, and append received ones. The tasks
//! decide nothing: every protocol decision is the state machines'.
//!
//! Tasks hold a `Weak` reference to the database core, so dropping the
//! database releases its files at once; [`ReplicationTasks`] aborts them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::db::core::Core;
use crate::error::{Result, TidalError};
use crate::replication::message::Message;
use crate::replication::receiver::{Receiver, ReceiverConfig, ReceiverOutput};
use crate::replication::shipper::{
    FollowerId, FollowerStatus, Shipper, ShipperConfig, ShipperOutput,
};
use crate::replication::transport::{FrameSender, Transport};
use crate::storage::write_file_atomic;
use crate::types::{Epoch, Position, SeqNo};
use crate::wal::reader::read_batches;

/// Heartbeat interval of an idle leader (keeps lag fresh).
const HEARTBEAT_MS: u64 = 100;
/// Silence after which either side drops the connection.
const TIMEOUT_MS: u64 = 5_000;
/// Bytes of stored batches read per step when a follower catches up.
const READ_CHUNK_BYTES: usize = 4 << 20;
/// Longest pause between a follower's reconnection attempts.
const BACKOFF_MAX_MS: u64 = 2_000;

/// The replication tasks of a node; aborted when the node is dropped.
#[derive(Debug, Default)]
pub struct ReplicationTasks {
    tasks: Vec<JoinHandle<()>>,
    shipper: Option<Arc<Mutex<Shipper>>>,
}

impl ReplicationTasks {
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

fn history(core: &Core) -> Vec<(Epoch, SeqNo)> {
    core.view
        .read(|s| s.epochs().iter().map(|e| (e.epoch, e.start)).collect())
}

/// What a follower connection's writer task does, in order.
enum Work {
    Frame(Bytes),
    Read { from: SeqNo, to: SeqNo },
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
                ShipperOutput::SendSnapshot { f } => {
                    // Not built yet: catching up through a snapshot. The
                    // follower is dropped and told nothing it could misread.
                    tracing::error!(
                        follower = f.0,
                        "follower is behind the retained log; snapshot shipping is not implemented"
                    );
                    self.disconnect(f);
                }
                ShipperOutput::StoreDiverged {
                    f,
                    epoch,
                    first,
                    batches,
                } => {
                    let Some(core) = self.core.upgrade() else {
                        continue;
                    };
                    self.handle.spawn_blocking(move || {
                        let dir = core.config().data_dir.join("diverged");
                        let path = dir.join(format!("{:020}-{:020}.batches", epoch.0, first.0));
                        let stored = core
                            .config()
                            .storage
                            .create_dir_all(&dir)
                            .map_err(|e| TidalError::io("create dir", &dir, e))
                            .and_then(|()| write_file_atomic(core.config().storage.as_ref(), &path, &batches));
                        match stored {
                            Ok(()) => tracing::warn!(follower = f.0, path = %path.display(), "stored a diverged suffix for reconciliation"),
                            Err(e) => tracing::error!(error = %e, "could not store a diverged suffix"),
                        }
                    });
                }
                ShipperOutput::Fenced { seen } => {
                    if let Some(core) = self.core.upgrade() {
                        tracing::error!(epoch = %seen, "a higher epoch exists: this leader is fenced and refuses writes");
                        *core.fenced.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
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
            };
            if let Err(e) = sent {
                tracing::warn!(follower = f.0, error = %e, "follower connection failed");
                break;
            }
        }
        self.disconnect(f);
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
                    "stored batches are gone (retention); snapshot shipping is not implemented"
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
        first_retained: SeqNo(1),
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
                                let outputs = reader.lock().on_message(f, msg, now);
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

/// Starts a follower's receiver: connects to the leader (with capped
/// backoff), says hello, appends and applies what it is sent, acknowledges.
pub(crate) fn start_follower(
    core: &Arc<Core>,
    transport: Arc<dyn Transport>,
    handle: &tokio::runtime::Handle,
) -> Result<ReplicationTasks> {
    let mut receiver = Receiver::new(receiver_config(core));
    let weak = Arc::downgrade(core);
    let task = handle.spawn(async move {
        let mut backoff_ms = 10;
        loop {
            if weak.strong_count() == 0 {
                return;
            }
            match transport.connect().await {
                Ok(conn) => {
                    let (mut sender, mut frames) = conn.split();
                    let now = now_of(&weak);
                    let mut pending: VecDeque<ReceiverOutput> = receiver.on_connect(now).into();
                    let mut healthy = true;
                    while healthy {
                        // Carried out in order, including what each output
                        // leads to (the acks after an append), before the
                        // next frame is read.
                        while let Some(out) = pending.pop_front() {
                            match follow(&weak, &mut receiver, sender.as_mut(), out).await {
                                Ok(more) => pending.extend(more),
                                Err(e) => {
                                    tracing::warn!(error = %e, "follower session ends");
                                    healthy = false;
                                    break;
                                }
                            }
                        }
                        if !healthy {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_millis(HEARTBEAT_MS), frames.recv()).await {
                            Ok(Ok(Some(frame))) => match Message::decode(&frame) {
                                Ok(msg) => {
                                    backoff_ms = 10;
                                    pending.extend(receiver.on_message(msg, now_of(&weak)));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "undecodable message from the leader");
                                    healthy = false;
                                }
                            },
                            Ok(Ok(None)) | Ok(Err(_)) => healthy = false,
                            Err(_) => pending.extend(receiver.on_tick(now_of(&weak))),
                        }
                    }
                    receiver.on_disconnect();
                }
                Err(e) => tracing::debug!(error = %e, "connecting to the leader failed"),
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    });
    Ok(ReplicationTasks {
        tasks: vec![task],
        shipper: None,
    })
}

/// A receiver's view of the follower's log as it stands.
fn receiver_config(core: &Core) -> ReceiverConfig {
    let config = core.config();
    let last = core.view.read(|s| s.applied());
    let hist = history(core);
    let highest_epoch = hist.last().map_or(Epoch(0), |(e, _)| *e);
    ReceiverConfig {
        node: config.node_id,
        fingerprint: core.meta.fingerprint(),
        shard: config.cluster.shard_id,
        history: hist,
        last,
        highest_epoch,
        timeout_ms: TIMEOUT_MS,
        hlc_floor: core.hlc.last(),
    }
}

fn now_of(core: &Weak<Core>) -> u64 {
    core.upgrade().map_or(0, |c| c.config().clock.now_ms())
}

/// Carries out one receiver output; returns the outputs it led to, or an
/// error that ends the session (the loop reconnects with backoff).
async fn follow(
    core: &Weak<Core>,
    receiver: &mut Receiver,
    sender: &mut dyn FrameSender,
    out: ReceiverOutput,
) -> Result<Vec<ReceiverOutput>> {
    match out {
        ReceiverOutput::Send(msg) => {
            sender.send(msg.encode()).await?;
            Ok(Vec::new())
        }
        ReceiverOutput::Append { bytes, meta } => {
            let Some(c) = core.upgrade() else {
                return Err(TidalError::Closed);
            };
            let pos = Position::new(meta.epoch, meta.last_seqno());
            tokio::task::spawn_blocking(move || c.append_replicated(&meta, &bytes))
                .await
                .map_err(|_| TidalError::Closed)??;
            let mut more = receiver.on_durable(pos);
            more.extend(receiver.on_applied(pos));
            Ok(more)
        }
        ReceiverOutput::Truncate { to } => {
            let Some(c) = core.upgrade() else {
                return Err(TidalError::Closed);
            };
            let cutter = c.clone();
            let cut = match tokio::task::spawn_blocking(move || cutter.cut_log_after(to))
                .await
                .map_err(|_| TidalError::Closed)?
            {
                Ok(cut) => cut,
                Err(e) => {
                    // The receiver already counts the log as cut: start it
                    // over from the log as it is, so the next hello tells
                    // the truth and the handshake asks for the cut again.
                    tracing::error!(to = to.0, error = %e, "the divergence cut failed");
                    *receiver = Receiver::new(receiver_config(&c));
                    return Err(e);
                }
            };
            tracing::warn!(
                to = to.0,
                epoch = %cut.epoch,
                first = cut.first.0,
                last = cut.last.0,
                bytes = cut.batches.len(),
                path = %cut.path.display(),
                "diverged from the leader: cut the log and kept the suffix for reconciliation"
            );
            Ok(receiver.diverged_ready(cut.epoch, cut.first, cut.batches))
        }
        ReceiverOutput::InstallSnapshot { .. } => {
            tracing::error!(
                "the leader sends a snapshot; installing snapshots is not implemented yet"
            );
            Err(TidalError::Closed)
        }
        ReceiverOutput::Reconnect(reason) => {
            tracing::info!(?reason, "reconnecting to the leader");
            Err(TidalError::Closed)
        }
        ReceiverOutput::StaleLeader {
            leader_epoch,
            highest_seen,
        } => {
            tracing::warn!(%leader_epoch, %highest_seen, "refusing a leader of a lower epoch");
            Err(TidalError::Closed)
        }
        ReceiverOutput::Refused(reason) => {
            tracing::error!(?reason, "the leader refused this follower");
            Err(TidalError::Closed)
        }
    }
}
