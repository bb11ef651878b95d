//! Scenario tests of the replication core, driven through the in-memory
//! harness in `sim.rs`. Deterministic: no threads, no clock, seeded faults.

use bytes::Bytes;

use super::message::{Message, RefuseReason};
use super::receiver::{Receiver, ReceiverConfig, ReceiverOutput, ReconnectReason};
use super::shipper::{FollowerId, Shipper, ShipperConfig, ShipperOutput};
use super::sim::*;
use crate::crdt::hlc::Hlc;
use crate::types::{Epoch, NodeId, Position, SeqNo, ShardId};
use crate::wal::format::{BatchMeta, encode_batch};
use crate::wal::record::Record;

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
    // A leader epoch above any seen is persisted before anything else.
    assert!(matches!(
        &out[..],
        [
            ReceiverOutput::PersistEpoch(Epoch(2)),
            ReceiverOutput::Send(Message::Ack { .. })
        ]
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

#[test]
fn a_lost_tail_batch_is_noticed_at_the_next_heartbeat() {
    let mut sim = Sim::new(log_of(&[(1, &[1, 2])]), 1, 1);
    let f = sim.add_follower(Log::new(), 0);
    sim.run();
    sim.leader_write(3);
    // The last batch is lost on the way: no later batch reveals the gap.
    sim.followers[f].inbox.clear();
    sim.run();
    assert_eq!(sim.followers[f].rx.last(), p(1, 3));
    sim.tick(HEARTBEAT_MS);
    assert_eq!(sim.followers[f].reconnects, vec![ReconnectReason::Gap]);
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.shipper.hwm(), SeqNo(6));
}
