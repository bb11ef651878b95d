//! The leader's side: one [`Shipper`] per leader, tracking every follower
//! connection, answering handshakes, asking the I/O layer to stream durable
//! batches, and computing the high-water mark from acknowledgements.
//!
//! Sans-I/O: every input is a method call carrying `now_ms`, every effect is
//! an [`ShipperOutput`] the I/O layer carries out in order.

use std::collections::{BTreeMap, VecDeque};

use crate::crdt::hlc::Hlc;
use crate::replication::message::{Message, PROTOCOL_VERSION, RefuseReason};
use crate::replication::protocol::{
    EpochHistory, MAX_HANDSHAKE_ROUNDS, MessageClock, epoch_at, leader_divergence,
};
use crate::types::{Epoch, NodeId, Position, SeqNo};

pub use crate::replication::shipper_output::{FollowerStatus, ShipperOutput};

/// Commit times remembered for lag in milliseconds. Older ones are dropped;
/// lag then counts from the oldest one kept, a lower bound.
const MAX_COMMIT_TIMES: usize = 4_096;

/// One follower connection, numbered by the I/O layer. A reconnect is a new
/// id, so nothing said on an old connection is taken for the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FollowerId(pub u64);

/// What a shipper is built from.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    /// The leader's epoch.
    pub epoch: Epoch,
    /// The leader's node id.
    pub node: NodeId,
    /// The replicated identity fingerprint; followers must match it.
    pub fingerprint: u64,
    /// The leader's epoch history, ascending, ending with its own epoch.
    pub history: EpochHistory,
    /// The leader's last durable position: only batches up to it ship.
    pub durable: Position,
    /// Followers (distinct nodes) that must hold a SeqNo durably for the
    /// HWM to reach it; 0 makes the HWM the leader's durable SeqNo.
    pub acks: usize,
    /// Idle time after which a streaming follower gets a heartbeat.
    pub heartbeat_ms: u64,
    /// Silence after which a follower connection is dropped.
    pub timeout_ms: u64,
    /// The first SeqNo still in the leader's log; a follower needing older
    /// records gets a snapshot.
    pub first_retained: SeqNo,
    /// A floor for the message clock (the db's last HLC).
    pub hlc_floor: Hlc,
}

/// A known bug the deterministic cluster simulator (`sim_cluster`) plants
/// to prove its invariants catch it. Test builds only: the field and the
/// checks that read it do not exist in a normal build.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShipperMutant {
    /// Answer every hello as if the histories agreed: no divergence cut.
    NoDivergenceCut,
    /// Count acks without the staleness checks: any phase, no match against
    /// the history and the handshake, and every connection of a node as a
    /// replica of its own (an older connection still open counts again).
    CountStaleAcks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a hello (first, or after a cut or a snapshot).
    AwaitHello,
    /// A snapshot is being sent; the follower will say hello after it.
    Snapshotting,
    /// Histories agree; batches flow.
    Streaming,
    /// Refused; nothing more is done on this connection.
    Closed,
}

#[derive(Clone, Debug)]
struct Peer {
    node: Option<NodeId>,
    phase: Phase,
    /// The follower's last SeqNo when the histories were found to agree.
    agreed: SeqNo,
    /// Highest SeqNo the I/O layer was asked to send.
    requested: SeqNo,
    sent: Position,
    durable: Position,
    applied: Position,
    /// Last time anything was heard; `None` until the first input with a time.
    heard_ms: Option<u64>,
    /// Last time anything was sent (for heartbeats).
    sent_ms: u64,
    rounds: u32,
}

/// The leader's replication state machine.
#[derive(Debug)]
pub struct Shipper {
    epoch: Epoch,
    node: NodeId,
    fingerprint: u64,
    history: EpochHistory,
    durable: Position,
    acks: usize,
    heartbeat_ms: u64,
    timeout_ms: u64,
    first_retained: SeqNo,
    hwm: SeqNo,
    fenced: Option<Epoch>,
    peers: BTreeMap<FollowerId, Peer>,
    /// The last durable SeqNo each follower node acknowledged, kept after
    /// it disconnects: retention holds the log for it.
    known: BTreeMap<NodeId, SeqNo>,
    /// `(last SeqNo made durable, when)`, ascending, for lag in ms.
    commits: VecDeque<(SeqNo, u64)>,
    clock: MessageClock,
    now_ms: u64,
    #[cfg(test)]
    mutant: Option<ShipperMutant>,
}

impl Shipper {
    /// A shipper for a leader described by `config`. With `acks == 0` the
    /// HWM starts at the durable SeqNo; otherwise at 0 until acks arrive.
    pub fn new(config: ShipperConfig) -> Shipper {
        let hwm = if config.acks == 0 {
            config.durable.seqno
        } else {
            SeqNo(0)
        };
        Shipper {
            epoch: config.epoch,
            node: config.node,
            fingerprint: config.fingerprint,
            history: config.history,
            durable: config.durable,
            acks: config.acks,
            heartbeat_ms: config.heartbeat_ms,
            timeout_ms: config.timeout_ms,
            first_retained: config.first_retained,
            hwm,
            fenced: None,
            peers: BTreeMap::new(),
            known: BTreeMap::new(),
            commits: VecDeque::new(),
            clock: MessageClock::new(config.hlc_floor),
            now_ms: 0,
            #[cfg(test)]
            mutant: None,
        }
    }

    /// Plants (or removes) a known bug, for the simulator's mutant tests.
    #[cfg(test)]
    pub(crate) fn set_mutant(&mut self, mutant: Option<ShipperMutant>) {
        self.mutant = mutant;
    }

    /// The high-water mark: never goes back.
    #[cfg(test)]
    pub fn hwm(&self) -> SeqNo {
        self.hwm
    }

    /// The highest epoch learned of above ours, if any: writes must be refused.
    #[cfg(test)]
    pub fn fenced(&self) -> Option<Epoch> {
        self.fenced
    }

    /// The last remote HLC seen on any connection (for skew reporting).
    #[cfg(test)]
    pub fn last_remote_hlc(&self) -> Option<Hlc> {
        self.clock.remote()
    }

    /// A stamp for a message the I/O layer builds itself (batches and
    /// snapshot chunks), so every message from this leader is ordered.
    pub fn stamp(&mut self, now_ms: u64) -> Hlc {
        self.see(now_ms);
        self.clock.stamp(now_ms)
    }

    /// Tells the shipper the first SeqNo still in the log (after segments
    /// were retired), so a follower behind it gets a snapshot.
    pub fn set_first_retained(&mut self, seqno: SeqNo) {
        self.first_retained = seqno;
    }

    /// A new follower connection; it must say hello first.
    pub fn on_connect(&mut self, f: FollowerId) {
        self.peers.insert(
            f,
            Peer {
                node: None,
                phase: Phase::AwaitHello,
                agreed: SeqNo(0),
                requested: SeqNo(0),
                sent: Position::default(),
                durable: Position::default(),
                applied: Position::default(),
                heard_ms: None,
                sent_ms: self.now_ms,
                rounds: 0,
            },
        );
    }

    /// The connection is gone. What it acknowledged stays in the HWM.
    pub fn on_disconnect(&mut self, f: FollowerId) {
        self.peers.remove(&f);
    }

    /// A message from follower `f`. Messages on unknown connections, and
    /// messages a follower never sends, are ignored.
    pub fn on_message(&mut self, f: FollowerId, msg: Message, now_ms: u64) -> Vec<ShipperOutput> {
        self.see(now_ms);
        let mut out = Vec::new();
        let Some(peer) = self.peers.get_mut(&f) else {
            return out;
        };
        peer.heard_ms = Some(now_ms);
        self.clock.observe(msg.hlc());
        match msg {
            Message::Hello {
                protocol_version,
                fingerprint,
                node,
                last,
                ..
            } => self.on_hello(f, protocol_version, fingerprint, node, last, &mut out),
            Message::Ack {
                durable, applied, ..
            } => self.on_ack(f, durable, applied, &mut out),
            Message::DivergedSuffix {
                epoch,
                first,
                batches,
                ..
            } => out.push(ShipperOutput::StoreDiverged {
                f,
                origin: self.peers.get(&f).and_then(|p| p.node),
                epoch,
                first,
                batches,
            }),
            Message::Refused { reason, .. } => {
                if let RefuseReason::StaleLeader { follower_epoch } = reason {
                    self.fence(follower_epoch, &mut out);
                }
                if let Some(peer) = self.peers.get_mut(&f) {
                    peer.phase = Phase::Closed;
                }
            }
            Message::Welcome { .. }
            | Message::Batch { .. }
            | Message::Heartbeat { .. }
            | Message::SnapshotChunk { .. } => {}
        }
        out
    }

    /// New batches are durable locally up to `last`: ask the I/O layer to
    /// stream them to every streaming follower, and move the HWM if no acks
    /// are needed.
    pub fn on_durable(&mut self, last: Position, now_ms: u64) -> Vec<ShipperOutput> {
        self.see(now_ms);
        let mut out = Vec::new();
        if last.seqno <= self.durable.seqno {
            return out;
        }
        self.durable = last;
        if self.commits.len() == MAX_COMMIT_TIMES {
            self.commits.pop_front();
        }
        self.commits.push_back((last.seqno, now_ms));
        let ids: Vec<FollowerId> = self.peers.keys().copied().collect();
        for f in ids {
            self.request(f, now_ms, &mut out);
        }
        self.recompute_hwm(&mut out);
        out
    }

    /// The I/O layer sent follower `f` the batches up to `last` (asked for
    /// by a [`ShipperOutput::ReadFrom`]). A report past what was asked is
    /// ignored: it belongs to an earlier handshake.
    pub fn batches_sent(&mut self, f: FollowerId, last: SeqNo, now_ms: u64) {
        self.see(now_ms);
        let Some(peer) = self.peers.get_mut(&f) else {
            return;
        };
        if peer.phase != Phase::Streaming || last > peer.requested || last <= peer.sent.seqno {
            return;
        }
        let epoch = epoch_at(&self.history, last).unwrap_or(peer.sent.epoch);
        peer.sent = Position::new(epoch, last);
        peer.sent_ms = now_ms;
    }

    /// Time passes: heartbeat idle streaming followers that were sent
    /// everything durable, drop silent ones.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<ShipperOutput> {
        self.see(now_ms);
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let commit_ms = self.commits.back().map_or(0, |(_, ms)| *ms);
        for (f, peer) in &mut self.peers {
            let heard = *peer.heard_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(heard) > self.timeout_ms {
                dead.push(*f);
                continue;
            }
            // Only a follower that was sent everything durable gets one, so
            // a heartbeat also tells it that a lost tail batch is missing.
            if peer.phase == Phase::Streaming
                && peer.sent.seqno >= self.durable.seqno
                && now_ms.saturating_sub(peer.sent_ms) >= self.heartbeat_ms
            {
                peer.sent_ms = now_ms;
                let hlc = self.clock.stamp(now_ms);
                out.push(ShipperOutput::Send(
                    *f,
                    Message::Heartbeat {
                        leader_epoch: self.epoch,
                        last: self.durable,
                        commit_ms,
                        hlc,
                    },
                ));
            }
        }
        for f in dead {
            self.peers.remove(&f);
            out.push(ShipperOutput::Disconnect(f));
        }
        out
    }

    /// The lowest SeqNo a follower node heard from since this leader
    /// started still needs (its last durable + 1), for log retention;
    /// `None` when no follower is known.
    pub fn retention_floor(&self) -> Option<SeqNo> {
        self.known.values().min().map(|s| s.next())
    }

    /// Every follower connection and where it stands.
    pub fn followers(&self) -> Vec<FollowerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let behind = p.applied.seqno < self.durable.seqno;
                let lag_ms = if behind {
                    let next = p.applied.seqno.next();
                    let committed = self
                        .commits
                        .iter()
                        .find(|(s, _)| *s >= next)
                        .or(self.commits.front())
                        .map_or(self.now_ms, |(_, ms)| *ms);
                    self.now_ms.saturating_sub(committed)
                } else {
                    0
                };
                FollowerStatus {
                    id: *id,
                    node: p.node,
                    sent: p.sent,
                    durable: p.durable,
                    applied: p.applied,
                    lag_records: self.durable.seqno.0.saturating_sub(p.applied.seqno.0),
                    lag_ms,
                }
            })
            .collect()
    }

    fn see(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn send(&mut self, f: FollowerId, msg: Message, out: &mut Vec<ShipperOutput>) {
        if let Some(peer) = self.peers.get_mut(&f) {
            peer.sent_ms = self.now_ms;
        }
        out.push(ShipperOutput::Send(f, msg));
    }

    fn refuse(&mut self, f: FollowerId, reason: RefuseReason, out: &mut Vec<ShipperOutput>) {
        let hlc = self.clock.stamp(self.now_ms);
        self.send(f, Message::Refused { reason, hlc }, out);
        if let Some(peer) = self.peers.get_mut(&f) {
            peer.phase = Phase::Closed;
        }
    }

    fn fence(&mut self, seen: Epoch, out: &mut Vec<ShipperOutput>) {
        if seen > self.epoch && self.fenced.is_none_or(|e| seen > e) {
            self.fenced = Some(seen);
            out.push(ShipperOutput::Fenced { seen });
        }
    }

    fn on_hello(
        &mut self,
        f: FollowerId,
        protocol_version: u16,
        fingerprint: u64,
        node: NodeId,
        last: Position,
        out: &mut Vec<ShipperOutput>,
    ) {
        let rounds = match self.peers.get_mut(&f) {
            Some(peer) => {
                peer.node = Some(node);
                peer.rounds = peer.rounds.saturating_add(1);
                // A new handshake forgets the old one's progress: acks must
                // match what is sent after it.
                peer.phase = Phase::AwaitHello;
                peer.agreed = SeqNo(0);
                peer.requested = SeqNo(0);
                peer.sent = Position::default();
                peer.durable = Position::default();
                peer.applied = Position::default();
                peer.rounds
            }
            None => return,
        };
        if protocol_version != PROTOCOL_VERSION {
            return self.refuse(f, RefuseReason::ProtocolVersion, out);
        }
        if fingerprint != self.fingerprint {
            return self.refuse(f, RefuseReason::Fingerprint, out);
        }
        if last.epoch > self.epoch {
            self.fence(last.epoch, out);
        }
        if let Some(seen) = self.fenced {
            // A fenced leader tells every follower of the newer epoch, so
            // they refuse it too.
            return self.refuse(
                f,
                RefuseReason::StaleLeader {
                    follower_epoch: seen,
                },
                out,
            );
        }
        if rounds > MAX_HANDSHAKE_ROUNDS {
            self.peers.remove(&f);
            out.push(ShipperOutput::Disconnect(f));
            return;
        }
        let divergence = leader_divergence(&self.history, self.durable.seqno, last);
        #[cfg(test)]
        let divergence = match self.mutant {
            Some(ShipperMutant::NoDivergenceCut) => None,
            _ => divergence,
        };
        let hlc = self.clock.stamp(self.now_ms);
        let welcome = Message::Welcome {
            leader_epoch: self.epoch,
            leader_node: self.node,
            divergence,
            hlc,
        };
        self.send(f, welcome, out);
        if divergence.is_some() {
            // The follower cuts, hands the suffix back and says hello again.
            return;
        }
        let behind_retained = last.seqno.next() < self.first_retained;
        let Some(peer) = self.peers.get_mut(&f) else {
            return;
        };
        peer.agreed = last.seqno;
        peer.requested = last.seqno;
        peer.sent = last;
        if behind_retained {
            peer.phase = Phase::Snapshotting;
            out.push(ShipperOutput::SendSnapshot { f });
        } else {
            peer.phase = Phase::Streaming;
            self.request(f, self.now_ms, out);
        }
    }

    /// Asks the I/O layer for everything durable that `f` was not yet sent.
    fn request(&mut self, f: FollowerId, now_ms: u64, out: &mut Vec<ShipperOutput>) {
        let Some(peer) = self.peers.get_mut(&f) else {
            return;
        };
        if peer.phase != Phase::Streaming || peer.requested >= self.durable.seqno {
            return;
        }
        let from = peer.requested.next();
        peer.requested = self.durable.seqno;
        peer.sent_ms = now_ms;
        out.push(ShipperOutput::ReadFrom {
            f,
            from,
            to: self.durable.seqno,
        });
    }

    /// Whether an acknowledged position names a record of our history that
    /// this connection was sent after its handshake.
    fn matches(&self, peer: &Peer, p: Position) -> bool {
        p.seqno.0 > 0
            && p.seqno >= peer.agreed
            && p.seqno <= peer.sent.seqno
            && epoch_at(&self.history, p.seqno) == Some(p.epoch)
    }

    fn on_ack(
        &mut self,
        f: FollowerId,
        durable: Position,
        applied: Position,
        out: &mut Vec<ShipperOutput>,
    ) {
        let Some(peer) = self.peers.get(&f) else {
            return;
        };
        #[cfg(test)]
        let stale_ok = self.mutant == Some(ShipperMutant::CountStaleAcks);
        #[cfg(not(test))]
        let stale_ok = false;
        if peer.phase != Phase::Streaming && !stale_ok {
            return;
        }
        let durable_ok = stale_ok || self.matches(peer, durable);
        let applied_ok = stale_ok || self.matches(peer, applied);
        if let Some(peer) = self.peers.get_mut(&f) {
            if durable_ok && durable.seqno > peer.durable.seqno {
                peer.durable = durable;
            }
            if let Some(node) = peer.node {
                let held = self.known.entry(node).or_default();
                *held = (*held).max(peer.durable.seqno);
            }
            if applied_ok && applied.seqno > peer.applied.seqno {
                peer.applied = applied;
            }
        }
        self.recompute_hwm(out);
    }

    fn recompute_hwm(&mut self, out: &mut Vec<ShipperOutput>) {
        let candidate = if self.acks == 0 {
            self.durable.seqno
        } else {
            // Count nodes, not connections: a node reconnecting before its
            // old connection timed out must not count twice.
            let mut per_node: BTreeMap<NodeId, SeqNo> = BTreeMap::new();
            for peer in self.peers.values() {
                if let Some(node) = peer.node
                    && node != self.node
                {
                    let e = per_node.entry(node).or_default();
                    *e = (*e).max(peer.durable.seqno);
                }
            }
            #[allow(unused_mut)]
            let mut held: Vec<SeqNo> = per_node.into_values().collect();
            #[cfg(test)]
            if self.mutant == Some(ShipperMutant::CountStaleAcks) {
                held = self
                    .peers
                    .values()
                    .filter(|p| p.node.is_some_and(|n| n != self.node))
                    .map(|p| p.durable.seqno)
                    .collect();
            }
            held.sort_unstable_by(|a, b| b.cmp(a));
            match held.get(self.acks - 1) {
                Some(s) => (*s).min(self.durable.seqno),
                None => return,
            }
        };
        if candidate > self.hwm {
            self.hwm = candidate;
            out.push(ShipperOutput::HwmAdvanced(candidate));
        }
    }
}
