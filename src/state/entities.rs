//! Items and creators: kinds, metadata and tombstones.
//!
//! Every metadata field, an item's creator, the entity's existence and its
//! tombstone are last-writer-wins registers ordered by [`Stamp`]. Because a
//! register keeps the larger stamp whatever the order of the calls, two
//! stores fed the same upserts and deletes in any order hold the same
//! contents, which is what lets reconciliation replay an old leader's suffix
//! without caring how it interleaves with the current history.
//!
//! Decisions the contract leaves open:
//! - A delete drops exactly the fields, creator and existence whose stamps
//!   are at or below the tombstone; in log order that is everything (the
//!   memory is freed), out of order a newer field survives, as LWW requires.
//! - Two writes with the same stamp cannot come from two records (stamps are
//!   unique per record); if one record names a key twice, the larger value
//!   wins, so the outcome still does not depend on the order.
//! - A write naming an id of the other kind is ignored: validation refuses
//!   it upstream and reconciliation drops such records, so reaching here it
//!   is a no-op rather than a panic.

use std::collections::HashMap;

use crate::codec::{DecodeError, Put, Reader};
use crate::crdt::hlc::Hlc;
use crate::types::{EntityId, EntityKind, NodeId, SeqNo};

/// Orders writes for last-writer-wins: (batch HLC, node of the epoch's
/// leader, SeqNo), unique per record.
///
/// The HLC comes first so that the newest write wins across failovers; the
/// node and SeqNo make every record's stamp distinct, so no two records tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Stamp {
    /// The HLC of the batch that carried the record.
    pub hlc: Hlc,
    /// The leader node of the record's epoch.
    pub node: NodeId,
    /// The record's place in its log.
    pub seqno: SeqNo,
}

/// Bytes of an encoded [`Stamp`].
const STAMP_BYTES: usize = 24;

fn put_stamp(out: &mut Vec<u8>, s: Stamp) {
    out.put_u64(s.hlc.0);
    out.put_u64(s.node.0);
    out.put_u64(s.seqno.0);
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp, DecodeError> {
    Ok(Stamp {
        hlc: Hlc(r.u64()?),
        node: NodeId(r.u64()?),
        seqno: SeqNo(r.u64()?),
    })
}

/// An item as reads return it: a copy, so readers never hold the store.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, TidalDb};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// db.write_item(EntityId(1), Some(EntityId(9)), &[("lang", "en")]).unwrap();
/// let item = db.get_item(EntityId(1)).unwrap();
/// assert_eq!((item.creator, item.metadata["lang"].as_str()), (Some(EntityId(9)), "en"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The item's id.
    pub id: EntityId,
    /// Who made it, when a write named a creator.
    pub creator: Option<EntityId>,
    /// Its live metadata fields.
    pub metadata: HashMap<String, String>,
}

/// A creator as reads return it: a copy, so readers never hold the store.
///
/// ```
/// # use std::time::Duration;
/// use tidal::{Config, EntityId, TidalDb};
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = TidalDb::open(Config::builder(dir.path()).signal_type("like", Duration::from_secs(60)).build().unwrap()).unwrap();
/// db.write_creator(EntityId(9), &[("name", "ada")]).unwrap();
/// assert_eq!(db.get_creator(EntityId(9)).unwrap().metadata["name"], "ada");
/// assert!(db.get_item(EntityId(9)).is_none()); // a creator, not an item
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creator {
    /// The creator's id.
    pub id: EntityId,
    /// Its live metadata fields.
    pub metadata: HashMap<String, String>,
}

/// One metadata field: a last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    key: Box<str>,
    value: Box<str>,
    stamp: Stamp,
}

/// Per-entity state, kept small: a sorted Vec of fields instead of a map.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Sticky: an id is one kind forever, deleted or not.
    kind: EntityKind,
    /// The newest delete, if any.
    tombstone: Option<Stamp>,
    /// The newest upsert, when it is newer than the tombstone: the entity
    /// is live exactly when this is set.
    written: Option<Stamp>,
    /// An item's creator with the stamp that set it.
    creator: Option<(EntityId, Stamp)>,
    /// The stamp of the embedding the vector store holds, if any: an
    /// embedding is a last-writer-wins register too.
    embedded: Option<Stamp>,
    /// Sorted by key, keys unique.
    fields: Vec<Field>,
}

impl Entry {
    fn new(kind: EntityKind) -> Entry {
        Entry {
            kind,
            tombstone: None,
            written: None,
            creator: None,
            embedded: None,
            fields: Vec::new(),
        }
    }

    fn is_live(&self) -> bool {
        self.written.is_some()
    }

    fn field(&self, key: &str) -> Option<&Field> {
        self.fields
            .binary_search_by(|f| (*f.key).cmp(key))
            .ok()
            .and_then(|i| self.fields.get(i))
    }

    fn metadata(&self) -> HashMap<String, String> {
        self.fields
            .iter()
            .map(|f| (f.key.to_string(), f.value.to_string()))
            .collect()
    }

    /// Heap bytes outside the map slot itself.
    fn heap_bytes(&self) -> usize {
        self.fields.capacity() * std::mem::size_of::<Field>()
            + self
                .fields
                .iter()
                .map(|f| f.key.len() + f.value.len())
                .sum::<usize>()
    }
}

/// What a delete did to the entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The id is of the other kind: nothing changed.
    WrongKind,
    /// The entity is deleted: its score and embedding go with it.
    Gone,
    /// A write newer than the delete keeps the entity live (only a
    /// reconciled delete can be older than the entity's newest write);
    /// `embedding_dropped` says whether its embedding was older.
    StillLive {
        /// The stored embedding was older than the delete.
        embedding_dropped: bool,
    },
}

/// Items and creators with their metadata, creators and tombstones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntityStore {
    entries: HashMap<EntityId, Entry>,
}

impl EntityStore {
    /// An empty store.
    pub fn new() -> Self {
        EntityStore::default()
    }

    /// The kind an id is bound to. Kinds are sticky: a deleted id keeps its
    /// kind (its tombstone does), so an id is one kind forever.
    pub fn kind_of(&self, id: EntityId) -> Option<EntityKind> {
        self.entries.get(&id).map(|e| e.kind)
    }

    /// Whether the id was written and is not deleted since, so reads show it.
    #[cfg(test)]
    pub fn is_live(&self, id: EntityId) -> bool {
        self.entries.get(&id).is_some_and(Entry::is_live)
    }

    /// Upsert: each field is a last-writer-wins register stamped with
    /// `stamp` (a field is replaced only by a larger stamp); for items,
    /// `creator: Some(c)` sets the creator (also LWW). A write with a stamp
    /// newer than the entity's tombstone brings it back as a fresh entity
    /// (fields older than the tombstone stay gone); one older than the
    /// tombstone is ignored, so a late write never resurrects a delete.
    pub fn upsert(
        &mut self,
        kind: EntityKind,
        id: EntityId,
        creator: Option<EntityId>,
        fields: &[(String, String)],
        stamp: Stamp,
    ) {
        let e = self.entries.entry(id).or_insert_with(|| Entry::new(kind));
        if e.kind != kind || e.tombstone.is_some_and(|t| stamp <= t) {
            return;
        }
        e.written = e.written.max(Some(stamp));
        if let (EntityKind::Item, Some(c)) = (kind, creator) {
            let newer = match e.creator {
                None => true,
                Some((old, s)) => (stamp, c) > (s, old),
            };
            if newer {
                e.creator = Some((c, stamp));
            }
        }
        for (key, value) in fields {
            match e.fields.binary_search_by(|f| (*f.key).cmp(key.as_str())) {
                Ok(i) => {
                    if let Some(f) = e.fields.get_mut(i) {
                        // Equal stamps only come from one record naming a
                        // key twice: the larger value wins in any order.
                        if (stamp, value.as_str()) > (f.stamp, &*f.value) {
                            f.value = value.as_str().into();
                            f.stamp = stamp;
                        }
                    }
                }
                Err(i) => e.fields.insert(
                    i,
                    Field {
                        key: key.as_str().into(),
                        value: value.as_str().into(),
                        stamp,
                    },
                ),
            }
        }
    }

    /// An embedding write stamped `stamp`: whether it wins (the id has this
    /// kind, and the stamp is newer than the tombstone and than the stored
    /// embedding), in which case the caller stores the vector. Like an
    /// upsert, it makes the entity live.
    pub fn embed(&mut self, kind: EntityKind, id: EntityId, stamp: Stamp) -> bool {
        let e = self.entries.entry(id).or_insert_with(|| Entry::new(kind));
        if e.kind != kind
            || e.tombstone.is_some_and(|t| stamp <= t)
            || e.embedded.is_some_and(|s| stamp <= s)
        {
            return false;
        }
        e.written = e.written.max(Some(stamp));
        e.embedded = Some(stamp);
        true
    }

    /// Tombstone: metadata dropped (memory freed), kind and stamp kept, so
    /// older writes arriving later stay ignored and the id keeps its kind.
    /// Only what is older than the delete goes: a write stamped after it (a
    /// reconciled delete can be older than this lineage's writes) stays.
    pub fn delete(&mut self, kind: EntityKind, id: EntityId, stamp: Stamp) -> Deleted {
        let e = self.entries.entry(id).or_insert_with(|| Entry::new(kind));
        if e.kind != kind {
            return Deleted::WrongKind;
        }
        let t = e.tombstone.max(Some(stamp)).unwrap_or(stamp);
        e.tombstone = Some(t);
        if e.written.is_some_and(|w| w <= t) {
            e.written = None;
        }
        if e.creator.is_some_and(|(_, s)| s <= t) {
            e.creator = None;
        }
        let embedding_dropped = e.embedded.is_some_and(|s| s <= t);
        if embedding_dropped {
            e.embedded = None;
        }
        e.fields.retain(|f| f.stamp > t);
        if e.fields.is_empty() {
            e.fields = Vec::new();
        } else {
            e.fields.shrink_to_fit();
        }
        if e.is_live() {
            Deleted::StillLive { embedding_dropped }
        } else {
            Deleted::Gone
        }
    }

    /// The stamp of the newest delete of `id`, live again or not: what a
    /// merge compares an incoming record against.
    pub fn tombstone(&self, id: EntityId) -> Option<Stamp> {
        self.entries.get(&id).and_then(|e| e.tombstone)
    }

    fn live(&self, id: EntityId) -> Option<&Entry> {
        self.entries.get(&id).filter(|e| e.is_live())
    }

    /// A live item; None for creators, deleted ids and unknown ids.
    pub fn item(&self, id: EntityId) -> Option<Item> {
        let e = self.live(id).filter(|e| e.kind == EntityKind::Item)?;
        Some(Item {
            id,
            creator: e.creator.map(|(c, _)| c),
            metadata: e.metadata(),
        })
    }

    /// A live creator; None for items, deleted ids and unknown ids.
    pub fn creator(&self, id: EntityId) -> Option<Creator> {
        let e = self.live(id).filter(|e| e.kind == EntityKind::Creator)?;
        Some(Creator {
            id,
            metadata: e.metadata(),
        })
    }

    /// The number of live metadata fields (0 for deleted or unknown ids),
    /// so validation can enforce the per-entity field limit.
    pub fn field_count(&self, id: EntityId) -> usize {
        self.live(id).map_or(0, |e| e.fields.len())
    }

    /// Whether a live entity has the field, so validation can tell a new
    /// field (counted against the limit) from an overwrite.
    pub fn has_field(&self, id: EntityId, key: &str) -> bool {
        self.live(id).is_some_and(|e| e.field(key).is_some())
    }

    /// A live item's creator, for the creator filter without copying metadata.
    #[cfg(test)]
    pub fn creator_of(&self, id: EntityId) -> Option<EntityId> {
        self.live(id).and_then(|e| e.creator.map(|(c, _)| c))
    }

    /// Filter used by retrieve and search: kind equal (if given; an id with
    /// no known kind matches no kind filter), every (key, value) equal,
    /// creator equal (if given). Deleted entities never match a filter that
    /// asks for kind, metadata or creator; with no filter every id matches.
    pub fn matches(
        &self,
        id: EntityId,
        kind: Option<EntityKind>,
        metadata: &[(String, String)],
        creator: Option<EntityId>,
    ) -> bool {
        if kind.is_none() && metadata.is_empty() && creator.is_none() {
            return true;
        }
        let Some(e) = self.live(id) else {
            return false;
        };
        if kind.is_some_and(|k| k != e.kind) {
            return false;
        }
        if creator.is_some() && e.creator.map(|(c, _)| c) != creator {
            return false;
        }
        metadata
            .iter()
            .all(|(k, v)| e.field(k).is_some_and(|f| *f.value == **v))
    }

    /// Approximate heap bytes held, for memory accounting in `status()`.
    pub fn approx_bytes(&self) -> usize {
        // A hash map slot holds the pair plus one control byte.
        self.entries.capacity() * (std::mem::size_of::<(EntityId, Entry)>() + 1)
            + self.entries.values().map(Entry::heap_bytes).sum::<usize>()
    }

    /// Appends the snapshot section: entries sorted by id, so replicas
    /// holding the same contents write the same bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut ids: Vec<EntityId> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        out.put_u32(ids.len() as u32);
        for id in ids {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            out.put_u64(id.0);
            out.put_u8(e.kind.to_byte());
            let flags = u8::from(e.tombstone.is_some())
                | u8::from(e.written.is_some()) << 1
                | u8::from(e.creator.is_some()) << 2
                | u8::from(e.embedded.is_some()) << 3;
            out.put_u8(flags);
            if let Some(t) = e.tombstone {
                put_stamp(out, t);
            }
            if let Some(w) = e.written {
                put_stamp(out, w);
            }
            if let Some((c, s)) = e.creator {
                out.put_u64(c.0);
                put_stamp(out, s);
            }
            if let Some(s) = e.embedded {
                put_stamp(out, s);
            }
            out.put_u32(e.fields.len() as u32);
            for f in &e.fields {
                out.put_str(&f.key);
                out.put_str(&f.value);
                put_stamp(out, f.stamp);
            }
        }
    }

    /// Reads a section written by [`EntityStore::encode`], refusing anything
    /// that breaks the store's invariants (unknown kind or flags, duplicate
    /// ids, unsorted fields, a live part older than the tombstone).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // id, kind, flags, field count.
        let n = r.count(8 + 1 + 1 + 4)?;
        let mut entries = HashMap::with_capacity(n);
        let mut prev: Option<EntityId> = None;
        for _ in 0..n {
            let id = EntityId(r.u64()?);
            if prev.is_some_and(|p| p >= id) {
                return Err(r.error("entity ids not strictly ascending"));
            }
            prev = Some(id);
            let kind = EntityKind::from_byte(r.u8()?).ok_or_else(|| r.error("unknown kind"))?;
            let flags = r.u8()?;
            if flags & !0b1111 != 0 {
                return Err(r.error("unknown entity flags"));
            }
            let mut e = Entry::new(kind);
            if flags & 1 != 0 {
                e.tombstone = Some(read_stamp(r)?);
            }
            if flags & 2 != 0 {
                e.written = Some(read_stamp(r)?);
            }
            if flags & 4 != 0 {
                e.creator = Some((EntityId(r.u64()?), read_stamp(r)?));
            }
            if flags & 8 != 0 {
                e.embedded = Some(read_stamp(r)?);
            }
            let nf = r.count(4 + 4 + STAMP_BYTES)?;
            let mut fields = Vec::with_capacity(nf);
            for _ in 0..nf {
                let key: Box<str> = r.str()?.into();
                let value: Box<str> = r.str()?.into();
                let stamp = read_stamp(r)?;
                if fields.last().is_some_and(|p: &Field| p.key >= key) {
                    return Err(r.error("entity fields not strictly ascending"));
                }
                fields.push(Field { key, value, stamp });
            }
            e.fields = fields;
            let t = e.tombstone;
            let newer = |s: Stamp| t.is_none_or(|t| s > t);
            let consistent = (e.tombstone.is_some() || e.written.is_some())
                && e.written.is_none_or(newer)
                && (e.written.is_some() || (e.creator.is_none() && e.fields.is_empty()))
                && e.creator.is_none_or(|(_, s)| newer(s))
                && e.embedded.is_none_or(|s| newer(s) && e.written.is_some())
                && (kind == EntityKind::Item || e.creator.is_none())
                && e.fields.iter().all(|f| newer(f.stamp));
            if !consistent {
                return Err(r.error(format!("inconsistent entity {id}")));
            }
            entries.insert(id, e);
        }
        Ok(EntityStore { entries })
    }
}

#[cfg(test)]
#[path = "entities_tests.rs"]
mod tests;
