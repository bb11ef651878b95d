//! Sessions, their numbered events, users' hard negatives and retention.
//!
//! A session belongs to one user and holds its events numbered 1, 2, 3...;
//! the number is the event's index plus one, so a range read is a slice.
//! Each session also keeps the set of entities its events named, so "already
//! seen" is one hash lookup during retrieve. Hard negatives are per user, the
//! union over all their sessions, and outlive the sessions that produced
//! them until `delete_user`.
//!
//! Retention counts from the log time of the close (the batch's HLC
//! physical milliseconds), never from a wall clock, so every replica
//! expires the same sessions at the same record. Closes arrive in log-time
//! order, so a queue of `(close log ms, session)` is sorted and `expire`
//! costs only what it drops.
//!
//! Decisions the contract leaves open:
//! - An event whose number is not the session's count plus one is ignored:
//!   validation assigns numbers upstream, and the check keeps "event n is
//!   at index n - 1" true whatever arrives.
//! - Events may be appended to a closed session (reconciliation appends
//!   merged events after a session's last number); validation refuses
//!   client events on closed sessions before they reach the log.
//! - Opening a session id that exists is ignored; after `delete_user` or
//!   expiry the id is unknown again and may be opened afresh.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::codec::{DecodeError, Put, Reader};
use crate::types::{EntityId, Epoch, Position, SeqNo, SessionId, Timestamp, UserId};

/// A session as reads return it: a copy, so readers never hold the store.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, SessionId, TidalDb, Timestamp, UserId};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// let now = Timestamp::now();
/// db.open_session(SessionId(1), UserId(7), now).unwrap();
/// db.close_session(SessionId(1), now).unwrap();
/// let info = db.session(SessionId(1)).unwrap();
/// assert_eq!((info.user, info.event_count, info.closed_at), (UserId(7), 0, Some(now)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub session: SessionId,
    /// Whose visit it is.
    pub user: UserId,
    /// When it was opened (the caller's time).
    pub opened_at: Timestamp,
    /// When it was closed (the caller's time), if it was.
    pub closed_at: Option<Timestamp>,
    /// How many events it holds, which is also its last event's number:
    /// the session's HWM on this node. Events are applied only in number
    /// order, so `1..=event_count` are all visible and none above (a
    /// follower shows a session as a gap-free prefix).
    pub event_count: u32,
}

/// One event of a session; events are numbered 1, 2, 3 per session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventRecord {
    /// The event's number in its session.
    pub seq: u32,
    /// The entity the event is about.
    pub entity: EntityId,
    /// The registered signal type's id.
    pub signal_type: u16,
    /// The signal's weight; negative makes `entity` a hard negative.
    pub weight: f64,
    /// When it happened (the caller's time).
    pub at: Timestamp,
    /// Appended by a reconciliation from a diverged suffix.
    pub merged: bool,
}

/// Where a session stands, for validation upstream: events go only to open
/// sessions, numbered after `events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Never opened, deleted with its user, or expired.
    Unknown,
    /// Open, holding `events` events.
    Open {
        /// The number of events so far; the next is numbered one more.
        events: u32,
    },
    /// Closed and not yet expired.
    Closed,
}

#[derive(Clone, Debug, PartialEq)]
struct Session {
    user: UserId,
    opened_at: Timestamp,
    /// The caller's close time and the close's log time in ms.
    closed: Option<(Timestamp, u64)>,
    events: Vec<EventRecord>,
    seen: HashSet<EntityId>,
    /// Where each merged event was first logged, with its number here:
    /// a merged event is appended once whatever reruns or overlapping
    /// suffixes bring it again. Empty unless a reconciliation touched it.
    origins: BTreeMap<Position, u32>,
}

impl Session {
    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<(SessionId, Session)>()
            + self.events.capacity() * std::mem::size_of::<EventRecord>()
            + self.seen.capacity() * (std::mem::size_of::<EntityId>() + 1)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct UserEntry {
    sessions: BTreeSet<SessionId>,
    negatives: HashSet<EntityId>,
}

/// Sessions, events and hard negatives of the users of one shard.
#[derive(Clone, Debug, Default)]
pub struct SessionStore {
    sessions: HashMap<SessionId, Session>,
    users: HashMap<UserId, UserEntry>,
    /// Closed sessions by close log time; entries whose session is gone (or
    /// closed again at another time after a reopen) are skipped.
    closes: VecDeque<(u64, SessionId)>,
}

impl PartialEq for SessionStore {
    /// Equal sessions and users; the expiry queue is an index over them
    /// whose stale entries do not count.
    fn eq(&self, other: &Self) -> bool {
        self.sessions == other.sessions && self.users == other.users
    }
}

/// Encoded bytes of one event: entity, signal type, weight, time.
const EVENT_BYTES: usize = 8 + 2 + 8 + 8;

/// Appends `ev` to `s`: its entity is seen in the session, and a negative
/// weight makes it a hard negative of the session's user.
fn push_event(s: &mut Session, users: &mut HashMap<UserId, UserEntry>, ev: EventRecord) {
    s.events.push(ev);
    s.seen.insert(ev.entity);
    if ev.weight < 0.0 {
        users.entry(s.user).or_default().negatives.insert(ev.entity);
    }
}

impl SessionStore {
    /// An empty store.
    pub fn new() -> Self {
        SessionStore::default()
    }

    /// Where a session stands, for validation upstream.
    pub fn status(&self, session: SessionId) -> SessionStatus {
        match self.sessions.get(&session) {
            None => SessionStatus::Unknown,
            Some(s) if s.closed.is_some() => SessionStatus::Closed,
            Some(s) => SessionStatus::Open {
                events: s.events.len() as u32,
            },
        }
    }

    /// Whether the session is closed and a batch at log time `log_ms` drops
    /// it (the condition of [`SessionStore::expire`]), so validation of that
    /// batch treats it as unknown, as the batch's apply will.
    pub fn expires_by(&self, session: SessionId, log_ms: u64, retention_ms: u64) -> bool {
        self.sessions
            .get(&session)
            .and_then(|s| s.closed)
            .is_some_and(|(_, closed_ms)| closed_ms.saturating_add(retention_ms) < log_ms)
    }

    /// The session's user, so a router can place the session's records.
    pub fn user_of(&self, session: SessionId) -> Option<UserId> {
        self.sessions.get(&session).map(|s| s.user)
    }

    /// For a closed session: its user, the entities of its positive events
    /// (first occurrence order, the user's hard negatives left out) and the
    /// user's hard negatives (from any session) it showed, by id. `None`
    /// if the session is unknown or still open.
    pub fn preference(&self, session: SessionId) -> Option<(UserId, Vec<EntityId>, Vec<EntityId>)> {
        let s = self.sessions.get(&session)?;
        s.closed?;
        let negatives = self.users.get(&s.user).map(|u| &u.negatives);
        let is_negative = |e: &EntityId| negatives.is_some_and(|n| n.contains(e));
        let mut chosen: Vec<EntityId> = Vec::new();
        for ev in &s.events {
            if ev.weight > 0.0 && !is_negative(&ev.entity) && !chosen.contains(&ev.entity) {
                chosen.push(ev.entity);
            }
        }
        let mut rejected: Vec<EntityId> = s.seen.iter().copied().filter(is_negative).collect();
        rejected.sort_unstable();
        Some((s.user, chosen, rejected))
    }

    /// Opens a session of `user`; an id that exists is left as it is.
    pub fn open(&mut self, session: SessionId, user: UserId, at: Timestamp) {
        if self.sessions.contains_key(&session) {
            return;
        }
        self.sessions.insert(
            session,
            Session {
                user,
                opened_at: at,
                closed: None,
                events: Vec::new(),
                seen: HashSet::new(),
                origins: BTreeMap::new(),
            },
        );
        self.users.entry(user).or_default().sessions.insert(session);
    }

    /// Appends an event (seq given by the caller = previous count + 1). A
    /// negative weight makes `entity` one of the user's hard negatives (a
    /// union over all sessions). Ignored for unknown sessions and for a
    /// number out of sequence.
    pub fn record(&mut self, session: SessionId, ev: EventRecord) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if usize::try_from(ev.seq).ok() != Some(s.events.len() + 1) {
            return;
        }
        push_event(s, &mut self.users, ev);
    }

    /// Appends a reconciled event (numbered after the session's last, open
    /// or closed) unless the event from `origin` is already here; its
    /// weight counts toward the user's hard negatives like any event. An
    /// unknown session takes nothing (reconciliation opens it first).
    pub fn merge_event(&mut self, session: SessionId, origin: Position, mut ev: EventRecord) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.origins.contains_key(&origin) {
            return;
        }
        ev.seq = s.events.len() as u32 + 1;
        ev.merged = true;
        s.origins.insert(origin, ev.seq);
        push_event(s, &mut self.users, ev);
    }

    /// Whether the event first logged at `origin` was merged into the
    /// session.
    pub fn has_merged(&self, session: SessionId, origin: Position) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.origins.contains_key(&origin))
    }

    /// Closes an open session at the caller's time `at`. `log_ms` is the
    /// batch's log time (HLC physical ms); retention counts from it so every
    /// replica expires the same sessions. Closing twice keeps the first.
    pub fn close(&mut self, session: SessionId, at: Timestamp, log_ms: u64) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.closed.is_some() {
            return;
        }
        // Log time never goes back; if it did, clamping keeps the queue
        // sorted (the session then expires a little later, on every replica
        // alike).
        let log_ms = self.closes.back().map_or(log_ms, |&(b, _)| b.max(log_ms));
        s.closed = Some((at, log_ms));
        self.closes.push_back((log_ms, session));
    }

    fn remove_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(u) = self.users.get_mut(&s.user) {
            u.sessions.remove(&session);
            if u.sessions.is_empty() && u.negatives.is_empty() {
                self.users.remove(&s.user);
            }
        }
    }

    /// Removes the user's sessions (open and closed) and hard negatives.
    pub fn delete_user(&mut self, user: UserId) {
        let Some(u) = self.users.remove(&user) else {
            return;
        };
        for session in u.sessions {
            self.sessions.remove(&session);
        }
    }

    /// Drops closed sessions whose close log time + retention_ms < log_ms.
    /// Called once per batch; costs O(expired), never a scan.
    pub fn expire(&mut self, log_ms: u64, retention_ms: u64) {
        while let Some(&(closed_ms, session)) = self.closes.front() {
            if closed_ms.saturating_add(retention_ms) >= log_ms {
                break;
            }
            self.closes.pop_front();
            let current = self
                .sessions
                .get(&session)
                .and_then(|s| s.closed)
                .is_some_and(|(_, ms)| ms == closed_ms);
            if current {
                self.remove_session(session);
            }
        }
    }

    /// A copy of the session's header.
    pub fn info(&self, session: SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&session)?;
        Some(SessionInfo {
            session,
            user: s.user,
            opened_at: s.opened_at,
            closed_at: s.closed.map(|(at, _)| at),
            event_count: s.events.len() as u32,
        })
    }

    /// Events with seq >= from_seq, at most `limit`, in order: a slice,
    /// since event n sits at index n - 1.
    pub fn events(&self, session: SessionId, from_seq: u32, limit: usize) -> Vec<EventRecord> {
        let Some(s) = self.sessions.get(&session) else {
            return Vec::new();
        };
        let start = usize::try_from(from_seq.max(1) - 1).unwrap_or(usize::MAX);
        s.events
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .take(limit)
            .copied()
            .collect()
    }

    /// Whether the session has an event about `entity` ("already seen").
    pub fn has_seen(&self, session: SessionId, entity: EntityId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.seen.contains(&entity))
    }

    /// Whether `entity` is one of the user's hard negatives.
    pub fn is_hard_negative(&self, user: UserId, entity: EntityId) -> bool {
        self.users
            .get(&user)
            .is_some_and(|u| u.negatives.contains(&entity))
    }

    /// The user's hard negatives, sorted so the output is deterministic.
    pub fn hard_negatives(&self, user: UserId) -> Vec<EntityId> {
        let mut v: Vec<EntityId> = self
            .users
            .get(&user)
            .map(|u| u.negatives.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// The user's sessions, open and closed, sorted.
    pub fn sessions_of(&self, user: UserId) -> Vec<SessionId> {
        self.users
            .get(&user)
            .map(|u| u.sessions.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The number of sessions held, open and closed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Approximate heap bytes held, for memory accounting in `status()`.
    pub fn approx_bytes(&self) -> usize {
        self.sessions
            .values()
            .map(Session::approx_bytes)
            .sum::<usize>()
            + self
                .users
                .values()
                .map(|u| {
                    std::mem::size_of::<(UserId, UserEntry)>()
                        + u.sessions.len() * std::mem::size_of::<SessionId>() * 2
                        + u.negatives.capacity() * (std::mem::size_of::<EntityId>() + 1)
                })
                .sum::<usize>()
            + self.closes.capacity() * std::mem::size_of::<(u64, SessionId)>()
    }

    /// Appends the snapshot section: sessions sorted by id with their
    /// events, then hard negatives sorted by user and entity, so replicas
    /// holding the same contents write the same bytes. The expiry queue and
    /// seen sets are rebuilt on decode.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        out.put_u32(ids.len() as u32);
        for id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            out.put_u64(id.0);
            out.put_u64(s.user.0);
            out.put_u64(s.opened_at.0);
            match s.closed {
                None => out.put_u8(0),
                Some((at, ms)) => {
                    out.put_u8(1);
                    out.put_u64(at.0);
                    out.put_u64(ms);
                }
            }
            out.put_u32(s.events.len() as u32);
            for e in &s.events {
                out.put_u64(e.entity.0);
                out.put_u16(e.signal_type);
                out.put_f64(e.weight);
                out.put_u64(e.at.0);
            }
            out.put_u32(s.origins.len() as u32);
            for (origin, seq) in &s.origins {
                out.put_u64(origin.epoch.0);
                out.put_u64(origin.seqno.0);
                out.put_u32(*seq);
            }
        }
        let mut users: Vec<(UserId, &UserEntry)> = self
            .users
            .iter()
            .filter(|(_, u)| !u.negatives.is_empty())
            .map(|(&id, u)| (id, u))
            .collect();
        users.sort_unstable_by_key(|&(id, _)| id);
        out.put_u32(users.len() as u32);
        for (id, u) in users {
            out.put_u64(id.0);
            let mut neg: Vec<EntityId> = u.negatives.iter().copied().collect();
            neg.sort_unstable();
            out.put_u32(neg.len() as u32);
            for e in neg {
                out.put_u64(e.0);
            }
        }
    }

    /// Reads a section written by [`SessionStore::encode`], refusing
    /// unsorted or duplicate ids and unknown flags.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut store = SessionStore::new();
        let mut closes: Vec<(u64, SessionId)> = Vec::new();
        let n = r.count(8 + 8 + 8 + 1 + 4)?;
        let mut prev: Option<SessionId> = None;
        for _ in 0..n {
            let id = SessionId(r.u64()?);
            if prev.is_some_and(|p| p >= id) {
                return Err(r.error("session ids not strictly ascending"));
            }
            prev = Some(id);
            let user = UserId(r.u64()?);
            let opened_at = Timestamp(r.u64()?);
            let closed = match r.u8()? {
                0 => None,
                1 => Some((Timestamp(r.u64()?), r.u64()?)),
                _ => return Err(r.error("unknown session flag")),
            };
            let ne = r.count(EVENT_BYTES)?;
            let mut events = Vec::with_capacity(ne);
            let mut seen = HashSet::new();
            for i in 0..ne {
                let e = EventRecord {
                    seq: (i + 1) as u32,
                    entity: EntityId(r.u64()?),
                    signal_type: r.u16()?,
                    weight: r.f64()?,
                    at: Timestamp(r.u64()?),
                    merged: false,
                };
                seen.insert(e.entity);
                events.push(e);
            }
            let no = r.count(8 + 8 + 4)?;
            let mut origins = BTreeMap::new();
            for _ in 0..no {
                let origin = Position::new(Epoch(r.u64()?), SeqNo(r.u64()?));
                let seq = r.u32()?;
                let Some(e) = usize::try_from(seq)
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| events.get_mut(i))
                else {
                    return Err(r.error(format!("merged event {seq} out of range")));
                };
                if e.merged || origins.insert(origin, seq).is_some() {
                    return Err(r.error("merged event listed twice"));
                }
                e.merged = true;
            }
            if let Some((_, ms)) = closed {
                closes.push((ms, id));
            }
            store.users.entry(user).or_default().sessions.insert(id);
            store.sessions.insert(
                id,
                Session {
                    user,
                    opened_at,
                    closed,
                    events,
                    seen,
                    origins,
                },
            );
        }
        let nu = r.count(8 + 4)?;
        let mut prev: Option<UserId> = None;
        for _ in 0..nu {
            let user = UserId(r.u64()?);
            if prev.is_some_and(|p| p >= user) {
                return Err(r.error("users not strictly ascending"));
            }
            prev = Some(user);
            let nn = r.count(8)?;
            if nn == 0 {
                return Err(r.error("user without hard negatives"));
            }
            let u = store.users.entry(user).or_default();
            for _ in 0..nn {
                if !u.negatives.insert(EntityId(r.u64()?)) {
                    return Err(r.error("hard negative listed twice"));
                }
            }
        }
        closes.sort_unstable();
        store.closes = closes.into();
        Ok(store)
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
