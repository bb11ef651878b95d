//! The events of `sim_cluster` and the seeded scheduler that picks them.

use std::collections::BTreeSet;

use super::sim_cluster::{
    Cluster, MERGE_TYPE, Mutant, NODES, Role, WRITE_TYPE, Wait, last_of, signals,
};

/// One scheduled event; its `Debug` form goes into the trace hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Delay(usize),
    Tick(u64),
    Write { node: usize, replicated: bool },
    Sync(usize),
    Crash(usize),
    Restart(usize),
    Promote,
    Learn(usize),
    Rejoin(usize),
    Reconcile(usize),
    Partition(usize, usize),
    Heal,
}

impl Cluster {
    /// Picks the next event.
    pub(super) fn pick(&mut self) -> Event {
        let n = self.wire.len() as u64;
        let node = self.rng.below(NODES as u64) as usize;
        let roll = self.rng.below(1_000);
        let faults = self.faults;
        match roll {
            _ if n > 0 && roll < 400 => {
                // Mostly the oldest message; now and then another (reorder).
                let k = if self.rng.below(5) == 0 {
                    self.rng.below(n)
                } else {
                    0
                };
                Event::Deliver(k as usize)
            }
            400..=429 if n > 0 && faults => Event::Drop(self.rng.below(n) as usize),
            430..=449 if n > 0 && faults => Event::Duplicate(self.rng.below(n) as usize),
            450..=479 if n > 0 && faults => Event::Delay(self.rng.below(n) as usize),
            480..=579 => Event::Tick(10 + self.rng.below(90)),
            580..=709 => Event::Write {
                node,
                replicated: self.rng.below(2) == 0,
            },
            710..=799 => Event::Sync(node),
            800..=819 if faults => Event::Crash(node),
            820..=869 => Event::Restart(node),
            870..=884 if faults => Event::Promote,
            885..=914 => Event::Learn(node),
            915..=939 => Event::Rejoin(node),
            940..=969 => Event::Reconcile(node),
            970..=984 if faults => {
                let other = (node + 1 + self.rng.below(NODES as u64 - 1) as usize) % NODES;
                Event::Partition(node.min(other), node.max(other))
            }
            _ => Event::Heal,
        }
    }

    /// Carries out one event.
    pub(super) fn apply(&mut self, ev: Event) {
        match ev {
            Event::Deliver(k) => self.deliver(k, false),
            Event::Drop(k) => {
                let p = self.wire.remove(k);
                self.stats.dropped += 1;
                self.lost(&p);
            }
            Event::Duplicate(k) => self.deliver(k, true),
            Event::Delay(k) => {
                let p = self.wire.remove(k);
                self.wire.push(p);
            }
            Event::Tick(ms) => {
                self.now += ms;
                self.tick_all();
            }
            Event::Write { node, replicated } => self.write(node, replicated),
            Event::Sync(i) => self.sync(i),
            Event::Crash(i) => self.crash(i),
            Event::Restart(i) => self.restart(i),
            Event::Promote => self.promote(),
            Event::Learn(i) => self.learn(i),
            Event::Rejoin(i) => self.rejoin(i),
            Event::Reconcile(i) => self.reconcile(i),
            Event::Partition(a, b) => {
                self.cut.insert((a, b));
            }
            Event::Heal => self.cut.clear(),
        }
    }

    /// A client write of one to three fresh ids on leader `i`.
    fn write(&mut self, i: usize, replicated: bool) {
        if !self.nodes[i].up {
            return;
        }
        let Some(l) = self.lead(i) else { return };
        if l.fenced {
            return;
        }
        let epoch = l.epoch;
        let count = 1 + self.rng.below(3);
        let ids: Vec<u64> = (self.next_id..self.next_id + count).collect();
        self.next_id += count;
        self.stats.writes += 1;
        let records = signals(WRITE_TYPE, &ids, self.now);
        let e = self.append(i, epoch, &records);
        let pos = crate::types::Position::new(epoch, e.last());
        let now = self.now;
        let ship_early = self.mutant == Some(Mutant::ShipBeforeSync);
        let Some(l) = self.lead(i) else { return };
        l.waiting.push(Wait {
            pos,
            first: e.meta.first_seqno,
            hash: e.hash,
            ids,
            replicated,
        });
        if ship_early {
            // The planted bug: the I/O layer reports the batch durable
            // when it is written, so the shipper streams it before the sync.
            let outs = l.shipper.on_durable(pos, now);
            self.ship_outputs(i, outs);
        }
    }

    /// Leader `i` syncs its log: what was written is durable (merges now
    /// durable mark their suffixes merged), the shipper streams it (the
    /// durable hook), waiting writes may return.
    pub(super) fn sync(&mut self, i: usize) {
        let node = &self.nodes[i];
        if !node.up || node.synced == node.log.len() {
            return;
        }
        self.mark_synced(i);
        let last = last_of(&self.nodes[i].log);
        let now = self.now;
        if let Some(l) = self.lead(i) {
            let outs = l.shipper.on_durable(last, now);
            self.ship_outputs(i, outs);
        }
        self.settle(i);
    }

    /// Node `i` crashes: the unsynced tail, the connections, the shipper or
    /// receiver and the waiting writes are lost; merges not yet synced
    /// leave their suffixes unmerged.
    fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.stats.crashes += 1;
        self.crash_conns_of(i);
        let node = &mut self.nodes[i];
        node.up = false;
        node.log.truncate(node.synced);
        node.role = Role::Down;
        for s in &mut node.diverged {
            s.merging = None;
        }
    }

    /// Node `i` restarts from what it persisted: a leader if its log says it
    /// leads (fenced if it has seen a higher epoch), else a follower of the
    /// node it was told about.
    pub(super) fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        self.nodes[i].up = true;
        match self.nodes[i].leads {
            Some(epoch) => self.start_leader(i, epoch),
            None => self.start_follower(i),
        }
    }

    /// The coordinator: a majority of the up nodes (random, at least two)
    /// reports its durable position; the most advanced, if a follower, is
    /// promoted to an epoch above all, and the majority persists it.
    fn promote(&mut self) {
        let up: Vec<usize> = (0..NODES).filter(|&i| self.nodes[i].up).collect();
        if up.len() * 2 <= NODES {
            return;
        }
        let mut majority: Vec<usize> = up.clone();
        while majority.len() * 2 > NODES + 1 && self.rng.below(2) == 0 {
            let k = self.rng.below(majority.len() as u64) as usize;
            majority.remove(k);
        }
        // Ties go to a follower: promoting needs one.
        let best = majority
            .iter()
            .copied()
            .max_by_key(|&i| {
                let n = &self.nodes[i];
                let follower = matches!(n.role, Role::Follower(_));
                (last_of(&n.log[..n.synced]), follower, NODES - i)
            })
            .unwrap_or(0);
        if !matches!(self.nodes[best].role, Role::Follower(_)) {
            return;
        }
        self.promote_node(best, &majority);
    }

    /// The coordinator tells follower `i` which node leads now; with faults
    /// on, half the time from stale information: any node that still runs
    /// as a leader (a follower that has seen a newer epoch refuses it and
    /// so fences it).
    pub(super) fn learn(&mut self, i: usize) {
        let leaders: Vec<usize> = (0..NODES)
            .filter(|&j| self.nodes[j].up && matches!(self.nodes[j].role, Role::Leader(_)))
            .collect();
        let stale = self.faults && !leaders.is_empty() && self.rng.below(2) == 0;
        let t = if stale {
            Some(leaders[self.rng.below(leaders.len() as u64) as usize])
        } else {
            self.newest_leader()
        };
        let Some(t) = t else {
            return;
        };
        if t == i || self.nodes[i].target == t || self.follow(i).is_none() {
            return;
        }
        self.nodes[i].target = t;
        if let Some(c) = self.follow(i).and_then(|f| f.conn) {
            self.close_conn(c);
        }
    }

    /// An old leader (a newer epoch exists) closes and reopens as a follower
    /// of the newest leader: its log is flushed on close, its waiting
    /// writes fail.
    pub(super) fn rejoin(&mut self, i: usize) {
        let Some(t) = self.newest_leader() else {
            return;
        };
        let old = match &self.nodes[i].role {
            Role::Leader(l) => l.epoch,
            _ => return,
        };
        if old >= self.max_epoch || !self.nodes[i].up {
            return;
        }
        self.stats.rejoins += 1;
        self.close_conns_of(i);
        self.mark_synced(i);
        let node = &mut self.nodes[i];
        node.leads = None;
        node.seen = node.seen.max(self.max_epoch);
        node.target = t;
        self.start_follower(i);
    }

    /// Leader `i` merges the diverged suffixes it holds: the ids of each
    /// not in its log yet are logged as one batch of merge records; the
    /// suffix is marked merged once everything it needs is synced.
    pub(super) fn reconcile(&mut self, i: usize) {
        let (epoch, fenced) = match &self.nodes[i].role {
            Role::Leader(l) => (l.epoch, l.fenced),
            _ => return,
        };
        if fenced || !self.nodes[i].up {
            return;
        }
        let mut held: BTreeSet<u64> = self.nodes[i]
            .log
            .iter()
            .flat_map(|e| e.ids.iter().copied())
            .collect();
        for k in 0..self.nodes[i].diverged.len() {
            let s = &self.nodes[i].diverged[k];
            if s.merged || s.merging.is_some() {
                continue;
            }
            let mut fresh = Vec::new();
            for id in s.entries.iter().flat_map(|e| e.ids.iter().copied()) {
                if held.insert(id) {
                    fresh.push(id);
                }
            }
            if !fresh.is_empty() {
                self.stats.merged_ids += fresh.len() as u64;
                let records = signals(MERGE_TYPE, &fresh, self.now);
                self.append(i, epoch, &records);
            }
            let end = last_of(&self.nodes[i].log).seqno;
            let all_synced = self.nodes[i].synced == self.nodes[i].log.len();
            let s = &mut self.nodes[i].diverged[k];
            if all_synced {
                s.merged = true;
            } else {
                s.merging = Some(end);
            }
        }
    }
}
