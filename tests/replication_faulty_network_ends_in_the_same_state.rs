//! Through a fault-injecting transport (kept here, in the test code, built
//! on the public `Transport` traits around an `InProcessTransport`) that
//! duplicates, reorders, drops and delays frames from the leader to the
//! follower and drops some acknowledgements back, a follower still ends in
//! exactly the leader's state: same last Position, same counts, scores
//! bit-identical, and byte-identical batches. Several seeds; the fault
//! pattern of each connection follows from the seed.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tidal::{
    Connection, EntityId, FrameReceiver, FrameSender, InProcessTransport, Listener, NodeRole,
    Result, Retrieve, TidalDb, Timestamp, Transport, WriteBatch,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The tag byte of an acknowledgement (after the wire-version byte).
const TAG_ACK: u8 = 5;
/// The tag byte of the leader's handshake answer. It is never dropped: a
/// follower waiting for it only gives up after the 5 s replication timeout,
/// which would make this test slow without testing anything new.
const TAG_WELCOME: u8 = 2;

/// SplitMix64: small, seedable, good enough to pick faults.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1_000 < per_mille
    }
}

/// What the faulty network did, summed over every connection.
#[derive(Debug, Default)]
struct Faults {
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
    acks_dropped: AtomicU64,
    connections: AtomicU64,
}

/// Wraps an `InProcessTransport`: the leader listens on it unchanged; each
/// follower connection gets faults from its own seeded PRNG.
struct FaultyTransport {
    inner: Arc<InProcessTransport>,
    seed: u64,
    faults: Arc<Faults>,
}

impl Transport for FaultyTransport {
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>> {
        self.inner.listen()
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let conn = self.inner.connect().await?;
            let n = self.faults.connections.fetch_add(1, Ordering::Relaxed);
            let rng = Rng(self.seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
            Ok(Box::new(FaultyConnection {
                inner: conn,
                rng,
                faults: self.faults.clone(),
            }) as Box<dyn Connection>)
        })
    }
}

struct FaultyConnection {
    inner: Box<dyn Connection>,
    rng: Rng,
    faults: Arc<Faults>,
}

impl Connection for FaultyConnection {
    fn peer(&self) -> &str {
        self.inner.peer()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let FaultyConnection {
            inner,
            mut rng,
            faults,
        } = *self;
        let (sender, receiver) = inner.split();
        let ack_rng = Rng(rng.next());
        (
            Box::new(AckDropper {
                inner: sender,
                rng: ack_rng,
                faults: faults.clone(),
            }),
            Box::new(FaultyReceiver {
                inner: receiver,
                rng,
                faults,
                ready: VecDeque::new(),
                held: None,
            }),
        )
    }
}

/// Follower to leader: drops some acknowledgements (never a hello, so the
/// handshake is not left waiting for a timeout).
struct AckDropper {
    inner: Box<dyn FrameSender>,
    rng: Rng,
    faults: Arc<Faults>,
}

impl FrameSender for AckDropper {
    fn send(&mut self, frame: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if frame.get(1) == Some(&TAG_ACK) && self.rng.chance(200) {
                self.faults.acks_dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.inner.send(frame).await
        })
    }
}

/// Leader to follower: duplicates, swaps consecutive frames, drops and
/// delays. Cancel-safe like the inner receiver: a frame taken from the inner
/// channel is kept in `ready` or `held` until it is returned, so a
/// `recv` dropped mid-delay loses nothing the network did not drop.
struct FaultyReceiver {
    inner: Box<dyn FrameReceiver>,
    rng: Rng,
    faults: Arc<Faults>,
    /// Frames to deliver, in order, each not before its instant.
    ready: VecDeque<(Bytes, tokio::time::Instant)>,
    /// A frame held back to be delivered after the next one (a swap).
    held: Option<Bytes>,
}

impl FaultyReceiver {
    fn push(&mut self, frame: Bytes) {
        let mut at = tokio::time::Instant::now();
        if self.rng.chance(20) {
            self.faults.delayed.fetch_add(1, Ordering::Relaxed);
            at += Duration::from_millis(1 + self.rng.next() % 15);
        }
        // Delivery stays in order: a delayed frame delays those after it.
        if let Some((_, last)) = self.ready.back() {
            at = at.max(*last);
        }
        self.ready.push_back((frame, at));
    }
}

impl FrameReceiver for FaultyReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        Box::pin(async move {
            loop {
                if let Some((_, at)) = self.ready.front() {
                    tokio::time::sleep_until(*at).await;
                    let (frame, _) = self.ready.pop_front().expect("front exists");
                    return Ok(Some(frame));
                }
                let Some(frame) = self.inner.recv().await? else {
                    return Ok(None);
                };
                if let Some(earlier) = self.held.take() {
                    // The swap: the later frame overtakes the held one.
                    self.push(frame);
                    self.push(earlier);
                    continue;
                }
                let roll = self.rng.next() % 1_000;
                if roll < 15 && frame.get(1) != Some(&TAG_WELCOME) {
                    self.faults.dropped.fetch_add(1, Ordering::Relaxed);
                } else if roll < 45 {
                    self.faults.duplicated.fetch_add(1, Ordering::Relaxed);
                    self.push(frame.clone());
                    self.push(frame);
                } else if roll < 60 {
                    self.faults.reordered.fetch_add(1, Ordering::Relaxed);
                    self.held = Some(frame);
                } else {
                    self.push(frame);
                }
            }
        })
    }
}

const ENTITIES: u64 = 1_000;

/// One run: a leader, a follower behind the faulty transport, `batches`
/// writes; the follower must end in exactly the leader's state.
async fn run(seed: u64, batches: u64) {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let inner = InProcessTransport::new();
    let faults = Arc::new(Faults::default());
    let faulty = Arc::new(FaultyTransport {
        inner: inner.clone(),
        seed,
        faults: faults.clone(),
    });
    let leader =
        TidalDb::open_leader(common::config(ld.path(), 1, NodeRole::Leader), inner).unwrap();
    let follower =
        TidalDb::open_follower(common::config(fd.path(), 2, NodeRole::Follower), faulty).unwrap();
    let now = Timestamp::now();
    let mut rng = Rng(seed.wrapping_mul(7) ^ 0x5EED);
    let mut last = leader.last_position();
    for b in 0..batches {
        let mut batch = WriteBatch::new();
        for _ in 0..(1 + rng.next() % 60) {
            let e = EntityId(rng.next() % ENTITIES);
            let kind = if rng.chance(300) { "view" } else { "like" };
            batch = batch.signal(kind, e, 0.5 + (rng.next() % 7) as f64, now);
        }
        if b % 50 == 0 {
            let id = EntityId(b);
            let name = format!("item-{b}");
            batch = batch.write_item(id, None, &[("name", name.as_str())]);
        }
        last = leader.write_async(batch).await.unwrap();
        // Let frames interleave with writes rather than pile up.
        if b % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    follower
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}; faults {faults:?}"));
    assert_eq!(
        follower.last_position(),
        leader.last_position(),
        "seed {seed}"
    );
    assert_eq!(
        follower.status().applied,
        leader.status().applied,
        "seed {seed}"
    );
    for e in 0..ENTITIES {
        let e = EntityId(e);
        for kind in ["like", "view"] {
            assert_eq!(
                follower.read_count(e, kind).unwrap(),
                leader.read_count(e, kind).unwrap(),
                "seed {seed}: count of {e:?} {kind}"
            );
            assert_eq!(
                follower.read_decay_score(e, kind, now).unwrap().to_bits(),
                leader.read_decay_score(e, kind, now).unwrap().to_bits(),
                "seed {seed}: score of {e:?} {kind}"
            );
        }
    }
    for b in (0..batches).step_by(50) {
        assert_eq!(
            follower.get_item(EntityId(b)),
            leader.get_item(EntityId(b)),
            "seed {seed}"
        );
    }
    assert_eq!(
        follower.retrieve(&Retrieve::top(50, "like", now)).unwrap(),
        leader.retrieve(&Retrieve::top(50, "like", now)).unwrap(),
        "seed {seed}"
    );
    // The faults happened: this run was not a clean one by luck.
    let injected = faults.dropped.load(Ordering::Relaxed)
        + faults.duplicated.load(Ordering::Relaxed)
        + faults.reordered.load(Ordering::Relaxed);
    assert!(injected > 0, "seed {seed}: no fault injected: {faults:?}");
    assert!(
        faults.connections.load(Ordering::Relaxed) > 1,
        "seed {seed}: the follower never had to reconnect: {faults:?}"
    );
    leader.flush().unwrap();
    let leader_bytes = common::batch_bytes(ld.path());
    drop(follower);
    drop(leader);
    let follower_bytes = common::batch_bytes(fd.path());
    assert_eq!(follower_bytes.len(), leader_bytes.len(), "seed {seed}");
    assert!(
        follower_bytes == leader_bytes,
        "seed {seed}: log bytes differ"
    );
    eprintln!("seed {seed}: {faults:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_reordered_dropped_and_delayed_frames_end_in_the_leaders_state() {
    for seed in [1, 2, 3, 0xDEAD_BEEF, 20_261_124] {
        run(seed, 300).await;
    }
}
