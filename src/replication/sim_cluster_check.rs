//! The invariants of `sim_cluster`, checked after every step, the final
//! heal-and-settle phase with its convergence checks, and one seeded run.

use std::collections::{BTreeMap, VecDeque};

use super::sim_cluster::{Cluster, Entry, Mutant, NODES, Role, Stats, find, last_of};
use super::sim_cluster_events::Event;
use crate::types::SeqNo;

/// Steps of one seeded run before the final heal.
pub(super) const STEPS: usize = 4_000;
/// Rounds the final phase may take to settle.
const SETTLE_ROUNDS: usize = 400;

/// What a passing run leaves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outcome {
    pub(super) trace: u64,
    pub(super) stats: Stats,
}

/// Runs seed `seed` (with `mutant` planted): `STEPS` scheduled events, the
/// invariants after each, then the final heal. `Err` names the first
/// violation and the last events before it.
pub(super) fn run(seed: u64, mutant: Option<Mutant>) -> Result<Outcome, String> {
    let mut c = Cluster::new(seed, mutant);
    let mut recent: VecDeque<String> = VecDeque::new();
    for step in 0..STEPS {
        c.step = step;
        let ev = c.pick();
        let line = format!("{step} @{} {ev:?}", c.now);
        c.mix(line.as_bytes());
        if recent.len() == 12 {
            recent.pop_front();
        }
        recent.push_back(line);
        c.apply(ev);
        c.check();
        if let Some(f) = c.failure.take() {
            let tail: Vec<String> = recent.into_iter().collect();
            return Err(format!("{f}\n  last events:\n    {}", tail.join("\n    ")));
        }
    }
    c.step = STEPS;
    c.heal_and_settle();
    match c.failure.take() {
        Some(f) => Err(format!("{f} (in the final heal)")),
        None => Ok(Outcome {
            trace: c.trace,
            stats: c.stats,
        }),
    }
}

/// Log matching: where both logs hold a batch of one epoch at one SeqNo,
/// everything up to it is identical (checked at the highest such batch).
fn log_matching(a: &[Entry], b: &[Entry]) -> Result<(), String> {
    for ea in a.iter().rev() {
        let k = b.partition_point(|e| e.meta.first_seqno < ea.meta.first_seqno);
        let Some(eb) = b.get(k) else { continue };
        if eb.meta.first_seqno == ea.meta.first_seqno && eb.meta.epoch == ea.meta.epoch {
            if eb.chain != ea.chain {
                return Err(format!(
                    "logs disagree up to {}:{} though both hold a batch there",
                    ea.meta.epoch, ea.meta.first_seqno
                ));
            }
            return Ok(());
        }
    }
    Ok(())
}

impl Cluster {
    /// The invariants that hold after every step.
    pub(super) fn check(&mut self) {
        if self.failure.is_some() {
            return;
        }
        // The HWM: what the shipper says, never past the synced end.
        for i in 0..NODES {
            let node = &self.nodes[i];
            let Role::Leader(l) = &node.role else {
                continue;
            };
            let synced = last_of(&node.log[..node.synced]).seqno;
            if l.shipper.hwm() != l.hwm {
                let why = format!(
                    "node {i}: shipper HWM {} but {} reported",
                    l.shipper.hwm(),
                    l.hwm
                );
                return self.fail(why);
            }
            if l.hwm > synced {
                let why = format!("node {i}: HWM {} past its synced end {synced}", l.hwm);
                return self.fail(why);
            }
        }
        // At least `acks` other nodes hold the newest leader's log up to its HWM.
        if let Some(n) = self.newest_leader()
            && let Role::Leader(l) = &self.nodes[n].role
            && !l.fenced
            && l.hwm > SeqNo(0)
        {
            let hwm = l.hwm;
            let Some(e) = find(&self.nodes[n].log, hwm) else {
                return self.fail(format!("node {n}: HWM {hwm} is not in its log"));
            };
            let (first, chain) = (e.meta.first_seqno, e.chain);
            let holders = (0..NODES)
                .filter(|&j| j != n)
                .filter(|&j| {
                    let log = &self.nodes[j].log[..self.nodes[j].synced];
                    find(log, first)
                        .is_some_and(|x| x.meta.first_seqno == first && x.chain == chain)
                })
                .count();
            if holders < self.acks {
                let why = format!(
                    "leader {n}: HWM {hwm} but only {holders} other node(s) hold its log up to it (acks {})",
                    self.acks
                );
                return self.fail(why);
            }
        }
        // Log matching between every pair of logs.
        for a in 0..NODES {
            for b in a + 1..NODES {
                if let Err(why) = log_matching(&self.nodes[a].log, &self.nodes[b].log) {
                    return self.fail(format!("nodes {a} and {b}: {why}"));
                }
            }
        }
        // Every Replicated write acknowledged is in the newest leader's synced log.
        if let Some(n) = self.newest_leader() {
            let missing = self.acked.iter().find(|w| !self.holds(n, w.first, w.hash));
            if let Some(w) = missing {
                let why = format!(
                    "write {:?} acknowledged Replicated at {} is not in the synced log of node {n}, leader of {}",
                    w.ids, w.pos, self.max_epoch
                );
                self.fail(why);
            }
        }
    }

    /// Heals the network, restarts every node, points everyone at the newest
    /// leader and runs fault-free until nothing moves; then the replicas
    /// must be identical and every acknowledged write merged in.
    pub(super) fn heal_and_settle(&mut self) {
        self.faults = false;
        self.cut.clear();
        for i in 0..NODES {
            self.restart(i);
        }
        let Some(n) = self.newest_leader() else {
            return self.fail("no node leads the newest epoch".into());
        };
        for i in 0..NODES {
            if i != n {
                self.rejoin(i);
                self.learn(i);
            }
        }
        let mut settled = false;
        for _ in 0..SETTLE_ROUNDS {
            self.apply(Event::Tick(60));
            let mut budget = 100_000;
            while !self.wire.is_empty() && budget > 0 {
                self.deliver(0, false);
                budget -= 1;
            }
            self.sync(n);
            self.reconcile(n);
            self.sync(n);
            self.check();
            if self.failure.is_some() {
                return;
            }
            if self.quiet(n) {
                settled = true;
                break;
            }
        }
        if !settled {
            let lens: Vec<String> = (0..NODES)
                .map(|i| format!("{}", last_of(&self.nodes[i].log)))
                .collect();
            let leader = &self.nodes[n];
            let hwm = match &leader.role {
                Role::Leader(l) => l.hwm,
                _ => SeqNo(0),
            };
            let chains: Vec<bool> = (0..NODES)
                .map(|i| {
                    self.nodes[i].log.last().map(|e| e.chain) == leader.log.last().map(|e| e.chain)
                })
                .collect();
            return self.fail(format!(
                "the healed cluster did not converge on leader {n}: logs end at {lens:?}, same chains {chains:?}, HWM {hwm}, {} in flight, {} of {} suffixes merged, {} of {} synced",
                self.wire.len(),
                leader.diverged.iter().filter(|s| s.merged).count(),
                leader.diverged.len(),
                leader.synced,
                leader.log.len()
            ));
        }
        self.converged(n);
    }

    /// Nothing in flight, every log equal to the leader's, everything the
    /// leader holds merged and synced, the HWM at its end.
    fn quiet(&self, n: usize) -> bool {
        let leader = &self.nodes[n];
        let chain = leader.log.last().map(|e| e.chain);
        let hwm = match &leader.role {
            Role::Leader(l) => l.hwm,
            _ => return false,
        };
        // Every follower was welcomed on a connection to the leader open at
        // both ends, and handed its unmerged suffixes over on it (a
        // follower whose log already matched may not have connected yet,
        // or still sit on a connection whose leader end died with a crash,
        // where what it sends is lost until its timeout).
        let handed_over = (0..NODES).filter(|&i| i != n).all(|i| {
            matches!(&self.nodes[i].role, Role::Follower(f)
            if f.rx.is_streaming() && f.handed_over
                && f.conn.and_then(|c| self.conns.get(&c)).is_some_and(|c| {
                    c.leader == n && c.leader_open && c.follower_open
                }))
        });
        self.wire.is_empty()
            && handed_over
            && leader.synced == leader.log.len()
            && hwm == last_of(&leader.log).seqno
            && leader.diverged.iter().all(|s| s.merged)
            && self
                .nodes
                .iter()
                .all(|x| x.log.len() == leader.log.len() && x.log.last().map(|e| e.chain) == chain)
    }

    /// The end-state checks after the cluster settled on leader `n`.
    fn converged(&mut self, n: usize) {
        let mut count: BTreeMap<u64, u32> = BTreeMap::new();
        for id in self.nodes[n].log.iter().flat_map(|e| e.ids.iter()) {
            *count.entry(*id).or_default() += 1;
        }
        if let Some((id, k)) = count.iter().find(|(_, k)| **k > 1) {
            return self.fail(format!("write id {id} is held {k} times (merged twice?)"));
        }
        for i in 0..NODES {
            let same = self.nodes[i].log.len() == self.nodes[n].log.len()
                && self.nodes[i]
                    .log
                    .iter()
                    .zip(&self.nodes[n].log)
                    .all(|(a, b)| a.bytes == b.bytes);
            if !same {
                return self.fail(format!(
                    "node {i}'s log is not byte-identical to leader {n}'s"
                ));
            }
        }
        let lost = self
            .acked
            .iter()
            .flat_map(|w| w.ids.iter())
            .find(|id| !count.contains_key(id));
        if let Some(id) = lost {
            return self.fail(format!(
                "write id {id} was acknowledged Replicated and is lost"
            ));
        }
        let unmerged = self.nodes[n]
            .diverged
            .iter()
            .flat_map(|s| s.entries.iter().flat_map(|e| e.ids.iter()))
            .find(|id| !count.contains_key(id));
        if let Some(id) = unmerged {
            return self.fail(format!(
                "write id {id} of a suffix leader {n} received is not merged"
            ));
        }
        // Every suffix any node holds reached the leader and was merged:
        // followers hand theirs over on every connection.
        let stranded: Vec<(usize, u64)> = (0..NODES)
            .flat_map(|i| self.nodes[i].diverged.iter().map(move |s| (i, s)))
            .flat_map(|(i, s)| {
                s.entries
                    .iter()
                    .flat_map(move |e| e.ids.iter().map(move |id| (i, *id)))
            })
            .filter(|(_, id)| !count.contains_key(id))
            .collect();
        self.stats.stranded_ids = stranded.len() as u64;
        self.stats.sync_acked_lost = self
            .acked_sync
            .iter()
            .filter(|id| !count.contains_key(id))
            .count() as u64;
        if let Some(&(i, id)) = stranded.first() {
            let name = |s: &super::sim_cluster::Suffix| {
                let at = s
                    .entries
                    .first()
                    .map(|e| (e.meta.epoch.0, e.meta.first_seqno.0));
                (s.origin.map(|o| o.0), at, s.merged)
            };
            let holder: Vec<_> = self.nodes[i]
                .diverged
                .iter()
                .filter(|s| s.entries.iter().any(|e| e.ids.contains(&id)))
                .map(name)
                .collect();
            let leader_holds: Vec<_> = self.nodes[n].diverged.iter().map(name).collect();
            return self.fail(format!(
                "write id {id} of a suffix node {i} holds never reached leader {n}'s state ({} stranded); \
                 (origin, (epoch, first), merged) of that suffix: {holder:?}, of the leader's: {leader_holds:?}",
                stranded.len()
            ));
        }
        let lost_sync = self.acked_sync.iter().find(|id| !count.contains_key(id));
        if let Some(id) = lost_sync {
            return self.fail(format!(
                "write id {id} was acknowledged Sync and is lost ({} such)",
                self.stats.sync_acked_lost
            ));
        }
        let final_state = self.nodes[n].log.last().map_or(0, |e| e.chain);
        self.mix(&final_state.to_le_bytes());
    }
}
