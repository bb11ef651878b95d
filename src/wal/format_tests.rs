//! Tests of the batch format and record codec.

use super::*;
use crate::crdt::ContributionKey;
use crate::state::entities::Stamp;
use crate::types::{EntityId, EntityKind, NodeId, Position, SessionId, Timestamp, UserId};
use crate::wal::record_codec::{TAG_IDEMPOTENCY_KEY, TAG_RECONCILED, TAG_SIGNAL, TAG_UPSERT};
use proptest::prelude::*;

const SCHEMA: Schema = Schema {
    signal_type_count: 4,
    dimension: 3,
};

fn meta(first: u64, count: u32) -> BatchMeta {
    BatchMeta {
        shard: ShardId(7),
        first_seqno: SeqNo(first),
        epoch: Epoch(2),
        hlc: Hlc::new(1_000, 5),
        record_count: count,
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
        | prop::num::f64::NEGATIVE
        | prop::num::f64::POSITIVE
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::ZERO | prop::num::f32::NEGATIVE
}

fn kind_strategy() -> impl Strategy<Value = EntityKind> {
    prop_oneof![Just(EntityKind::Item), Just(EntityKind::Creator)]
}

/// Metadata upserts, embeddings and deletes: what `Reconciled` wraps.
fn register_strategy() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            kind_strategy(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec((".{0,6}", ".{0,6}"), 0..4)
        )
            .prop_map(|(kind, id, c, fields)| Record::Upsert {
                kind,
                id: EntityId(id),
                creator: c.map(EntityId),
                fields,
            }),
        (
            kind_strategy(),
            any::<u64>(),
            proptest::collection::vec(finite_f32(), SCHEMA.dimension as usize)
        )
            .prop_map(|(kind, id, vector)| Record::Embedding {
                kind,
                id: EntityId(id),
                vector,
            }),
        (kind_strategy(), any::<u64>()).prop_map(|(kind, id)| Record::Delete {
            kind,
            id: EntityId(id)
        }),
    ]
}

pub(crate) fn record_strategy() -> impl Strategy<Value = Record> {
    prop_oneof![
        10 => plain_record_strategy(),
        1 => (any::<u64>(), any::<u64>(), any::<u64>(), register_strategy()).prop_map(
            |(h, n, q, r)| Record::Reconciled {
                stamp: Stamp {
                    hlc: Hlc(h),
                    node: NodeId(n),
                    seqno: SeqNo(q),
                },
                record: Box::new(r),
            }
        ),
        1 => (
            any::<u64>(),
            any::<u64>(),
            0..SCHEMA.signal_type_count,
            finite_f64(),
            any::<u64>(),
            any::<(u64, u64)>()
        )
            .prop_map(|(s, e, t, w, at, (oe, os))| Record::MergedSessionEvent {
                session: SessionId(s),
                entity: EntityId(e),
                signal_type: t,
                weight: w,
                at: Timestamp(at),
                origin: Position::new(Epoch(oe), SeqNo(os)),
            }),
        1 => (
            0..SCHEMA.signal_type_count,
            any::<(u64, u64, u64, u64)>(),
            (0.0..1e300f64, 0.0..1e300f64),
            any::<(u64, u64)>()
        )
            .prop_map(|(t, (e, ke, kn, lm), (p, n), (pc, nc))| Record::Merge {
                signal_type: t,
                entity: EntityId(e),
                key: ContributionKey {
                    epoch: Epoch(ke),
                    node: NodeId(kn),
                },
                landmark_ms: lm,
                positive_mass: p,
                negative_mass: n,
                positive_count: pc,
                negative_count: nc,
            }),
    ]
}

fn plain_record_strategy() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(e, n, h, r)| {
            Record::EpochStart {
                epoch: Epoch(e),
                leader_node: NodeId(n),
                hlc: Hlc(h),
                replicated: r,
            }
        }),
        (
            0..SCHEMA.signal_type_count,
            any::<u64>(),
            finite_f64(),
            any::<u64>()
        )
            .prop_map(|(t, e, w, at)| Record::Signal {
                signal_type: t,
                entity: EntityId(e),
                weight: w,
                at: Timestamp(at),
            }),
        register_strategy(),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(s, u, at)| Record::OpenSession {
            session: SessionId(s),
            user: UserId(u),
            at: Timestamp(at),
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            0..SCHEMA.signal_type_count,
            finite_f64(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(s, seq, e, t, w, at, a)| Record::SessionEvent {
                session: SessionId(s),
                seq,
                entity: EntityId(e),
                signal_type: t,
                weight: w,
                at: Timestamp(at),
                apply_signal: a,
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(s, at)| Record::CloseSession {
            session: SessionId(s),
            at: Timestamp(at),
        }),
        any::<u64>().prop_map(|u| Record::DeleteUser { user: UserId(u) }),
        (
            proptest::collection::vec(any::<u8>(), 1..=MAX_IDEMPOTENCY_KEY_BYTES),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(key, digest, span, merged)| Record::IdempotencyKey {
                key,
                digest,
                span,
                merged
            }),
    ]
}

/// Splits one encoded batch into its meta and decoded records.
fn decode_batch(bytes: &[u8]) -> Result<(BatchMeta, Vec<Record>), DecodeError> {
    let (m, len, _) = decode_header(bytes)?;
    let payload = &bytes[BATCH_HEADER_LEN..];
    assert_eq!(payload.len(), len as usize);
    assert!(verify_crc(&bytes[..BATCH_HEADER_LEN], payload));
    let mut out = Vec::new();
    decode_records(payload, m.record_count, &SCHEMA, &mut out)?;
    Ok((m, out))
}

fn one(r: &Record) -> Vec<u8> {
    let mut v = Vec::new();
    encode_record(r, &mut v);
    v
}

fn decode_one(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut out = Vec::new();
    decode_records(bytes, 1, &SCHEMA, &mut out).map(|()| out)
}

#[test]
fn header_layout_matches_the_design() {
    let recs = [Record::DeleteUser { user: UserId(9) }];
    let mut v = Vec::new();
    encode_batch(&meta(5, 1), &recs, &mut v);
    assert_eq!(v.len(), BATCH_HEADER_LEN + 9);
    assert_eq!(&v[0..4], b"TDB2");
    assert_eq!(&v[4..6], &2u16.to_le_bytes());
    assert_eq!(&v[6..8], &0u16.to_le_bytes());
    assert_eq!(&v[8..12], &7u32.to_le_bytes());
    assert_eq!(&v[12..16], &1u32.to_le_bytes());
    assert_eq!(&v[16..24], &5u64.to_le_bytes());
    assert_eq!(&v[24..32], &2u64.to_le_bytes());
    assert_eq!(&v[32..40], &Hlc::new(1_000, 5).0.to_le_bytes());
    assert_eq!(&v[40..44], &9u32.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&v[0..44]);
    h.update(&v[48..]);
    assert_eq!(&v[44..48], &h.finalize().to_le_bytes());
    assert_eq!(decode_batch(&v).unwrap(), (meta(5, 1), recs.to_vec()));
    assert_eq!(meta(5, 3).last_seqno(), SeqNo(7));
}

#[test]
fn a_signal_record_is_27_bytes() {
    let r = Record::Signal {
        signal_type: 1,
        entity: EntityId(u64::MAX),
        weight: -1.5,
        at: Timestamp(123),
    };
    assert_eq!(one(&r).len(), SIGNAL_RECORD_BYTES);
}

#[test]
fn header_refuses_unknown_version_flags_and_empty_batches() {
    let mut v = Vec::new();
    encode_batch(
        &meta(1, 1),
        &[Record::DeleteUser { user: UserId(1) }],
        &mut v,
    );
    let mut bad = v.clone();
    bad[4] = 3;
    assert_eq!(decode_header(&bad).unwrap_err().offset, 4);
    let mut bad = v.clone();
    bad[7] = 0x80;
    assert_eq!(decode_header(&bad).unwrap_err().offset, 6);
    let mut bad = v.clone();
    bad[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode_header(&bad).unwrap_err().offset, 12);
    let mut bad = v.clone();
    bad[16..24].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(decode_header(&bad).unwrap_err().offset, 16);
    let mut bad = v.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    bad[12..16].copy_from_slice(&2u32.to_le_bytes());
    assert!(decode_header(&bad).is_err());
    let mut bad = v.clone();
    bad[0] = b'X';
    assert_eq!(decode_header(&bad).unwrap_err().offset, 0);
    assert!(decode_header(&v[..47]).is_err());
    assert!(!verify_crc(&v[..47], &v[48..]));
}

#[test]
fn decoder_refuses_what_apply_could_not_take() {
    let sig = |t: u16, w: f64| Record::Signal {
        signal_type: t,
        entity: EntityId(1),
        weight: w,
        at: Timestamp(1),
    };
    // Signal type out of range, at the type field.
    assert_eq!(decode_one(&one(&sig(4, 1.0))).unwrap_err().offset, 1);
    for w in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(decode_one(&one(&sig(0, w))).unwrap_err().offset, 11);
    }
    let emb = |v: Vec<f32>| Record::Embedding {
        kind: EntityKind::Item,
        id: EntityId(1),
        vector: v,
    };
    assert!(decode_one(&one(&emb(vec![1.0, 0.0]))).is_err());
    assert!(decode_one(&one(&emb(vec![1.0, 0.0, f32::NAN]))).is_err());
    assert!(decode_one(&one(&emb(vec![1.0, 0.0, 0.0]))).is_ok());
    // Unknown kind byte.
    let mut b = one(&Record::Delete {
        kind: EntityKind::Creator,
        id: EntityId(3),
    });
    b[1] = 2;
    assert_eq!(decode_one(&b).unwrap_err().offset, 1);
    // Unknown tag.
    assert_eq!(decode_one(&[0u8; 9]).unwrap_err().offset, 0);
    assert!(decode_one(&[10u8; 9]).is_err());
    // Non-UTF-8 string.
    let mut b = one(&Record::Upsert {
        kind: EntityKind::Item,
        id: EntityId(1),
        creator: None,
        fields: vec![("k".into(), "v".into())],
    });
    let last = b.len() - 1;
    b[last] = 0xff;
    assert!(decode_one(&b).is_err());
    // Trailing bytes, and a count larger than the payload.
    let mut b = one(&Record::DeleteUser { user: UserId(1) });
    b.push(0);
    assert!(decode_one(&b).is_err());
    let mut out = Vec::new();
    assert!(decode_records(&b, 2, &SCHEMA, &mut out).is_err());
    assert!(decode_records(&b, u32::MAX, &SCHEMA, &mut out).is_err());
    assert!(out.is_empty());
    // A huge inner count is refused before allocating.
    let mut b = vec![TAG_UPSERT, 0];
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_one(&b).is_err());
}

#[test]
fn idempotency_key_lengths_are_bounded() {
    let ok = Record::IdempotencyKey {
        key: vec![7; MAX_IDEMPOTENCY_KEY_BYTES],
        digest: [3; 16],
        span: 2,
        merged: false,
    };
    assert_eq!(decode_one(&one(&ok)).unwrap(), vec![ok]);
    for n in [0u32, MAX_IDEMPOTENCY_KEY_BYTES as u32 + 1, u32::MAX] {
        let mut b = vec![TAG_IDEMPOTENCY_KEY];
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&[1u8; 64]);
        let e = decode_one(&b).unwrap_err();
        assert!(e.reason.contains("idempotency key"), "{}", e.reason);
        assert_eq!(e.offset, 1);
    }
    // A digest cut short.
    let mut b = one(&Record::IdempotencyKey {
        key: b"k".to_vec(),
        digest: [0; 16],
        span: 0,
        merged: true,
    });
    b.truncate(b.len() - 1);
    assert!(decode_one(&b).is_err());
}

proptest! {
    #[test]
    fn any_record_list_round_trips(
        recs in proptest::collection::vec(record_strategy(), 1..20),
        first in 1u64..1 << 40,
    ) {
        let m = meta(first, recs.len() as u32);
        let mut v = vec![0xAB]; // encode_batch appends after what is there
        encode_batch(&m, &recs, &mut v);
        let (m2, recs2) = decode_batch(&v[1..]).unwrap();
        prop_assert_eq!(m2, m);
        prop_assert_eq!(recs2, recs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in 0u32..50) {
        let mut out = Vec::new();
        let _ = decode_records(&bytes, count, &SCHEMA, &mut out);
        let _ = decode_header(&bytes);
        let _ = verify_crc(&bytes, &bytes);
    }

    #[test]
    fn random_records_with_mutations_never_panic(
        recs in proptest::collection::vec(record_strategy(), 1..5),
        idx in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut v = Vec::new();
        for r in &recs { encode_record(r, &mut v); }
        let i = idx.index(v.len());
        v[i] = byte;
        let mut out = Vec::new();
        let _ = decode_records(&v, recs.len() as u32, &SCHEMA, &mut out);
    }

    #[test]
    fn a_flipped_bit_fails_the_crc(
        recs in proptest::collection::vec(record_strategy(), 1..6),
        idx in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut v = Vec::new();
        encode_batch(&meta(1, recs.len() as u32), &recs, &mut v);
        let i = idx.index(v.len());
        v[i] ^= 1 << bit;
        let ok = verify_crc(&v[..BATCH_HEADER_LEN], &v[BATCH_HEADER_LEN..]);
        prop_assert!(!ok);
    }
}

#[test]
fn is_zero_finds_any_non_zero_byte() {
    use crate::wal::segment::is_zero;
    for len in [0usize, 1, 7, 63, 64, 65, 200, 4096] {
        let mut b = vec![0u8; len];
        assert!(is_zero(&b));
        for i in 0..len {
            b[i] = 0x01;
            assert!(!is_zero(&b), "len {len} byte {i}");
            b[i] = 0;
        }
    }
}

#[test]
fn reconciled_holds_only_a_register_write() {
    let stamp = Stamp {
        hlc: Hlc(5),
        node: NodeId(2),
        seqno: SeqNo(9),
    };
    let signal = Record::Signal {
        signal_type: 0,
        entity: EntityId(1),
        weight: 1.0,
        at: Timestamp(1),
    };
    // A signal (or a nested Reconciled) inside is refused at the inner tag.
    let mut b = vec![TAG_RECONCILED];
    b.extend_from_slice(&[0; 24]);
    let inner_at = b.len();
    encode_record(&signal, &mut b);
    assert_eq!(b[inner_at], TAG_SIGNAL);
    assert_eq!(decode_one(&b).unwrap_err().offset, inner_at);
    let nested = Record::Reconciled {
        stamp,
        record: Box::new(Record::Delete {
            kind: EntityKind::Item,
            id: EntityId(3),
        }),
    };
    let mut b = vec![TAG_RECONCILED];
    b.extend_from_slice(&[0; 24]);
    encode_record(&nested, &mut b);
    assert_eq!(decode_one(&b).unwrap_err().offset, 25);
    // A delete inside decodes with its stamp.
    assert_eq!(decode_one(&one(&nested)).unwrap(), vec![nested]);
}
