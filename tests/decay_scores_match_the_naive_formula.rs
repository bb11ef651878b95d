//! Decay scores read through the database equal the naive formula
//! `sum w_i * 2^(-(t - t_i)/h)` within the documented bound
//! `1e-9 * sum |w_i| * 2^(-(t - t_i)/h)`, and the trending order (retrieve
//! top-k) is the order of the naive scores, ties by id: for signals of two
//! types with out-of-order timestamps over many landmark moves (the clock
//! is advanced so batch HLCs cross the landmark grid), for reads before and
//! after each landmark, and across restarts and checkpoints. A second case
//! spreads timestamps over 10,000 half-lives: nothing overflows and every
//! score stays within the bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tidal::{
    Config, EntityId, ManualClock, PhysicalClock, Retrieve, SimStorage, TidalDb, Timestamp,
    WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
/// (name, half-life ms). Short half-lives so landmarks move often.
const TYPES: [(&str, u64); 2] = [("view", 1_000), ("like", 3_000)];
const LANDMARK_HALF_LIVES: u64 = 2;
const IDS: u64 = 12;

fn open(storage: &Arc<SimStorage>, clock: &Arc<ManualClock>) -> TidalDb {
    let mut b = Config::builder("/db");
    for (name, h) in TYPES {
        b = b.signal_type(name, Duration::from_millis(h));
    }
    let config = b
        .dimension(2)
        .landmark_half_lives(LANDMARK_HALF_LIVES as u32)
        .segment_bytes(16 * 1024)
        .storage(storage.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    TidalDb::open(config).unwrap()
}

/// The landmark of type `t` after a batch at log time `log_ms`: landmarks
/// start at 0 and move in whole periods of `landmark_half_lives` half-lives.
fn landmark(t: usize, log_ms: u64) -> u64 {
    let period = TYPES[t].1 * LANDMARK_HALF_LIVES;
    log_ms / period * period
}

/// Every signal, per type and entity: (weight, timestamp).
#[derive(Clone, Debug, Default)]
struct Model {
    signals: [BTreeMap<u64, Vec<(f64, u64)>>; 2],
}

impl Model {
    /// The naive score and the absolute decayed mass `sum |w_i| * decay_i`.
    fn naive(&self, t: usize, id: u64, at: u64) -> (f64, f64) {
        let h = TYPES[t].1 as f64;
        let mut score = 0.0;
        let mut mass = 0.0;
        for &(w, ti) in self.signals[t].get(&id).map_or(&[][..], |v| v) {
            let d = ((i128::from(ti) - i128::from(at)) as f64 / h).exp2();
            score += w * d;
            mass += w.abs() * d;
        }
        (score, mass)
    }

    fn count(&self, t: usize, id: u64) -> i64 {
        self.signals[t].get(&id).map_or(0, |v| {
            v.iter()
                .map(|&(w, _)| i64::from(w > 0.0) - i64::from(w < 0.0))
                .sum()
        })
    }
}

/// Every score and count at `at`, and the trending order of both types.
fn check_at(db: &TidalDb, m: &Model, at: u64, what: &str) -> Result<(), TestCaseError> {
    for (t, (name, _)) in TYPES.iter().enumerate() {
        let mut naive: Vec<(u64, f64, f64)> = Vec::new();
        for id in 0..=IDS {
            prop_assert_eq!(db.read_count(EntityId(id), name).unwrap(), m.count(t, id));
            let got = db
                .read_decay_score(EntityId(id), name, Timestamp(at))
                .unwrap();
            prop_assert!(
                got.is_finite(),
                "{}: score of {} {} is {}",
                what,
                id,
                name,
                got
            );
            let (want, mass) = m.naive(t, id, at);
            if !want.is_finite() || !mass.is_finite() {
                continue; // the exact value is not an f64 either
            }
            let bound = 1e-9 * mass + 1e-12;
            prop_assert!(
                (got - want).abs() <= bound,
                "{}: score of {} {} at {}: got {}, naive {} (bound {}), signals {:?}",
                what,
                id,
                name,
                at,
                got,
                want,
                bound,
                m.signals[t].get(&id)
            );
            if m.signals[t].contains_key(&id) {
                naive.push((id, want, bound));
            }
        }
        naive.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for k in [3, naive.len() + 1] {
            let got = db
                .retrieve(&Retrieve::top(k, *name, Timestamp(at)))
                .unwrap();
            prop_assert_eq!(
                got.len(),
                k.min(naive.len()),
                "{}: top {} of {}",
                what,
                k,
                name
            );
            for (i, g) in got.iter().enumerate() {
                let (wid, wscore, wbound) = naive[i];
                if g.id.0 == wid {
                    continue;
                }
                // Another id at this rank: only a near-tie may swap.
                let Some(&(_, score, bound)) = naive.iter().find(|n| n.0 == g.id.0) else {
                    return Err(TestCaseError::fail(format!(
                        "{what}: {} in the top of {name} has no signal",
                        g.id
                    )));
                };
                prop_assert!(
                    (score - wscore).abs() <= bound + wbound,
                    "{}: trending {} at {}: rank {} is {} (naive {}), naive order has {} ({}); got {:?}, naive {:?}",
                    what,
                    name,
                    at,
                    i,
                    g.id,
                    score,
                    wid,
                    wscore,
                    got,
                    naive
                );
            }
        }
    }
    Ok(())
}

/// Reads around both landmarks of the last batch at `log_ms` and around
/// the clock.
fn check_around(db: &TidalDb, m: &Model, log_ms: u64, what: &str) -> Result<(), TestCaseError> {
    let mut times = vec![log_ms, log_ms + 1_500, log_ms + 30_000, log_ms - 25_000];
    for (t, &(_, h)) in TYPES.iter().enumerate() {
        let l = landmark(t, log_ms);
        times.extend([l - 2 * h, l - 1, l, l + 1, l + h / 2]);
    }
    for at in times {
        check_at(db, m, at, what)?;
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Action {
    None,
    Restart,
    Checkpoint,
}

#[derive(Clone, Debug)]
struct Round {
    advance_ms: u64,
    /// (type, entity, weight, timestamp offset from the clock)
    signals: Vec<(usize, u64, f64, i64)>,
    batched: bool,
    action: Action,
}

fn round() -> impl Strategy<Value = Round> {
    (
        // At least one period of the longer type per round, so with 4 or
        // more rounds each type's landmark moves at least 3 times.
        6_000u64..9_000,
        prop::collection::vec(
            (
                0usize..2,
                0..=IDS,
                prop_oneof![
                    6 => (-6i32..=8).prop_map(|x| f64::from(x) * 0.5),
                    1 => -1e6f64..1e6,
                ],
                prop_oneof![4 => -20_000i64..=0, 1 => -60_000i64..=60_000],
            ),
            1..12,
        ),
        any::<bool>(),
        prop_oneof![4 => Just(Action::None), 1 => Just(Action::Restart), 1 => Just(Action::Checkpoint)],
    )
        .prop_map(|(advance_ms, signals, batched, action)| Round {
            advance_ms,
            signals,
            batched,
            action,
        })
}

fn run(rounds: Vec<Round>) -> Result<(), TestCaseError> {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let mut db = open(&storage, &clock);
    let mut m = Model::default();
    // The batch log times, to count the landmark moves the rounds caused.
    let mut log_times = vec![NOW];
    for (r, round) in rounds.iter().enumerate() {
        clock.advance_ms(round.advance_ms);
        let now = clock.now_ms();
        let at = |off: i64| now.saturating_add_signed(off);
        if round.batched {
            let b = round
                .signals
                .iter()
                .fold(WriteBatch::new(), |b, &(t, id, w, off)| {
                    b.signal(TYPES[t].0, EntityId(id), w, Timestamp(at(off)))
                });
            db.write(b).unwrap();
        } else {
            for &(t, id, w, off) in &round.signals {
                db.signal(TYPES[t].0, EntityId(id), w, Timestamp(at(off)))
                    .unwrap();
            }
        }
        for &(t, id, w, off) in &round.signals {
            m.signals[t].entry(id).or_default().push((w, at(off)));
        }
        log_times.push(now);
        check_around(&db, &m, now, &format!("round {r}"))?;
        match round.action {
            Action::None => {}
            Action::Restart => {
                db.close().unwrap();
                db = open(&storage, &clock);
                check_around(&db, &m, now, &format!("round {r} after a restart"))?;
            }
            Action::Checkpoint => {
                db.checkpoint().unwrap();
                check_around(&db, &m, now, &format!("round {r} after a checkpoint"))?;
                db.close().unwrap();
                db = open(&storage, &clock);
                check_around(&db, &m, now, &format!("round {r} from the checkpoint"))?;
            }
        }
    }
    for (t, (name, _)) in TYPES.iter().enumerate() {
        let mut grid: Vec<u64> = log_times.iter().map(|&ms| landmark(t, ms)).collect();
        grid.dedup();
        prop_assert!(
            grid.len() > 3,
            "type {} crossed only {} landmark moves",
            name,
            grid.len() - 1
        );
    }
    db.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn scores_and_trending_match_the_naive_formula_across_landmark_moves(
        rounds in prop::collection::vec(round(), 4..10)
    ) {
        run(rounds)?;
    }
}

/// Timestamps spread over 10,000 half-lives of the shorter type (and 3,333
/// of the longer): signals at the clock, far in the past and up to the
/// allowed skew ahead, with clock jumps of hundreds of half-lives between
/// batches. Nothing overflows or becomes NaN, and every score read at or
/// after the landmark of the latest batch (and up to 50 half-lives before
/// it) stays within the bound, also after a restart and a checkpoint.
#[test]
fn timestamps_spanning_ten_thousand_half_lives_stay_within_the_bound() {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let mut db = open(&storage, &clock);
    let mut m = Model::default();
    let h = TYPES[0].1;
    let span_ms = 10_000 * h;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: a fixed, reproducible sequence.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let steps = 40;
    for step in 0..steps {
        clock.advance_ms(span_ms / steps);
        let now = clock.now_ms();
        let mut b = WriteBatch::new();
        for _ in 0..8 {
            let t = (next() % 2) as usize;
            let id = next() % (IDS + 1);
            let w = (next() % 17) as f64 * 0.5 - 4.0;
            // Now, the recent past, the far past (back to the first
            // timestamp) or the future up to the skew.
            let at = match next() % 4 {
                0 => now,
                1 => now - next() % (20 * h),
                2 => NOW + next() % (now - NOW),
                _ => now + next() % 60_000,
            };
            b = b.signal(TYPES[t].0, EntityId(id), w, Timestamp(at));
            m.signals[t].entry(id).or_default().push((w, at));
        }
        db.write(b).unwrap();
        let what = format!("step {step}");
        let l = landmark(0, now);
        for at in [
            now,
            l - 50 * h,
            l - 1,
            l,
            l + 1,
            now + 60_000,
            now + 100 * h,
            now + 20_000 * h,
        ] {
            check_at(&db, &m, at, &what).unwrap();
        }
        // Far before the landmark the exact score overflows f64 for recent
        // signals: the database saturates instead of returning inf or NaN.
        for id in 0..=IDS {
            for (name, _) in TYPES {
                let s = db
                    .read_decay_score(EntityId(id), name, Timestamp(NOW))
                    .unwrap();
                assert!(
                    s.is_finite(),
                    "{what}: {name} of {id} read at the start is {s}"
                );
            }
        }
        if step % 10 == 9 {
            db.checkpoint().unwrap();
        }
        if step % 7 == 6 {
            db.close().unwrap();
            db = open(&storage, &clock);
            check_at(&db, &m, now, &format!("{what} after a restart")).unwrap();
        }
    }
    db.close().unwrap();
}

/// A half-life so short that `max_future_skew` spans hundreds of them: a
/// signal as far ahead as the skew allows leaves the other scores of its
/// type within the bound. A skew long enough that such a signal would move
/// the landmark past every other score (rescaling them to zero) is refused
/// by `Config`.
#[test]
fn a_signal_at_the_skew_limit_leaves_other_scores_intact() {
    let config = |half_life_ms: u64| {
        Config::builder("/db")
            .signal_type("click", Duration::from_millis(half_life_ms))
            .dimension(2)
            .landmark_half_lives(2)
            .max_future_skew(Duration::from_secs(60))
            .storage(SimStorage::new())
            .clock(Arc::new(ManualClock::new(NOW)))
            .build()
    };
    // 60 s is 1,200 half-lives of 50 ms: refused.
    assert!(matches!(
        config(50),
        Err(tidal::TidalError::InvalidConfig {
            field: "max_future_skew",
            ..
        })
    ));
    // 60 s is 600 half-lives of 100 ms: accepted, and nothing is lost.
    let db = TidalDb::open(config(100).unwrap()).unwrap();
    db.signal("click", EntityId(1), 1.0, Timestamp(NOW))
        .unwrap();
    db.signal("click", EntityId(2), 1.0, Timestamp(NOW + 60_000))
        .unwrap();
    let s = db
        .read_decay_score(EntityId(1), "click", Timestamp(NOW))
        .unwrap();
    assert!((s - 1.0).abs() <= 1e-9, "entity 1 scores {s}, exactly 1.0");
    let s = db
        .read_decay_score(EntityId(2), "click", Timestamp(NOW + 60_000))
        .unwrap();
    assert!((s - 1.0).abs() <= 1e-9, "entity 2 scores {s}, exactly 1.0");
    db.close().unwrap();
}
