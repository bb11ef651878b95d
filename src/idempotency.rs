//! The `IdempotencyStore`: the keys of keyed writes, with the digest of
//! what each one wrote and the `Position` it got, kept for
//! `Config::idempotency_ttl` of log time.
//!
//! Keys arrive only through logged `IdempotencyKey` records (applied by
//! `State::apply_batch`, so recovery and followers rebuild the same store)
//! and leave only by expiry, decided by the HLC of the batch being applied:
//! every replica replaying the log expires the same keys at the same batch.
//! A key is never forgotten before its time; at `Config::idempotency_capacity`
//! the sequencer refuses new keys instead.
//!
//! Memory per key: the key bytes twice (map and expiry queue) plus entry,
//! allocation and table overhead: about `2 × key length + 160` bytes per
//! copy of the state, and the read view keeps two copies. Measured with
//! `examples/idempotency_probe.rs`: about 440 bytes of RSS per 32-byte key
//! (so about 440 MB at the default capacity of 1,000,000 keys).

use std::collections::{HashMap, VecDeque};

use crate::codec::{DecodeError, Put, Reader};
use crate::types::{Epoch, Position, SeqNo};
use crate::wal::format::MAX_IDEMPOTENCY_KEY_BYTES;

/// What the store remembers of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdemEntry {
    /// Truncated SHA-256 of the request's encoded operations.
    pub digest: [u8; 16],
    /// The original request's `Position` (its `IdempotencyKey` record).
    pub position: Position,
    /// The log time (ms) the key was written at; it expires `ttl` later.
    pub at_ms: u64,
    /// Added by a reconciliation for a request of a diverged suffix, whose
    /// records were merged (not applied by a client request here).
    pub merged: bool,
}

/// Keys with their entries, and their insertion order for expiry.
#[derive(Clone, Debug, Default)]
pub struct IdempotencyStore {
    map: HashMap<Vec<u8>, IdemEntry>,
    /// `(at_ms, key)` in insertion order; `at_ms` never decreases along it.
    order: VecDeque<(u64, Vec<u8>)>,
    /// Sum of the held keys' lengths (for `approx_bytes` in O(1)).
    key_bytes: usize,
}

impl IdempotencyStore {
    /// An empty store.
    pub fn new() -> IdempotencyStore {
        IdempotencyStore::default()
    }

    /// Keys held (live or due to expire at the next batch).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether a key written at `at_ms` is expired at `log_ms`.
    fn expired(at_ms: u64, log_ms: u64, ttl_ms: u64) -> bool {
        at_ms.saturating_add(ttl_ms) <= log_ms
    }

    /// The entry of `key` if it is still live for a batch at `log_ms`.
    pub fn get(&self, key: &[u8], log_ms: u64, ttl_ms: u64) -> Option<&IdemEntry> {
        self.map
            .get(key)
            .filter(|e| !Self::expired(e.at_ms, log_ms, ttl_ms))
    }

    /// Keys still live for a batch at `log_ms` (what capacity counts).
    pub fn live_at(&self, log_ms: u64, ttl_ms: u64) -> usize {
        let gone = self
            .order
            .partition_point(|(at, _)| Self::expired(*at, log_ms, ttl_ms));
        self.map.len() - gone
    }

    /// Drops the keys expired at `log_ms`.
    pub fn expire(&mut self, log_ms: u64, ttl_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if !Self::expired(*at, log_ms, ttl_ms) {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.key_bytes -= key.len();
                self.map.remove(&key);
            }
        }
    }

    /// Inserts a key written at `log_ms` at `position`, unless it is
    /// already held (the first one stands; validation never logs a second).
    /// The time kept never goes below the newest key's, so the expiry
    /// order holds even if a log's HLCs stepped back.
    pub fn insert(
        &mut self,
        key: &[u8],
        digest: [u8; 16],
        position: Position,
        log_ms: u64,
        merged: bool,
    ) {
        if self.map.contains_key(key) {
            return;
        }
        let at_ms = log_ms.max(self.order.back().map_or(0, |(at, _)| *at));
        self.map.insert(
            key.to_vec(),
            IdemEntry {
                digest,
                position,
                at_ms,
                merged,
            },
        );
        self.order.push_back((at_ms, key.to_vec()));
        self.key_bytes += key.len();
    }

    /// Estimated heap bytes.
    pub fn approx_bytes(&self) -> usize {
        2 * self.key_bytes + 160 * self.order.len()
    }

    /// Encodes the store (snapshot section `IDEMPOTENCY`, version 1): a
    /// count, then per key in expiry order its bytes, digest, position and
    /// log time.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.order.len() as u32);
        for (_, key) in &self.order {
            if let Some(e) = self.map.get(key) {
                out.put_bytes(key);
                out.extend_from_slice(&e.digest);
                out.put_u64(e.position.epoch.0);
                out.put_u64(e.position.seqno.0);
                out.put_u64(e.at_ms);
                out.put_u8(u8::from(e.merged));
            }
        }
    }

    /// Decodes what [`IdempotencyStore::encode`] wrote; never panics,
    /// refuses keys out of bounds, duplicates and times out of order.
    pub fn decode(r: &mut Reader<'_>) -> Result<IdempotencyStore, DecodeError> {
        // Each key is at least a length, one byte, a digest and three u64s.
        let n = r.count(4 + 1 + 16 + 24 + 1)?;
        let mut store = IdempotencyStore::new();
        for _ in 0..n {
            let at = r.position();
            let len = r.u32()? as usize;
            if len == 0 || len > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(DecodeError {
                    offset: at,
                    reason: format!("idempotency key of {len} bytes"),
                });
            }
            let key = r.take(len)?;
            let mut digest = [0u8; 16];
            digest.copy_from_slice(r.take(16)?);
            let position = Position::new(Epoch(r.u64()?), SeqNo(r.u64()?));
            let at_ms = r.u64()?;
            let merged = match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(r.error(format!("bad merged flag {b}"))),
            };
            if store.map.contains_key(key) {
                return Err(DecodeError {
                    offset: at,
                    reason: "duplicate idempotency key".into(),
                });
            }
            if store.order.back().is_some_and(|(last, _)| *last > at_ms) {
                return Err(DecodeError {
                    offset: at,
                    reason: "idempotency keys out of time order".into(),
                });
            }
            store.insert(key, digest, position, at_ms, merged);
        }
        if !r.is_empty() {
            return Err(r.error(format!(
                "{} bytes after the idempotency keys",
                r.remaining()
            )));
        }
        Ok(store)
    }

    /// Every key with its entry, in expiry order (tests and reconciliation).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &IdemEntry)> {
        self.order
            .iter()
            .filter_map(|(_, k)| self.map.get(k).map(|e| (k.as_slice(), e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(s: u64) -> Position {
        Position::new(Epoch(1), SeqNo(s))
    }

    #[test]
    fn keys_expire_by_log_time_and_count_as_live_until_then() {
        let mut s = IdempotencyStore::new();
        s.insert(b"a", [1; 16], pos(2), 1_000, false);
        s.insert(b"b", [2; 16], pos(4), 2_000, false);
        // The first key stands.
        s.insert(b"a", [9; 16], pos(9), 2_500, false);
        assert_eq!(s.get(b"a", 1_500, 1_000).unwrap().position, pos(2));
        assert_eq!(s.get(b"a", 1_500, 1_000).unwrap().digest, [1; 16]);
        assert_eq!(s.live_at(1_999, 1_000), 2);
        assert_eq!(s.live_at(2_000, 1_000), 1);
        assert_eq!(s.live_at(3_000, 1_000), 0);
        assert!(s.get(b"a", 2_000, 1_000).is_none());
        assert_eq!(s.len(), 2);
        s.expire(2_000, 1_000);
        assert_eq!(s.len(), 1);
        assert!(s.get(b"b", 2_999, 1_000).is_some());
        assert_eq!(s.approx_bytes(), 2 + 160);
        s.expire(3_000, 1_000);
        assert!(s.is_empty());
        assert_eq!(s.approx_bytes(), 0);
    }

    #[test]
    fn a_key_time_never_goes_back() {
        let mut s = IdempotencyStore::new();
        s.insert(b"a", [1; 16], pos(2), 5_000, false);
        s.insert(b"b", [1; 16], pos(3), 4_000, false);
        assert_eq!(s.get(b"b", 0, 10).unwrap().at_ms, 5_000);
    }

    #[test]
    fn damaged_sections_are_refused() {
        let mut s = IdempotencyStore::new();
        s.insert(b"a", [1; 16], pos(2), 1, false);
        s.insert(b"b", [1; 16], pos(3), 2, false);
        let mut b = Vec::new();
        s.encode(&mut b);
        // Trailing byte.
        let mut t = b.clone();
        t.push(0);
        assert!(IdempotencyStore::decode(&mut Reader::new(&t)).is_err());
        // Duplicate key: rename "b" to "a".
        let mut d = b.clone();
        let second = 4 + (4 + 1 + 16 + 24 + 1) + 4;
        d[second] = b'a';
        let e = IdempotencyStore::decode(&mut Reader::new(&d)).unwrap_err();
        assert!(e.reason.contains("duplicate"), "{}", e.reason);
        // Empty key.
        let mut z = Vec::new();
        z.put_u32(1);
        z.put_u32(0);
        z.extend_from_slice(&[0; 41]);
        assert!(IdempotencyStore::decode(&mut Reader::new(&z)).is_err());
        // A merged flag that is not 0 or 1.
        let mut m = b.clone();
        m[4 + (4 + 1 + 16 + 24)] = 2;
        let e = IdempotencyStore::decode(&mut Reader::new(&m)).unwrap_err();
        assert!(e.reason.contains("merged flag"), "{}", e.reason);
    }

    fn params() -> crate::state::StateParams {
        crate::state::StateParams {
            half_lives_ms: vec![1_000],
            landmark_half_lives: 64,
            score_floor: 0.0,
            session_retention_ms: 1_000,
            dimension: 2,
            idempotency_ttl_ms: 10_000,
            vector_index: Default::default(),
        }
    }

    #[test]
    fn state_applies_snapshots_and_expires_keys() {
        use crate::crdt::hlc::Hlc;
        use crate::state::{State, section};
        use crate::types::ShardId;
        use crate::wal::format::BatchMeta;
        use crate::wal::record::Record;
        let mut st = State::new(params());
        let meta = |first: u64, ms: u64, n: u32| BatchMeta {
            shard: ShardId(0),
            first_seqno: SeqNo(first),
            epoch: Epoch(1),
            hlc: Hlc::new(ms, 0),
            record_count: n,
        };
        let key = |k: &[u8]| Record::IdempotencyKey {
            key: k.to_vec(),
            digest: [7; 16],
            span: 0,
            merged: false,
        };
        st.apply_batch(&meta(1, 1_000, 2), &[key(b"a"), key(b"b")]);
        st.apply_batch(&meta(3, 5_000, 1), &[key(b"c")]);
        assert_eq!(
            st.idempotency()
                .get(b"b", 5_000, 10_000)
                .unwrap()
                .position
                .seqno,
            SeqNo(2)
        );
        // Through the snapshot sections, and without the section (an older
        // snapshot): an empty store.
        let sections = st.encode_sections();
        let borrowed: Vec<(u16, u16, &[u8])> = sections
            .iter()
            .map(|(i, v, b)| (*i, *v, b.as_slice()))
            .collect();
        let mut back = State::decode_sections(params(), &borrowed).unwrap();
        assert_eq!(back.idempotency().len(), 3);
        let old: Vec<_> = borrowed
            .iter()
            .copied()
            .filter(|(i, _, _)| *i != section::IDEMPOTENCY)
            .collect();
        assert!(
            State::decode_sections(params(), &old)
                .unwrap()
                .idempotency()
                .is_empty()
        );
        let mut v2 = borrowed.clone();
        v2.iter_mut().for_each(|s| {
            if s.0 == section::IDEMPOTENCY {
                s.1 = 2
            }
        });
        assert!(State::decode_sections(params(), &v2).is_err());
        // The batch at 11_000 expires a and b (written at 1_000) first.
        back.apply_batch(&meta(4, 11_000, 1), &[key(b"d")]);
        let left: Vec<_> = back.idempotency().iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(left, vec![b"c".to_vec(), b"d".to_vec()]);
    }

    proptest! {
        #[test]
        fn section_round_trips(
            keys in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..40),
                (any::<[u8; 16]>(), any::<u64>(), 0u64..1_000),
                0..30,
            )
        ) {
            let mut s = IdempotencyStore::new();
            let mut t = 0;
            for (k, (d, seq, dt)) in &keys {
                t += dt;
                s.insert(k, *d, pos(*seq), t, false);
            }
            let mut b = Vec::new();
            s.encode(&mut b);
            let back = IdempotencyStore::decode(&mut Reader::new(&b)).unwrap();
            let a: Vec<_> = s.iter().map(|(k, e)| (k.to_vec(), *e)).collect();
            let c: Vec<_> = back.iter().map(|(k, e)| (k.to_vec(), *e)).collect();
            prop_assert_eq!(a, c);
            let mut again = Vec::new();
            back.encode(&mut again);
            prop_assert_eq!(again, b);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IdempotencyStore::decode(&mut Reader::new(&bytes));
        }
    }
}
