//! What a reconciliation logs for one diverged suffix: reading its
//! batches, finding its keyed requests, and turning its records into the
//! records this node logs (see [`reconcile`](super::reconcile) for the
//! rules and the order).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use super::reconcile::ReconcileReport;
use crate::crdt::ContributionKey;
use crate::crdt::signal_state::flush;
use crate::state::State;
use crate::state::decay::{Pow2, saturate};
use crate::state::entities::Stamp;
use crate::state::sessions::SessionStatus;
use crate::types::{EntityId, EntityKind, Epoch, NodeId, Position, SeqNo, SessionId, UserId};
use crate::wal::format::{
    BATCH_HEADER_LEN, BatchMeta, Schema, decode_header, decode_records, verify_crc,
};
use crate::wal::record::Record;

/// A suffix's batches, decoded.
pub(super) type Batches = Vec<(BatchMeta, Vec<Record>)>;

/// Decodes a suffix file: whole, valid batches, or why not.
pub(super) fn parse(bytes: &[u8], schema: &Schema) -> Result<Batches, String> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (meta, payload_len, _) =
            decode_header(rest).map_err(|e| format!("offset {at}: {}", e.reason))?;
        let end = BATCH_HEADER_LEN + payload_len as usize;
        let (Some(header), Some(payload)) = (
            rest.get(..BATCH_HEADER_LEN),
            rest.get(BATCH_HEADER_LEN..end),
        ) else {
            return Err(format!("offset {at}: batch cut short"));
        };
        if !verify_crc(header, payload) {
            return Err(format!("offset {at}: batch CRC mismatch"));
        }
        let mut records = Vec::new();
        decode_records(payload, meta.record_count, schema, &mut records)
            .map_err(|e| format!("offset {}: {}", at + BATCH_HEADER_LEN + e.offset, e.reason))?;
        batches.push((meta, records));
        at += end;
    }
    Ok(batches)
}

/// A request of the suffix that carried an idempotency key.
#[derive(Clone, Debug)]
pub(super) struct Keyed {
    /// The key and the digest of the request's content.
    pub key: Vec<u8>,
    pub digest: [u8; 16],
    /// The batch holding it and the request's records in that batch (the
    /// key record itself is at `records.end`).
    pub batch: usize,
    pub records: Range<usize>,
}

/// The keyed requests of a suffix, in log order.
pub(super) fn keyed_requests(batches: &Batches) -> Vec<Keyed> {
    let mut out = Vec::new();
    for (b, (_, records)) in batches.iter().enumerate() {
        for (i, r) in records.iter().enumerate() {
            if let Record::IdempotencyKey {
                key, digest, span, ..
            } = r
            {
                let span = usize::try_from(*span).unwrap_or(usize::MAX).min(i);
                out.push(Keyed {
                    key: key.clone(),
                    digest: *digest,
                    batch: b,
                    records: i - span..i,
                });
            }
        }
    }
    out
}

/// `(type, entity, key)` -> (positive mass, negative mass, positive count,
/// negative count), relative to the type's landmark at reconciliation.
type Folded = BTreeMap<(u16, EntityId, ContributionKey), (f64, f64, u64, u64)>;

/// What to log for one suffix.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// `Merge` records: the folded signals, and merges the suffix held.
    pub contributions: Vec<Record>,
    /// Register writes, sessions and user deletes, in the suffix's order.
    pub ordered: Vec<Record>,
}

/// What this node knows of a session while the plan is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sess {
    Open(UserId),
    Closed(UserId),
    /// Not here, or its records dropped (another user's session here).
    Gone,
}

/// Builds the plan of a suffix against `state`.
///
/// `skip` holds the `(batch, record)` places of requests this node already
/// applied (retried here under their key); `leader_of` names the leader of
/// an epoch. Counts go into `report`.
pub(super) fn build(
    state: &State,
    batches: &Batches,
    skip: &HashSet<(usize, usize)>,
    leader_of: &dyn Fn(Epoch) -> NodeId,
    report: &mut ReconcileReport,
) -> Plan {
    let types = u16::try_from(state.signals.type_count()).unwrap_or(u16::MAX);
    let landmarks: Vec<(u64, u64)> = (0..types)
        .map(|t| state.signals.landmark(t).unwrap_or((0, 1)))
        .collect();
    let mut folded = Folded::new();
    let mut plan = Plan::default();
    let tombstones = tombstones(state, batches, leader_of);
    // A signal older than a delete of its entity (here, or in the suffix)
    // was deleted with it.
    let deleted =
        |entity: EntityId, stamp: Stamp| tombstones.get(&entity).is_some_and(|t| stamp < *t);
    let mut kinds: HashMap<EntityId, EntityKind> = HashMap::new();
    let mut sessions: HashMap<SessionId, Sess> = HashMap::new();
    let tally = |map: &mut BTreeMap<&'static str, u64>, kind: &'static str| {
        *map.entry(kind).or_default() += 1;
    };
    for (b, (meta, records)) in batches.iter().enumerate() {
        let node = leader_of(meta.epoch);
        let key = ContributionKey {
            epoch: meta.epoch,
            node,
        };
        for (i, r) in records.iter().enumerate() {
            let seqno = SeqNo(meta.first_seqno.0 + i as u64);
            if skip.contains(&(b, i)) {
                tally(&mut report.already_here, kind_name(r));
                continue;
            }
            let stamp = Stamp {
                hlc: meta.hlc,
                node,
                seqno,
            };
            match r {
                Record::Signal { entity, .. }
                | Record::SessionEvent {
                    entity,
                    apply_signal: true,
                    ..
                } if deleted(*entity, stamp) => {
                    tally(
                        &mut report.dropped,
                        "signal: its entity was deleted after it",
                    );
                    // A session event keeps its event part.
                    if let Some(merged) = as_merged(r, Position::new(meta.epoch, seqno)) {
                        merge_event(state, &sessions, &mut plan, merged, report);
                    }
                }
                Record::Signal {
                    signal_type,
                    entity,
                    weight,
                    at,
                } => {
                    fold(
                        &mut folded,
                        &landmarks,
                        key,
                        *signal_type,
                        *entity,
                        *weight,
                        *at,
                    );
                    report.signals += 1;
                }
                Record::Upsert {
                    kind, id, creator, ..
                } => {
                    let creator_ok = creator.is_none_or(|c| {
                        bound(state, &kinds, c).is_none_or(|k| k == EntityKind::Creator)
                    });
                    if bound(state, &kinds, *id).is_some_and(|k| k != *kind) || !creator_ok {
                        tally(
                            &mut report.dropped,
                            "metadata upsert: an id is now of the other kind",
                        );
                        continue;
                    }
                    kinds.insert(*id, *kind);
                    if let Some(c) = creator {
                        kinds.insert(*c, EntityKind::Creator);
                    }
                    register(&mut plan, stamp, r, report);
                }
                Record::Embedding { kind, id, .. } | Record::Delete { kind, id } => {
                    if bound(state, &kinds, *id).is_some_and(|k| k != *kind) {
                        let why = match r {
                            Record::Embedding { .. } => {
                                "embedding: the id is now of the other kind"
                            }
                            _ => "delete: the id is now of the other kind",
                        };
                        tally(&mut report.dropped, why);
                        continue;
                    }
                    kinds.insert(*id, *kind);
                    register(&mut plan, stamp, r, report);
                }
                Record::OpenSession { session, user, .. } => {
                    match here(state, &sessions, *session) {
                        Sess::Gone if state.sessions.user_of(*session).is_none() => {
                            sessions.insert(*session, Sess::Open(*user));
                            plan.ordered.push(r.clone());
                            tally(&mut report.merged, "session open");
                        }
                        Sess::Open(u) | Sess::Closed(u) if u == *user => {
                            tally(&mut report.already_here, "session open");
                        }
                        _ => {
                            sessions.insert(*session, Sess::Gone);
                            tally(
                                &mut report.dropped,
                                "session: the id is another user's session here",
                            );
                        }
                    }
                }
                Record::SessionEvent {
                    entity,
                    signal_type,
                    weight,
                    at,
                    apply_signal,
                    ..
                } => {
                    if *apply_signal {
                        fold(
                            &mut folded,
                            &landmarks,
                            key,
                            *signal_type,
                            *entity,
                            *weight,
                            *at,
                        );
                        report.signals += 1;
                    }
                    if let Some(merged) = as_merged(r, Position::new(meta.epoch, seqno)) {
                        merge_event(state, &sessions, &mut plan, merged, report);
                    }
                }
                Record::CloseSession { session, .. } => match here(state, &sessions, *session) {
                    Sess::Open(u) => {
                        sessions.insert(*session, Sess::Closed(u));
                        plan.ordered.push(r.clone());
                        tally(&mut report.merged, "session close");
                    }
                    Sess::Closed(_) => tally(&mut report.already_here, "session close"),
                    Sess::Gone => tally(
                        &mut report.dropped,
                        "session close: the session is not here",
                    ),
                },
                Record::DeleteUser { user } => {
                    for s in state.sessions.sessions_of(*user) {
                        sessions.insert(s, Sess::Gone);
                    }
                    for s in sessions.values_mut() {
                        if matches!(*s, Sess::Open(u) | Sess::Closed(u) if u == *user) {
                            *s = Sess::Gone;
                        }
                    }
                    plan.ordered.push(r.clone());
                    tally(&mut report.merged, "user delete");
                }
                Record::Merge { .. } => {
                    plan.contributions.push(r.clone());
                    tally(&mut report.merged, "merge");
                }
                Record::Reconciled { stamp, record } => {
                    // Merged into the suffix's lineage earlier: it keeps
                    // its first stamp.
                    if let Record::Upsert { kind, id, .. }
                    | Record::Embedding { kind, id, .. }
                    | Record::Delete { kind, id } = record.as_ref()
                    {
                        if bound(state, &kinds, *id).is_some_and(|k| k != *kind) {
                            tally(
                                &mut report.dropped,
                                "reconciled write: the id is now of the other kind",
                            );
                            continue;
                        }
                        kinds.insert(*id, *kind);
                    }
                    register(&mut plan, *stamp, record, report);
                }
                Record::MergedSessionEvent { .. } => {
                    merge_event(state, &sessions, &mut plan, r.clone(), report);
                }
                // Keys are handled before the plan; epoch starts are the
                // suffix's own framing.
                Record::IdempotencyKey { .. } | Record::EpochStart { .. } => {}
            }
        }
    }
    plan.contributions.extend(folded.into_iter().map(
        |((signal_type, entity, key), (p, n, pc, nc))| Record::Merge {
            signal_type,
            entity,
            key,
            // The landmark the masses were computed against; the type's
            // may move before the record applies, and applying rebases it.
            landmark_ms: landmarks[usize::from(signal_type)].0,
            positive_mass: p,
            negative_mass: n,
            positive_count: pc,
            negative_count: nc,
        },
    ));
    plan
}

/// The newest delete stamp of each entity the suffix names, here or in
/// the suffix.
fn tombstones(
    state: &State,
    batches: &Batches,
    leader_of: &dyn Fn(Epoch) -> NodeId,
) -> HashMap<EntityId, Stamp> {
    let mut out: HashMap<EntityId, Stamp> = HashMap::new();
    for (meta, records) in batches {
        let node = leader_of(meta.epoch);
        for (i, r) in records.iter().enumerate() {
            let (id, stamp) = match r {
                Record::Delete { id, .. } => (
                    *id,
                    Stamp {
                        hlc: meta.hlc,
                        node,
                        seqno: SeqNo(meta.first_seqno.0 + i as u64),
                    },
                ),
                Record::Reconciled { stamp, record } => match record.as_ref() {
                    Record::Delete { id, .. } => (*id, *stamp),
                    _ => continue,
                },
                Record::Signal { entity, .. } | Record::SessionEvent { entity, .. } => {
                    if let Some(t) = state.entities.tombstone(*entity) {
                        let e = out.entry(*entity).or_insert(t);
                        *e = (*e).max(t);
                    }
                    continue;
                }
                _ => continue,
            };
            let e = out.entry(id).or_insert(stamp);
            *e = (*e).max(stamp);
        }
    }
    out
}

/// A session event of the suffix as the `MergedSessionEvent` that
/// appends it here, `origin` being where it was logged.
fn as_merged(r: &Record, origin: Position) -> Option<Record> {
    let Record::SessionEvent {
        session,
        entity,
        signal_type,
        weight,
        at,
        ..
    } = r
    else {
        return None;
    };
    Some(Record::MergedSessionEvent {
        session: *session,
        entity: *entity,
        signal_type: *signal_type,
        weight: *weight,
        at: *at,
        origin,
    })
}

/// Plans a merged session event (see the module docs of `reconcile`):
/// appended after the session's events here, unless the session is not
/// here or the event was merged before.
fn merge_event(
    state: &State,
    sessions: &HashMap<SessionId, Sess>,
    plan: &mut Plan,
    merged: Record,
    report: &mut ReconcileReport,
) {
    let Record::MergedSessionEvent {
        session, origin, ..
    } = merged
    else {
        return;
    };
    let (map, kind) = match here(state, sessions, session) {
        Sess::Gone => (
            &mut report.dropped,
            "session event: the session is not here",
        ),
        _ if state.sessions.has_merged(session, origin) => {
            (&mut report.already_here, "session event")
        }
        _ => {
            plan.ordered.push(merged);
            (&mut report.merged, "session event")
        }
    };
    *map.entry(kind).or_default() += 1;
}

/// The kind `id` is bound to, here or earlier in the suffix.
fn bound(state: &State, kinds: &HashMap<EntityId, EntityKind>, id: EntityId) -> Option<EntityKind> {
    state
        .entities
        .kind_of(id)
        .or_else(|| kinds.get(&id).copied())
}

/// The session as this node has it, updated by the suffix so far.
fn here(state: &State, sessions: &HashMap<SessionId, Sess>, id: SessionId) -> Sess {
    if let Some(s) = sessions.get(&id) {
        return *s;
    }
    match (state.sessions.status(id), state.sessions.user_of(id)) {
        (SessionStatus::Open { .. }, Some(u)) => Sess::Open(u),
        (SessionStatus::Closed, Some(u)) => Sess::Closed(u),
        _ => Sess::Gone,
    }
}

fn register(plan: &mut Plan, stamp: Stamp, r: &Record, report: &mut ReconcileReport) {
    *report.merged.entry(kind_name(r)).or_default() += 1;
    plan.ordered.push(Record::Reconciled {
        stamp,
        record: Box::new(r.clone()),
    });
}

fn fold(
    folded: &mut Folded,
    landmarks: &[(u64, u64)],
    key: ContributionKey,
    signal_type: u16,
    entity: EntityId,
    weight: f64,
    t: crate::types::Timestamp,
) {
    let Some(&(landmark, h)) = landmarks.get(usize::from(signal_type)) else {
        return;
    };
    let mass = flush(Pow2::ratio(i128::from(t.0) - i128::from(landmark), h).apply(weight.abs()));
    let cell = folded
        .entry((signal_type, entity, key))
        .or_insert((0.0, 0.0, 0, 0));
    if weight > 0.0 {
        cell.0 = flush(saturate(cell.0 + mass));
        cell.2 += 1;
    } else if weight < 0.0 {
        cell.1 = flush(saturate(cell.1 + mass));
        cell.3 += 1;
    }
}

/// A record kind's name in reports.
pub(super) fn kind_name(r: &Record) -> &'static str {
    match r {
        Record::Upsert { .. } => "metadata upsert",
        Record::Embedding { .. } => "embedding",
        Record::Delete { .. } => "delete",
        Record::OpenSession { .. } => "session open",
        Record::SessionEvent { .. } | Record::MergedSessionEvent { .. } => "session event",
        Record::CloseSession { .. } => "session close",
        Record::DeleteUser { .. } => "user delete",
        Record::Merge { .. } => "merge",
        Record::IdempotencyKey { .. } => "idempotency key",
        Record::EpochStart { .. } => "epoch start",
        Record::Signal { .. } => "signal",
        Record::Reconciled { record, .. } => kind_name(record),
    }
}
