//! Tests of the session store, kept beside it in their own file so the
//! store stays under the size limit.

use super::*;
use proptest::prelude::*;

fn ev(seq: u32, entity: u64, weight: f64) -> EventRecord {
    EventRecord {
        seq,
        entity: EntityId(entity),
        signal_type: 1,
        weight,
        at: Timestamp(100 + u64::from(seq)),
        merged: false,
    }
}

fn round_trip(s: &SessionStore) -> SessionStore {
    let mut buf = Vec::new();
    s.encode(&mut buf);
    let mut r = Reader::new(&buf);
    let d = SessionStore::decode(&mut r).expect("decodes");
    assert!(r.is_empty());
    let mut again = Vec::new();
    d.encode(&mut again);
    assert_eq!(again, buf, "re-encoding gives the same bytes");
    d
}

const S1: SessionId = SessionId(1);
const S2: SessionId = SessionId(2);
const U: UserId = UserId(10);

#[test]
fn events_are_numbered_and_read_in_ranges() {
    let mut s = SessionStore::new();
    assert_eq!(s.status(S1), SessionStatus::Unknown);
    s.record(S1, ev(1, 5, 1.0)); // unknown session: ignored
    s.open(S1, U, Timestamp(100));
    assert_eq!(s.status(S1), SessionStatus::Open { events: 0 });
    for i in 1..=4 {
        s.record(S1, ev(i, 100 + u64::from(i), 1.0));
    }
    s.record(S1, ev(9, 1, 1.0)); // out of sequence: ignored
    s.record(S1, ev(4, 1, 1.0)); // a repeat: ignored
    assert_eq!(s.status(S1), SessionStatus::Open { events: 4 });
    let seqs: Vec<u32> = s.events(S1, 2, 2).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(s.events(S1, 0, 10).len(), 4);
    assert!(s.events(S1, 5, 10).is_empty());
    assert!(s.events(S1, u32::MAX, 10).is_empty());
    assert!(s.events(S2, 1, 10).is_empty());
    let info = s.info(S1).expect("open");
    assert_eq!(info.user, U);
    assert_eq!(info.event_count, 4);
    assert_eq!(info.closed_at, None);
    s.close(S1, Timestamp(200), 1_000);
    assert_eq!(s.status(S1), SessionStatus::Closed);
    assert_eq!(s.info(S1).and_then(|i| i.closed_at), Some(Timestamp(200)));
    assert_eq!(s.user_of(S1), Some(U));
    assert_eq!(round_trip(&s), s);
}

#[test]
fn has_seen_names_the_entities_of_the_session_only() {
    let mut s = SessionStore::new();
    s.open(S1, U, Timestamp(1));
    s.open(S2, U, Timestamp(1));
    s.record(S1, ev(1, 7, 1.0));
    s.record(S1, ev(2, 8, -1.0));
    assert!(s.has_seen(S1, EntityId(7)) && s.has_seen(S1, EntityId(8)));
    assert!(!s.has_seen(S1, EntityId(9)));
    assert!(!s.has_seen(S2, EntityId(7)));
    assert!(round_trip(&s).has_seen(S1, EntityId(8)));
}

#[test]
fn hard_negatives_are_a_union_over_sessions_and_outlive_them() {
    let mut s = SessionStore::new();
    let other = UserId(11);
    s.open(S1, U, Timestamp(1));
    s.open(S2, U, Timestamp(1));
    s.open(SessionId(3), other, Timestamp(1));
    s.record(S1, ev(1, 30, -1.0));
    s.record(S1, ev(2, 40, 2.0));
    s.record(S2, ev(1, 20, -0.5));
    s.record(S2, ev(2, 30, -1.0));
    s.record(SessionId(3), ev(1, 50, -1.0));
    assert_eq!(s.hard_negatives(U), vec![EntityId(20), EntityId(30)]);
    assert!(s.is_hard_negative(U, EntityId(20)));
    assert!(!s.is_hard_negative(U, EntityId(40)));
    assert!(!s.is_hard_negative(U, EntityId(50)));
    assert_eq!(s.hard_negatives(other), vec![EntityId(50)]);
    assert_eq!(s.sessions_of(U), vec![S1, S2]);
    s.close(S1, Timestamp(5), 10);
    s.close(S2, Timestamp(5), 10);
    s.expire(1_000, 10);
    assert_eq!(s.sessions_of(U), vec![]);
    assert_eq!(s.hard_negatives(U), vec![EntityId(20), EntityId(30)]);
    assert_eq!(round_trip(&s), s);
}

#[test]
fn delete_user_removes_sessions_and_negatives() {
    let mut s = SessionStore::new();
    let other = UserId(11);
    s.open(S1, U, Timestamp(1));
    s.open(S2, U, Timestamp(1));
    s.open(SessionId(3), other, Timestamp(1));
    s.record(S1, ev(1, 30, -1.0));
    s.record(SessionId(3), ev(1, 30, -1.0));
    s.close(S2, Timestamp(2), 100);
    s.delete_user(U);
    assert_eq!(s.status(S1), SessionStatus::Unknown);
    assert_eq!(s.status(S2), SessionStatus::Unknown);
    assert!(s.hard_negatives(U).is_empty());
    assert!(s.sessions_of(U).is_empty());
    assert!(!s.has_seen(S1, EntityId(30)));
    assert_eq!(s.len(), 1);
    assert!(s.is_hard_negative(other, EntityId(30)));
    // The id may be opened again; the stale close of the deleted session
    // must not expire the new one early.
    s.open(S2, U, Timestamp(3));
    s.close(S2, Timestamp(4), 500);
    s.expire(200, 50);
    assert_eq!(s.status(S2), SessionStatus::Closed);
    s.expire(551, 50);
    assert_eq!(s.status(S2), SessionStatus::Unknown);
    assert_eq!(round_trip(&s), s);
}

#[test]
fn expiry_counts_from_the_close_log_time() {
    let mut s = SessionStore::new();
    s.open(S1, U, Timestamp(1));
    s.open(S2, U, Timestamp(1));
    s.open(SessionId(3), U, Timestamp(1));
    s.close(S1, Timestamp(999_999), 1_000); // the caller's time does not count
    s.close(S2, Timestamp(0), 1_200);
    // `expires_by` predicts exactly what `expire` at that log time drops,
    // so validation of a batch agrees with the batch's apply.
    assert!(!s.expires_by(S1, 1_500, 500));
    assert!(s.expires_by(S1, 1_501, 500));
    assert!(
        !s.expires_by(SessionId(3), u64::MAX, 0),
        "open sessions never expire"
    );
    assert!(!s.expires_by(SessionId(4), u64::MAX, 0), "unknown sessions");
    s.expire(1_500, 500);
    assert_eq!(s.len(), 3);
    s.expire(1_501, 500);
    assert_eq!(s.status(S1), SessionStatus::Unknown);
    assert_eq!(s.status(S2), SessionStatus::Closed);
    // Open sessions never expire.
    s.expire(u64::MAX, 0);
    assert_eq!(s.status(S2), SessionStatus::Unknown);
    assert_eq!(s.status(SessionId(3)), SessionStatus::Open { events: 0 });
    // Expiry after a snapshot round trip behaves the same.
    s.close(SessionId(3), Timestamp(0), 2_000);
    let mut d = round_trip(&s);
    d.expire(2_500, 500);
    assert_eq!(d.len(), 1);
    d.expire(2_501, 500);
    assert!(d.is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Open(u64, u64),
    Record(u64, u64, bool),
    Close(u64),
    DeleteUser(u64),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u64..6, 0u64..3).prop_map(|(s, u)| Op::Open(s, u)),
        3 => (0u64..6, 0u64..8, any::<bool>()).prop_map(|(s, e, n)| Op::Record(s, e, n)),
        1 => (0u64..6).prop_map(Op::Close),
        1 => (0u64..3).prop_map(Op::DeleteUser),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_histories_round_trip_and_are_deterministic(
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let run = || {
            let mut s = SessionStore::new();
            for (i, o) in ops.iter().enumerate() {
                let log_ms = 10 * i as u64;
                match *o {
                    Op::Open(id, u) => s.open(SessionId(id), UserId(u), Timestamp(log_ms)),
                    Op::Record(id, e, neg) => {
                        let seq = match s.status(SessionId(id)) {
                            SessionStatus::Open { events } => events + 1,
                            _ => continue,
                        };
                        let w = if neg { -1.0 } else { 1.0 };
                        s.record(SessionId(id), ev(seq, e, w));
                    }
                    Op::Close(id) => s.close(SessionId(id), Timestamp(0), log_ms),
                    Op::DeleteUser(u) => s.delete_user(UserId(u)),
                    Op::Expire => s.expire(log_ms, 25),
                }
            }
            s
        };
        let (a, b) = (run(), run());
        prop_assert_eq!(&a, &b);
        let d = round_trip(&a);
        prop_assert_eq!(&d, &a);
        for u in 0..3 {
            prop_assert_eq!(d.sessions_of(UserId(u)), a.sessions_of(UserId(u)));
            prop_assert_eq!(d.hard_negatives(UserId(u)), a.hard_negatives(UserId(u)));
        }
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = SessionStore::decode(&mut Reader::new(&bytes));
    }
}

#[test]
fn decode_of_cut_input_is_an_error() {
    let mut s = SessionStore::new();
    s.open(S1, U, Timestamp(1));
    s.record(S1, ev(1, 3, -1.0));
    s.close(S1, Timestamp(2), 5);
    let mut buf = Vec::new();
    s.encode(&mut buf);
    for cut in 0..buf.len() {
        assert!(SessionStore::decode(&mut Reader::new(&buf[..cut])).is_err());
    }
}

#[test]
fn merged_events_append_once_and_round_trip() {
    use crate::types::{Epoch, Position, SeqNo};
    let mut s = SessionStore::new();
    s.open(SessionId(1), UserId(7), Timestamp(1));
    s.record(SessionId(1), ev(1, 10, 1.0));
    s.close(SessionId(1), Timestamp(2), 5);
    let origin = |n| Position::new(Epoch(1), SeqNo(n));
    // Appended after the last event, closed or not, each origin once.
    s.merge_event(SessionId(1), origin(4), ev(9, 11, -1.0));
    s.merge_event(SessionId(1), origin(5), ev(9, 12, 1.0));
    s.merge_event(SessionId(1), origin(4), ev(9, 11, -1.0));
    let got: Vec<(u32, u64, bool)> = s
        .events(SessionId(1), 1, 10)
        .iter()
        .map(|e| (e.seq, e.entity.0, e.merged))
        .collect();
    assert_eq!(got, vec![(1, 10, false), (2, 11, true), (3, 12, true)]);
    assert!(s.has_merged(SessionId(1), origin(4)));
    assert!(!s.has_merged(SessionId(1), origin(6)));
    assert!(s.is_hard_negative(UserId(7), EntityId(11)));
    // Unknown sessions take nothing.
    s.merge_event(SessionId(2), origin(7), ev(1, 13, 1.0));
    assert!(s.events(SessionId(2), 1, 10).is_empty());
    let back = round_trip(&s);
    assert_eq!(back, s);
    assert!(back.has_merged(SessionId(1), origin(5)));
    assert!(back.events(SessionId(1), 3, 1)[0].merged);
}
