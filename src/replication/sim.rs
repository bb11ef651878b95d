//! A harness that drives a shipper and receivers through an in-memory
//! network: Vec queues,
//! fake logs of real encoded batches, a manual clock and seeded faults.
//! Every message crosses the wire codec. Deterministic: no threads, no clock.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::message::{Message, RefuseReason};
use super::protocol::EpochHistory;
use super::receiver::{Receiver, ReceiverConfig, ReceiverOutput, ReconnectReason};
use super::shipper::{FollowerId, Shipper, ShipperConfig, ShipperOutput};
use crate::crdt::hlc::Hlc;
use crate::types::{EntityId, Epoch, NodeId, Position, SeqNo, ShardId, Timestamp};
use crate::wal::format::{BatchMeta, decode_header, encode_batch};
use crate::wal::record::Record;

pub(super) const SHARD: ShardId = ShardId(3);
pub(super) const FP: u64 = 0xF1A9;
pub(super) const LEADER_NODE: NodeId = NodeId(1);
pub(super) const HEARTBEAT_MS: u64 = 50;
pub(super) const TIMEOUT_MS: u64 = 1_000;

pub(super) type Log = Vec<(BatchMeta, Bytes)>;

/// One batch of `count` records; the first batch of an epoch opens with its
/// `EpochStart`, as the real log does.
pub(super) fn batch(epoch: u64, first: u64, count: u32, epoch_start: bool) -> (BatchMeta, Bytes) {
    let meta = BatchMeta {
        shard: SHARD,
        first_seqno: SeqNo(first),
        epoch: Epoch(epoch),
        hlc: Hlc::new(1_000 + first, 0),
        record_count: count,
    };
    let records: Vec<Record> = (0..u64::from(count))
        .map(|i| {
            if i == 0 && epoch_start {
                Record::EpochStart {
                    epoch: Epoch(epoch),
                    leader_node: NodeId(epoch),
                    hlc: meta.hlc,
                    replicated: true,
                }
            } else {
                Record::Signal {
                    signal_type: 0,
                    entity: EntityId(first + i),
                    weight: epoch as f64,
                    at: Timestamp(first + i),
                }
            }
        })
        .collect();
    let mut out = Vec::new();
    encode_batch(&meta, &records, &mut out);
    (meta, Bytes::from(out))
}

/// A log from `(epoch, record counts of its batches)` runs, contiguous
/// from SeqNo 1.
pub(super) fn log_of(runs: &[(u64, &[u32])]) -> Log {
    let mut log = Log::new();
    let mut next = 1;
    for (epoch, counts) in runs {
        for (i, &c) in counts.iter().enumerate() {
            let starts = i == 0 && log.last().is_none_or(|(m, _)| m.epoch.0 != *epoch);
            log.push(batch(*epoch, next, c, starts));
            next += u64::from(c);
        }
    }
    log
}

pub(super) fn last_of(log: &Log) -> Position {
    log.last().map_or(Position::default(), |(m, _)| {
        Position::new(m.epoch, m.last_seqno())
    })
}

pub(super) fn history_of(log: &Log) -> EpochHistory {
    let mut h: EpochHistory = Vec::new();
    for (m, _) in log {
        if h.last().is_none_or(|(e, _)| *e != m.epoch) {
            h.push((m.epoch, m.first_seqno));
        }
    }
    h
}

pub(super) fn bytes_of(log: &Log) -> Vec<Bytes> {
    log.iter().map(|(_, b)| b.clone()).collect()
}

/// A tiny deterministic PRNG (xorshift64*), so faults replay from a seed.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

pub(super) struct Follower {
    pub(super) log: Log,
    pub(super) rx: Receiver,
    pub(super) conn: Option<FollowerId>,
    pub(super) inbox: VecDeque<Bytes>,
    pub(super) paused: bool,
    pub(super) snapshot: Vec<u8>,
    pub(super) truncates: Vec<SeqNo>,
    pub(super) reconnects: Vec<ReconnectReason>,
    pub(super) stale: Vec<(Epoch, Epoch)>,
    pub(super) refused: Vec<RefuseReason>,
}

pub(super) struct Sim {
    pub(super) now_ms: u64,
    pub(super) log: Log,
    pub(super) epoch: Epoch,
    pub(super) shipper: Shipper,
    pub(super) followers: Vec<Follower>,
    pub(super) to_leader: VecDeque<(FollowerId, Bytes)>,
    pub(super) next_conn: u64,
    pub(super) conns: BTreeMap<FollowerId, usize>,
    pub(super) diverged: Vec<(Epoch, SeqNo, Bytes)>,
    pub(super) hwms: Vec<SeqNo>,
    pub(super) fenced: Vec<Epoch>,
    pub(super) faults: Option<Rng>,
    pub(super) first_retained: SeqNo,
}

enum Work {
    Ship(ShipperOutput),
    Rx(usize, ReceiverOutput),
}

impl Sim {
    pub(super) fn new(log: Log, epoch: u64, acks: usize) -> Sim {
        let shipper = Shipper::new(ShipperConfig {
            epoch: Epoch(epoch),
            node: LEADER_NODE,
            fingerprint: FP,
            history: history_of(&log),
            durable: last_of(&log),
            acks,
            heartbeat_ms: HEARTBEAT_MS,
            timeout_ms: TIMEOUT_MS,
            first_retained: SeqNo(1),
            hlc_floor: Hlc::default(),
        });
        Sim {
            now_ms: 1_000,
            log,
            epoch: Epoch(epoch),
            shipper,
            followers: Vec::new(),
            to_leader: VecDeque::new(),
            next_conn: 1,
            conns: BTreeMap::new(),
            diverged: Vec::new(),
            hwms: Vec::new(),
            fenced: Vec::new(),
            faults: None,
            first_retained: SeqNo(1),
        }
    }

    pub(super) fn retain_from(&mut self, s: SeqNo) {
        self.first_retained = s;
        self.shipper.set_first_retained(s);
    }

    pub(super) fn add_follower(&mut self, log: Log, highest_epoch: u64) -> usize {
        let node = NodeId(10 + self.followers.len() as u64);
        self.add_follower_as(log, highest_epoch, node)
    }

    pub(super) fn add_follower_as(&mut self, log: Log, highest_epoch: u64, node: NodeId) -> usize {
        let rx = Receiver::new(ReceiverConfig {
            node,
            fingerprint: FP,
            shard: SHARD,
            history: history_of(&log),
            last: last_of(&log),
            highest_epoch: Epoch(highest_epoch),
            timeout_ms: TIMEOUT_MS,
            hlc_floor: Hlc::default(),
        });
        self.followers.push(Follower {
            log,
            rx,
            conn: None,
            inbox: VecDeque::new(),
            paused: false,
            snapshot: Vec::new(),
            truncates: Vec::new(),
            reconnects: Vec::new(),
            stale: Vec::new(),
            refused: Vec::new(),
        });
        let i = self.followers.len() - 1;
        self.connect(i);
        i
    }

    pub(super) fn connect(&mut self, i: usize) {
        let f = FollowerId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(f, i);
        self.followers[i].conn = Some(f);
        self.shipper.on_connect(f);
        let outs = self.followers[i].rx.on_connect(self.now_ms);
        self.work(outs.into_iter().map(|o| Work::Rx(i, o)).collect());
    }

    /// Drops follower `i`'s connection and whatever was in flight on it.
    pub(super) fn disconnect(&mut self, i: usize) {
        if let Some(f) = self.followers[i].conn.take() {
            self.conns.remove(&f);
            self.shipper.on_disconnect(f);
            self.to_leader.retain(|(c, _)| *c != f);
        }
        self.followers[i].inbox.clear();
        self.followers[i].rx.on_disconnect();
    }

    fn send_to_follower(&mut self, f: FollowerId, msg: &Message) {
        let Some(&i) = self.conns.get(&f) else {
            return;
        };
        let bytes = msg.encode();
        let inbox = &mut self.followers[i].inbox;
        let is_batch = matches!(msg, Message::Batch { .. });
        match self.faults.as_mut() {
            Some(rng) if is_batch => match rng.below(10) {
                0 => {}
                1 => {
                    inbox.push_back(bytes.clone());
                    inbox.push_back(bytes);
                }
                2 if !inbox.is_empty() => {
                    let at = inbox.len() - 1;
                    inbox.insert(at, bytes);
                }
                _ => inbox.push_back(bytes),
            },
            _ => inbox.push_back(bytes),
        }
    }

    pub(super) fn leader_write(&mut self, count: u32) {
        let first = last_of(&self.log).seqno.0 + 1;
        let b = batch(self.epoch.0, first, count, false);
        let pos = Position::new(b.0.epoch, b.0.last_seqno());
        self.log.push(b);
        let outs = self.shipper.on_durable(pos, self.now_ms);
        self.work(outs.into_iter().map(Work::Ship).collect());
    }

    fn work(&mut self, mut queue: VecDeque<Work>) {
        while let Some(w) = queue.pop_front() {
            match w {
                Work::Ship(o) => self.ship_output(o),
                Work::Rx(i, o) => self.rx_output(i, o, &mut queue),
            }
        }
    }

    fn ship_output(&mut self, o: ShipperOutput) {
        match o {
            ShipperOutput::Send(f, m) => self.send_to_follower(f, &m),
            ShipperOutput::ReadFrom { f, from, to } => {
                let batches: Vec<Bytes> = self
                    .log
                    .iter()
                    .filter(|(m, _)| m.first_seqno >= from && m.last_seqno() <= to)
                    .map(|(_, b)| b.clone())
                    .collect();
                assert!(
                    self.log.iter().any(|(m, _)| m.first_seqno == from),
                    "ReadFrom {from} is not a batch boundary"
                );
                for bytes in batches {
                    let hlc = self.shipper.stamp(self.now_ms);
                    self.send_to_follower(f, &Message::Batch { bytes, hlc });
                }
                self.shipper.batches_sent(f, to, self.now_ms);
            }
            ShipperOutput::SendSnapshot { f } => {
                // The fake snapshot is the batches before the retained log.
                let at = self
                    .log
                    .iter()
                    .filter(|(m, _)| m.last_seqno() < self.retained())
                    .fold(Vec::new(), |mut v, (_, b)| {
                        v.extend_from_slice(b);
                        v
                    });
                let hlc = self.shipper.stamp(self.now_ms);
                let chunk = Message::SnapshotChunk {
                    seqno: SeqNo(self.retained().0 - 1),
                    offset: 0,
                    total: at.len() as u64,
                    bytes: Bytes::from(at),
                    hlc,
                };
                self.send_to_follower(f, &chunk);
            }
            ShipperOutput::StoreDiverged {
                epoch,
                first,
                batches,
                ..
            } => self.diverged.push((epoch, first, batches)),
            ShipperOutput::Fenced { seen } => self.fenced.push(seen),
            ShipperOutput::HwmAdvanced(s) => {
                assert!(self.hwms.last().is_none_or(|h| *h < s), "HWM went back");
                self.hwms.push(s);
            }
            ShipperOutput::Disconnect(f) => {
                if let Some(&i) = self.conns.get(&f) {
                    self.disconnect(i);
                }
            }
        }
    }

    fn retained(&self) -> SeqNo {
        self.first_retained
    }

    fn rx_output(&mut self, i: usize, o: ReceiverOutput, queue: &mut VecDeque<Work>) {
        let now = self.now_ms;
        match o {
            ReceiverOutput::Send(m) => {
                if let Some(f) = self.followers[i].conn {
                    self.to_leader.push_back((f, m.encode()));
                }
            }
            ReceiverOutput::Truncate { to } => {
                let fl = &mut self.followers[i];
                fl.truncates.push(to);
                let keep = fl
                    .log
                    .iter()
                    .take_while(|(m, _)| m.last_seqno() <= to)
                    .count();
                let cut: Log = fl.log.split_off(keep);
                assert!(
                    cut.first().is_none_or(|(m, _)| m.first_seqno == to.next()),
                    "cut inside a batch"
                );
                let (epoch, first) = cut
                    .first()
                    .map_or((Epoch(0), to.next()), |(m, _)| (m.epoch, m.first_seqno));
                let bytes = cut.iter().fold(Vec::new(), |mut v, (_, b)| {
                    v.extend_from_slice(b);
                    v
                });
                let outs = fl.rx.diverged_ready(epoch, first, Bytes::from(bytes));
                queue.extend(outs.into_iter().map(|o| Work::Rx(i, o)));
            }
            ReceiverOutput::Append { bytes, meta } => {
                let fl = &mut self.followers[i];
                assert_eq!(
                    last_of(&fl.log).seqno.next(),
                    meta.first_seqno,
                    "append out of order"
                );
                fl.log.push((meta, bytes));
                let pos = Position::new(meta.epoch, meta.last_seqno());
                let mut outs = fl.rx.on_durable(pos);
                outs.extend(fl.rx.on_applied(pos));
                queue.extend(outs.into_iter().map(|o| Work::Rx(i, o)));
            }
            ReceiverOutput::InstallSnapshot {
                offset,
                total,
                bytes,
                ..
            } => {
                let fl = &mut self.followers[i];
                fl.snapshot.truncate(offset as usize);
                fl.snapshot.extend_from_slice(&bytes);
                if fl.snapshot.len() as u64 == total {
                    let mut log = Log::new();
                    let mut rest = &fl.snapshot[..];
                    while !rest.is_empty() {
                        let (m, len, _) = decode_header(rest).unwrap();
                        let n = 48 + len as usize;
                        log.push((m, Bytes::copy_from_slice(&rest[..n])));
                        rest = &rest[n..];
                    }
                    let outs = fl.rx.snapshot_installed(last_of(&log), history_of(&log));
                    fl.log = log;
                    fl.snapshot.clear();
                    queue.extend(outs.into_iter().map(|o| Work::Rx(i, o)));
                }
            }
            ReceiverOutput::Reconnect(why) => {
                self.followers[i].reconnects.push(why);
                self.disconnect(i);
                let f = FollowerId(self.next_conn);
                self.next_conn += 1;
                self.conns.insert(f, i);
                self.followers[i].conn = Some(f);
                self.shipper.on_connect(f);
                let outs = self.followers[i].rx.on_connect(now);
                queue.extend(outs.into_iter().map(|o| Work::Rx(i, o)));
            }
            ReceiverOutput::StaleLeader {
                leader_epoch,
                highest_seen,
            } => self.followers[i].stale.push((leader_epoch, highest_seen)),
            ReceiverOutput::Refused(r) => self.followers[i].refused.push(r),
            // The simulated disk is the follower's memory: nothing to persist.
            ReceiverOutput::PersistEpoch(_) => {}
        }
    }

    /// Delivers one message each way per round until nothing moves.
    pub(super) fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            if let Some((f, bytes)) = self.to_leader.pop_front() {
                moved = true;
                let msg = Message::decode(&bytes).unwrap();
                let outs = self.shipper.on_message(f, msg, self.now_ms);
                self.work(outs.into_iter().map(Work::Ship).collect());
            }
            for i in 0..self.followers.len() {
                if self.followers[i].paused {
                    continue;
                }
                if let Some(bytes) = self.followers[i].inbox.pop_front() {
                    moved = true;
                    let msg = Message::decode(&bytes).unwrap();
                    let outs = self.followers[i].rx.on_message(msg, self.now_ms);
                    self.work(outs.into_iter().map(|o| Work::Rx(i, o)).collect());
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation did not settle");
    }

    pub(super) fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        // A dropped connection is reopened on the next tick (the backoff).
        for i in 0..self.followers.len() {
            if self.followers[i].conn.is_none() && !self.followers[i].paused {
                self.connect(i);
            }
        }
        let outs = self.shipper.on_tick(self.now_ms);
        self.work(outs.into_iter().map(Work::Ship).collect());
        for i in 0..self.followers.len() {
            let outs = self.followers[i].rx.on_tick(self.now_ms);
            self.work(outs.into_iter().map(|o| Work::Rx(i, o)).collect());
        }
        self.run();
    }
}
