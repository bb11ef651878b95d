//! `CrdtSignalState::score` stays within `1e-9 * sum |w_i| * 2^(-(t -
//! t_i)/h)` of the naive sum `sum w_i * 2^(-(t - t_i)/h)` of every signal,
//! computed here independently with `f64::exp2`, whatever the half-life,
//! landmark period, landmark moves, key split and merges.

use proptest::prelude::*;
use tidal::{ContributionKey, CrdtSignalState, Epoch, NodeId, Timestamp};

#[derive(Clone, Copy, Debug)]
struct Signal {
    key: u64,
    weight: f64,
    /// In half-lives (scaled by the case's half-life).
    at: f64,
}

fn signal() -> impl Strategy<Value = Signal> {
    let weight = prop_oneof![
        8 => (1e-3f64..1e3, any::<bool>()).prop_map(|(w, neg)| if neg { -w } else { w }),
        1 => Just(0.0),
    ];
    // Up to 1000 half-lives: past the catch-up distance (768), so some
    // signals move the landmark themselves.
    let at = prop_oneof![4 => 0.0f64..50.0, 1 => 0.0f64..1_000.0];
    (0u64..5, weight, at).prop_map(|(key, weight, at)| Signal { key, weight, at })
}

fn key(k: u64) -> ContributionKey {
    if k == 0 {
        ContributionKey::HOT
    } else {
        ContributionKey::new(NodeId(k), Epoch(k))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn score_is_within_the_bound_of_the_naive_sum(
        half_life_ms in 1u64..100_000,
        lhl in 1u32..=64,
        signals in prop::collection::vec(signal(), 1..60),
        advance_every in 1usize..20,
        split in 1usize..4,
        read_after in prop::collection::vec(0.0f64..30.0, 1..4),
    ) {
        // The signals are spread over `split` replicas (by key), each
        // advancing its landmark now and then, and merged at the end.
        let empty = CrdtSignalState::new(half_life_ms, lhl).expect("valid");
        let mut states = vec![empty; split];
        let mut times = Vec::new();
        for (i, s) in signals.iter().enumerate() {
            let at = (s.at * half_life_ms as f64) as u64;
            times.push(at);
            let r = s.key as usize % split;
            states[r].add(key(s.key), s.weight, Timestamp(at)).expect("finite");
            if i % advance_every == 0 {
                states[r].advance_landmark(at);
            }
        }
        let mut state = states[0].clone();
        for other in &states[1..] {
            state.merge(other).expect("same parameters");
        }
        let latest = times.iter().copied().max().unwrap_or(0).max(state.landmark_ms());
        for r in read_after {
            let at = latest + (r * half_life_ms as f64) as u64;
            let (mut exact, mut mass) = (0.0f64, 0.0f64);
            for (s, &t) in signals.iter().zip(&times) {
                let decay = (-((at - t) as f64 / half_life_ms as f64)).exp2();
                exact += s.weight * decay;
                mass += s.weight.abs() * decay;
            }
            let score = state.score(Timestamp(at));
            prop_assert!(
                (score - exact).abs() <= 1e-9 * mass,
                "at {} score {} exact {} mass {}", at, score, exact, mass
            );
        }
    }
}
