//! The follower's side: one [`Receiver`] per follower, saying hello,
//! cutting a divergent suffix, checking every batch (CRC, shard, epoch,
//! continuity) before the I/O layer appends it, and acknowledging.
//!
//! Sans-I/O: every input is a method call, every effect a
//! [`ReceiverOutput`] the I/O layer carries out in order. The receiver
//! counts an `Append` as logged when it emits it (the I/O layer appends in
//! order), so batches can pipeline; acks report what the I/O layer says is
//! durable and applied.

use bytes::Bytes;

use crate::crdt::hlc::Hlc;
use crate::replication::message::{Message, PROTOCOL_VERSION, RefuseReason};
use crate::replication::protocol::{
    EpochHistory, MessageClock, epoch_at, follower_cut, split_suffix,
};
use crate::types::{Epoch, NodeId, Position, SeqNo, ShardId};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, decode_header, verify_crc};

/// What a receiver is built from: the follower's identity and its log as
/// recovery left it.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// The follower's node id.
    pub node: NodeId,
    /// The replicated identity fingerprint.
    pub fingerprint: u64,
    /// The shard this follower serves; batches of another are refused.
    pub shard: ShardId,
    /// The follower's epoch history, ascending; must hold `last`'s epoch.
    pub history: EpochHistory,
    /// The last record in the follower's log (durable and applied after
    /// recovery); zero for an empty log.
    pub last: Position,
    /// The highest epoch this node has seen (persisted by the I/O layer):
    /// a leader below it is refused.
    pub highest_epoch: Epoch,
    /// Leader silence after which the receiver asks to reconnect.
    pub timeout_ms: u64,
    /// A floor for the message clock (the db's last HLC).
    pub hlc_floor: Hlc,
}

/// Why the receiver asks for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconnectReason {
    /// A batch skipped SeqNos, or a heartbeat named a SeqNo never received
    /// (a lost or reordered message).
    Gap,
    /// A batch failed its header, CRC, shard or epoch check.
    BadBatch,
    /// A batch overlaps the log with other content: the histories must be
    /// compared again.
    Mismatch,
    /// The leader said nothing for longer than the timeout.
    Timeout,
    /// The leader asked for a cut that would not shorten the log: this
    /// node's history and log disagree, so start over.
    BadDivergence,
}

/// An effect the I/O layer carries out, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverOutput {
    /// Send this message to the leader.
    Send(Message),
    /// Cut the log after `to`: move the cut batches into `diverged/`
    /// (synced), bring the state back to `to` (snapshot and replay), then
    /// call [`Receiver::diverged_ready`] with the cut batches.
    Truncate {
        /// The last SeqNo kept.
        to: SeqNo,
    },
    /// A checked next batch: append it, sync, call [`Receiver::on_durable`],
    /// apply it through the recovery path, call [`Receiver::on_applied`].
    Append {
        /// The exact batch bytes.
        bytes: Bytes,
        /// Its decoded header.
        meta: BatchMeta,
    },
    /// A snapshot chunk to write; once the whole snapshot is installed call
    /// [`Receiver::snapshot_installed`].
    InstallSnapshot {
        /// The SeqNo the snapshot captures.
        seqno: SeqNo,
        /// Where the bytes go.
        offset: u64,
        /// The file's total length.
        total: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Drop the connection, open a new one (with backoff) and call
    /// [`Receiver::on_connect`]: the hello there resumes from the log.
    Reconnect(ReconnectReason),
    /// The leader's epoch is below one this node has seen: it was refused
    /// (and told). Find the current leader.
    StaleLeader {
        /// The refused leader's epoch.
        leader_epoch: Epoch,
        /// The highest epoch this node has seen.
        highest_seen: Epoch,
    },
    /// The leader refused this follower.
    Refused(RefuseReason),
    /// A higher epoch than any seen before: persist it (synced) before
    /// carrying out the outputs after this one, so a restart still refuses
    /// leaders below it.
    PersistEpoch(Epoch),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection; everything but `on_connect` is ignored.
    Disconnected,
    /// Hello sent; waiting for the answer.
    AwaitWelcome,
    /// A cut was asked of the I/O layer; waiting for its suffix.
    AwaitDiverged,
    /// Histories agree; batches are checked and appended.
    Streaming,
    /// Refused or refusing; waits for a new connection.
    Stopped,
}

/// The follower's replication state machine.
#[derive(Debug)]
pub struct Receiver {
    node: NodeId,
    fingerprint: u64,
    shard: ShardId,
    timeout_ms: u64,
    history: EpochHistory,
    /// Last batch handed to the I/O layer to append (logged or about to be).
    received: Position,
    durable: Position,
    applied: Position,
    highest_epoch: Epoch,
    leader_epoch: Option<Epoch>,
    leader_node: Option<NodeId>,
    leader_last: Position,
    leader_commit_ms: u64,
    phase: Phase,
    heard_ms: u64,
    now_ms: u64,
    clock: MessageClock,
}

impl Receiver {
    /// A receiver for the follower described by `config`, disconnected.
    pub fn new(config: ReceiverConfig) -> Receiver {
        Receiver {
            node: config.node,
            fingerprint: config.fingerprint,
            shard: config.shard,
            timeout_ms: config.timeout_ms,
            history: config.history,
            received: config.last,
            durable: config.last,
            applied: config.last,
            highest_epoch: config.highest_epoch.max(config.last.epoch),
            leader_epoch: None,
            leader_node: None,
            leader_last: Position::default(),
            leader_commit_ms: 0,
            phase: Phase::Disconnected,
            heard_ms: 0,
            now_ms: 0,
            clock: MessageClock::new(config.hlc_floor),
        }
    }

    /// The last record handed to the I/O layer to log.
    #[cfg(test)]
    pub fn last(&self) -> Position {
        self.received
    }

    /// The last record the I/O layer reported durable.
    #[cfg(test)]
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// The last record the I/O layer reported applied.
    #[cfg(test)]
    pub fn applied(&self) -> Position {
        self.applied
    }

    /// The epoch history as the receiver keeps it (grows with new epochs,
    /// shrinks with cuts).
    #[cfg(test)]
    pub fn history(&self) -> &[(Epoch, SeqNo)] {
        &self.history
    }

    /// The highest epoch seen; the I/O layer persists it so a restart still
    /// refuses older leaders.
    #[cfg(test)]
    pub fn highest_epoch(&self) -> Epoch {
        self.highest_epoch
    }

    /// The leader's last durable position and its commit time, from the
    /// last heartbeat.
    #[cfg(test)]
    pub fn leader_last(&self) -> (Position, u64) {
        (self.leader_last, self.leader_commit_ms)
    }

    /// Records the leader holds that this node has not applied, as of the
    /// last heartbeat.
    #[cfg(test)]
    pub fn lag_records(&self) -> u64 {
        self.leader_last
            .seqno
            .0
            .saturating_sub(self.applied.seqno.0)
    }

    /// The last remote HLC seen (for skew reporting).
    #[cfg(test)]
    pub fn last_remote_hlc(&self) -> Option<Hlc> {
        self.clock.remote()
    }

    /// Whether the leader welcomed this node and it is taking batches.
    pub fn is_streaming(&self) -> bool {
        self.phase == Phase::Streaming
    }

    /// Messages handing the leader the diverged suffixes this node holds
    /// unmerged (`(epoch, first, batches)` each, as kept in `diverged/`),
    /// in pieces under the frame cap. Sent once per connection, after the
    /// leader welcomed this node, so a suffix cut under one leader still
    /// reaches the next if a failover came before it was merged.
    pub fn hand_over(&mut self, held: Vec<(Epoch, SeqNo, Bytes)>) -> Vec<ReceiverOutput> {
        let mut out = Vec::new();
        if self.phase != Phase::Streaming {
            return out;
        }
        for (epoch, first, batches) in held {
            self.send_suffix(epoch, first, batches, &mut out);
        }
        out
    }

    /// A new connection to the leader: say hello.
    pub fn on_connect(&mut self, now_ms: u64) -> Vec<ReceiverOutput> {
        self.see(now_ms);
        self.heard_ms = now_ms;
        self.leader_epoch = None;
        let mut out = Vec::new();
        self.hello(&mut out);
        out
    }

    /// The connection is gone; wait for [`Receiver::on_connect`].
    pub fn on_disconnect(&mut self) {
        self.phase = Phase::Disconnected;
    }

    /// A message from the leader.
    pub fn on_message(&mut self, msg: Message, now_ms: u64) -> Vec<ReceiverOutput> {
        self.see(now_ms);
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Disconnected | Phase::Stopped) {
            return out;
        }
        self.heard_ms = now_ms;
        self.clock.observe(msg.hlc());
        match msg {
            Message::Welcome {
                leader_epoch,
                leader_node,
                divergence,
                ..
            } => self.on_welcome(leader_epoch, leader_node, divergence, &mut out),
            Message::Refused { reason, .. } => {
                if let RefuseReason::StaleLeader { follower_epoch } = reason {
                    // A fenced leader passes on the newer epoch it learned
                    // of, so this node refuses it from now on.
                    self.raise_epoch(follower_epoch, &mut out);
                }
                self.phase = Phase::Stopped;
                out.push(ReceiverOutput::Refused(reason));
            }
            Message::Batch { bytes, .. } => {
                if self.phase == Phase::Streaming {
                    self.on_batch(bytes, &mut out);
                }
            }
            Message::Heartbeat {
                leader_epoch,
                last,
                commit_ms,
                ..
            } => {
                if self.phase != Phase::Streaming {
                    return out;
                }
                if leader_epoch < self.highest_epoch {
                    self.refuse_stale(leader_epoch, &mut out);
                    return out;
                }
                self.leader_last = last;
                self.leader_commit_ms = commit_ms;
                // The leader heartbeats only after sending everything up to
                // `last` on this connection: holding less means a batch was
                // lost (a tail loss no later batch would reveal).
                if last.seqno > self.received.seqno {
                    self.reconnect(ReconnectReason::Gap, &mut out);
                    return out;
                }
                // Answering keeps the leader's view of this follower fresh
                // and shows it the connection is alive.
                self.ack(&mut out);
            }
            Message::SnapshotChunk {
                seqno,
                offset,
                total,
                bytes,
                ..
            } => {
                if self.phase == Phase::Streaming {
                    out.push(ReceiverOutput::InstallSnapshot {
                        seqno,
                        offset,
                        total,
                        bytes,
                    });
                }
            }
            Message::Hello { .. } | Message::Ack { .. } | Message::DivergedSuffix { .. } => {}
        }
        out
    }

    /// The I/O layer appended and synced the log up to `pos`.
    pub fn on_durable(&mut self, pos: Position) -> Vec<ReceiverOutput> {
        let mut out = Vec::new();
        if pos.seqno <= self.received.seqno && pos.seqno > self.durable.seqno {
            self.durable = pos;
            self.ack(&mut out);
        }
        out
    }

    /// The I/O layer applied the log up to `pos` to the follower's state.
    pub fn on_applied(&mut self, pos: Position) -> Vec<ReceiverOutput> {
        let mut out = Vec::new();
        if pos.seqno <= self.durable.seqno && pos.seqno > self.applied.seqno {
            self.applied = pos;
            self.ack(&mut out);
        }
        out
    }

    /// The I/O layer cut the log as asked and kept the cut batches in
    /// `diverged/`: send them to the leader and say hello again. Outside a
    /// cut (the connection dropped meanwhile) nothing is sent; the suffix
    /// stays in `diverged/`.
    pub fn diverged_ready(
        &mut self,
        epoch: Epoch,
        first: SeqNo,
        batches: Bytes,
    ) -> Vec<ReceiverOutput> {
        let mut out = Vec::new();
        if self.phase != Phase::AwaitDiverged {
            return out;
        }
        self.send_suffix(epoch, first, batches, &mut out);
        self.hello(&mut out);
        out
    }

    /// Sends a diverged suffix in pieces under the frame cap, each named by
    /// its first batch.
    fn send_suffix(
        &mut self,
        epoch: Epoch,
        first: SeqNo,
        batches: Bytes,
        out: &mut Vec<ReceiverOutput>,
    ) {
        for (epoch, first, batches) in split_suffix(epoch, first, batches) {
            let hlc = self.clock.stamp(self.now_ms);
            out.push(ReceiverOutput::Send(Message::DivergedSuffix {
                epoch,
                first,
                batches,
                hlc,
            }));
        }
    }

    /// The I/O layer installed a snapshot ending at `last` with the epoch
    /// history it holds: the log now resumes after it. Says hello again.
    pub fn snapshot_installed(
        &mut self,
        last: Position,
        history: EpochHistory,
    ) -> Vec<ReceiverOutput> {
        self.history = history;
        self.received = last;
        self.durable = last;
        self.applied = last;
        let mut out = Vec::new();
        if self.phase == Phase::Streaming {
            self.hello(&mut out);
        }
        out
    }

    /// Time passes: a leader silent past the timeout means reconnect.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<ReceiverOutput> {
        self.see(now_ms);
        let mut out = Vec::new();
        let waiting_on_leader = matches!(self.phase, Phase::AwaitWelcome | Phase::Streaming);
        if waiting_on_leader && now_ms.saturating_sub(self.heard_ms) > self.timeout_ms {
            self.reconnect(ReconnectReason::Timeout, &mut out);
        }
        out
    }

    fn see(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn hello(&mut self, out: &mut Vec<ReceiverOutput>) {
        self.phase = Phase::AwaitWelcome;
        let hlc = self.clock.stamp(self.now_ms);
        out.push(ReceiverOutput::Send(Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            fingerprint: self.fingerprint,
            node: self.node,
            last: self.received,
            hlc,
        }));
    }

    fn ack(&mut self, out: &mut Vec<ReceiverOutput>) {
        if self.phase != Phase::Streaming {
            return;
        }
        let hlc = self.clock.stamp(self.now_ms);
        out.push(ReceiverOutput::Send(Message::Ack {
            durable: self.durable,
            applied: self.applied,
            hlc,
        }));
    }

    fn raise_epoch(&mut self, epoch: Epoch, out: &mut Vec<ReceiverOutput>) {
        if epoch > self.highest_epoch {
            self.highest_epoch = epoch;
            out.push(ReceiverOutput::PersistEpoch(epoch));
        }
    }

    fn reconnect(&mut self, why: ReconnectReason, out: &mut Vec<ReceiverOutput>) {
        self.phase = Phase::Disconnected;
        out.push(ReceiverOutput::Reconnect(why));
    }

    fn refuse_stale(&mut self, leader_epoch: Epoch, out: &mut Vec<ReceiverOutput>) {
        let hlc = self.clock.stamp(self.now_ms);
        out.push(ReceiverOutput::Send(Message::Refused {
            reason: RefuseReason::StaleLeader {
                follower_epoch: self.highest_epoch,
            },
            hlc,
        }));
        out.push(ReceiverOutput::StaleLeader {
            leader_epoch,
            highest_seen: self.highest_epoch,
        });
        self.phase = Phase::Stopped;
    }

    fn on_welcome(
        &mut self,
        leader_epoch: Epoch,
        leader_node: NodeId,
        divergence: Option<Position>,
        out: &mut Vec<ReceiverOutput>,
    ) {
        if self.phase != Phase::AwaitWelcome {
            return;
        }
        if leader_epoch < self.highest_epoch {
            return self.refuse_stale(leader_epoch, out);
        }
        self.raise_epoch(leader_epoch, out);
        self.leader_epoch = Some(leader_epoch);
        self.leader_node = Some(leader_node);
        let Some(point) = divergence else {
            self.phase = Phase::Streaming;
            self.ack(out);
            return;
        };
        let cut = follower_cut(&self.history, self.received.seqno, point);
        if cut >= self.received.seqno {
            return self.reconnect(ReconnectReason::BadDivergence, out);
        }
        self.history.retain(|(_, start)| *start <= cut);
        let kept = Position::new(epoch_at(&self.history, cut).unwrap_or_default(), cut);
        self.received = kept;
        if self.durable.seqno > cut {
            self.durable = kept;
        }
        if self.applied.seqno > cut {
            self.applied = kept;
        }
        self.phase = Phase::AwaitDiverged;
        out.push(ReceiverOutput::Truncate { to: cut });
    }

    fn on_batch(&mut self, bytes: Bytes, out: &mut Vec<ReceiverOutput>) {
        let Some(leader_epoch) = self.leader_epoch else {
            return self.reconnect(ReconnectReason::BadBatch, out);
        };
        let Some(meta) = self.check(&bytes) else {
            return self.reconnect(ReconnectReason::BadBatch, out);
        };
        if meta.epoch > leader_epoch {
            return self.reconnect(ReconnectReason::BadBatch, out);
        }
        let last = meta.last_seqno();
        if meta.first_seqno <= self.received.seqno {
            // Already held if every SeqNo of it is here under the same epoch.
            let held = last <= self.received.seqno
                && epoch_at(&self.history, meta.first_seqno) == Some(meta.epoch)
                && epoch_at(&self.history, last) == Some(meta.epoch);
            if held {
                self.ack(out);
            } else {
                self.reconnect(ReconnectReason::Mismatch, out);
            }
            return;
        }
        if meta.first_seqno != self.received.seqno.next() {
            return self.reconnect(ReconnectReason::Gap, out);
        }
        if meta.epoch < self.received.epoch {
            return self.reconnect(ReconnectReason::BadBatch, out);
        }
        if self.history.last().is_none_or(|(e, _)| *e < meta.epoch) {
            self.history.push((meta.epoch, meta.first_seqno));
        }
        self.received = Position::new(meta.epoch, last);
        out.push(ReceiverOutput::Append { bytes, meta });
    }

    /// Header, exact length, CRC and shard of one batch on the wire.
    fn check(&self, bytes: &[u8]) -> Option<BatchMeta> {
        let (meta, payload_len, _) = decode_header(bytes).ok()?;
        let payload = bytes.get(BATCH_HEADER_LEN..)?;
        if payload.len() != payload_len as usize {
            return None;
        }
        let header = bytes.get(..BATCH_HEADER_LEN)?;
        if !verify_crc(header, payload) || meta.shard != self.shard {
            return None;
        }
        Some(meta)
    }
}
