//! Random operation sequences against a plain in-memory model written from
//! the documented semantics (DESIGN.md sections 1-4 and the crate docs),
//! not from the crate's internals.
//!
//! Operations: signals of two types (weights negative, zero and positive,
//! non-finite ones, timestamps out of order and around `max_future_skew`),
//! item and creator upserts (kind conflicts, the field limit, empty
//! values), embeddings (good, zero, wrong dimension, NaN), deletes,
//! sessions (valid and invalid opens, events, closes; the event limit),
//! `delete_user`, atomic `WriteBatch`es, restarts, checkpoints, backups
//! (opened later and compared with the model as it was at the backup) and
//! clock advances of up to thousands of half-lives, so landmarks move and
//! closed sessions expire by log time.
//!
//! After every step every read is compared with the model: positions,
//! counts, decay scores (within `1e-9 * sum |w_i| * decay_i + 1e-12` of the
//! naive formula), items, creators, sessions and their events, retrieve
//! (one type, blends with negative weights, every filter) and search.
//! Every refused write must be refused with exactly the error the model
//! predicts and must change nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tidal::{
    Config, Creator, EntityId, EntityKind, Epoch, Filter, Item, Limits, ManualClock, Position,
    Retrieve, Scored, Search, SeqNo, SessionEvent, SessionId, SessionInfo, SimStorage, TidalDb,
    TidalError, Timestamp, UserId, WriteBatch,
};

const NOW: u64 = 1_700_000_000_000;
const DIM: usize = 4;
/// Signal types and their half-lives (ms). Short, so landmarks move often.
const TYPES: [(&str, u64); 2] = [("view", 1_000), ("like", 7_000)];
const LANDMARK_HALF_LIVES: u32 = 2;
const SKEW_MS: u64 = 60_000;
const RETENTION_MS: u64 = 120_000;
const MAX_FIELDS: usize = 3;
const MAX_EVENTS: u32 = 6;
const IDS: u64 = 10;
const SESSIONS: u64 = 5;
const USERS: u64 = 3;
const KEYS: [&str; 4] = ["lang", "cat", "tier", "x"];
const VALUES: [&str; 4] = ["en", "fr", "de", ""];

// ---------------------------------------------------------------- ops

#[derive(Clone, Debug)]
enum W {
    /// A write; executed alone or inside a batch.
    Signal {
        ty: u8,
        id: u64,
        w: f64,
        at: i64,
    },
    Item {
        id: u64,
        creator: Option<u64>,
        fields: Vec<(u8, u8)>,
    },
    Creator {
        id: u64,
        fields: Vec<(u8, u8)>,
    },
    Embedding {
        creator: bool,
        id: u64,
        v: Vec<f32>,
    },
    Delete {
        creator: bool,
        id: u64,
    },
    Open {
        s: u64,
        u: u64,
        at: i64,
    },
    Event {
        s: u64,
        id: u64,
        ty: u8,
        w: f64,
        at: i64,
    },
    Close {
        s: u64,
        at: i64,
    },
    DeleteUser {
        u: u64,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Write(W),
    Batch(Vec<W>),
    Restart,
    Checkpoint,
    Backup,
    CheckBackups,
    Advance(u64),
}

/// A random retrieve and search, checked after the step.
#[derive(Clone, Debug)]
struct Q {
    k: usize,
    blend: u8,
    at: i64,
    kind: Option<bool>,
    meta: Option<(u8, u8)>,
    creator: Option<u64>,
    exclude: Vec<u64>,
    seen: Option<u64>,
    negatives: Option<u64>,
    vector: Vec<f32>,
}

fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => (-4i32..=6).prop_map(|x| f64::from(x) * 0.5),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
    ]
}

/// Offsets of a timestamp from the clock: mostly the recent past, some far
/// past, some ahead up to (and rarely beyond) `max_future_skew`.
fn at() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -20_000i64..=2_000,
        2 => -400_000i64..=60_000,
        1 => 59_990i64..=60_010,
        1 => 60_001i64..=70_000,
    ]
}

fn ty() -> impl Strategy<Value = u8> {
    prop_oneof![10 => 0u8..2, 1 => Just(2u8)]
}

fn fields() -> impl Strategy<Value = Vec<(u8, u8)>> {
    prop::collection::vec((0u8..4, prop_oneof![12 => 0u8..3, 1 => Just(3u8)]), 0..=4)
}

fn vector() -> impl Strategy<Value = Vec<f32>> {
    let comp = (-2i8..=2).prop_map(f32::from);
    prop_oneof![
        10 => prop::collection::vec(comp.clone(), DIM),
        1 => Just(vec![0.0; DIM]),
        1 => prop::collection::vec(comp.clone(), DIM - 1),
        1 => (prop::collection::vec(comp, DIM), 0..DIM).prop_map(|(mut v, i)| {
            v[i] = f32::NAN;
            v
        }),
    ]
}

fn write() -> impl Strategy<Value = W> {
    let id = 1..=IDS;
    prop_oneof![
        10 => (ty(), id.clone(), weight(), at()).prop_map(|(ty, id, w, at)| W::Signal { ty, id, w, at }),
        3 => (id.clone(), prop::option::of(1..=IDS), fields())
            .prop_map(|(id, creator, fields)| W::Item { id, creator, fields }),
        2 => (id.clone(), fields()).prop_map(|(id, fields)| W::Creator { id, fields }),
        3 => (any::<bool>(), id.clone(), vector())
            .prop_map(|(creator, id, v)| W::Embedding { creator, id, v }),
        1 => (any::<bool>(), id.clone()).prop_map(|(creator, id)| W::Delete { creator, id }),
        2 => (1..=SESSIONS, 1..=USERS, at()).prop_map(|(s, u, at)| W::Open { s, u, at }),
        4 => (1..=SESSIONS, id, ty(), weight(), at())
            .prop_map(|(s, id, ty, w, at)| W::Event { s, id, ty, w, at }),
        1 => (1..=SESSIONS, at()).prop_map(|(s, at)| W::Close { s, at }),
        1 => (1..=USERS).prop_map(|u| W::DeleteUser { u }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => write().prop_map(Op::Write),
        5 => prop::collection::vec(write(), 0..6).prop_map(Op::Batch),
        2 => Just(Op::Restart),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Backup),
        1 => Just(Op::CheckBackups),
        6 => prop_oneof![
            6 => 0u64..3_000,
            2 => 3_000u64..150_000,
            1 => 150_000u64..3_000_000,
        ]
        .prop_map(Op::Advance),
    ]
}

fn query() -> impl Strategy<Value = Q> {
    (
        (0usize..8, 0u8..6, -30_000i64..=30_000),
        (
            prop::option::of(any::<bool>()),
            prop::option::weighted(0.3, (0u8..4, 0u8..3)),
            prop::option::weighted(0.2, 1..=IDS),
        ),
        (
            prop::collection::vec(1..=IDS, 0..3),
            prop::option::weighted(0.3, 1..=SESSIONS),
            prop::option::weighted(0.3, 1..=USERS),
        ),
        prop_oneof![
            8 => prop::collection::vec((-2i8..=2).prop_map(f32::from), DIM),
            1 => Just(vec![0.0; DIM]),
        ],
    )
        .prop_map(
            |((k, blend, at), (kind, meta, creator), (exclude, seen, negatives), vector)| Q {
                k,
                blend,
                at,
                kind,
                meta,
                creator,
                exclude,
                seen,
                negatives,
                vector,
            },
        )
}

// -------------------------------------------------------------- model

#[derive(Clone, Debug)]
struct Ent {
    kind: EntityKind,
    live: bool,
    creator: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct Sess {
    user: u64,
    opened_at: u64,
    /// Caller's close time and the close's log time.
    closed: Option<(u64, u64)>,
    /// (entity, type, weight, at)
    events: Vec<(u64, usize, f64, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    entities: BTreeMap<u64, Ent>,
    /// Per type: entity -> (weight, at) of every signal since its last delete.
    signals: [BTreeMap<u64, Vec<(f64, u64)>>; 2],
    vectors: BTreeMap<u64, (EntityKind, Vec<f32>)>,
    sessions: BTreeMap<u64, Sess>,
    negatives: BTreeMap<u64, BTreeSet<u64>>,
    /// SeqNo of the last record (1 is the EpochStart of a new database).
    seqno: u64,
}

fn kind_of(creator: bool) -> EntityKind {
    if creator {
        EntityKind::Creator
    } else {
        EntityKind::Item
    }
}

fn ts(now: u64, off: i64) -> u64 {
    now.saturating_add_signed(off)
}

fn type_name(ty: u8) -> &'static str {
    match ty {
        0 => TYPES[0].0,
        1 => TYPES[1].0,
        _ => "nope",
    }
}

fn owned_fields(fields: &[(u8, u8)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|&(k, v)| (KEYS[k as usize].to_string(), VALUES[v as usize].to_string()))
        .collect()
}

/// The stateless checks of one write, in the documented order of each
/// call's arguments; `now` is the clock reading.
fn stateless(w: &W, now: u64) -> Result<(), TidalError> {
    let sig_type = |ty: u8| -> Result<(), TidalError> {
        if ty >= 2 {
            return Err(TidalError::UnknownSignalType {
                name: type_name(ty).to_string(),
            });
        }
        Ok(())
    };
    let weight = |w: f64| -> Result<(), TidalError> {
        if !w.is_finite() {
            return Err(TidalError::NonFinite {
                field: "weight",
                value: w,
            });
        }
        Ok(())
    };
    let time = |off: i64| -> Result<(), TidalError> {
        let at = ts(now, off);
        let ahead = at.saturating_sub(now);
        if ahead > SKEW_MS {
            return Err(TidalError::TimestampTooFarAhead {
                field: "at",
                at_ms: at,
                ahead_ms: ahead,
                limit_ms: SKEW_MS,
            });
        }
        Ok(())
    };
    let fields_ok = |id: u64, fields: &[(u8, u8)]| -> Result<(), TidalError> {
        if fields.len() > MAX_FIELDS {
            return Err(TidalError::TooManyFields {
                id: EntityId(id),
                count: fields.len(),
                limit: MAX_FIELDS,
            });
        }
        for &(_, v) in fields {
            if VALUES[v as usize].is_empty() {
                return Err(TidalError::Empty {
                    field: "metadata value",
                });
            }
        }
        Ok(())
    };
    match w {
        W::Signal { ty, w, at, .. } | W::Event { ty, w, at, .. } => {
            sig_type(*ty)?;
            weight(*w)?;
            time(*at)
        }
        W::Item { id, fields, .. } | W::Creator { id, fields } => fields_ok(*id, fields),
        W::Embedding { v, .. } => unit("embedding", v).map(|_| ()),
        W::Delete { .. } | W::DeleteUser { .. } => Ok(()),
        W::Open { at, .. } | W::Close { at, .. } => time(*at),
    }
}

/// The unit vector of `v` in f64, or the documented error.
fn unit(field: &'static str, v: &[f32]) -> Result<Vec<f64>, TidalError> {
    if v.len() != DIM {
        return Err(TidalError::DimensionMismatch {
            field,
            expected: DIM,
            got: v.len(),
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(TidalError::NonFiniteVector { field, index });
    }
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(TidalError::ZeroVector { field });
    }
    Ok(v.iter().map(|&x| f64::from(x) / norm).collect())
}

impl Model {
    fn new() -> Model {
        Model {
            seqno: 1,
            ..Model::default()
        }
    }

    fn live(&self, id: u64) -> Option<&Ent> {
        self.entities.get(&id).filter(|e| e.live)
    }

    fn bind(&self, id: u64, kind: EntityKind) -> Result<(), TidalError> {
        match self.entities.get(&id) {
            Some(e) if e.kind != kind => Err(TidalError::KindMismatch {
                id: EntityId(id),
                existing: e.kind,
                requested: kind,
            }),
            _ => Ok(()),
        }
    }

    /// Sessions closed more than the retention before `log_ms` are gone.
    fn expire(&mut self, log_ms: u64) {
        self.sessions.retain(|_, s| match s.closed {
            Some((_, closed_ms)) => closed_ms + RETENTION_MS >= log_ms,
            None => true,
        });
    }

    fn upsert(
        &mut self,
        kind: EntityKind,
        id: u64,
        creator: Option<u64>,
        fields: &[(String, String)],
    ) -> Result<(), TidalError> {
        self.bind(id, kind)?;
        // The creator must not be an item; `id` itself is of `kind` by now.
        let kind_of_c = |c: u64| {
            if c == id {
                Some(kind)
            } else {
                self.entities.get(&c).map(|e| e.kind)
            }
        };
        if let Some(c) = creator
            && kind_of_c(c) == Some(EntityKind::Item)
        {
            return Err(TidalError::KindMismatch {
                id: EntityId(c),
                existing: EntityKind::Item,
                requested: EntityKind::Creator,
            });
        }
        let current: BTreeSet<&String> = self
            .live(id)
            .map(|e| e.fields.keys().collect())
            .unwrap_or_default();
        let new: BTreeSet<&String> = fields
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !current.contains(k))
            .collect();
        let count = current.len() + new.len();
        if count > MAX_FIELDS {
            return Err(TidalError::TooManyFields {
                id: EntityId(id),
                count,
                limit: MAX_FIELDS,
            });
        }
        let e = self.entities.entry(id).or_insert_with(|| Ent {
            kind,
            live: false,
            creator: None,
            fields: BTreeMap::new(),
        });
        e.live = true;
        if kind == EntityKind::Item
            && let Some(c) = creator
        {
            e.creator = Some(c);
        }
        // One record naming a key twice: the larger value wins.
        let mut this: BTreeMap<&String, &String> = BTreeMap::new();
        for (k, v) in fields {
            let slot = this.entry(k).or_insert(v);
            if v > *slot {
                *slot = v;
            }
        }
        for (k, v) in this {
            e.fields.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn session_for_event(&self, s: u64) -> Result<&Sess, TidalError> {
        match self.sessions.get(&s) {
            None => Err(TidalError::UnknownSession {
                session: SessionId(s),
            }),
            Some(x) if x.closed.is_some() => Err(TidalError::SessionClosed {
                session: SessionId(s),
            }),
            Some(x) => Ok(x),
        }
    }

    /// Applies one (stateless-valid) write, or returns its stateful error.
    fn apply(&mut self, w: &W, now: u64) -> Result<(), TidalError> {
        match w {
            W::Signal { ty, id, w, at } => {
                self.signals[*ty as usize]
                    .entry(*id)
                    .or_default()
                    .push((*w, ts(now, *at)));
                Ok(())
            }
            W::Item {
                id,
                creator,
                fields,
            } => self.upsert(EntityKind::Item, *id, *creator, &owned_fields(fields)),
            W::Creator { id, fields } => {
                self.upsert(EntityKind::Creator, *id, None, &owned_fields(fields))
            }
            W::Embedding { creator, id, v } => {
                let kind = kind_of(*creator);
                self.upsert(kind, *id, None, &[])?;
                self.vectors.insert(*id, (kind, v.clone()));
                Ok(())
            }
            W::Delete { creator, id } => {
                let kind = kind_of(*creator);
                self.bind(*id, kind)?;
                self.entities.insert(
                    *id,
                    Ent {
                        kind,
                        live: false,
                        creator: None,
                        fields: BTreeMap::new(),
                    },
                );
                self.vectors.remove(id);
                for t in &mut self.signals {
                    t.remove(id);
                }
                Ok(())
            }
            W::Open { s, u, at } => {
                if self.sessions.contains_key(s) {
                    return Err(TidalError::SessionExists {
                        session: SessionId(*s),
                    });
                }
                self.sessions.insert(
                    *s,
                    Sess {
                        user: *u,
                        opened_at: ts(now, *at),
                        closed: None,
                        events: Vec::new(),
                    },
                );
                Ok(())
            }
            W::Event { s, id, ty, w, at } => {
                let sess = self.session_for_event(*s)?;
                if sess.events.len() as u32 >= MAX_EVENTS {
                    return Err(TidalError::SessionFull {
                        session: SessionId(*s),
                        limit: MAX_EVENTS,
                    });
                }
                let user = sess.user;
                let at = ts(now, *at);
                let t = *ty as usize;
                if let Some(sess) = self.sessions.get_mut(s) {
                    sess.events.push((*id, t, *w, at));
                }
                if *w < 0.0 {
                    self.negatives.entry(user).or_default().insert(*id);
                }
                self.signals[t].entry(*id).or_default().push((*w, at));
                Ok(())
            }
            W::Close { s, at } => {
                self.session_for_event(*s)?;
                if let Some(sess) = self.sessions.get_mut(s) {
                    sess.closed = Some((ts(now, *at), now));
                }
                Ok(())
            }
            W::DeleteUser { u } => {
                self.sessions.retain(|_, s| s.user != *u);
                self.negatives.remove(u);
                Ok(())
            }
        }
    }

    /// An atomic write of `ws` at clock `now` (which is also the batch's
    /// log time): every stateless check first, then the stateful ones in
    /// order against the state plus the writes before. On success the
    /// model moves on and the expected Position is returned.
    fn write(&mut self, ws: &[W], now: u64) -> Result<Position, TidalError> {
        if ws.is_empty() {
            return Err(TidalError::BatchSize {
                records: 0,
                limit: Limits::default().max_batch_records,
            });
        }
        for w in ws {
            stateless(w, now)?;
        }
        let mut next = self.clone();
        next.expire(now);
        for w in ws {
            next.apply(w, now)?;
        }
        next.seqno += ws.len() as u64;
        *self = next;
        Ok(Position::new(Epoch(1), SeqNo(self.seqno)))
    }

    // ----- reads

    fn score(&self, t: usize, id: u64, at: u64) -> (f64, f64) {
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
                .map(|&(w, _)| {
                    if w > 0.0 {
                        1
                    } else if w < 0.0 {
                        -1
                    } else {
                        0
                    }
                })
                .sum()
        })
    }

    fn item(&self, id: u64) -> Option<Item> {
        let e = self.live(id).filter(|e| e.kind == EntityKind::Item)?;
        Some(Item {
            id: EntityId(id),
            creator: e.creator.map(EntityId),
            metadata: e.fields.clone().into_iter().collect(),
        })
    }

    fn creator(&self, id: u64) -> Option<Creator> {
        let e = self.live(id).filter(|e| e.kind == EntityKind::Creator)?;
        Some(Creator {
            id: EntityId(id),
            metadata: e.fields.clone().into_iter().collect(),
        })
    }

    fn session(&self, s: u64) -> Option<SessionInfo> {
        let x = self.sessions.get(&s)?;
        Some(SessionInfo {
            session: SessionId(s),
            user: UserId(x.user),
            opened_at: Timestamp(x.opened_at),
            closed_at: x.closed.map(|(at, _)| Timestamp(at)),
            event_count: x.events.len() as u32,
        })
    }

    fn events(&self, s: u64) -> Vec<SessionEvent> {
        self.sessions.get(&s).map_or_else(Vec::new, |x| {
            x.events
                .iter()
                .enumerate()
                .map(|(i, &(id, t, w, at))| SessionEvent {
                    seq: i as u32 + 1,
                    entity: EntityId(id),
                    signal_type: TYPES[t].0.to_string(),
                    weight: w,
                    at: Timestamp(at),
                    merged: false,
                })
                .collect()
        })
    }

    fn accepts(&self, id: u64, f: &Filter) -> bool {
        if f.kind.is_some() || !f.metadata.is_empty() || f.creator.is_some() {
            let Some(e) = self.live(id) else {
                return false;
            };
            if f.kind.is_some_and(|k| k != e.kind) {
                return false;
            }
            if f.creator.is_some() && e.creator.map(EntityId) != f.creator {
                return false;
            }
            if !f
                .metadata
                .iter()
                .all(|(k, v)| e.fields.get(k).is_some_and(|x| x == v))
            {
                return false;
            }
        }
        if f.exclude_ids.contains(&EntityId(id)) {
            return false;
        }
        if let Some(s) = f.exclude_seen
            && self
                .sessions
                .get(&s.0)
                .is_some_and(|x| x.events.iter().any(|e| e.0 == id))
        {
            return false;
        }
        if let Some(u) = f.exclude_hard_negatives
            && self.negatives.get(&u.0).is_some_and(|n| n.contains(&id))
        {
            return false;
        }
        true
    }

    /// Every candidate of a retrieve with its naive score and error bound.
    fn retrieve(&self, q: &Retrieve) -> Vec<(u64, f64, f64)> {
        let lanes: Vec<(usize, f64)> = q
            .blend
            .iter()
            .map(|(n, w)| (TYPES.iter().position(|t| t.0 == n).unwrap(), *w))
            .collect();
        let ids: BTreeSet<u64> = lanes
            .iter()
            .flat_map(|&(t, _)| self.signals[t].keys().copied())
            .collect();
        let mut out: Vec<(u64, f64, f64)> = ids
            .into_iter()
            .filter(|&id| self.accepts(id, &q.filter))
            .map(|id| {
                let (mut score, mut tol) = (0.0, 1e-12);
                for &(t, w) in &lanes {
                    let (s, m) = self.score(t, id, q.at.0);
                    score += w * s;
                    tol += w.abs() * 1e-9 * m;
                }
                (id, score, tol)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Every candidate of a search with its exact cosine.
    fn search(&self, q: &Search) -> Vec<(u64, f64, f64)> {
        let kind = q.filter.kind.unwrap_or(EntityKind::Item);
        let Ok(query) = unit("query", &q.vector) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, f64, f64)> = self
            .vectors
            .iter()
            .filter(|(id, (k, _))| *k == kind && self.accepts(**id, &q.filter))
            .map(|(&id, (_, v))| {
                let v = unit("embedding", v).expect("stored vectors are valid");
                let cos: f64 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
                (id, cos, 1e-5)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

// -------------------------------------------------------------- checks

fn same_error(got: &TidalError, want: &TidalError) -> bool {
    format!("{got:?}") == format!("{want:?}")
}

/// Compares a top-k answer with the model's candidates (best first):
/// the same length, distinct accepted ids, each returned score within its
/// bound of the naive one, the answer sorted by its own scores with ties by
/// id, and at every rank the naive score of the returned id within the
/// bounds of the model's entry at that rank (a swap is tolerated only
/// between near-ties).
fn check_top(
    what: &str,
    got: &[Scored],
    want: &[(u64, f64, f64)],
    k: usize,
) -> Result<(), TestCaseError> {
    let by_id: HashMap<u64, (f64, f64)> = want.iter().map(|&(id, s, t)| (id, (s, t))).collect();
    prop_assert_eq!(
        got.len(),
        k.min(want.len()),
        "{}: got {:?}, model {:?}",
        what,
        got,
        want
    );
    let mut seen = BTreeSet::new();
    for (i, g) in got.iter().enumerate() {
        prop_assert!(seen.insert(g.id.0), "{}: {} listed twice", what, g.id);
        let Some(&(score, tol)) = by_id.get(&g.id.0) else {
            return Err(TestCaseError::fail(format!(
                "{what}: {} is not a candidate; got {got:?}, model {want:?}",
                g.id
            )));
        };
        prop_assert!(
            (g.score - score).abs() <= tol,
            "{}: {} scores {} but the naive score is {} (bound {}); got {:?}, model {:?}",
            what,
            g.id,
            g.score,
            score,
            tol,
            got,
            want
        );
        let (wid, wscore, wtol) = want[i];
        prop_assert!(
            (score - wscore).abs() <= tol + wtol,
            "{}: rank {} holds {} (naive {}) but the model ranks {} (naive {}) there; got {:?}, model {:?}",
            what,
            i,
            g.id,
            score,
            wid,
            wscore,
            got,
            want
        );
        if i > 0 {
            let p = got[i - 1];
            prop_assert!(
                p.score > g.score || (p.score == g.score && p.id < g.id),
                "{}: not sorted by score then id: {:?}",
                what,
                got
            );
        }
    }
    Ok(())
}

fn build_filter(q: &Q) -> Filter {
    Filter {
        kind: q.kind.map(kind_of),
        metadata: q
            .meta
            .iter()
            .map(|&(k, v)| (KEYS[k as usize].to_string(), VALUES[v as usize].to_string()))
            .collect(),
        creator: q.creator.map(EntityId),
        exclude_ids: q.exclude.iter().map(|&i| EntityId(i)).collect(),
        exclude_seen: q.seen.map(SessionId),
        exclude_hard_negatives: q.negatives.map(UserId),
    }
}

fn blend_of(b: u8) -> Vec<(String, f64)> {
    let v: &[(&str, f64)] = match b {
        0 => &[("view", 1.0)],
        1 => &[("like", 1.0)],
        2 => &[("view", 1.0), ("like", 0.5)],
        3 => &[("like", 2.0), ("view", -1.0)],
        4 => &[("view", -1.0)],
        _ => &[("like", 0.25), ("view", 0.0)],
    };
    v.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

/// Every read of `db` against `m`, at clock `now`, plus the random query.
fn check_all(db: &TidalDb, m: &Model, now: u64, q: &Q) -> Result<(), TestCaseError> {
    prop_assert_eq!(db.last_position(), Position::new(Epoch(1), SeqNo(m.seqno)));
    let times = [now, ts(now, -5_000), ts(now, 20_000), ts(now, q.at)];
    for id in 0..=IDS + 1 {
        for (t, (name, _)) in TYPES.iter().enumerate() {
            prop_assert_eq!(
                db.read_count(EntityId(id), name).unwrap(),
                m.count(t, id),
                "count of {} {}",
                id,
                name
            );
            for &at in &times {
                let got = db
                    .read_decay_score(EntityId(id), name, Timestamp(at))
                    .unwrap();
                let (want, mass) = m.score(t, id, at);
                prop_assert!(
                    (got - want).abs() <= 1e-9 * mass + 1e-12,
                    "score of {} {} at {}: got {}, naive {} (mass {}), signals {:?}",
                    id,
                    name,
                    at,
                    got,
                    want,
                    mass,
                    m.signals[t].get(&id)
                );
            }
        }
        prop_assert_eq!(db.get_item(EntityId(id)), m.item(id), "item {}", id);
        prop_assert_eq!(
            db.get_creator(EntityId(id)),
            m.creator(id),
            "creator {}",
            id
        );
    }
    for s in 0..=SESSIONS + 1 {
        prop_assert_eq!(db.session(SessionId(s)), m.session(s), "session {}", s);
        let all = m.events(s);
        prop_assert_eq!(db.session_events(SessionId(s), 1, 100), all.clone());
        let from = (s as u32 % 4) + 1;
        let part: Vec<SessionEvent> = all.into_iter().filter(|e| e.seq >= from).take(2).collect();
        prop_assert_eq!(db.session_events(SessionId(s), from, 2), part);
    }
    // Fixed queries, then the random one.
    let mut retrieves = vec![
        Retrieve::top(20, "view", Timestamp(now)),
        Retrieve::top(20, "like", Timestamp(ts(now, -5_000))),
        Retrieve::blend(
            20,
            &[("view", 1.0), ("like", 0.5)],
            Timestamp(ts(now, 3_000)),
        ),
        Retrieve::blend(3, &[("view", -1.0), ("like", 1.0)], Timestamp(now)),
        Retrieve::top(2, "view", Timestamp(now)).kind(EntityKind::Item),
    ];
    retrieves.push(Retrieve {
        k: q.k,
        blend: blend_of(q.blend),
        at: Timestamp(ts(now, q.at)),
        filter: build_filter(q),
    });
    for r in &retrieves {
        let got = db.retrieve(r).unwrap();
        check_top(&format!("{r:?}"), &got, &m.retrieve(r), r.k)?;
    }
    let mut searches = vec![
        Search::new(vec![1.0, 0.0, 0.0, 0.0], 20),
        Search::new(vec![0.0, 1.0, -1.0, 0.5], 20).kind(EntityKind::Creator),
    ];
    searches.push(Search {
        vector: q.vector.clone(),
        k: q.k,
        filter: build_filter(q),
    });
    for s in &searches {
        match (db.search(s), unit("query", &s.vector)) {
            (Ok(got), Ok(_)) => check_top(&format!("{s:?}"), &got, &m.search(s), s.k)?,
            (Err(e), Err(want)) => {
                prop_assert!(same_error(&e, &want), "search: {:?}, model {:?}", e, want)
            }
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "search {s:?}: got {got:?}, model {want:?}"
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------- execution

fn config(dir: &str, storage: &Arc<SimStorage>, clock: &Arc<ManualClock>) -> Config {
    let mut b = Config::builder(dir);
    for (name, h) in TYPES {
        b = b.signal_type(name, Duration::from_millis(h));
    }
    b.dimension(DIM)
        .landmark_half_lives(LANDMARK_HALF_LIVES)
        .max_future_skew(Duration::from_millis(SKEW_MS))
        .session_retention(Duration::from_millis(RETENTION_MS))
        .limits(Limits {
            max_metadata_fields: MAX_FIELDS,
            max_session_events: MAX_EVENTS,
            ..Limits::default()
        })
        .segment_bytes(16 * 1024)
        .snapshot_every_bytes(64 * 1024)
        .storage(storage.clone())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn add_to_batch(b: WriteBatch, w: &W, now: u64) -> WriteBatch {
    let fields = |f: &[(u8, u8)]| owned_fields(f);
    match w {
        W::Signal { ty, id, w, at } => {
            b.signal(type_name(*ty), EntityId(*id), *w, Timestamp(ts(now, *at)))
        }
        W::Item {
            id,
            creator,
            fields: f,
        } => {
            let f = fields(f);
            let r: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            b.write_item(EntityId(*id), creator.map(EntityId), &r)
        }
        W::Creator { id, fields: f } => {
            let f = fields(f);
            let r: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            b.write_creator(EntityId(*id), &r)
        }
        W::Embedding {
            creator: false,
            id,
            v,
        } => b.write_item_embedding(EntityId(*id), v),
        W::Embedding {
            creator: true,
            id,
            v,
        } => b.write_creator_embedding(EntityId(*id), v),
        W::Delete { creator: false, id } => b.delete_item(EntityId(*id)),
        W::Delete { creator: true, id } => b.delete_creator(EntityId(*id)),
        W::Open { s, u, at } => b.open_session(SessionId(*s), UserId(*u), Timestamp(ts(now, *at))),
        W::Event { s, id, ty, w, at } => b.record_session_event(
            SessionId(*s),
            EntityId(*id),
            type_name(*ty),
            *w,
            Timestamp(ts(now, *at)),
        ),
        W::Close { s, at } => b.close_session(SessionId(*s), Timestamp(ts(now, *at))),
        W::DeleteUser { u } => b.delete_user(UserId(*u)),
    }
}

/// One write through its own method (not a batch).
fn write_one(db: &TidalDb, w: &W, now: u64) -> tidal::Result<Position> {
    match w {
        W::Signal { ty, id, w, at } => {
            db.signal(type_name(*ty), EntityId(*id), *w, Timestamp(ts(now, *at)))
        }
        W::Item {
            id,
            creator,
            fields: f,
        } => {
            let f = owned_fields(f);
            let r: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            db.write_item(EntityId(*id), creator.map(EntityId), &r)
        }
        W::Creator { id, fields: f } => {
            let f = owned_fields(f);
            let r: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            db.write_creator(EntityId(*id), &r)
        }
        W::Embedding {
            creator: false,
            id,
            v,
        } => db.write_item_embedding(EntityId(*id), v),
        W::Embedding {
            creator: true,
            id,
            v,
        } => db.write_creator_embedding(EntityId(*id), v),
        W::Delete { creator: false, id } => db.delete_item(EntityId(*id)),
        W::Delete { creator: true, id } => db.delete_creator(EntityId(*id)),
        W::Open { s, u, at } => db.open_session(SessionId(*s), UserId(*u), Timestamp(ts(now, *at))),
        W::Event { s, id, ty, w, at } => db.record_session_event(
            SessionId(*s),
            EntityId(*id),
            type_name(*ty),
            *w,
            Timestamp(ts(now, *at)),
        ),
        W::Close { s, at } => db.close_session(SessionId(*s), Timestamp(ts(now, *at))),
        W::DeleteUser { u } => db.delete_user(UserId(*u)),
    }
}

fn check_write(
    what: &dyn std::fmt::Debug,
    got: tidal::Result<Position>,
    want: Result<Position, TidalError>,
) -> Result<(), TestCaseError> {
    match (&got, &want) {
        (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "{:?}", what),
        (Err(g), Err(w)) => prop_assert!(
            same_error(g, w),
            "{:?}: refused with {:?}, model expects {:?}",
            what,
            g,
            w
        ),
        _ => {
            return Err(TestCaseError::fail(format!(
                "{what:?}: got {got:?}, model expects {want:?}"
            )));
        }
    }
    Ok(())
}

fn check_backup(
    storage: &Arc<SimStorage>,
    clock: &Arc<ManualClock>,
    dir: &str,
    pos: Position,
    snapshot: &Model,
    q: &Q,
) -> Result<(), TestCaseError> {
    let db = TidalDb::open(config(dir, storage, clock)).unwrap();
    prop_assert_eq!(db.last_position(), pos, "backup {}", dir);
    let r = check_all(&db, snapshot, clock_now(clock), q);
    db.close().unwrap();
    r.map_err(|e| TestCaseError::fail(format!("backup {dir} at {pos}: {e}")))
}

fn clock_now(clock: &ManualClock) -> u64 {
    use tidal::PhysicalClock;
    clock.now_ms()
}

/// A query without filters, for checks outside the random steps.
fn plain_query() -> Q {
    Q {
        k: 5,
        blend: 2,
        at: 0,
        kind: None,
        meta: None,
        creator: None,
        exclude: vec![],
        seen: None,
        negatives: None,
        vector: vec![1.0, 1.0, 0.0, 0.0],
    }
}

fn run(steps: Vec<(Op, Q)>) -> Result<(), TestCaseError> {
    let storage = SimStorage::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let mut db = Some(TidalDb::open(config("/db", &storage, &clock)).unwrap());
    let mut model = Model::new();
    let mut backups: Vec<(String, Position, Model)> = Vec::new();
    let mut checked_backups = 0;
    let quiet = plain_query();
    check_all(db.as_ref().unwrap(), &model, NOW, &quiet)?;
    for (step, (op, q)) in steps.iter().enumerate() {
        let now = clock_now(&clock);
        let d = db.as_ref().unwrap();
        match op {
            Op::Write(w) => {
                let want = model.write(std::slice::from_ref(w), now);
                let got = write_one(d, w, now);
                check_write(w, got, want)?;
            }
            Op::Batch(ws) => {
                let want = model.write(ws, now);
                let batch = ws
                    .iter()
                    .fold(WriteBatch::new(), |b, w| add_to_batch(b, w, now));
                let got = d.write(batch);
                check_write(ws, got, want)?;
            }
            Op::Restart => {
                db.take().unwrap().close().unwrap();
                db = Some(TidalDb::open(config("/db", &storage, &clock)).unwrap());
            }
            Op::Checkpoint => {
                prop_assert_eq!(d.checkpoint().unwrap(), SeqNo(model.seqno));
            }
            Op::Backup => {
                if backups.len() < 3 {
                    let dir = format!("/backup-{step}");
                    let pos = d.backup(&dir).unwrap();
                    prop_assert_eq!(pos, Position::new(Epoch(1), SeqNo(model.seqno)));
                    backups.push((dir, pos, model.clone()));
                }
            }
            Op::CheckBackups => {
                for (dir, pos, snap) in &backups[checked_backups..] {
                    check_backup(&storage, &clock, dir, *pos, snap, q)?;
                }
                checked_backups = backups.len();
            }
            Op::Advance(ms) => clock.advance_ms(*ms),
        }
        let now = clock_now(&clock);
        check_all(db.as_ref().unwrap(), &model, now, q)
            .map_err(|e| TestCaseError::fail(format!("after step {step} {op:?}: {e}")))?;
    }
    for (dir, pos, snap) in &backups {
        check_backup(&storage, &clock, dir, *pos, snap, &quiet)?;
    }
    db.take().unwrap().close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_a_model(steps in prop::collection::vec((op(), query()), 1..150)) {
        run(steps)?;
    }
}

/// The case the model found: a session closed more than the retention ago
/// (in log time) is unknown to the next write, even when no write has
/// committed since it aged out; its id may be opened again.
#[test]
fn a_session_past_retention_is_unknown_to_the_next_write() {
    let q = plain_query();
    let steps = vec![
        (Op::Write(W::Open { s: 4, u: 1, at: 0 }), q.clone()),
        (Op::Write(W::Close { s: 4, at: 0 }), q.clone()),
        (Op::Advance(RETENTION_MS), q.clone()),
        (Op::Write(W::Close { s: 4, at: 0 }), q.clone()), // still closed
        (Op::Advance(1), q.clone()),
        (
            Op::Write(W::Event {
                s: 4,
                id: 1,
                ty: 0,
                w: 1.0,
                at: 0,
            }),
            q.clone(),
        ),
        (Op::Write(W::Open { s: 4, u: 2, at: 0 }), q.clone()),
        (Op::Restart, q),
    ];
    run(steps).unwrap();
}
