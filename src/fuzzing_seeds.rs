//! The fuzz targets' seed corpus, built with the real encoders.

use super::*;

/// The seed corpus, built with the real encoders: `(target, name, bytes)`.
/// Every seed decodes under its target (the replay test checks it), so
/// the oracles run in the normal test suite too.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let groups = record_groups();
    for (i, recs) in groups.iter().enumerate() {
        let meta = BatchMeta {
            shard: ShardId(i as u32),
            first_seqno: SeqNo(1 + 10 * i as u64),
            epoch: Epoch(1 + i as u64),
            hlc: Hlc::new(1_700_000_000_000 + i as u64, 0),
            record_count: recs.len() as u32,
        };
        let mut b = Vec::new();
        encode_batch(&meta, recs, &mut b);
        out.push(("message", format!("batch-{i}"), batch_message(&b)));
        out.push(("batch", format!("batch-{i}"), b));
        let mut payload = vec![recs.len() as u8];
        for r in recs {
            encode_record(r, &mut payload);
        }
        out.push(("records", format!("records-{i}"), payload));
    }
    for (i, m) in messages().iter().enumerate() {
        out.push(("message", format!("message-{i}"), m.encode().to_vec()));
    }
    for (i, m) in metas().iter().enumerate() {
        out.push(("meta", format!("meta-{i}"), m.encode()));
    }
    for (i, s) in snapshots(&groups).into_iter().enumerate() {
        out.push(("snapshot", format!("snapshot-{i}"), s));
    }
    out
}

fn batch_message(batch: &[u8]) -> Vec<u8> {
    Message::Batch {
        bytes: bytes::Bytes::copy_from_slice(batch),
        hlc: Hlc::new(1_700_000_000_000, 1),
    }
    .encode()
    .to_vec()
}

pub(super) fn record_groups() -> Vec<Vec<Record>> {
    let at = Timestamp(1_700_000_000_000);
    vec![
        vec![
            Record::EpochStart {
                epoch: Epoch(1),
                leader_node: NodeId(1),
                hlc: Hlc::new(1_700_000_000_000, 0),
                replicated: true,
            },
            Record::Signal {
                signal_type: 0,
                entity: EntityId(1),
                weight: 1.0,
                at,
            },
            Record::Signal {
                signal_type: 2,
                entity: EntityId(2),
                weight: -0.5,
                at,
            },
        ],
        vec![
            Record::Upsert {
                kind: EntityKind::Creator,
                id: EntityId(100),
                creator: None,
                fields: vec![("name".into(), "ada".into())],
            },
            Record::Upsert {
                kind: EntityKind::Item,
                id: EntityId(1),
                creator: Some(EntityId(100)),
                fields: vec![("lang".into(), "en".into()), ("tag".into(), "é".into())],
            },
            Record::Embedding {
                kind: EntityKind::Item,
                id: EntityId(1),
                vector: vec![0.5, 0.5, 0.5, 0.5],
            },
            Record::Delete {
                kind: EntityKind::Item,
                id: EntityId(3),
            },
        ],
        vec![
            Record::OpenSession {
                session: SessionId(1),
                user: UserId(9),
                at,
            },
            Record::SessionEvent {
                session: SessionId(1),
                seq: 1,
                entity: EntityId(1),
                signal_type: 1,
                weight: 2.0,
                at,
                apply_signal: true,
            },
            Record::SessionEvent {
                session: SessionId(1),
                seq: 2,
                entity: EntityId(2),
                signal_type: 2,
                weight: -1.0,
                at,
                apply_signal: false,
            },
            Record::CloseSession {
                session: SessionId(1),
                at: Timestamp(at.0 + 1_000),
            },
            Record::DeleteUser { user: UserId(8) },
        ],
        vec![Record::Merge {
            signal_type: 1,
            entity: EntityId(2),
            key: ContributionKey {
                epoch: Epoch(1),
                node: NodeId(2),
            },
            landmark_ms: 1_700_000_000_000,
            positive_mass: 3.5,
            negative_mass: 0.25,
            positive_count: 4,
            negative_count: 1,
        }],
        vec![Record::IdempotencyKey {
            key: b"retry-7".to_vec(),
            digest: [7; 16],
            span: 3,
            merged: false,
        }],
        vec![
            Record::Reconciled {
                stamp: crate::state::entities::Stamp {
                    hlc: Hlc::new(at.0, 1),
                    node: NodeId(1),
                    seqno: SeqNo(40),
                },
                record: Box::new(Record::Upsert {
                    kind: EntityKind::Item,
                    id: EntityId(1),
                    creator: None,
                    fields: vec![("title".into(), "merged".into())],
                }),
            },
            Record::MergedSessionEvent {
                session: SessionId(1),
                entity: EntityId(3),
                signal_type: 0,
                weight: 1.0,
                at,
                origin: Position::new(Epoch(1), SeqNo(41)),
            },
        ],
    ]
}

fn messages() -> Vec<Message> {
    let hlc = Hlc::new(1_700_000_000_000, 3);
    let pos = Position::new(Epoch(2), SeqNo(40));
    vec![
        Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            fingerprint: 0xdead_beef_0000_0001,
            node: NodeId(2),
            last: pos,
            hlc,
        },
        Message::Welcome {
            leader_epoch: Epoch(3),
            leader_node: NodeId(1),
            divergence: Some(pos),
            hlc,
        },
        Message::Refused {
            reason: RefuseReason::StaleLeader {
                follower_epoch: Epoch(4),
            },
            hlc,
        },
        Message::Ack {
            durable: pos,
            applied: pos,
            hlc,
        },
        Message::Heartbeat {
            leader_epoch: Epoch(2),
            last: pos,
            commit_ms: 1_700_000_000_000,
            hlc,
        },
        Message::DivergedSuffix {
            epoch: Epoch(1),
            first: SeqNo(5),
            batches: bytes::Bytes::from_static(b"TDB2 not really"),
            hlc,
        },
        Message::SnapshotChunk {
            seqno: SeqNo(40),
            offset: 0,
            total: 8,
            bytes: bytes::Bytes::from_static(b"TDBP\x01\x00\x00\x00"),
            hlc,
        },
    ]
}

fn metas() -> Vec<Meta> {
    let p = state_params();
    let names = ["view", "like", "skip"];
    vec![
        Meta {
            format_version: crate::meta::META_FORMAT_VERSION,
            node_id: NodeId(1),
            shard_id: ShardId(0),
            shard_count: 1,
            signal_types: names
                .iter()
                .zip(&p.half_lives_ms)
                .map(|(n, h)| ((*n).to_string(), *h))
                .collect(),
            dimension: SCHEMA.dimension,
            landmark_half_lives: p.landmark_half_lives,
            score_floor: p.score_floor,
            session_retention_ms: p.session_retention_ms,
            idempotency_ttl_ms: p.idempotency_ttl_ms,
            vector_min_vectors: p.vector_index.min_vectors,
        },
        Meta {
            format_version: crate::meta::META_FORMAT_VERSION,
            node_id: NodeId(7),
            shard_id: ShardId(3),
            shard_count: 8,
            signal_types: Vec::new(),
            dimension: 0,
            landmark_half_lives: 1,
            score_floor: 1e-9,
            session_retention_ms: 0,
            idempotency_ttl_ms: 1,
            vector_min_vectors: 64,
        },
    ]
}

/// An empty state's snapshot, one after each record group in turn, and
/// one with an extra section of an unknown id.
fn snapshots(groups: &[Vec<Record>]) -> Vec<Vec<u8>> {
    let mut state = State::new(state_params());
    let mut out = vec![snapshot_of(&state, &[])];
    let mut next = 1u64;
    for (i, recs) in groups.iter().enumerate() {
        let meta = BatchMeta {
            shard: ShardId(0),
            first_seqno: SeqNo(next),
            epoch: Epoch(1),
            hlc: Hlc::new(1_700_000_000_000 + 1_000 * i as u64, 0),
            record_count: recs.len() as u32,
        };
        state.apply_batch(&meta, recs);
        next += recs.len() as u64;
        out.push(snapshot_of(&state, &[]));
    }
    let future = Section {
        id: 900,
        version: 1,
        bytes: b"future".to_vec(),
    };
    out.push(snapshot_of(&state, &[future]));
    out
}

fn snapshot_of(state: &State, extra: &[Section]) -> Vec<u8> {
    let applied = state.applied();
    let header = SnapshotHeader {
        shard: ShardId(0),
        seqno: applied.seqno,
        epoch: applied.epoch,
        hlc: state.last_hlc(),
    };
    let mut sections: Vec<Section> = state
        .encode_sections()
        .into_iter()
        .map(|(id, version, bytes)| Section { id, version, bytes })
        .collect();
    sections.extend_from_slice(extra);
    encode_snapshot(&header, &sections)
}
