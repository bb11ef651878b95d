//! `LWWRegister::merge` keeps the register with the largest stamp, and on
//! equal stamps the largest value, whatever the order, duplicates and
//! grouping; tombstones (`None`) take part like any value.

use proptest::prelude::*;
use tidal::{Hlc, LWWRegister, MergeOutcome, NodeId, SeqNo, Stamp};

type Reg = LWWRegister<Option<u8>>;

fn stamp() -> impl Strategy<Value = Stamp> {
    // A small space so equal stamps (conflicts) and near ties are frequent.
    (0u64..4, 0u16..2, 0u64..3, 0u64..3)
        .prop_map(|(ms, c, node, seq)| Stamp::new(Hlc::new(ms, c), NodeId(node), SeqNo(seq)))
}

fn register() -> impl Strategy<Value = Reg> {
    (stamp(), prop::option::weighted(0.75, 0u8..4)).prop_map(|(s, v)| LWWRegister::new(v, s))
}

fn merged(a: &Reg, b: &Reg) -> Reg {
    let mut m = a.clone();
    m.merge(b);
    m
}

/// The expected winner, computed without `merge`: the largest stamp, then
/// the largest value (`None < Some`).
fn winner(regs: &[Reg]) -> Option<(Stamp, Option<u8>)> {
    regs.iter().map(|r| (r.stamp(), *r.value())).max()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_idempotent_and_picks_the_max(
        a in register(), b in register(), c in register(),
    ) {
        let ab = merged(&a, &b);
        prop_assert_eq!(&ab, &merged(&b, &a));
        prop_assert_eq!(merged(&ab, &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        let w = winner(&[a.clone(), b.clone()]).expect("two registers");
        prop_assert_eq!((ab.stamp(), *ab.value()), w);
    }

    #[test]
    fn merge_reports_what_it_did(a in register(), b in register()) {
        let mut m = a.clone();
        let outcome = m.merge(&b);
        let expected = if b.stamp() > a.stamp() {
            MergeOutcome::Updated
        } else if b.stamp() == a.stamp() && b.value() != a.value() {
            MergeOutcome::Conflict
        } else {
            MergeOutcome::Unchanged
        };
        prop_assert_eq!(outcome, expected);
        if outcome == MergeOutcome::Unchanged {
            prop_assert_eq!(&m, &a);
        }
        // set() is merge with a fresh register.
        let mut s = a.clone();
        prop_assert_eq!(s.set(*b.value(), b.stamp()), expected);
        prop_assert_eq!(s, m);
    }

    #[test]
    fn any_order_with_duplicates_ends_at_the_max_stamp_and_value(
        (regs, order) in prop::collection::vec(register(), 1..8).prop_flat_map(|regs| {
            let n = regs.len();
            let order = (prop::collection::vec(0..n, 0..n), Just((0..n).collect::<Vec<_>>()))
                .prop_map(|(dups, all)| all.into_iter().chain(dups).collect::<Vec<_>>())
                .prop_shuffle();
            (Just(regs), order)
        })
    ) {
        let first = regs[order[0]].clone();
        let m = order[1..].iter().fold(first, |acc, &i| merged(&acc, &regs[i]));
        prop_assert_eq!(Some((m.stamp(), *m.value())), winner(&regs));
    }

    #[test]
    fn replicas_exchanging_in_random_orders_agree_on_the_winner(
        replicas in 2usize..=8,
        writes in prop::collection::vec((0usize..8, stamp(), prop::option::weighted(0.75, 0u8..4)), 1..30),
        gossip in prop::collection::vec((0usize..8, 0usize..8), 0..40),
        finish in Just((0usize..8).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let initial = LWWRegister::tombstone(Stamp::default());
        let mut states = vec![initial.clone(); replicas];
        let mut all = vec![initial];
        for (r, s, v) in &writes {
            states[r % replicas].set(*v, *s);
            all.push(LWWRegister::new(*v, *s));
        }
        for &(from, to) in &gossip {
            let from_state = states[from % replicas].clone();
            states[to % replicas].merge(&from_state);
        }
        let ring: Vec<usize> = finish.into_iter().filter(|&r| r < replicas).collect();
        for _ in 0..2 {
            for w in 0..ring.len() {
                let from_state = states[ring[w]].clone();
                states[ring[(w + 1) % ring.len()]].merge(&from_state);
            }
        }
        let w = winner(&all).expect("non-empty");
        for s in &states {
            prop_assert_eq!((s.stamp(), *s.value()), w);
        }
    }

    #[test]
    fn a_delete_wins_over_older_sets_and_loses_to_newer_ones(
        set_stamp in stamp(), del_stamp in stamp(), v in 0u8..4,
    ) {
        let set = LWWRegister::new(Some(v), set_stamp);
        let del = Reg::tombstone(del_stamp);
        let m = merged(&set, &del);
        prop_assert_eq!(&m, &merged(&del, &set));
        // Equal stamps: the tie-break keeps the set (Some > None).
        prop_assert_eq!(m.is_deleted(), del_stamp > set_stamp);
        prop_assert_eq!(m.stamp(), set_stamp.max(del_stamp));
    }
}
