//! A deterministic simulation of a whole replicated shard: three nodes
//! running the real [`Shipper`] and [`Receiver`] state machines, driven by
//! a seeded scheduler over a simulated network, with crashes, restarts,
//! promotions, rejoins and reconciliation (issue 6, item 6).
//!
//! # What is real and what is simulated
//!
//! Real: the shipper and receiver (every protocol decision: handshakes,
//! divergence cuts, fencing, acks, the HWM, heartbeats and timeouts), the
//! wire codec (every message is encoded and decoded), and the batch format
//! (every record is a real encoded batch with CRC). Simulated, the way
//! `node.rs` and `node_follower.rs` drive them: the log (a list of batches
//! with a synced prefix and an unsynced tail), `diverged/`, the persisted
//! highest epoch and role, the network and the coordinator. Records are
//! fake: a write is one batch of signals on fresh entity ids (the write
//! ids), so the state of a log is the multiset of ids it holds, not the
//! engine's state. Reconciliation is modelled, not the real engine: it
//! appends, as one batch of merge signals, the ids of a diverged suffix the
//! leader does not hold yet (exactly once), and marks the suffix merged
//! only once that batch is synced. Snapshots are not simulated (the whole
//! log is retained).
//!
//! # The events (`sim_cluster_events.rs`)
//!
//! The scheduler picks one per step: deliver, drop, duplicate or delay a
//! message (the wire is one pool; delivery mostly takes the oldest, so
//! traffic reorders now and then), tick the clock (heartbeats, timeouts,
//! reconnects), a client write on a leader (`Durability::Sync` or
//! `Replicated`), a leader's sync, crash a node (its unsynced tail is lost;
//! the peer of each of its connections only notices by timeout), restart
//! it (leader again if its log says it leads, else follower), cut or heal
//! a link, promote (the coordinator promotes the most advanced follower of
//! a live majority to an epoch above all, and tells that majority, which
//! persists the epoch: followers reconnect to the new leader, an old
//! leader among them is fenced), tell a follower the current leader,
//! rejoin an old leader as a follower, and reconcile on a leader.
//!
//! # The invariants (`sim_cluster_check.rs`), after every step
//!
//! - The HWM of a shipper never goes back, never passes the leader's
//!   synced end, and (for the leader of the newest epoch) at least `acks`
//!   followers hold the leader's log up to it.
//! - A leader ships only batches it has synced, and a follower appends
//!   only batches the leader of their epoch has synced, byte for byte.
//! - Log matching: two logs holding a batch of the same epoch at the same
//!   SeqNo hold the same bytes up to it.
//! - Every write acknowledged under `Replicated` is in the synced log of
//!   the leader of the newest epoch.
//! - At the end the network heals, every node restarts and follows the
//!   newest leader, and the run quiesces (every follower welcomed and its
//!   suffixes handed over, every suffix the leader holds merged): all logs
//!   must be byte-identical, no id held twice, every `Replicated` write,
//!   every `Sync` write (a leader later cut keeps it in `diverged/`) and
//!   every id of every suffix any node holds merged into the state.
//!   [`Stats::stranded_ids`] and [`Stats::sync_acked_lost`] count what
//!   broke the last two; the run fails if either is not zero.
//!
//! # Modelling choices
//!
//! - The coordinator promotes only with a live majority and only the most
//!   advanced node of it (by last synced position), as `status()` lets a
//!   real one; every node of that majority persists the new epoch (an old
//!   leader among them is demoted: its waiting writes fail). Half the
//!   time it points a follower at a stale leader instead.
//! - A `Fenced` output refuses new writes; writes already waiting keep
//!   waiting for the HWM, as in the real core.
//! - Drop, duplicate and delay act on single messages (a TCP transport
//!   would break the connection instead): harsher than the real transport.
//!   Except for one message: a lost `DivergedSuffix` breaks its
//!   connection, as TCP would, since only a new connection sends it again
//!   ([`Stats::suffixes_lost`]). Kept as a single-message loss, it would
//!   strand the suffix as long as that connection lives: what the real
//!   leader avoids when *it* fails to keep a suffix by ending the
//!   follower's connection (`node.rs`).
//! - The follower's suffixes, as `node_follower.rs` and
//!   `Core::unmerged_suffixes` handle them: a cut suffix is sent once
//!   right after the cut, and every unmerged suffix the node holds (its
//!   own cuts, and those it received as a leader and did not merge) is
//!   handed over again, once per connection, as soon as a leader welcomes
//!   it. The leader stores a suffix unless it already holds the same bytes
//!   from the same node, merged or not (`keep_diverged`'s dedup), so a
//!   lost message is sent again on the next connection and a duplicate is
//!   stored once ([`Stats::suffixes_deduped`]). A stored suffix is durable
//!   at once (the real leader keeps it on the blocking pool; a crash
//!   before that is one more lost message, which the next hand-over
//!   repairs). A suffix stored twice (relayed through two nodes, so from
//!   two origins) has its ids merged once, as reconciliation's per-origin
//!   pointwise maximum counts them once.
//!
//! # Replaying
//!
//! Every event and delivered message goes into a trace hash (FNV-1a, no
//! random state), so a seed replays exactly. A failing seed panics with
//! the command that replays it:
//! `TIDAL_SIM_SEED=<seed> cargo test --release --lib replication::sim_cluster -- --exact <test> --nocapture`.
//!
//! # Mutants
//!
//! [`Mutant`] plants one known bug to prove the invariants catch it: the
//! divergence cut disabled and stale acks counted (switches inside the
//! shipper that exist only under `cfg(test)`), shipping before the
//! leader's sync (the simulated I/O tells the shipper a batch is durable
//! when it is written), and no hand-over (the follower's I/O sends a cut
//! suffix only once, as before the hand-over existed: the strict final
//! check finds the writes stranded when that one message is lost).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::receiver::{Receiver, ReceiverConfig};
use super::shipper::{Shipper, ShipperConfig, ShipperMutant};
use super::sim::Rng;
use crate::crdt::hlc::Hlc;
use crate::types::{EntityId, Epoch, NodeId, Position, SeqNo, ShardId, Timestamp};
use crate::wal::format::{BATCH_HEADER_LEN, BatchMeta, Schema, decode_records, encode_batch};
use crate::wal::record::Record;

/// Nodes in the simulated shard.
pub(super) const NODES: usize = 3;
pub(super) const SHARD: ShardId = ShardId(7);
pub(super) const FP: u64 = 0x0005_1AC1_u64;
pub(super) const HEARTBEAT_MS: u64 = 50;
pub(super) const TIMEOUT_MS: u64 = 1_000;
/// Signal type of a client write; merge records use [`MERGE_TYPE`].
pub(super) const WRITE_TYPE: u16 = 0;
pub(super) const MERGE_TYPE: u16 = 1;

/// A known bug planted to prove the simulator catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mutant {
    /// The leader answers every hello as if the histories agreed.
    NoDivergenceCut,
    /// The leader ships a batch as soon as it is written, before its sync.
    ShipBeforeSync,
    /// The leader counts acks without checking them against its history
    /// and the handshake, and an older connection of a node as another
    /// replica.
    CountStaleAcks,
    /// The follower never hands its held suffixes over: a cut suffix
    /// reaches a leader only through the one message sent after the cut
    /// (the follower's I/O before the hand-over existed).
    NoHandOver,
}

/// FNV-1a, 64 bits: the trace hash and the chain hash of logs.
pub(super) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
pub(super) const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// One batch in a simulated log.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) meta: BatchMeta,
    pub(super) bytes: Bytes,
    /// The write ids of its signal records.
    pub(super) ids: Vec<u64>,
    /// Hash of every batch's bytes up to and including this one.
    pub(super) chain: u64,
    /// Hash of this batch's bytes.
    pub(super) hash: u64,
}

impl Entry {
    /// An entry for `bytes` (a batch the sim or a leader encoded) after a
    /// log whose chain hash is `prev`.
    pub(super) fn new(meta: BatchMeta, bytes: Bytes, prev: u64) -> Entry {
        let mut records = Vec::new();
        let schema = Schema {
            signal_type_count: 2,
            dimension: 0,
        };
        let payload = bytes.get(BATCH_HEADER_LEN..).unwrap_or_default();
        // The receiver checked the CRC; the sim encoded every batch itself.
        decode_records(payload, meta.record_count, &schema, &mut records)
            .expect("a simulated batch decodes");
        let ids = records
            .iter()
            .filter_map(|r| match r {
                Record::Signal { entity, .. } => Some(entity.0),
                _ => None,
            })
            .collect();
        let hash = fnv(FNV0, &bytes);
        Entry {
            meta,
            bytes,
            ids,
            chain: fnv(prev, &hash.to_le_bytes()),
            hash,
        }
    }

    pub(super) fn last(&self) -> SeqNo {
        self.meta.last_seqno()
    }
}

/// Encodes one batch of `records` at `first` in `epoch`.
pub(super) fn encode(
    epoch: Epoch,
    first: SeqNo,
    now: u64,
    records: &[Record],
) -> (BatchMeta, Bytes) {
    let meta = BatchMeta {
        shard: SHARD,
        first_seqno: first,
        epoch,
        hlc: Hlc::new(now, 0),
        record_count: records.len() as u32,
    };
    let mut out = Vec::new();
    encode_batch(&meta, records, &mut out);
    (meta, Bytes::from(out))
}

/// Signals of `kind` on the entities named by `ids`.
pub(super) fn signals(kind: u16, ids: &[u64], now: u64) -> Vec<Record> {
    ids.iter()
        .map(|id| Record::Signal {
            signal_type: kind,
            entity: EntityId(*id),
            weight: 1.0,
            at: Timestamp(now),
        })
        .collect()
}

pub(super) fn last_of(log: &[Entry]) -> Position {
    log.last().map_or(Position::default(), |e| {
        Position::new(e.meta.epoch, e.last())
    })
}

pub(super) fn history_of(log: &[Entry]) -> Vec<(Epoch, SeqNo)> {
    let mut h: Vec<(Epoch, SeqNo)> = Vec::new();
    for e in log {
        if h.last().is_none_or(|(ep, _)| *ep != e.meta.epoch) {
            h.push((e.meta.epoch, e.meta.first_seqno));
        }
    }
    h
}

/// The entry of `log` holding `seqno`.
pub(super) fn find(log: &[Entry], seqno: SeqNo) -> Option<&Entry> {
    let i = log.partition_point(|e| e.last() < seqno);
    log.get(i).filter(|e| e.meta.first_seqno <= seqno)
}

/// A diverged suffix kept durably (`diverged/`).
#[derive(Clone, Debug)]
pub(super) struct Suffix {
    /// The follower that sent it; `None` for this node's own cut (the
    /// file name's `-n<id>`).
    pub(super) origin: Option<NodeId>,
    pub(super) entries: Vec<Entry>,
    /// Merged and marked so (durable).
    pub(super) merged: bool,
    /// Merged up to this SeqNo of the log, marked once it is synced.
    pub(super) merging: Option<SeqNo>,
}

/// A client write waiting for its acknowledgement.
#[derive(Clone, Debug)]
pub(super) struct Wait {
    pub(super) pos: Position,
    pub(super) first: SeqNo,
    pub(super) hash: u64,
    pub(super) ids: Vec<u64>,
    pub(super) replicated: bool,
}

/// A leader's in-memory state.
pub(super) struct Lead {
    pub(super) epoch: Epoch,
    pub(super) shipper: Shipper,
    /// Refuses writes: a higher epoch exists.
    pub(super) fenced: bool,
    pub(super) hwm: SeqNo,
    pub(super) waiting: Vec<Wait>,
}

/// A follower's in-memory state.
pub(super) struct Follow {
    pub(super) rx: Receiver,
    pub(super) conn: Option<u64>,
    /// The held suffixes were handed to the leader on this connection.
    pub(super) handed_over: bool,
}

pub(super) enum Role {
    Down,
    Leader(Box<Lead>),
    Follower(Box<Follow>),
}

/// One simulated node. `log[..synced]`, `seen`, `leads` and `diverged`
/// survive a crash; the rest does not.
pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) up: bool,
    pub(super) log: Vec<Entry>,
    pub(super) synced: usize,
    /// The highest epoch persisted as seen.
    pub(super) seen: Epoch,
    /// The epoch this node leads, as its log's role says.
    pub(super) leads: Option<Epoch>,
    pub(super) diverged: Vec<Suffix>,
    pub(super) role: Role,
    /// The node a follower connects to (what the coordinator told it).
    pub(super) target: usize,
}

/// One connection; each side closes on its own (a crash leaves the other
/// side open until its timeout).
pub(super) struct Conn {
    pub(super) leader: usize,
    pub(super) follower: usize,
    pub(super) leader_open: bool,
    pub(super) follower_open: bool,
}

/// A message in flight.
#[derive(Clone)]
pub(super) struct Packet {
    pub(super) conn: u64,
    pub(super) to_leader: bool,
    pub(super) bytes: Bytes,
}

/// What a run did, summed over seeds by the tests.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    pub(super) writes: u64,
    pub(super) acked_sync: u64,
    pub(super) acked_replicated: u64,
    pub(super) crashes: u64,
    pub(super) promotions: u64,
    pub(super) rejoins: u64,
    pub(super) cuts: u64,
    pub(super) suffixes_received: u64,
    pub(super) merged_ids: u64,
    pub(super) dropped: u64,
    pub(super) reconnects: u64,
    pub(super) fenced: u64,
    /// Suffixes a leader was sent again and did not store twice.
    pub(super) suffixes_deduped: u64,
    /// Hand-over messages lost (each broke its connection).
    pub(super) suffixes_lost: u64,
    /// Ids in suffixes held anywhere that are missing from the final state
    /// (the final check fails if any).
    pub(super) stranded_ids: u64,
    /// Writes acknowledged under `Sync` missing from the final state.
    pub(super) sync_acked_lost: u64,
}

/// The simulated shard.
pub(super) struct Cluster {
    pub(super) rng: Rng,
    pub(super) now: u64,
    pub(super) nodes: Vec<Node>,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) next_conn: u64,
    pub(super) wire: Vec<Packet>,
    /// Cut links `(a, b)`, `a < b`.
    pub(super) cut: BTreeSet<(usize, usize)>,
    pub(super) acks: usize,
    pub(super) max_epoch: Epoch,
    pub(super) next_id: u64,
    pub(super) mutant: Option<Mutant>,
    /// Batches synced by the leader of their epoch: `(epoch, first)` to hash.
    pub(super) registry: BTreeMap<(Epoch, SeqNo), u64>,
    /// Writes acknowledged under `Replicated`.
    pub(super) acked: Vec<Wait>,
    /// Ids of writes acknowledged under `Sync`.
    pub(super) acked_sync: Vec<u64>,
    pub(super) trace: u64,
    /// Faults on: drops, duplicates, delays, partitions.
    pub(super) faults: bool,
    /// The first invariant violation seen.
    pub(super) failure: Option<String>,
    pub(super) stats: Stats,
    pub(super) step: usize,
}

impl Cluster {
    /// Node 0 leads epoch 1 (its log opens with the `EpochStart`), the
    /// others follow it from empty logs.
    pub(super) fn new(seed: u64, mutant: Option<Mutant>) -> Cluster {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let acks = 1 + rng.below(2) as usize;
        let nodes = (0..NODES)
            .map(|i| Node {
                id: NodeId(i as u64 + 1),
                up: true,
                log: Vec::new(),
                synced: 0,
                seen: Epoch(0),
                leads: None,
                diverged: Vec::new(),
                role: Role::Down,
                target: 0,
            })
            .collect();
        let mut c = Cluster {
            rng,
            now: 1_000,
            nodes,
            conns: BTreeMap::new(),
            next_conn: 1,
            wire: Vec::new(),
            cut: BTreeSet::new(),
            acks,
            max_epoch: Epoch(0),
            next_id: 1,
            mutant,
            registry: BTreeMap::new(),
            acked: Vec::new(),
            acked_sync: Vec::new(),
            trace: fnv(FNV0, &seed.to_le_bytes()),
            faults: true,
            failure: None,
            stats: Stats::default(),
            step: 0,
        };
        c.start_follower(0);
        c.promote_node(0, &[0]);
        for i in 1..NODES {
            c.start_follower(i);
        }
        c
    }

    /// Records the first violation.
    pub(super) fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("step {}: {why}", self.step));
        }
    }

    pub(super) fn mix(&mut self, bytes: &[u8]) {
        self.trace = fnv(self.trace, bytes);
    }

    pub(super) fn lead(&mut self, i: usize) -> Option<&mut Lead> {
        match &mut self.nodes[i].role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn follow(&mut self, i: usize) -> Option<&mut Follow> {
        match &mut self.nodes[i].role {
            Role::Follower(f) => Some(f),
            _ => None,
        }
    }

    /// The node leading the newest epoch (up or not).
    pub(super) fn newest_leader(&self) -> Option<usize> {
        (0..NODES).find(|&i| self.nodes[i].leads == Some(self.max_epoch))
    }

    /// Starts node `i` as a leader of `epoch` from its log, as
    /// `start_leader` in `node.rs` does.
    pub(super) fn start_leader(&mut self, i: usize, epoch: Epoch) {
        let node = &mut self.nodes[i];
        let mut shipper = Shipper::new(ShipperConfig {
            epoch,
            node: node.id,
            fingerprint: FP,
            history: history_of(&node.log),
            durable: last_of(&node.log[..node.synced]),
            acks: self.acks,
            heartbeat_ms: HEARTBEAT_MS,
            timeout_ms: TIMEOUT_MS,
            first_retained: SeqNo(1),
            hlc_floor: Hlc::default(),
        });
        shipper.set_mutant(match self.mutant {
            Some(Mutant::NoDivergenceCut) => Some(ShipperMutant::NoDivergenceCut),
            Some(Mutant::CountStaleAcks) => Some(ShipperMutant::CountStaleAcks),
            _ => None,
        });
        node.role = Role::Leader(Box::new(Lead {
            epoch,
            shipper,
            fenced: node.seen > epoch,
            hwm: SeqNo(0),
            waiting: Vec::new(),
        }));
    }

    /// Starts node `i` as a follower from its log, as `receiver_config` in
    /// `node_follower.rs` does.
    pub(super) fn start_follower(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let history = history_of(&node.log);
        let highest_epoch = history.last().map_or(Epoch(0), |(e, _)| *e).max(node.seen);
        let rx = Receiver::new(ReceiverConfig {
            node: node.id,
            fingerprint: FP,
            shard: SHARD,
            history,
            last: last_of(&node.log),
            highest_epoch,
            timeout_ms: TIMEOUT_MS,
            hlc_floor: Hlc::default(),
        });
        node.role = Role::Follower(Box::new(Follow {
            rx,
            conn: None,
            handed_over: false,
        }));
    }

    /// Appends a batch of `records` to node `i`'s log (unsynced).
    pub(super) fn append(&mut self, i: usize, epoch: Epoch, records: &[Record]) -> Entry {
        let node = &mut self.nodes[i];
        let first = last_of(&node.log).seqno.next();
        let (meta, bytes) = encode(epoch, first, self.now, records);
        let prev = node.log.last().map_or(FNV0, |e| e.chain);
        let entry = Entry::new(meta, bytes, prev);
        node.log.push(entry.clone());
        entry
    }

    /// Marks node `i`'s log synced, registering what its own epoch logged;
    /// suffixes whose merge records are now durable are marked merged.
    pub(super) fn mark_synced(&mut self, i: usize) {
        let node = &self.nodes[i];
        let fresh: Vec<(Epoch, SeqNo, u64)> = node.log[node.synced..]
            .iter()
            .map(|e| (e.meta.epoch, e.meta.first_seqno, e.hash))
            .collect();
        self.nodes[i].synced = self.nodes[i].log.len();
        let end = last_of(&self.nodes[i].log).seqno;
        for s in &mut self.nodes[i].diverged {
            if s.merging.is_some_and(|m| m <= end) {
                s.merged = true;
                s.merging = None;
            }
        }
        for (epoch, first, hash) in fresh {
            if let Some(old) = self.registry.insert((epoch, first), hash)
                && old != hash
            {
                self.fail(format!(
                    "node {i} synced another batch at {epoch}:{first} than one synced before"
                ));
            }
        }
    }

    /// Makes follower `i` the leader of a new epoch, as `Core::promote`
    /// does (the receiver stops, an `EpochStart` is logged and synced, a
    /// shipper starts), and has the nodes of `majority` persist the epoch.
    pub(super) fn promote_node(&mut self, i: usize, majority: &[usize]) {
        let epoch = Epoch(self.max_epoch.0 + 1);
        self.max_epoch = epoch;
        self.close_conns_of(i);
        let start = Record::EpochStart {
            epoch,
            leader_node: self.nodes[i].id,
            hlc: Hlc::new(self.now, 0),
            replicated: true,
        };
        self.append(i, epoch, std::slice::from_ref(&start));
        self.mark_synced(i);
        self.nodes[i].leads = Some(epoch);
        self.nodes[i].seen = epoch;
        self.start_leader(i, epoch);
        self.stats.promotions += 1;
        for &j in majority {
            if j == i {
                continue;
            }
            self.nodes[j].seen = self.nodes[j].seen.max(epoch);
            if let Some(l) = self.lead(j) {
                l.fenced = true;
                l.waiting.clear();
            } else {
                self.close_conns_of(j);
                self.start_follower(j);
                self.nodes[j].target = i;
            }
        }
    }
}
