//! `CrdtSignalState::merge` is a join on the exact bits (compared as
//! encoded bytes): commutative, associative, idempotent, in any order and
//! with duplicates, across landmark moves and in the subnormal range; a
//! longer prefix of a lineage supersedes a shorter one; the landmark path
//! (one jump, many steps, or a merge with a later state) does not change a
//! bit; replicas exchanging states in random orders converge and count
//! every signal exactly once.

use proptest::prelude::*;
use tidal::{ContributionKey, CrdtSignalState, Epoch, NodeId, Timestamp};

const HALF_LIFE_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug)]
enum Op {
    Add { key: u64, weight: f64, at: u64 },
    Advance { at: u64 },
}

/// Key 0 is the hot lineage; the others are origin keys.
fn key(k: u64) -> ContributionKey {
    if k == 0 {
        ContributionKey::HOT
    } else {
        ContributionKey::new(NodeId(k % 3), Epoch(1 + k / 3))
    }
}

/// Weights over the whole finite range, so sums saturate and masses
/// reach the subnormal range (where they are flushed) after landmark moves.
fn wide_weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e3f64..1e3,
        1 => Just(0.0),
        2 => (-1.0f64..1.0, -1074i32..1024).prop_map(|(m, e)| m * 2f64.powi(e)),
        1 => (1.0f64..2.0, -1022i32..-1000).prop_map(|(m, e)| m * 2f64.powi(e)),
        1 => Just(f64::MAX),
    ]
}

fn time() -> impl Strategy<Value = u64> {
    // Mostly within 40 half-lives; sometimes far ahead, so a signal moves
    // the landmark itself and old masses flush to 0.
    prop_oneof![9 => 0u64..40_000, 1 => 0u64..2_500_000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..6, wide_weight(), time()).prop_map(|(key, weight, at)| Op::Add { key, weight, at }),
        1 => time().prop_map(|at| Op::Advance { at }),
    ]
}

fn apply(s: &mut CrdtSignalState, op: &Op) {
    match *op {
        Op::Add { key: k, weight, at } => s.add(key(k), weight, Timestamp(at)).expect("finite"),
        Op::Advance { at } => s.advance_landmark(at),
    }
}

fn state_from(lhl: u32, ops: &[Op]) -> CrdtSignalState {
    let mut s = CrdtSignalState::new(HALF_LIFE_MS, lhl).expect("valid");
    ops.iter().for_each(|o| apply(&mut s, o));
    s
}

fn merged(a: &CrdtSignalState, b: &CrdtSignalState) -> CrdtSignalState {
    let mut m = a.clone();
    m.merge(b).expect("same parameters");
    m
}

fn bytes(s: &CrdtSignalState) -> Vec<u8> {
    s.to_bytes()
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1536, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        lhl in 1u32..4, a in ops(), b in ops(), c in ops(),
    ) {
        let (a, b, c) = (state_from(lhl, &a), state_from(lhl, &b), state_from(lhl, &c));
        prop_assert_eq!(bytes(&merged(&a, &b)), bytes(&merged(&b, &a)));
        prop_assert_eq!(
            bytes(&merged(&merged(&a, &b), &c)),
            bytes(&merged(&a, &merged(&b, &c)))
        );
        prop_assert_eq!(bytes(&merged(&a, &a)), bytes(&a));
        prop_assert_eq!(bytes(&merged(&merged(&a, &b), &b)), bytes(&merged(&a, &b)));
        let ab = merged(&a, &b);
        let ba = merged(&b, &a);
        for at in [0u64, 30_000, 3_000_000] {
            prop_assert_eq!(ab.score(Timestamp(at)).to_bits(), ba.score(Timestamp(at)).to_bits());
            prop_assert!(ab.score(Timestamp(at)).is_finite());
        }
        prop_assert_eq!(ab.count(), ab.counter().value());
    }

    #[test]
    fn any_order_with_duplicates_gives_the_same_bits(
        lhl in 1u32..4,
        (lineages, order) in prop::collection::vec(ops(), 1..6).prop_flat_map(|ls| {
            let n = ls.len();
            let order = (prop::collection::vec(0..n, 0..n), Just((0..n).collect::<Vec<_>>()))
                .prop_map(|(dups, all)| all.into_iter().chain(dups).collect::<Vec<_>>())
                .prop_shuffle();
            (Just(ls), order)
        })
    ) {
        let states: Vec<_> = lineages.iter().map(|o| state_from(lhl, o)).collect();
        let empty = CrdtSignalState::new(HALF_LIFE_MS, lhl).expect("valid");
        let reference = states.iter().fold(empty.clone(), |acc, s| merged(&acc, s));
        let shuffled = order.iter().fold(empty, |acc, &i| merged(&acc, &states[i]));
        prop_assert_eq!(bytes(&shuffled), bytes(&reference));
    }

    #[test]
    fn a_longer_prefix_supersedes_a_shorter_one(
        lhl in 1u32..4,
        ops in prop::collection::vec(op(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let k = cut.index(ops.len() + 1);
        let (short, long) = (state_from(lhl, &ops[..k]), state_from(lhl, &ops));
        prop_assert_eq!(bytes(&merged(&short, &long)), bytes(&long));
        prop_assert_eq!(bytes(&merged(&long, &short)), bytes(&long));
    }

    #[test]
    fn the_landmark_path_does_not_change_a_bit(
        lhl in 1u32..4,
        ops in ops(),
        steps in prop::collection::vec(0u64..200_000, 1..12),
        later in ops(),
    ) {
        let start = state_from(lhl, &ops);
        let mut times = steps.clone();
        times.sort_unstable();
        let target = *times.last().expect("non-empty") + start.landmark_ms();
        // One jump.
        let mut jump = start.clone();
        jump.advance_landmark(target);
        // Many small steps (some of them less than a period).
        let mut walk = start.clone();
        for t in &times {
            walk.advance_landmark(start.landmark_ms() + t);
        }
        prop_assert_eq!(bytes(&walk), bytes(&jump));
        // Missing every move and catching up through a merge, both ways.
        let mut ahead = CrdtSignalState::new(HALF_LIFE_MS, lhl).expect("valid");
        ahead.advance_landmark(target);
        prop_assert_eq!(bytes(&merged(&start, &ahead)), bytes(&jump));
        prop_assert_eq!(bytes(&merged(&ahead, &start)), bytes(&jump));
        // A state several periods ahead that extends this lineage absorbs
        // the stale copy, whichever side merges.
        let mut extended = jump.clone();
        later.iter().for_each(|o| apply(&mut extended, o));
        prop_assert_eq!(bytes(&merged(&start, &extended)), bytes(&extended));
        prop_assert_eq!(bytes(&merged(&extended, &start)), bytes(&extended));
    }
}

/// Tame weights and times, so the scores can be checked against the naive
/// sum of every signal.
#[derive(Clone, Copy, Debug)]
enum Event {
    Add { key: u64, weight: f64, at: u64 },
    Advance { replica: usize, at: u64 },
    Gossip { from: usize, to: usize },
}

fn event() -> impl Strategy<Value = Event> {
    let weight = prop_oneof![
        6 => (1e-3f64..1e3, any::<bool>()).prop_map(|(w, neg)| if neg { -w } else { w }),
        1 => Just(0.0),
    ];
    prop_oneof![
        6 => (0u64..9, weight, 0u64..40_000).prop_map(|(key, weight, at)| Event::Add { key, weight, at }),
        1 => (0usize..8, 0u64..40_000).prop_map(|(replica, at)| Event::Advance { replica, at }),
        3 => (0usize..8, 0usize..8).prop_map(|(from, to)| Event::Gossip { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn replicas_exchanging_in_random_orders_converge_and_count_each_signal_once(
        replicas in 2usize..=8,
        lhl in 1u32..4,
        events in prop::collection::vec(event(), 0..80),
        finish in Just((0usize..8).collect::<Vec<_>>()).prop_shuffle(),
        read_after_ms in 0u64..5_000,
    ) {
        let empty = CrdtSignalState::new(HALF_LIFE_MS, lhl).expect("valid");
        let mut states = vec![empty; replicas];
        let mut signals = Vec::new();
        for e in &events {
            match *e {
                // A key is one lineage: its signals are all taken by the
                // replica that owns it, in order.
                Event::Add { key: k, weight, at } => {
                    let owner = k as usize % replicas;
                    states[owner].add(key(k), weight, Timestamp(at)).expect("finite");
                    signals.push((k, weight, at));
                }
                Event::Advance { replica, at } => states[replica % replicas].advance_landmark(at),
                Event::Gossip { from, to } => {
                    let from_state = states[from % replicas].clone();
                    states[to % replicas].merge(&from_state).expect("same parameters");
                }
            }
        }
        let ring: Vec<usize> = finish.into_iter().filter(|&r| r < replicas).collect();
        for _ in 0..2 {
            for w in 0..ring.len() {
                let from_state = states[ring[w]].clone();
                states[ring[(w + 1) % ring.len()]].merge(&from_state).expect("same parameters");
            }
        }
        let reference = bytes(&states[0]);
        for s in &states {
            prop_assert_eq!(bytes(s), reference.clone());
        }
        let s = &states[0];
        // Exactly once: counts are exact, per key and in total.
        for k in 0..9u64 {
            let (pos, neg) = signals.iter().filter(|x| x.0 == k).fold((0u64, 0u64), |(p, n), x| {
                (p + u64::from(x.1 > 0.0), n + u64::from(x.1 < 0.0))
            });
            let touched = signals.iter().any(|x| x.0 == k);
            match s.contribution(key(k)) {
                Some(c) if touched || k == 0 => {
                    prop_assert_eq!((c.positive_count(), c.negative_count()), (pos, neg));
                }
                None if !touched => {}
                other => prop_assert!(false, "key {} touched {} but holds {:?}", k, touched, other),
            }
        }
        let count: i64 = signals.iter().map(|x| i64::from(x.1 > 0.0) - i64::from(x.1 < 0.0)).sum();
        prop_assert_eq!(s.count(), count);
        // And the masses: the score is the naive sum within the bound.
        let at = signals.iter().map(|x| x.2).max().unwrap_or(0).max(s.landmark_ms()) + read_after_ms;
        let (mut exact, mut mass) = (0.0f64, 0.0f64);
        for &(_, w, t) in &signals {
            let decay = (-((at as f64 - t as f64) / HALF_LIFE_MS as f64)).exp2();
            exact += w * decay;
            mass += w.abs() * decay;
        }
        let score = s.score(Timestamp(at));
        prop_assert!(
            (score - exact).abs() <= 1e-9 * mass,
            "score {} exact {} mass {}", score, exact, mass
        );
    }
}
