//! `PNCounter::merge` is a join: commutative, associative, idempotent, in
//! any order and with duplicates; a longer prefix of a lineage supersedes a
//! shorter one; replicas exchanging states in random orders converge to the
//! counter that saw every operation.

use proptest::prelude::*;
use tidal::{ContributionKey, Epoch, NodeId, PNCounter};

#[derive(Clone, Copy, Debug)]
struct Op {
    node: u64,
    epoch: u64,
    up: bool,
    n: u64,
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly small counts, sometimes huge ones so saturation is exercised.
    let n = prop_oneof![9 => 0u64..1_000, 1 => (u64::MAX - 1_000)..=u64::MAX];
    (0u64..4, 1u64..3, any::<bool>(), n).prop_map(|(node, epoch, up, n)| Op { node, epoch, up, n })
}

fn apply(c: &mut PNCounter, o: &Op) {
    let key = ContributionKey::new(NodeId(o.node), Epoch(o.epoch));
    if o.up {
        c.increment(key, o.n);
    } else {
        c.decrement(key, o.n);
    }
}

fn counter(ops: &[Op]) -> PNCounter {
    let mut c = PNCounter::new();
    ops.iter().for_each(|o| apply(&mut c, o));
    c
}

fn merged(a: &PNCounter, b: &PNCounter) -> PNCounter {
    let mut m = a.clone();
    m.merge(b);
    m
}

fn counters() -> impl Strategy<Value = PNCounter> {
    prop::collection::vec(op(), 0..12).prop_map(|ops| counter(&ops))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        a in counters(), b in counters(), c in counters(),
    ) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        // The value of a join never depends on the order either.
        prop_assert_eq!(merged(&a, &b).value(), merged(&b, &a).value());
    }

    #[test]
    fn any_order_with_duplicates_gives_the_same_counter(
        (states, order) in prop::collection::vec(counters(), 1..6).prop_flat_map(|states| {
            let n = states.len();
            // Every state at least once, some twice, in a random order.
            let order = (prop::collection::vec(0..n, 0..n), Just((0..n).collect::<Vec<_>>()))
                .prop_map(|(dups, all)| all.into_iter().chain(dups).collect::<Vec<_>>())
                .prop_shuffle();
            (Just(states), order)
        })
    ) {
        let reference = states.iter().fold(PNCounter::new(), |acc, s| merged(&acc, s));
        let shuffled = order.iter().fold(PNCounter::new(), |acc, &i| merged(&acc, &states[i]));
        prop_assert_eq!(shuffled, reference);
    }

    #[test]
    fn a_longer_prefix_supersedes_a_shorter_one(
        ops in prop::collection::vec(op(), 0..30), cut in any::<prop::sample::Index>(),
    ) {
        let k = cut.index(ops.len() + 1);
        let (short, long) = (counter(&ops[..k]), counter(&ops));
        prop_assert_eq!(merged(&short, &long), long.clone());
        prop_assert_eq!(merged(&long, &short), long);
    }

    #[test]
    fn replicas_exchanging_in_random_orders_converge_to_the_model(
        replicas in 2usize..=8,
        ops in prop::collection::vec(op(), 0..60),
        gossip in prop::collection::vec((0usize..8, 0usize..8), 0..40),
        finish in Just((0usize..8).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        // A key is one lineage: all its operations happen on one replica
        // (the replica owning its node id), in order.
        let mut states = vec![PNCounter::new(); replicas];
        for o in &ops {
            apply(&mut states[o.node as usize % replicas], o);
        }
        for &(from, to) in &gossip {
            let from_state = states[from % replicas].clone();
            states[to % replicas].merge(&from_state);
        }
        // Two passes of a random ring spread every state to every replica.
        let ring: Vec<usize> = finish.into_iter().filter(|&r| r < replicas).collect();
        for _ in 0..2 {
            for w in 0..ring.len() {
                let from_state = states[ring[w]].clone();
                states[ring[(w + 1) % ring.len()]].merge(&from_state);
            }
        }
        let model = counter(&ops);
        for s in &states {
            prop_assert_eq!(s, &model);
            prop_assert_eq!(s.value(), model.value());
        }
    }
}
