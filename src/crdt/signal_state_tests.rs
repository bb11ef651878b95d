use super::*;
use crate::types::{Epoch, NodeId};

fn key(node: u64, epoch: u64) -> ContributionKey {
    ContributionKey::new(NodeId(node), Epoch(epoch))
}

fn state() -> CrdtSignalState {
    CrdtSignalState::new(1_000, 2).expect("valid")
}

#[test]
fn configuration_is_checked() {
    for (h, l, field) in [
        (0, 2, "half_life_ms"),
        (1_000, 0, "landmark_half_lives"),
        (1_000, 513, "landmark_half_lives"),
        (u64::MAX, 2, "half_life_ms"),
    ] {
        match CrdtSignalState::new(h, l) {
            Err(TidalError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("({h}, {l}) gave {other:?}"),
        }
    }
    assert!(CrdtSignalState::new(u64::MAX, 1).is_ok());
}

#[test]
fn a_non_finite_weight_is_refused_and_changes_nothing() {
    let mut s = state();
    s.add(key(1, 1), 1.0, Timestamp(10)).expect("finite");
    let before = s.to_bytes();
    for w in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = s.add(key(1, 1), w, Timestamp(5_000_000)).expect_err("bad");
        assert!(
            matches!(
                err,
                TidalError::NonFinite {
                    field: "weight",
                    ..
                }
            ),
            "{err}"
        );
        let err = s.add_hot(w, Timestamp(10)).expect_err("bad");
        assert!(
            matches!(
                err,
                TidalError::NonFinite {
                    field: "weight",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(s.to_bytes(), before);
}

#[test]
fn merging_other_parameters_is_refused_and_changes_nothing() {
    let mut s = state();
    s.add_hot(1.0, Timestamp(0)).expect("finite");
    let before = s.to_bytes();
    let other = CrdtSignalState::new(1_000, 4).expect("valid");
    let err = s.merge(&other).expect_err("other period");
    assert!(matches!(
        err,
        TidalError::InvalidConfig {
            field: "landmark_half_lives",
            ..
        }
    ));
    let other = CrdtSignalState::new(999, 2).expect("valid");
    assert!(matches!(
        s.merge(&other),
        Err(TidalError::InvalidConfig {
            field: "half_life_ms",
            ..
        })
    ));
    assert_eq!(s.to_bytes(), before);
}

#[test]
fn signs_split_mass_and_count_and_zero_only_creates_the_entry() {
    let mut s = state();
    s.add(key(1, 1), 0.0, Timestamp(0)).expect("finite");
    s.add(key(1, 1), -0.0, Timestamp(0)).expect("finite");
    assert_eq!(s.contribution(key(1, 1)), Some(&Contribution::default()));
    s.add(key(1, 1), 3.0, Timestamp(1_000)).expect("finite");
    s.add(key(1, 1), -1.0, Timestamp(0)).expect("finite");
    s.add_hot(-2.0, Timestamp(2_000)).expect("finite");
    let c = s.contribution(key(1, 1)).expect("touched");
    assert_eq!((c.positive_mass(), c.negative_mass()), (6.0, 1.0));
    assert_eq!((c.net_mass(), c.net_count()), (5.0, 0));
    assert_eq!((s.hot_sum(), s.hot_count()), (-8.0, -1));
    assert_eq!(s.count(), -1);
    assert_eq!(s.counter().value(), -1);
    // (6 - 1 - 8) at the landmark, read two half-lives later.
    assert_eq!(s.score(Timestamp(2_000)), -0.75);
    assert_eq!(s.contribution(key(2, 1)), None);
}

#[test]
fn advance_moves_on_the_grid_and_divides_by_an_exact_power_of_two() {
    let mut s = state();
    s.add_hot(3.0, Timestamp(1_500)).expect("finite");
    let score = s.score(Timestamp(9_000));
    let mass = s.hot().positive_mass();
    assert!((mass - 3.0 * 2f64.powf(1.5)).abs() < 1e-14);
    s.advance_landmark(1_999); // less than one period (2 000 ms)
    assert_eq!(s.landmark_ms(), 0);
    s.advance_landmark(6_500); // three whole periods
    assert_eq!(s.landmark_ms(), 6_000);
    assert_eq!(s.hot().positive_mass(), mass / 64.0);
    assert_eq!(s.score(Timestamp(9_000)), score);
    s.advance_landmark(10); // backwards: nothing
    assert_eq!(s.landmark_ms(), 6_000);
}

#[test]
fn a_signal_far_ahead_moves_the_landmark_first() {
    let mut s = state();
    s.add_hot(1.0, Timestamp(0)).expect("finite");
    let far = CATCH_UP_HALF_LIVES * 1_000 + 3_000;
    s.add_hot(1.0, Timestamp(far)).expect("finite");
    assert_eq!(s.landmark_ms(), far - 1_000);
    // The first signal decayed below the range and was flushed; the second
    // is one half-life after the landmark.
    assert_eq!(s.hot().positive_mass(), 2.0);
    assert_eq!(s.hot_count(), 2);
}

#[test]
fn scale_down_is_exact_or_zero_and_path_independent() {
    let tiny = f64::MIN_POSITIVE;
    assert_eq!(scale_down(tiny * 4.0, 2), tiny);
    assert_eq!(scale_down(tiny * 3.0, 2), 0.0); // exact result 0.75 MIN_POSITIVE
    assert_eq!(scale_down(f64::MAX, 2046), 0.0);
    assert_eq!(
        scale_down(f64::MAX, 2045),
        f64::MAX / 2f64.powi(1023) / 2f64.powi(1022)
    );
    assert_eq!(scale_down(0.0, 5), 0.0);
    assert_eq!(scale_down(1.5, u64::MAX), 0.0);
    // Multiplying by 2^-1 then 2^-2 rounds twice in the subnormal range
    // and differs from 2^-3 at once; the flush makes every path agree.
    let x = f64::from_bits(tiny.to_bits() + 5); // just above MIN_POSITIVE
    assert_ne!((x * 0.5) * 0.25, x * 0.125);
    assert_eq!(scale_down(scale_down(x, 1), 2), scale_down(x, 3));
    for v in [x, 1.0, 3.7e-300, 1e300, f64::MAX] {
        for a in 0..1100 {
            assert_eq!(scale_down(scale_down(v, a), 7), scale_down(v, a + 7));
        }
    }
    assert_eq!(flush(f64::INFINITY), f64::MAX);
    assert_eq!(flush(f64::NAN).to_bits(), 0);
    assert_eq!(flush(-0.0).to_bits(), 0);
    assert_eq!(flush(tiny / 2.0), 0.0);
}

#[test]
fn masses_saturate_instead_of_reaching_infinity() {
    let mut s = state();
    s.add_hot(f64::MAX, Timestamp(1_000)).expect("finite");
    s.add_hot(f64::MAX, Timestamp(1_000)).expect("finite");
    s.add_hot(-f64::MAX, Timestamp(1_000)).expect("finite");
    assert_eq!(s.hot().positive_mass(), f64::MAX);
    assert_eq!(s.hot().negative_mass(), f64::MAX);
    assert!(s.score(Timestamp(0)).is_finite());
    let mut big = state();
    big.add_hot(f64::MAX, Timestamp(1_000)).expect("finite");
    assert_eq!(big.score(Timestamp(0)), f64::MAX);
}

#[test]
fn decode_refuses_what_encode_cannot_produce() {
    let mut s = state();
    s.add(key(1, 1), 1.0, Timestamp(0)).expect("finite");
    s.add(key(2, 1), -1.0, Timestamp(0)).expect("finite");
    let good = s.to_bytes();
    assert_eq!(CrdtSignalState::from_bytes(&good).expect("valid"), s);
    let reason = |bytes: &[u8]| match CrdtSignalState::from_bytes(bytes) {
        Err(TidalError::Corruption { reason, .. }) => reason,
        other => panic!("decoded {other:?}"),
    };
    let mut bad = good.clone();
    bad.push(0);
    assert!(reason(&bad).contains("trailing"));
    let mut bad = good.clone();
    bad[0] = 2;
    assert!(reason(&bad).contains("version"));
    let mut bad = good.clone();
    bad[13..21].copy_from_slice(&1u64.to_le_bytes()); // landmark 1 ms
    assert!(reason(&bad).contains("multiple"));
    let mut bad = good.clone();
    bad[21..29].copy_from_slice(&(-1.0f64).to_bits().to_le_bytes());
    assert!(reason(&bad).contains("positive mass"));
    let mut bad = good.clone();
    bad[21..29].copy_from_slice(&f64::from_bits(1).to_bits().to_le_bytes());
    assert!(reason(&bad).contains("positive mass"));
    // Swap the two keys' node ids: no longer increasing.
    let mut bad = good.clone();
    bad[65..73].copy_from_slice(&2u64.to_le_bytes());
    bad[113..121].copy_from_slice(&1u64.to_le_bytes());
    assert!(reason(&bad).contains("not after"));
    let mut bad = good.clone();
    bad[53..57].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(reason(&bad).contains("count"));
}
