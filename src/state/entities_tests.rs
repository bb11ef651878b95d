//! Tests of the entity store, kept beside it in their own file so the
//! store stays under the size limit.

use super::*;
use proptest::prelude::*;

fn st(n: u64) -> Stamp {
    Stamp {
        hlc: Hlc::new(1_000 + n, 0),
        node: NodeId(1),
        seqno: SeqNo(n),
    }
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn round_trip(s: &EntityStore) -> EntityStore {
    let mut buf = Vec::new();
    s.encode(&mut buf);
    let mut r = Reader::new(&buf);
    let d = EntityStore::decode(&mut r).expect("decodes");
    assert!(r.is_empty());
    d
}

#[test]
fn upsert_merges_fields_and_reads_back() {
    let mut s = EntityStore::new();
    let id = EntityId(7);
    s.upsert(
        EntityKind::Item,
        id,
        Some(EntityId(9)),
        &[kv("a", "1")],
        st(1),
    );
    s.upsert(
        EntityKind::Item,
        id,
        None,
        &[kv("b", "2"), kv("a", "3")],
        st(2),
    );
    let item = s.item(id).expect("live");
    assert_eq!(item.creator, Some(EntityId(9)));
    assert_eq!(item.metadata.get("a").map(String::as_str), Some("3"));
    assert_eq!(item.metadata.len(), 2);
    assert_eq!(s.field_count(id), 2);
    assert!(s.has_field(id, "b") && !s.has_field(id, "c"));
    assert!(s.creator(id).is_none());
    assert_eq!(s.kind_of(id), Some(EntityKind::Item));
    assert_eq!(round_trip(&s), s);
}

#[test]
fn an_older_stamp_never_replaces_a_field() {
    let mut s = EntityStore::new();
    let id = EntityId(1);
    s.upsert(EntityKind::Creator, id, None, &[kv("a", "new")], st(5));
    s.upsert(EntityKind::Creator, id, None, &[kv("a", "old")], st(3));
    let c = s.creator(id).expect("live");
    assert_eq!(c.metadata.get("a").map(String::as_str), Some("new"));
}

#[test]
fn tombstone_wins_over_older_and_loses_to_newer() {
    let mut s = EntityStore::new();
    let id = EntityId(3);
    s.upsert(
        EntityKind::Item,
        id,
        Some(EntityId(4)),
        &[kv("a", "1")],
        st(1),
    );
    s.delete(EntityKind::Item, id, st(5));
    assert!(!s.is_live(id));
    assert!(s.item(id).is_none());
    assert_eq!(s.tombstone(id), Some(st(5)));
    assert_eq!(s.kind_of(id), Some(EntityKind::Item));
    assert_eq!(s.creator_of(id), None);
    // Older than the tombstone: ignored.
    s.upsert(EntityKind::Item, id, None, &[kv("b", "2")], st(4));
    assert!(!s.is_live(id));
    // Newer: a fresh entity without the old fields.
    s.upsert(EntityKind::Item, id, None, &[kv("c", "3")], st(6));
    let item = s.item(id).expect("live again");
    assert_eq!(item.creator, None);
    assert_eq!(item.metadata.len(), 1);
    assert!(item.metadata.contains_key("c"));
    assert_eq!(s.tombstone(id), Some(st(5)));
    assert_eq!(round_trip(&s), s);
}

#[test]
fn an_upsert_without_fields_makes_a_live_entity() {
    let mut s = EntityStore::new();
    s.upsert(EntityKind::Creator, EntityId(2), None, &[], st(1));
    assert!(s.is_live(EntityId(2)));
    assert_eq!(s.creator(EntityId(2)).map(|c| c.metadata.len()), Some(0));
}

#[test]
fn kind_is_sticky_even_after_delete() {
    let mut s = EntityStore::new();
    let id = EntityId(8);
    s.upsert(EntityKind::Item, id, None, &[kv("a", "1")], st(1));
    s.upsert(EntityKind::Creator, id, None, &[kv("a", "2")], st(2));
    assert_eq!(s.kind_of(id), Some(EntityKind::Item));
    assert!(s.creator(id).is_none());
    s.delete(EntityKind::Creator, id, st(3));
    assert!(s.is_live(id));
    s.delete(EntityKind::Item, id, st(4));
    s.upsert(EntityKind::Creator, id, None, &[], st(5));
    assert_eq!(s.kind_of(id), Some(EntityKind::Item));
    assert!(!s.is_live(id));
    // A delete of an unknown id still binds its kind.
    s.delete(EntityKind::Creator, EntityId(9), st(6));
    assert_eq!(s.kind_of(EntityId(9)), Some(EntityKind::Creator));
    assert_eq!(round_trip(&s), s);
}

#[test]
fn matches_filters_by_kind_metadata_and_creator() {
    let mut s = EntityStore::new();
    let (i, c, d) = (EntityId(1), EntityId(2), EntityId(3));
    s.upsert(
        EntityKind::Item,
        i,
        Some(c),
        &[kv("lang", "en"), kv("x", "1")],
        st(1),
    );
    s.upsert(EntityKind::Creator, c, None, &[kv("lang", "en")], st(2));
    s.upsert(EntityKind::Item, d, Some(c), &[kv("lang", "en")], st(3));
    s.delete(EntityKind::Item, d, st(4));
    let en = [kv("lang", "en")];
    let fr = [kv("lang", "fr")];
    assert!(s.matches(i, Some(EntityKind::Item), &en, Some(c)));
    assert!(!s.matches(i, Some(EntityKind::Creator), &[], None));
    assert!(!s.matches(i, None, &fr, None));
    assert!(!s.matches(i, None, &[kv("missing", "en")], None));
    assert!(!s.matches(i, None, &[], Some(EntityId(99))));
    assert!(s.matches(c, Some(EntityKind::Creator), &en, None));
    assert!(!s.matches(c, None, &[], Some(c)));
    // Unknown ids match only the empty filter.
    assert!(s.matches(EntityId(50), None, &[], None));
    assert!(!s.matches(EntityId(50), Some(EntityKind::Item), &[], None));
    // Deleted ids never match a real filter.
    assert!(!s.matches(d, Some(EntityKind::Item), &[], None));
    assert!(!s.matches(d, None, &en, None));
    assert!(!s.matches(d, None, &[], Some(c)));
}

#[derive(Clone, Debug)]
enum Op {
    Upsert(u64, Option<u64>, Vec<(String, String)>),
    Delete(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let field = ("[ab]", "[xyz]").prop_map(|(k, v)| (k, v));
    prop_oneof![
        3 => (0u64..3, proptest::option::of(10u64..13), proptest::collection::vec(field, 0..3))
            .prop_map(|(id, c, f)| Op::Upsert(id, c, f)),
        1 => (0u64..3).prop_map(Op::Delete),
    ]
}

fn apply(s: &mut EntityStore, seq: u64, op: &Op) {
    let kind = EntityKind::Item;
    match op {
        Op::Upsert(id, c, f) => s.upsert(kind, EntityId(*id), c.map(EntityId), f, st(seq)),
        Op::Delete(id) => {
            s.delete(kind, EntityId(*id), st(seq));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn last_writer_wins_regardless_of_call_order(
        ops in proptest::collection::vec(op(), 0..16),
        order in any::<u64>(),
    ) {
        let mut in_order = EntityStore::new();
        for (i, o) in ops.iter().enumerate() {
            apply(&mut in_order, i as u64, o);
        }
        let mut idx: Vec<usize> = (0..ops.len()).collect();
        // Deterministic Fisher-Yates from the generated seed.
        let mut x = order | 1;
        for i in (1..idx.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            idx.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut shuffled = EntityStore::new();
        for i in idx {
            apply(&mut shuffled, i as u64, &ops[i]);
        }
        prop_assert_eq!(&in_order, &shuffled);
        for id in 0..3 {
            let id = EntityId(id);
            prop_assert_eq!(in_order.item(id), shuffled.item(id));
            prop_assert_eq!(in_order.tombstone(id), shuffled.tombstone(id));
        }
        prop_assert_eq!(&round_trip(&in_order), &in_order);
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = EntityStore::decode(&mut Reader::new(&bytes));
    }
}

#[test]
fn decode_of_damaged_sections_is_an_error() {
    let mut s = EntityStore::new();
    s.upsert(
        EntityKind::Item,
        EntityId(1),
        Some(EntityId(2)),
        &[kv("a", "b")],
        st(1),
    );
    s.delete(EntityKind::Creator, EntityId(3), st(2));
    let mut buf = Vec::new();
    s.encode(&mut buf);
    for cut in 0..buf.len() {
        assert!(EntityStore::decode(&mut Reader::new(&buf[..cut])).is_err());
    }
    for i in 0..buf.len() {
        let mut b = buf.clone();
        b[i] ^= 0xff;
        let _ = EntityStore::decode(&mut Reader::new(&b));
    }
}

#[test]
fn delete_frees_the_metadata() {
    let mut s = EntityStore::new();
    let long = "v".repeat(1_000);
    s.upsert(
        EntityKind::Item,
        EntityId(1),
        None,
        &[kv("a", &long), kv("b", &long)],
        st(1),
    );
    let before = s.approx_bytes();
    s.delete(EntityKind::Item, EntityId(1), st(2));
    assert!(s.approx_bytes() + 2_000 <= before);
}

#[test]
fn embeddings_are_last_writer_wins_and_deletes_keep_newer_writes() {
    let mut s = EntityStore::new();
    let id = EntityId(3);
    assert!(s.embed(EntityKind::Item, id, st(5)));
    // An older embedding (a reconciled one) loses; a newer one wins.
    assert!(!s.embed(EntityKind::Item, id, st(4)));
    assert!(s.embed(EntityKind::Item, id, st(6)));
    // The other kind never binds.
    assert!(!s.embed(EntityKind::Creator, id, st(9)));
    assert_eq!(s.delete(EntityKind::Creator, id, st(9)), Deleted::WrongKind);
    // A delete older than the newest write (a reconciled one) leaves the
    // entity live and drops only what is older.
    s.upsert(EntityKind::Item, id, None, &[kv("a", "1")], st(8));
    assert_eq!(
        s.delete(EntityKind::Item, id, st(7)),
        Deleted::StillLive {
            embedding_dropped: true
        }
    );
    assert!(s.is_live(id));
    assert_eq!(round_trip(&s), s);
    // An embedding older than the tombstone is refused; a newer one binds.
    assert!(!s.embed(EntityKind::Item, id, st(7)));
    assert!(s.embed(EntityKind::Item, id, st(10)));
    assert_eq!(round_trip(&s), s);
    assert_eq!(s.delete(EntityKind::Item, id, st(11)), Deleted::Gone);
    assert!(!s.is_live(id));
    assert_eq!(round_trip(&s), s);
}
