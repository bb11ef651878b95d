//! Drives a shipper and receivers through an in-memory network: Vec queues,
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

const SHARD: ShardId = ShardId(3);
const FP: u64 = 0xF1A9;
const LEADER_NODE: NodeId = NodeId(1);
const HEARTBEAT_MS: u64 = 50;
const TIMEOUT_MS: u64 = 1_000;

type Log = Vec<(BatchMeta, Bytes)>;

/// One batch of `count` records; the first batch of an epoch opens with its
/// `EpochStart`, as the real log does.
fn batch(epoch: u64, first: u64, count: u32, epoch_start: bool) -> (BatchMeta, Bytes) {
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
fn log_of(runs: &[(u64, &[u32])]) -> Log {
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

fn last_of(log: &Log) -> Position {
    log.last().map_or(Position::default(), |(m, _)| {
        Position::new(m.epoch, m.last_seqno())
    })
}

fn history_of(log: &Log) -> EpochHistory {
    let mut h: EpochHistory = Vec::new();
    for (m, _) in log {
        if h.last().is_none_or(|(e, _)| *e != m.epoch) {
            h.push((m.epoch, m.first_seqno));
        }
    }
    h
}

fn bytes_of(log: &Log) -> Vec<Bytes> {
    log.iter().map(|(_, b)| b.clone()).collect()
}

/// A tiny deterministic PRNG (xorshift64*), so faults replay from a seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

struct Follower {
    log: Log,
    rx: Receiver,
    conn: Option<FollowerId>,
    inbox: VecDeque<Bytes>,
    paused: bool,
    snapshot: Vec<u8>,
    truncates: Vec<SeqNo>,
    reconnects: Vec<ReconnectReason>,
    stale: Vec<(Epoch, Epoch)>,
    refused: Vec<RefuseReason>,
}

struct Sim {
    now_ms: u64,
    log: Log,
    epoch: Epoch,
    shipper: Shipper,
    followers: Vec<Follower>,
    to_leader: VecDeque<(FollowerId, Bytes)>,
    next_conn: u64,
    conns: BTreeMap<FollowerId, usize>,
    diverged: Vec<(Epoch, SeqNo, Bytes)>,
    hwms: Vec<SeqNo>,
    fenced: Vec<Epoch>,
    faults: Option<Rng>,
    first_retained: SeqNo,
}

enum Work {
    Ship(ShipperOutput),
    Rx(usize, ReceiverOutput),
}

impl Sim {
    fn new(log: Log, epoch: u64, acks: usize) -> Sim {
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

    fn retain_from(&mut self, s: SeqNo) {
        self.first_retained = s;
        self.shipper.set_first_retained(s);
    }

    fn add_follower(&mut self, log: Log, highest_epoch: u64) -> usize {
        let node = NodeId(10 + self.followers.len() as u64);
        self.add_follower_as(log, highest_epoch, node)
    }

    fn add_follower_as(&mut self, log: Log, highest_epoch: u64, node: NodeId) -> usize {
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

    fn connect(&mut self, i: usize) {
        let f = FollowerId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(f, i);
        self.followers[i].conn = Some(f);
        self.shipper.on_connect(f);
        let outs = self.followers[i].rx.on_connect(self.now_ms);
        self.work(outs.into_iter().map(|o| Work::Rx(i, o)).collect());
    }

    /// Drops follower `i`'s connection and whatever was in flight on it.
    fn disconnect(&mut self, i: usize) {
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

    fn leader_write(&mut self, count: u32) {
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
        }
    }

    /// Delivers one message each way per round until nothing moves.
    fn run(&mut self) {
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

    fn tick(&mut self, ms: u64) {
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

fn p(e: u64, s: u64) -> Position {
    Position::new(Epoch(e), SeqNo(s))
}

#[test]
fn a_follower_catches_up_from_empty_then_follows_the_live_tail() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 3, 3, 3])]), 1, 1);
    let f = sim.add_follower(Log::new(), 0);
    sim.run();
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.hwms.last(), Some(&SeqNo(10)));
    for _ in 0..5 {
        sim.leader_write(4);
    }
    sim.run();
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.followers[f].rx.applied(), p(1, 30));
    assert_eq!(sim.shipper.hwm(), SeqNo(30));
    let st = sim.shipper.followers();
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].sent, st[0].durable, st[0].applied),
        (p(1, 30), p(1, 30), p(1, 30))
    );
    assert_eq!((st[0].lag_records, st[0].lag_ms), (0, 0));
    assert!(sim.followers[f].truncates.is_empty() && sim.diverged.is_empty());
}

#[test]
fn a_restarted_follower_resumes_from_its_own_log_without_resending() {
    let leader = log_of(&[(1, &[1, 3, 3, 3, 3])]);
    let mut sim = Sim::new(leader.clone(), 1, 1);
    let f = sim.add_follower(leader[..3].to_vec(), 1);
    sim.run();
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    // Only SeqNos 8.. were streamed: the Append assertion in the harness
    // refuses anything out of order, and the prefix was never truncated.
    assert!(sim.followers[f].truncates.is_empty());
    assert!(sim.followers[f].reconnects.is_empty());
}

#[test]
fn a_divergent_suffix_of_an_old_epoch_is_cut_shipped_and_replaced() {
    // The old leader of epoch 1 logged 11..15 that nobody got; the new
    // leader of epoch 2 starts at 11.
    let follower = log_of(&[(1, &[1, 4, 5, 5])]);
    let leader = log_of(&[(1, &[1, 4, 5]), (2, &[1, 4, 5])]);
    let mut sim = Sim::new(leader, 2, 1);
    let f = sim.add_follower(follower.clone(), 1);
    sim.run();
    assert_eq!(sim.followers[f].truncates, vec![SeqNo(10)]);
    assert_eq!(sim.diverged.len(), 1);
    let (epoch, first, batches) = &sim.diverged[0];
    assert_eq!((*epoch, *first), (Epoch(1), SeqNo(11)));
    assert_eq!(batches.as_ref(), follower[3].1.as_ref());
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.followers[f].rx.last(), p(2, 20));
    assert_eq!(
        sim.followers[f].rx.history(),
        &[(Epoch(1), SeqNo(1)), (Epoch(2), SeqNo(11))]
    );
    assert_eq!(sim.shipper.hwm(), SeqNo(20));
}

#[test]
fn kip_279_an_epoch_the_new_leader_never_led_is_cut_to_the_right_point() {
    // Shared: epoch 1 up to 7. The follower kept leading epoch 1 to 9, then
    // led epoch 3 (10..15), which the leader never saw. The leader's history
    // is epoch 1 to 7, epoch 2 from 8, epoch 4 from 20.
    let follower = log_of(&[(1, &[1, 3, 3, 2]), (3, &[1, 5])]);
    let leader = log_of(&[(1, &[1, 3, 3]), (2, &[1, 5, 6]), (4, &[1, 5])]);
    assert_eq!(last_of(&follower), p(3, 15));
    assert_eq!(last_of(&leader), p(4, 25));
    let mut sim = Sim::new(leader, 4, 1);
    let f = sim.add_follower(follower.clone(), 3);
    sim.run();
    // Round one: the leader answers (2, 15); epoch 3 starts at 10 here, so
    // the follower cuts to 9. Round two from (1, 9): epoch 1 ends at 7.
    assert_eq!(sim.followers[f].truncates, vec![SeqNo(9), SeqNo(7)]);
    let cuts: Vec<(Epoch, SeqNo)> = sim.diverged.iter().map(|(e, s, _)| (*e, *s)).collect();
    assert_eq!(cuts, vec![(Epoch(3), SeqNo(10)), (Epoch(1), SeqNo(8))]);
    let epoch3: Vec<u8> = [follower[4].1.as_ref(), follower[5].1.as_ref()].concat();
    assert_eq!(sim.diverged[0].2.as_ref(), &epoch3[..]);
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(
        sim.followers[f].rx.history(),
        history_of(&sim.log).as_slice()
    );
    assert_eq!(sim.shipper.hwm(), SeqNo(25));
}

#[test]
fn a_follower_refuses_a_leader_below_the_highest_epoch_it_has_seen() {
    let shared = log_of(&[(1, &[1, 3])]);
    let mut old = shared.clone();
    old.push(batch(1, 5, 3, false));
    let mut sim = Sim::new(old, 1, 1);
    // This follower has already met the leader of epoch 2.
    let f = sim.add_follower(shared.clone(), 2);
    sim.run();
    assert_eq!(sim.followers[f].stale, vec![(Epoch(1), Epoch(2))]);
    assert_eq!(sim.fenced, vec![Epoch(2)]);
    assert_eq!(sim.shipper.fenced(), Some(Epoch(2)));
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&shared));
    // The fenced leader refuses every later follower and passes the epoch on.
    let g = sim.add_follower(shared.clone(), 1);
    sim.run();
    assert_eq!(
        sim.followers[g].refused,
        vec![RefuseReason::StaleLeader {
            follower_epoch: Epoch(2)
        }]
    );
    assert_eq!(sim.followers[g].rx.highest_epoch(), Epoch(2));
    assert_eq!(bytes_of(&sim.followers[g].log), bytes_of(&shared));
    assert_eq!(sim.shipper.hwm(), SeqNo(0));
}

#[test]
fn a_leader_meeting_a_follower_of_a_higher_epoch_is_fenced() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 3])]), 1, 1);
    let f = sim.add_follower(log_of(&[(1, &[1, 3]), (3, &[1])]), 3);
    sim.run();
    assert_eq!(sim.fenced, vec![Epoch(3)]);
    assert_eq!(
        sim.followers[f].refused,
        vec![RefuseReason::StaleLeader {
            follower_epoch: Epoch(3)
        }]
    );
    assert_eq!(sim.followers[f].log.len(), 3);
}

/// A shipper at epoch 2 (history 1@1, 2@11, durable 20) with one
/// handshaken connection whose follower cut from (1, 15) to 10.
fn handshaken(acks: usize) -> (Shipper, FollowerId) {
    let mut s = Shipper::new(ShipperConfig {
        epoch: Epoch(2),
        node: LEADER_NODE,
        fingerprint: FP,
        history: vec![(Epoch(1), SeqNo(1)), (Epoch(2), SeqNo(11))],
        durable: p(2, 20),
        acks,
        heartbeat_ms: HEARTBEAT_MS,
        timeout_ms: TIMEOUT_MS,
        first_retained: SeqNo(1),
        hlc_floor: Hlc::default(),
    });
    let f = FollowerId(1);
    s.on_connect(f);
    let hello = |last| Message::Hello {
        protocol_version: super::message::PROTOCOL_VERSION,
        fingerprint: FP,
        node: NodeId(9),
        last,
        hlc: Hlc(1),
    };
    let out = s.on_message(f, hello(p(1, 15)), 1);
    assert!(matches!(
        &out[..],
        [ShipperOutput::Send(_, Message::Welcome { divergence: Some(d), .. })] if *d == p(1, 10)
    ));
    // An ack before the histories agree is not counted.
    assert!(s.on_message(f, ack(p(1, 15)), 2).is_empty());
    let out = s.on_message(f, hello(p(1, 10)), 3);
    assert!(out.contains(&ShipperOutput::ReadFrom {
        f,
        from: SeqNo(11),
        to: SeqNo(20)
    }));
    (s, f)
}

fn ack(durable: Position) -> Message {
    Message::Ack {
        durable,
        applied: durable,
        hlc: Hlc(5),
    }
}

#[test]
fn a_stale_ack_never_raises_the_hwm() {
    let (mut s, f) = handshaken(1);
    // Sent only up to 15 so far.
    s.batches_sent(f, SeqNo(15), 4);
    for stale in [
        p(1, 15), // from before the cut: epoch 2 holds 15 here
        p(3, 12), // another epoch
        p(2, 18), // not sent yet
        p(1, 5),  // below the handshake point
        p(0, 0),
    ] {
        assert!(s.on_message(f, ack(stale), 5).is_empty(), "{stale} counted");
        assert_eq!(s.hwm(), SeqNo(0));
    }
    let out = s.on_message(f, ack(p(2, 12)), 6);
    assert_eq!(out, vec![ShipperOutput::HwmAdvanced(SeqNo(12))]);
    // Older acks never take it back.
    assert!(s.on_message(f, ack(p(2, 11)), 7).is_empty());
    assert!(s.on_message(f, ack(p(1, 10)), 7).is_empty());
    assert_eq!(s.hwm(), SeqNo(12));
    assert_eq!(s.followers()[0].durable, p(2, 12));
}

#[test]
fn two_connections_of_one_node_count_once() {
    let (mut s, f) = handshaken(2);
    s.batches_sent(f, SeqNo(20), 4);
    let g = FollowerId(2);
    s.on_connect(g);
    let out = s.on_message(
        g,
        Message::Hello {
            protocol_version: super::message::PROTOCOL_VERSION,
            fingerprint: FP,
            node: NodeId(9),
            last: p(2, 20),
            hlc: Hlc(1),
        },
        5,
    );
    assert!(matches!(
        &out[..],
        [ShipperOutput::Send(
            _,
            Message::Welcome {
                divergence: None,
                ..
            }
        )]
    ));
    s.on_message(f, ack(p(2, 20)), 6);
    s.on_message(g, ack(p(2, 20)), 6);
    assert_eq!(s.hwm(), SeqNo(0));
}

#[test]
fn hwm_with_one_and_two_acks() {
    for acks in [1, 2] {
        let mut sim = Sim::new(log_of(&[(1, &[1])]), 1, acks);
        let a = sim.add_follower(Log::new(), 0);
        let b = sim.add_follower(Log::new(), 0);
        sim.run();
        assert_eq!(sim.shipper.hwm(), SeqNo(1));
        sim.followers[b].paused = true;
        sim.leader_write(5);
        sim.run();
        assert_eq!(sim.followers[a].rx.durable(), p(1, 6));
        let expect = if acks == 1 { SeqNo(6) } else { SeqNo(1) };
        assert_eq!(sim.shipper.hwm(), expect, "acks={acks}");
        sim.followers[b].paused = false;
        sim.run();
        assert_eq!(sim.shipper.hwm(), SeqNo(6), "acks={acks}");
        assert_eq!(sim.hwms.last(), Some(&SeqNo(6)));
    }
}

#[test]
fn acks_zero_follows_the_leader_durable_end() {
    let mut sim = Sim::new(log_of(&[(1, &[1])]), 1, 0);
    assert_eq!(sim.shipper.hwm(), SeqNo(1));
    sim.leader_write(3);
    assert_eq!(sim.shipper.hwm(), SeqNo(4));
}

#[test]
fn duplicated_reordered_and_gapped_batches_end_in_the_clean_state() {
    let clean = {
        let mut sim = Sim::new(log_of(&[(1, &[1, 2])]), 1, 1);
        sim.add_follower(Log::new(), 0);
        for n in 0..40 {
            sim.leader_write(1 + n % 4);
            sim.run();
        }
        bytes_of(&sim.followers[0].log)
    };
    let mut faulted = 0;
    for seed in 1..=30u64 {
        let mut sim = Sim::new(log_of(&[(1, &[1, 2])]), 1, 1);
        sim.faults = Some(Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let f = sim.add_follower(Log::new(), 0);
        for n in 0..40 {
            sim.leader_write(1 + n % 4);
            if n % 3 == 0 {
                sim.run();
            }
        }
        sim.run();
        sim.faults = None;
        for _ in 0..5 {
            sim.tick(HEARTBEAT_MS);
        }
        assert_eq!(bytes_of(&sim.followers[f].log), clean, "seed {seed}");
        assert_eq!(bytes_of(&sim.log), clean);
        assert_eq!(sim.shipper.hwm(), last_of(&sim.log).seqno, "seed {seed}");
        faulted += sim.followers[f].reconnects.len();
    }
    assert!(faulted > 0, "the faults never made a follower reconnect");
}

#[test]
fn idle_heartbeats_keep_the_link_alive_and_lag_fresh() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 2])]), 1, 1);
    let f = sim.add_follower(Log::new(), 0);
    sim.run();
    // Idle for ten timeouts: heartbeats and their acks keep both sides up.
    for _ in 0..200 {
        sim.tick(HEARTBEAT_MS);
    }
    assert!(sim.followers[f].reconnects.is_empty());
    assert_eq!(sim.followers[f].conn, Some(FollowerId(1)));
    assert_eq!(sim.followers[f].rx.leader_last().0, p(1, 3));
    // A write the follower does not get yet: lag in records and ms.
    sim.followers[f].paused = true;
    sim.leader_write(4);
    let committed = sim.now_ms;
    sim.tick(30);
    let st = sim.shipper.followers();
    assert_eq!(
        (st[0].lag_records, st[0].lag_ms),
        (4, sim.now_ms - committed)
    );
    sim.followers[f].paused = false;
    sim.run();
    let st = sim.shipper.followers();
    assert_eq!((st[0].lag_records, st[0].lag_ms), (0, 0));
    assert_eq!(sim.followers[f].rx.lag_records(), 0);
    assert!(sim.followers[f].rx.last_remote_hlc().is_some());
    assert!(sim.shipper.last_remote_hlc().is_some());
}

#[test]
fn a_silent_follower_is_dropped_and_comes_back() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 2])]), 1, 1);
    let f = sim.add_follower(Log::new(), 0);
    sim.run();
    sim.followers[f].paused = true;
    for _ in 0..=(TIMEOUT_MS / HEARTBEAT_MS) + 1 {
        sim.tick(HEARTBEAT_MS);
    }
    assert!(sim.shipper.followers().is_empty(), "silent follower kept");
    sim.leader_write(2);
    sim.followers[f].paused = false;
    sim.tick(HEARTBEAT_MS);
    sim.tick(HEARTBEAT_MS);
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
}

#[test]
fn a_follower_behind_the_retained_log_gets_a_snapshot_first() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 3, 3, 3])]), 1, 1);
    sim.retain_from(SeqNo(8));
    let f = sim.add_follower(Log::new(), 0);
    sim.run();
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.shipper.hwm(), SeqNo(10));
}

#[test]
fn another_fingerprint_or_protocol_version_is_refused() {
    let mut s = handshaken(1).0;
    let f = FollowerId(7);
    for (v, fp, why) in [
        (99, FP, RefuseReason::ProtocolVersion),
        (
            super::message::PROTOCOL_VERSION,
            FP + 1,
            RefuseReason::Fingerprint,
        ),
    ] {
        s.on_connect(f);
        let hello = Message::Hello {
            protocol_version: v,
            fingerprint: fp,
            node: NodeId(4),
            last: p(0, 0),
            hlc: Hlc(1),
        };
        let out = s.on_message(f, hello, 1);
        assert!(
            matches!(&out[..], [ShipperOutput::Send(_, Message::Refused { reason, .. })] if *reason == why)
        );
    }
}

/// A receiver of epoch 1 streaming after SeqNo 4, for batch checks.
fn streaming_receiver() -> Receiver {
    let log = log_of(&[(1, &[1, 3])]);
    let mut rx = Receiver::new(ReceiverConfig {
        node: NodeId(9),
        fingerprint: FP,
        shard: SHARD,
        history: history_of(&log),
        last: last_of(&log),
        highest_epoch: Epoch(1),
        timeout_ms: TIMEOUT_MS,
        hlc_floor: Hlc::default(),
    });
    rx.on_connect(0);
    let out = rx.on_message(
        Message::Welcome {
            leader_epoch: Epoch(2),
            leader_node: LEADER_NODE,
            divergence: None,
            hlc: Hlc(1),
        },
        1,
    );
    assert!(matches!(
        &out[..],
        [ReceiverOutput::Send(Message::Ack { .. })]
    ));
    rx
}

fn deliver(rx: &mut Receiver, bytes: Bytes) -> Vec<ReceiverOutput> {
    rx.on_message(Message::Batch { bytes, hlc: Hlc(2) }, 2)
}

#[test]
fn the_receiver_checks_every_batch() {
    let (m, good) = batch(1, 5, 2, false);
    // Duplicate of a held batch: a no-op that re-acks.
    let mut rx = streaming_receiver();
    let (_, held) = batch(1, 2, 3, false);
    assert!(matches!(
        &deliver(&mut rx, held)[..],
        [ReceiverOutput::Send(Message::Ack { .. })]
    ));
    // The next batch is appended.
    let out = deliver(&mut rx, good.clone());
    assert_eq!(
        out,
        vec![ReceiverOutput::Append {
            bytes: good.clone(),
            meta: m
        }]
    );
    assert_eq!(rx.last(), p(1, 6));
    let bad = |rx: &mut Receiver, bytes: Bytes, why: ReconnectReason| {
        let out = deliver(rx, bytes);
        assert_eq!(out, vec![ReceiverOutput::Reconnect(why)]);
    };
    // A gap.
    bad(
        &mut streaming_receiver(),
        batch(1, 6, 1, false).1,
        ReconnectReason::Gap,
    );
    // A flipped payload byte fails the CRC.
    let mut flipped = good.to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    bad(
        &mut streaming_receiver(),
        Bytes::from(flipped),
        ReconnectReason::BadBatch,
    );
    // Truncated and padded bytes.
    bad(
        &mut streaming_receiver(),
        good.slice(..good.len() - 1),
        ReconnectReason::BadBatch,
    );
    let padded = Bytes::from([good.as_ref(), &[0]].concat());
    bad(&mut streaming_receiver(), padded, ReconnectReason::BadBatch);
    // An epoch above the leader's.
    bad(
        &mut streaming_receiver(),
        batch(3, 5, 1, true).1,
        ReconnectReason::BadBatch,
    );
    // Another shard.
    let mut other = streaming_receiver();
    let meta = BatchMeta {
        shard: ShardId(4),
        ..m
    };
    let mut v = Vec::new();
    encode_batch(
        &meta,
        &[
            Record::DeleteUser {
                user: crate::types::UserId(1),
            },
            Record::DeleteUser {
                user: crate::types::UserId(2),
            },
        ],
        &mut v,
    );
    bad(&mut other, Bytes::from(v), ReconnectReason::BadBatch);
    // A batch at a held SeqNo with another epoch is a mismatch.
    bad(
        &mut streaming_receiver(),
        batch(2, 2, 1, true).1,
        ReconnectReason::Mismatch,
    );
    // Once reconnecting, later batches are ignored until the next hello.
    let mut rx = streaming_receiver();
    deliver(&mut rx, batch(1, 9, 1, false).1);
    assert!(deliver(&mut rx, good).is_empty());
}

#[test]
fn an_epoch_below_the_log_is_refused_after_a_newer_one() {
    let mut rx = streaming_receiver();
    deliver(&mut rx, batch(2, 5, 1, true).1);
    assert_eq!(rx.history().last(), Some(&(Epoch(2), SeqNo(5))));
    let out = deliver(&mut rx, batch(1, 6, 1, false).1);
    assert_eq!(
        out,
        vec![ReceiverOutput::Reconnect(ReconnectReason::BadBatch)]
    );
}

#[test]
fn a_silent_leader_makes_the_receiver_reconnect() {
    let mut rx = streaming_receiver();
    assert!(rx.on_tick(TIMEOUT_MS).is_empty());
    assert_eq!(
        rx.on_tick(TIMEOUT_MS + 2),
        vec![ReceiverOutput::Reconnect(ReconnectReason::Timeout)]
    );
}

#[test]
fn random_message_sequences_never_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let seq = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..40);
    runner
        .run(&seq, |frames| {
            let mut rx = streaming_receiver();
            let (mut s, f) = handshaken(1);
            for (i, fr) in frames.iter().enumerate() {
                // Random frames that decode, and headers of real batches
                // with random tails, go to both machines.
                let now = i as u64 * 7;
                if let Ok(m) = Message::decode(fr) {
                    let _ = rx.on_message(m.clone(), now);
                    let _ = s.on_message(f, m, now);
                }
                let mut b = batch(1, 5, 1, false).1.to_vec();
                b.truncate(48.min(b.len()));
                b.extend_from_slice(fr);
                let _ = deliver(&mut rx, Bytes::from(b));
                let _ = rx.on_tick(now);
                let _ = s.on_tick(now);
                let _ = s.on_durable(p(2, 20 + i as u64), now);
            }
            Ok(())
        })
        .unwrap();
}
