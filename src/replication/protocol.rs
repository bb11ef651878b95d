//! The rules both sides of the handshake share: where two histories
//! diverge, which epoch holds a SeqNo, and the clock that stamps messages.
//!
//! An epoch history is a list of `(epoch, first SeqNo)` pairs, ascending in
//! both, rebuilt from the log's `EpochStart` records (`state::EpochEntry`).
//! Epoch `history[i].0` holds the SeqNos from `history[i].1` up to the
//! SeqNo before `history[i + 1].1`, or up to the end of the log for the
//! last entry.
//!
//! # The handshake (Raft's log matching, Kafka's KIP-279)
//!
//! The follower says hello with its last `(fe, fs)`. The leader finds `E`,
//! the largest epoch of its history at or below `fe`, and `end`, the last
//! SeqNo of `E` in its log (the SeqNo before the next epoch's start, or the
//! leader's last durable SeqNo if `E` is its newest epoch). With
//! `p = min(end, fs)`:
//!
//! - `E == fe` and `p == fs`: the histories agree ([`leader_divergence`]
//!   returns `None`), streaming starts at `fs + 1`.
//! - otherwise the answer is `Some((E, p))`. The follower cuts its log to
//!   end at `s - 1` where `s` is the start of its first epoch above `E`
//!   (an epoch the leader never led holds nothing the leader has), and at
//!   `p` too if its own history holds `E` ([`follower_cut`]; without `E`,
//!   `p` may fall inside one of its batches of an older epoch). It hands
//!   the cut records back and says hello again.
//!
//! Each round strictly shortens the follower's log, so the rounds end; the
//! shipper still caps them ([`MAX_HANDSHAKE_ROUNDS`]) against a peer that
//! does not cut.

use bytes::Bytes;

use crate::crdt::hlc::Hlc;
use crate::types::{Epoch, Position, SeqNo};
use crate::wal::format::{BATCH_HEADER_LEN, decode_header};

/// An epoch history: `(epoch, first SeqNo)` pairs, ascending in both.
pub type EpochHistory = Vec<(Epoch, SeqNo)>;

/// Handshake rounds one connection may take before the leader drops it. An
/// honest follower needs at most one round per epoch it holds plus one.
pub const MAX_HANDSHAKE_ROUNDS: u32 = 256;

/// The epoch that holds `seqno` in `history`, `None` for SeqNo 0 or before
/// the first entry.
pub fn epoch_at(history: &[(Epoch, SeqNo)], seqno: SeqNo) -> Option<Epoch> {
    if seqno.0 == 0 {
        return None;
    }
    history
        .iter()
        .rev()
        .find(|(_, start)| *start <= seqno)
        .map(|(epoch, _)| *epoch)
}

/// The leader's side of the handshake: `None` if the follower's log, ending
/// at `follower_last`, agrees with the leader's history, else the point the
/// follower must cut to (see the module docs).
///
/// `leader_last` is the leader's last durable SeqNo: a follower never keeps
/// a record past it, since the leader ships only what it has made durable.
pub fn leader_divergence(
    history: &[(Epoch, SeqNo)],
    leader_last: SeqNo,
    follower_last: Position,
) -> Option<Position> {
    if follower_last.seqno.0 == 0 {
        // An empty log agrees with every history.
        return None;
    }
    let Some(i) = history
        .iter()
        .rposition(|(epoch, _)| *epoch <= follower_last.epoch)
    else {
        // The leader never led an epoch this old: nothing of it is shared.
        return Some(Position::default());
    };
    let (epoch, _) = history[i];
    let end = match history.get(i + 1) {
        Some((_, next_start)) => SeqNo(next_start.0.saturating_sub(1)),
        None => leader_last,
    };
    let point = end.min(follower_last.seqno);
    if epoch == follower_last.epoch && point == follower_last.seqno {
        None
    } else {
        Some(Position::new(epoch, point))
    }
}

/// The follower's side: the SeqNo its log must end at after the leader
/// answered `point`, given its own `history` and last SeqNo `last`.
///
/// The follower always cuts every epoch above `point.epoch` (the leader
/// never led them). It cuts at `point.seqno` only if its own history holds
/// `point.epoch`: then both logs hold that epoch's batches as its leader
/// logged them, and the leader's end of it is a batch boundary here too.
/// Otherwise the SeqNo falls among records of an older epoch this node
/// kept past the leader's end of it, possibly inside one of its batches
/// (which the log cannot cut); cutting only the newer epochs still
/// shortens the log, and the next round names a point in an epoch both
/// hold.
pub fn follower_cut(history: &[(Epoch, SeqNo)], last: SeqNo, point: Position) -> SeqNo {
    let mut cut = last;
    if history.iter().any(|(epoch, _)| *epoch == point.epoch) {
        cut = cut.min(point.seqno);
    }
    if let Some((_, start)) = history.iter().find(|(epoch, _)| *epoch > point.epoch) {
        cut = cut.min(SeqNo(start.0.saturating_sub(1)));
    }
    cut
}

/// Stamps outgoing messages with a strictly increasing HLC read from the
/// `now_ms` the caller feeds in, and remembers the last remote reading.
///
/// Remote readings are not folded into the local stamp: the db's `HlcClock`
/// (with its drift check) observes them through the I/O layer, so a skewed
/// peer cannot drag this machine's stamps forward. Replication never halts
/// on skew.
#[derive(Clone, Debug, Default)]
pub(crate) struct MessageClock {
    last: Hlc,
    remote: Option<Hlc>,
}

impl MessageClock {
    /// A clock that stamps above `floor` (the db's last HLC).
    pub(crate) fn new(floor: Hlc) -> MessageClock {
        MessageClock {
            last: floor,
            remote: None,
        }
    }

    /// The next stamp.
    pub(crate) fn stamp(&mut self, now_ms: u64) -> Hlc {
        let physical = Hlc::new(now_ms, 0);
        self.last = if physical > self.last {
            physical
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Records a remote reading.
    pub(crate) fn observe(&mut self, remote: Hlc) {
        self.remote = Some(remote);
    }

    /// The last remote reading seen.
    #[cfg(test)]
    pub(crate) fn remote(&self) -> Option<Hlc> {
        self.remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(u64, u64)]) -> EpochHistory {
        pairs.iter().map(|&(e, s)| (Epoch(e), SeqNo(s))).collect()
    }

    fn p(e: u64, s: u64) -> Position {
        Position::new(Epoch(e), SeqNo(s))
    }

    #[test]
    fn epoch_at_finds_the_holding_epoch() {
        let hist = h(&[(1, 1), (3, 10)]);
        assert_eq!(epoch_at(&hist, SeqNo(0)), None);
        assert_eq!(epoch_at(&hist, SeqNo(9)), Some(Epoch(1)));
        assert_eq!(epoch_at(&hist, SeqNo(10)), Some(Epoch(3)));
        assert_eq!(epoch_at(&hist, SeqNo(99)), Some(Epoch(3)));
        assert_eq!(epoch_at(&h(&[(2, 5)]), SeqNo(4)), None);
    }

    #[test]
    fn same_epoch_within_the_leader_log_agrees() {
        let hist = h(&[(1, 1), (2, 8)]);
        assert_eq!(leader_divergence(&hist, SeqNo(20), p(2, 15)), None);
        assert_eq!(leader_divergence(&hist, SeqNo(20), p(1, 7)), None);
        assert_eq!(leader_divergence(&hist, SeqNo(20), p(0, 0)), None);
    }

    #[test]
    fn a_longer_old_epoch_is_cut_at_its_end_in_the_leader() {
        let hist = h(&[(1, 1), (2, 8)]);
        assert_eq!(leader_divergence(&hist, SeqNo(20), p(1, 12)), Some(p(1, 7)));
        // Past the leader's durable end in its own epoch.
        assert_eq!(
            leader_divergence(&hist, SeqNo(20), p(2, 25)),
            Some(p(2, 20))
        );
    }

    #[test]
    fn kip_279_an_epoch_the_leader_never_led_is_cut_by_the_follower() {
        // Follower logged epoch 3 (never led by this leader) from 10 to 15.
        let leader = h(&[(1, 1), (2, 8), (4, 20)]);
        let follower = h(&[(1, 1), (3, 10)]);
        let answer = leader_divergence(&leader, SeqNo(25), p(3, 15));
        assert_eq!(answer, Some(p(2, 15)));
        let cut = follower_cut(&follower, SeqNo(15), p(2, 15));
        assert_eq!(cut, SeqNo(9));
        // Second round from (1, 9): epoch 1 ends at 7 in the leader.
        let answer = leader_divergence(&leader, SeqNo(25), p(1, 9));
        assert_eq!(answer, Some(p(1, 7)));
        assert_eq!(follower_cut(&follower[..1], SeqNo(9), p(1, 7)), SeqNo(7));
        assert_eq!(leader_divergence(&leader, SeqNo(25), p(1, 7)), None);
    }

    #[test]
    fn a_cut_never_lands_among_records_of_an_epoch_the_follower_kept_longer() {
        // Found by the cluster simulator (seed 31): the follower kept
        // epoch 6 up to 124 and then led epoch 8; the leader ended epoch 6
        // at 80 and led 7 (81..102) and 9. The answer (7, 102) names a
        // SeqNo inside the follower's own epoch-6 batches: cutting there
        // is refused by the log, and the handshake repeated it forever.
        let leader = h(&[(6, 37), (7, 81), (9, 103)]);
        let follower = h(&[(6, 37), (8, 125)]);
        let answer = leader_divergence(&leader, SeqNo(103), p(8, 129));
        assert_eq!(answer, Some(p(7, 102)));
        // Only epoch 8 goes: its start is a batch boundary.
        assert_eq!(follower_cut(&follower, SeqNo(129), p(7, 102)), SeqNo(124));
        // The next round names a point in epoch 6, which both hold.
        let answer = leader_divergence(&leader, SeqNo(103), p(6, 124));
        assert_eq!(answer, Some(p(6, 80)));
        assert_eq!(
            follower_cut(&follower[..1], SeqNo(124), p(6, 80)),
            SeqNo(80)
        );
        assert_eq!(leader_divergence(&leader, SeqNo(103), p(6, 80)), None);
    }

    #[test]
    fn an_epoch_older_than_the_whole_leader_history_is_cut_entirely() {
        let leader = h(&[(5, 1)]);
        assert_eq!(leader_divergence(&leader, SeqNo(9), p(2, 4)), Some(p(0, 0)));
    }

    #[test]
    fn stamps_strictly_increase_with_a_stuck_clock() {
        let mut c = MessageClock::new(Hlc::new(5, 0));
        let a = c.stamp(5);
        let b = c.stamp(5);
        let d = c.stamp(4);
        assert!(Hlc::new(5, 0) < a && a < b && b < d);
        assert!(c.stamp(100) == Hlc::new(100, 0));
    }
}

/// A diverged suffix travels in messages of at most about this many bytes
/// (whole batches each; a larger batch goes alone), so a long suffix never
/// meets the transport's frame cap.
pub const DIVERGED_CHUNK_BYTES: usize = 1 << 20;

/// Splits a suffix of whole batches into runs of at most
/// [`DIVERGED_CHUNK_BYTES`] (a larger batch alone), each named by its first
/// batch's epoch and SeqNo. Bytes that do not parse as batches (they came
/// from this node's own log, so they should) travel as one piece.
pub(crate) fn split_suffix(
    epoch: Epoch,
    first: SeqNo,
    batches: Bytes,
) -> Vec<(Epoch, SeqNo, Bytes)> {
    let mut pieces = Vec::new();
    let mut start = 0usize;
    let mut at = 0usize;
    let mut head = (epoch, first);
    while at < batches.len() {
        let Ok((meta, payload_len, _)) = decode_header(&batches[at..]) else {
            return vec![(epoch, first, batches)];
        };
        let len = BATCH_HEADER_LEN + payload_len as usize;
        if at + len > batches.len() {
            return vec![(epoch, first, batches)];
        }
        if at > start && at + len - start > DIVERGED_CHUNK_BYTES {
            pieces.push((head.0, head.1, batches.slice(start..at)));
            start = at;
        }
        if at == start {
            head = (meta.epoch, meta.first_seqno);
        }
        at += len;
    }
    if at > start || pieces.is_empty() {
        pieces.push((head.0, head.1, batches.slice(start..at)));
    }
    pieces
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::types::{EntityId, ShardId, Timestamp};
    use crate::wal::format::{BatchMeta, encode_batch};
    use crate::wal::record::Record;

    #[test]
    fn a_suffix_splits_at_batch_boundaries_under_the_chunk_size() {
        // Batches of about 300 KiB: three fit in a chunk, the fourth starts
        // the next one; each piece is named by its first batch.
        const N: u32 = 11_000;
        let records: Vec<Record> = (0..N)
            .map(|i| Record::Signal {
                signal_type: 0,
                entity: EntityId(u64::from(i)),
                weight: 1.0,
                at: Timestamp(1),
            })
            .collect();
        let mut all = Vec::new();
        let mut heads = Vec::new();
        for i in 0..7u64 {
            let meta = BatchMeta {
                shard: ShardId(0),
                first_seqno: SeqNo(1 + i * u64::from(N)),
                epoch: Epoch(1 + i / 4),
                hlc: Hlc(i),
                record_count: N,
            };
            heads.push((meta.epoch, meta.first_seqno));
            encode_batch(&meta, &records, &mut all);
        }
        let all = Bytes::from(all);
        let pieces = split_suffix(Epoch(1), SeqNo(1), all.clone());
        let names: Vec<_> = pieces.iter().map(|(e, s, _)| (*e, *s)).collect();
        assert_eq!(names, vec![heads[0], heads[3], heads[6]]);
        assert!(
            pieces
                .iter()
                .all(|(_, _, b)| b.len() <= DIVERGED_CHUNK_BYTES)
        );
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, _, b)| b.to_vec()).collect();
        assert_eq!(joined, all.to_vec());
        // Bytes that are not batches travel as they are.
        let junk = Bytes::from_static(b"not a batch");
        assert_eq!(
            split_suffix(Epoch(1), SeqNo(1), junk.clone()),
            vec![(Epoch(1), SeqNo(1), junk)]
        );
    }
}
