//! The simulated I/O of `sim_cluster`: the network and the effects of the
//! shipper's and receiver's outputs, carried out the way `node.rs` and
//! `node_follower.rs` carry them out.

use std::collections::VecDeque;

use bytes::Bytes;

use super::message::Message;
use super::receiver::ReceiverOutput;
use super::shipper::{FollowerId, ShipperOutput};
use super::sim_cluster::{Cluster, Conn, Entry, FNV0, NODES, Packet, Role, Suffix, find};
use crate::types::{Epoch, SeqNo};
use crate::wal::format::{BATCH_HEADER_LEN, decode_header};

impl Cluster {
    /// Whether the link between `a` and `b` is cut.
    pub(super) fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Puts a message on the wire, if the sending side is still open.
    pub(super) fn send(&mut self, conn: u64, to_leader: bool, msg: &Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let open = if to_leader {
            c.follower_open
        } else {
            c.leader_open
        };
        if open {
            self.wire.push(Packet {
                conn,
                to_leader,
                bytes: msg.encode(),
            });
        }
    }

    /// Packet `p` was lost on a connection still open at both ends. A
    /// hand-over (`DivergedSuffix`) is the one message whose loss nothing
    /// on that connection repairs (acks are cumulative, a lost hello or
    /// batch times out or shows a gap): only the next connection sends it
    /// again. The real transport (TCP) never loses a message on a live
    /// connection, it breaks it; so a lost hand-over breaks its connection
    /// here too, and the follower reconnects and hands over again.
    pub(super) fn lost(&mut self, p: &Packet) {
        if p.to_leader
            && matches!(
                Message::decode(&p.bytes),
                Ok(Message::DivergedSuffix { .. })
            )
            && self.conns.contains_key(&p.conn)
        {
            self.stats.suffixes_lost += 1;
            self.close_conn(p.conn);
        }
    }

    /// Closes both sides of a connection (a clean close: each side learns
    /// at once); what was in flight on it is lost.
    pub(super) fn close_conn(&mut self, conn: u64) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.wire.retain(|p| p.conn != conn);
        if c.leader_open
            && let Some(l) = self.lead(c.leader)
        {
            l.shipper.on_disconnect(FollowerId(conn));
        }
        if c.follower_open
            && let Some(f) = self.follow(c.follower)
            && f.conn == Some(conn)
        {
            f.conn = None;
            f.rx.on_disconnect();
        }
    }

    /// Closes every connection node `i` is a side of.
    pub(super) fn close_conns_of(&mut self, i: usize) {
        let mine: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.leader == i || c.follower == i)
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            self.close_conn(id);
        }
    }

    /// Node `i` crashed: its side of every connection is gone, the peers
    /// notice only by timeout.
    pub(super) fn crash_conns_of(&mut self, i: usize) {
        let mut gone = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if c.leader == i {
                c.leader_open = false;
            }
            if c.follower == i {
                c.follower_open = false;
            }
            if !c.leader_open && !c.follower_open {
                gone.push(*id);
            }
        }
        for id in gone {
            self.conns.remove(&id);
        }
        let conns = &self.conns;
        self.wire.retain(|p| conns.contains_key(&p.conn));
    }

    /// A follower without a connection connects to its target, if that is
    /// an up leader it can reach.
    pub(super) fn try_connect(&mut self, i: usize) {
        let t = self.nodes[i].target;
        if !self.nodes[i].up
            || t == i
            || !self.nodes[t].up
            || self.is_cut(i, t)
            || !matches!(self.nodes[t].role, Role::Leader(_))
            || !matches!(&self.nodes[i].role, Role::Follower(f) if f.conn.is_none())
        {
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                leader: t,
                follower: i,
                leader_open: true,
                follower_open: true,
            },
        );
        if let Some(l) = self.lead(t) {
            l.shipper.on_connect(FollowerId(conn));
        }
        let now = self.now;
        let Some(f) = self.follow(i) else {
            return;
        };
        f.conn = Some(conn);
        f.handed_over = false;
        let outs = f.rx.on_connect(now);
        self.rx_outputs(i, outs);
    }

    /// Delivers wire packet `k` (a copy stays behind if `keep`).
    pub(super) fn deliver(&mut self, k: usize, keep: bool) {
        let p = if keep {
            self.wire[k].clone()
        } else {
            self.wire.remove(k)
        };
        self.mix(&p.bytes);
        let Some(c) = self.conns.get(&p.conn) else {
            return;
        };
        let (leader, follower) = (c.leader, c.follower);
        let open = if p.to_leader {
            c.leader_open
        } else {
            c.follower_open
        };
        if !open || self.is_cut(leader, follower) {
            self.stats.dropped += 1;
            if open {
                self.lost(&p);
            }
            return;
        }
        let msg = Message::decode(&p.bytes).expect("the sim's own frames decode");
        let now = self.now;
        if p.to_leader {
            let Some(l) = self.lead(leader) else {
                return;
            };
            let outs = l.shipper.on_message(FollowerId(p.conn), msg, now);
            self.ship_outputs(leader, outs);
        } else {
            let Some(f) = self.follow(follower) else {
                return;
            };
            if f.conn != Some(p.conn) {
                return;
            }
            let outs = f.rx.on_message(msg, now);
            self.rx_outputs(follower, outs);
        }
    }

    /// Carries out a leader's shipper outputs, in order.
    pub(super) fn ship_outputs(&mut self, i: usize, outs: Vec<ShipperOutput>) {
        for o in outs {
            self.ship_output(i, o);
        }
    }

    fn ship_output(&mut self, i: usize, o: ShipperOutput) {
        let now = self.now;
        match o {
            ShipperOutput::Send(f, m) => self.send(f.0, false, &m),
            ShipperOutput::ReadFrom { f, from, to } => {
                let batches: Vec<Entry> = self.nodes[i]
                    .log
                    .iter()
                    .filter(|e| e.last() >= from && e.meta.first_seqno <= to)
                    .cloned()
                    .collect();
                for e in batches {
                    let key = (e.meta.epoch, e.meta.first_seqno);
                    if self.registry.get(&key) != Some(&e.hash) {
                        self.fail(format!(
                            "node {i} ships {}:{} before syncing it",
                            key.0, key.1
                        ));
                    }
                    let Some(l) = self.lead(i) else { return };
                    let hlc = l.shipper.stamp(now);
                    self.send(
                        f.0,
                        false,
                        &Message::Batch {
                            bytes: e.bytes,
                            hlc,
                        },
                    );
                }
                if let Some(l) = self.lead(i) {
                    l.shipper.batches_sent(f, to, now);
                }
            }
            ShipperOutput::SendSnapshot { .. } => {
                self.fail(format!(
                    "node {i} asked for a snapshot; the whole log is retained"
                ));
            }
            ShipperOutput::StoreDiverged {
                origin, batches, ..
            } => {
                // As `keep_diverged`: a suffix held already from the same
                // node, merged or not, is not stored again.
                let entries = split(&batches);
                let held = self.nodes[i].diverged.iter().any(|s| {
                    s.origin == origin
                        && s.entries.len() == entries.len()
                        && s.entries
                            .iter()
                            .zip(&entries)
                            .all(|(a, b)| a.bytes == b.bytes)
                });
                if held {
                    self.stats.suffixes_deduped += 1;
                    return;
                }
                self.stats.suffixes_received += 1;
                self.nodes[i].diverged.push(Suffix {
                    origin,
                    entries,
                    merged: false,
                    merging: None,
                });
            }
            ShipperOutput::Fenced { seen } => {
                self.stats.fenced += 1;
                let node = &mut self.nodes[i];
                node.seen = node.seen.max(seen);
                // Writes are refused from now on; those waiting keep waiting
                // for the HWM, as in the real core.
                if let Some(l) = self.lead(i) {
                    l.fenced = true;
                }
            }
            ShipperOutput::HwmAdvanced(s) => {
                let Some(l) = self.lead(i) else { return };
                let before = l.hwm;
                l.hwm = s;
                if s <= before {
                    self.fail(format!("node {i}: the HWM went from {before} to {s}"));
                }
                self.settle(i);
            }
            ShipperOutput::Disconnect(f) => self.close_conn(f.0),
        }
    }

    /// Acknowledges the waiting writes of leader `i` that are done: synced,
    /// and for `Replicated` at or below the HWM.
    pub(super) fn settle(&mut self, i: usize) {
        let synced = self.nodes[i].log[..self.nodes[i].synced]
            .last()
            .map_or(crate::types::SeqNo(0), |e| e.last());
        let Some(l) = self.lead(i) else { return };
        let hwm = l.hwm;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut l.waiting)
            .into_iter()
            .partition(|w| w.pos.seqno <= synced && (!w.replicated || w.pos.seqno <= hwm));
        l.waiting = waiting;
        for w in done {
            if w.replicated {
                self.stats.acked_replicated += 1;
                self.acked.push(w);
            } else {
                self.stats.acked_sync += 1;
                self.acked_sync.extend(w.ids);
            }
        }
    }

    /// Carries out a follower's receiver outputs, and what they lead to, in
    /// order; an output that ends the session drops the rest, as
    /// `start_follower` does.
    pub(super) fn rx_outputs(&mut self, i: usize, outs: Vec<ReceiverOutput>) {
        let mut queue: VecDeque<ReceiverOutput> = outs.into();
        self.hand_over(i, &mut queue);
        while let Some(o) = queue.pop_front() {
            let conn = match self.follow(i) {
                Some(f) => f.conn,
                None => return,
            };
            match o {
                ReceiverOutput::Send(m) => {
                    if let Some(c) = conn {
                        self.send(c, true, &m);
                    }
                }
                ReceiverOutput::Truncate { to } => {
                    let node = &mut self.nodes[i];
                    let keep = node.log.partition_point(|e| e.last() <= to);
                    if keep > 0 && node.log[keep - 1].last() != to {
                        let hist: Vec<_> = (0..NODES)
                            .map(|j| {
                                (
                                    super::sim_cluster::history_of(&self.nodes[j].log),
                                    super::sim_cluster::last_of(&self.nodes[j].log),
                                )
                            })
                            .collect();
                        let why = format!(
                            "node {i} asked to cut inside a batch at {to}; (history, last) of each node: {hist:?}"
                        );
                        self.fail(why);
                        return;
                    }
                    let cut = node.log.split_off(keep);
                    node.synced = node.synced.min(keep);
                    self.stats.cuts += 1;
                    let Some(first) = cut.first().map(|e| (e.meta.epoch, e.meta.first_seqno))
                    else {
                        continue;
                    };
                    let bytes: Vec<u8> = cut.iter().flat_map(|e| e.bytes.to_vec()).collect();
                    self.nodes[i].diverged.push(Suffix {
                        origin: None,
                        entries: cut,
                        merged: false,
                        merging: None,
                    });
                    let Some(f) = self.follow(i) else { return };
                    queue.extend(f.rx.diverged_ready(first.0, first.1, Bytes::from(bytes)));
                }
                ReceiverOutput::Append { bytes, meta } => {
                    let node = &mut self.nodes[i];
                    let prev = node.log.last().map_or(FNV0, |e| e.chain);
                    let entry = Entry::new(meta, bytes, prev);
                    let key = (meta.epoch, meta.first_seqno);
                    if self.registry.get(&key) != Some(&entry.hash) {
                        self.fail(format!(
                            "follower {i} appends {}:{} that its leader has not synced",
                            key.0, key.1
                        ));
                    }
                    let node = &mut self.nodes[i];
                    node.log.push(entry);
                    node.synced = node.log.len();
                    let pos = crate::types::Position::new(meta.epoch, meta.last_seqno());
                    let Some(f) = self.follow(i) else { return };
                    let mut more = f.rx.on_durable(pos);
                    more.extend(f.rx.on_applied(pos));
                    queue.extend(more);
                }
                ReceiverOutput::InstallSnapshot { .. } => {
                    self.fail(format!("follower {i} was sent a snapshot"));
                    return;
                }
                ReceiverOutput::Reconnect(_)
                | ReceiverOutput::StaleLeader { .. }
                | ReceiverOutput::Refused(_) => {
                    self.stats.reconnects += 1;
                    if let Some(c) = conn {
                        self.close_conn(c);
                    }
                    return;
                }
                ReceiverOutput::PersistEpoch(e) => {
                    let node = &mut self.nodes[i];
                    node.seen = node.seen.max(e);
                }
            }
        }
    }

    /// Once per connection, as soon as the leader welcomed it, follower `i`
    /// hands every unmerged suffix it holds to the leader, after the
    /// outputs already queued: what `start_follower` in `node_follower.rs`
    /// does at the top of its loop, with `Core::unmerged_suffixes`.
    fn hand_over(&mut self, i: usize, queue: &mut VecDeque<ReceiverOutput>) {
        let held: Vec<(Epoch, SeqNo, Bytes)> = self.nodes[i]
            .diverged
            .iter()
            .filter(|s| !s.merged)
            .filter_map(|s| {
                let head = s.entries.first()?;
                let bytes: Vec<u8> = s.entries.iter().flat_map(|e| e.bytes.to_vec()).collect();
                Some((head.meta.epoch, head.meta.first_seqno, Bytes::from(bytes)))
            })
            .collect();
        let no_hand_over = self.mutant == Some(super::sim_cluster::Mutant::NoHandOver);
        let Some(f) = self.follow(i) else { return };
        if f.handed_over || !f.rx.is_streaming() {
            return;
        }
        f.handed_over = true;
        if !no_hand_over {
            queue.extend(f.rx.hand_over(held));
        }
    }

    /// Every leader and follower hears the clock: heartbeats, timeouts;
    /// followers without a connection reconnect (the backoff is a tick).
    pub(super) fn tick_all(&mut self) {
        let now = self.now;
        for i in 0..NODES {
            if !self.nodes[i].up {
                continue;
            }
            self.try_connect(i);
            if let Some(l) = self.lead(i) {
                let outs = l.shipper.on_tick(now);
                self.ship_outputs(i, outs);
            } else if let Some(f) = self.follow(i)
                && f.conn.is_some()
            {
                let outs = f.rx.on_tick(now);
                self.rx_outputs(i, outs);
            }
        }
    }

    /// Whether node `i`'s log holds the batch `(epoch, first)` with `hash`
    /// in its synced part.
    pub(super) fn holds(&self, i: usize, w_first: crate::types::SeqNo, hash: u64) -> bool {
        let node = &self.nodes[i];
        find(&node.log[..node.synced], w_first)
            .is_some_and(|e| e.meta.first_seqno == w_first && e.hash == hash)
    }
}

/// Batches concatenated as logged, back into entries (chain unset).
fn split(bytes: &Bytes) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (meta, len, _) = decode_header(&bytes[at..]).expect("a suffix of whole batches");
        let end = at + BATCH_HEADER_LEN + len as usize;
        out.push(Entry::new(meta, bytes.slice(at..end), FNV0));
        at = end;
    }
    out
}
