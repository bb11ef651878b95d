//! `CrdtSignalState` encodes canonically: decoding gives the state back,
//! equal states have equal bytes, and arbitrary or damaged bytes are an
//! error (never a panic); whatever does decode re-encodes to the same bytes.

use proptest::prelude::*;
use tidal::{ContributionKey, CrdtSignalState, Epoch, NodeId, TidalError, Timestamp};

fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -1e3f64..1e3,
        1 => Just(0.0),
        1 => (-1.0f64..1.0, -1074i32..1024).prop_map(|(m, e)| m * 2f64.powi(e)),
    ]
}

fn state() -> impl Strategy<Value = CrdtSignalState> {
    let op = (0u64..6, weight(), 0u64..3_000_000, any::<bool>());
    (1u64..5_000, 1u32..=512, prop::collection::vec(op, 0..20)).prop_map(|(h, lhl, ops)| {
        let mut s = CrdtSignalState::new(h, lhl).expect("valid");
        for (k, w, at, advance) in ops {
            let key = if k == 0 {
                ContributionKey::HOT
            } else {
                ContributionKey::new(NodeId(k), Epoch(k % 3 + 1))
            };
            if advance {
                s.advance_landmark(at);
            }
            s.add(key, w, Timestamp(at)).expect("finite");
        }
        s
    })
}

fn decodes_canonically(bytes: &[u8]) -> Result<(), TestCaseError> {
    match CrdtSignalState::from_bytes(bytes) {
        Ok(s) => prop_assert_eq!(s.to_bytes(), bytes.to_vec()),
        Err(TidalError::Corruption { offset, .. }) => prop_assert!(offset <= bytes.len() as u64),
        Err(other) => prop_assert!(false, "unexpected error {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_gives_the_same_state_and_bytes(s in state()) {
        let bytes = s.to_bytes();
        let back = CrdtSignalState::from_bytes(&bytes).expect("own encoding");
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!(back.score(Timestamp(1_000)).to_bits(), s.score(Timestamp(1_000)).to_bits());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        decodes_canonically(&bytes)?;
    }

    #[test]
    fn damaged_encodings_never_panic(
        s in state(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = s.to_bytes();
        let mut bad = good.clone();
        for (i, x) in flips {
            let i = i.index(bad.len());
            bad[i] ^= x.max(1);
        }
        decodes_canonically(&bad)?;
        decodes_canonically(&good[..cut.index(good.len())])?;
    }
}
