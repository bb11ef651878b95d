//! The leader reports each follower's replication progress: once caught up
//! its sent, durable and applied positions equal the leader's last and its
//! lag is zero; while its delivery is paused (through a transport wrapper
//! kept in this test) its lag in records and milliseconds grows; and when
//! the leader is idle for many heartbeat intervals (100 ms) heartbeats keep
//! the connection alive: frames keep arriving, the follower never
//! reconnects, and positions, status and reads stay where they were.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tidal::{
    ClusterConfig, Config, Connection, Durability, EntityId, FollowerInfo, FrameReceiver,
    FrameSender, InProcessTransport, Leader, Listener, NodeId, NodeRole, Result, TidalDb,
    Timestamp, Transport, WriteBatch,
};
use tokio::sync::watch;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Wraps an `InProcessTransport`: counts follower connections and the
/// frames delivered to followers, and can pause delivery to them.
struct PausableTransport {
    inner: Arc<InProcessTransport>,
    paused: watch::Sender<bool>,
    connects: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
}

impl Transport for PausableTransport {
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>> {
        self.inner.listen()
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let inner = self.inner.connect().await?;
            self.connects.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(PausableConnection {
                inner,
                paused: self.paused.subscribe(),
                delivered: self.delivered.clone(),
            }) as Box<dyn Connection>)
        })
    }
}

struct PausableConnection {
    inner: Box<dyn Connection>,
    paused: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
}

impl Connection for PausableConnection {
    fn peer(&self) -> &str {
        self.inner.peer()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let PausableConnection {
            inner,
            paused,
            delivered,
        } = *self;
        let (sender, receiver) = inner.split();
        (
            sender,
            Box::new(PausableReceiver {
                inner: receiver,
                paused,
                delivered,
                pending: None,
            }),
        )
    }
}

/// Holds frames back while paused. Cancel-safe: a frame taken from the
/// inner receiver while paused waits in `pending`.
struct PausableReceiver {
    inner: Box<dyn FrameReceiver>,
    paused: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
    pending: Option<Bytes>,
}

impl FrameReceiver for PausableReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        Box::pin(async move {
            loop {
                if self.paused.wait_for(|p| !*p).await.is_err() {
                    return Ok(None);
                }
                if let Some(frame) = self.pending.take() {
                    self.delivered.fetch_add(1, Ordering::SeqCst);
                    return Ok(Some(frame));
                }
                match self.inner.recv().await? {
                    Some(frame) if *self.paused.borrow() => self.pending = Some(frame),
                    Some(frame) => {
                        self.delivered.fetch_add(1, Ordering::SeqCst);
                        return Ok(Some(frame));
                    }
                    None => return Ok(None),
                }
            }
        })
    }
}

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .durability(Durability::Sync)
        .build()
        .unwrap()
}

async fn write_batches(leader: &TidalDb<Leader>, from: u64, n: u64, now: Timestamp) {
    for b in from..from + n {
        let mut batch = WriteBatch::new();
        for i in 0..10 {
            batch = batch.signal("like", EntityId((b * 10 + i) % 300), 1.0, now);
        }
        leader.write_async(batch).await.unwrap();
    }
}

/// The leader's only follower once it has acknowledged `last` as applied.
async fn caught_up(leader: &TidalDb<Leader>) -> FollowerInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let last = leader.last_position();
        let followers = leader.followers();
        if let [f] = followers.as_slice()
            && f.applied == last
        {
            return f.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never caught up to {last:?}: {followers:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_paused_and_heartbeats_keep_an_idle_follower_connected() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let inner = InProcessTransport::new();
    let (paused, _) = watch::channel(false);
    let transport = Arc::new(PausableTransport {
        inner: inner.clone(),
        paused,
        connects: Arc::new(AtomicU64::new(0)),
        delivered: Arc::new(AtomicU64::new(0)),
    });
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), inner).unwrap();
    let follower =
        TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), transport.clone())
            .unwrap();
    let now = Timestamp::now();

    // Caught up: every position is the leader's last, no lag.
    write_batches(&leader, 0, 50, now).await;
    let last = leader.last_position();
    follower
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let f = caught_up(&leader).await;
    assert_eq!(f.node, Some(NodeId(2)));
    assert_eq!((f.sent, f.durable, f.applied), (last, last, last), "{f:?}");
    assert_eq!((f.lag_records, f.lag_ms), (0, 0), "{f:?}");

    // Streaming: writes back to back leave the leader no idle moment to send
    // a heartbeat, so what it learns of the follower during the stream comes
    // from the follower's acknowledgements of the batches themselves.
    let mut mid = None;
    let mut seen_during_stream = None;
    for b in 1_000..1_200u64 {
        write_batches(&leader, b, 1, now).await;
        if b == 1_099 {
            mid = Some(leader.last_position());
        }
        if let (Some(mid), None) = (mid, seen_during_stream) {
            let applied = leader.followers()[0].applied;
            if applied >= mid {
                seen_during_stream = Some((b, applied));
            }
        }
    }
    let mid = mid.unwrap();
    assert!(
        seen_during_stream.is_some(),
        "while writes streamed the leader never learned the follower applied {mid:?}: {:?} (leader at {:?})",
        leader.followers(),
        leader.last_position()
    );
    let last = leader.last_position();
    follower
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    caught_up(&leader).await;

    // Paused: the leader writes on, the follower applies nothing, and the
    // lag the leader reports grows with the records and the time.
    transport.paused.send_replace(true);
    let stuck = follower.last_position();
    write_batches(&leader, 50, 10, now).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = leader.followers();
    write_batches(&leader, 60, 20, now).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = leader.followers();
    assert_eq!(follower.last_position(), stuck, "delivery was paused");
    let (first, second) = (&first[0], &second[0]);
    let behind = leader.last_position().seqno.0 - stuck.seqno.0;
    assert!(first.lag_records >= 100, "{first:?}");
    assert!(
        second.lag_records >= first.lag_records + 200,
        "{first:?} {second:?}"
    );
    assert_eq!(second.lag_records, behind, "{second:?}");
    assert!(second.lag_ms >= 150, "{second:?}");
    assert!(second.lag_ms > first.lag_ms, "{first:?} {second:?}");
    assert_eq!(second.applied, stuck, "{second:?}");
    assert_eq!(leader.followers().len(), 1);

    // Resumed: it catches up and the lag is gone.
    transport.paused.send_replace(false);
    let last = leader.last_position();
    follower
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let f = caught_up(&leader).await;
    assert_eq!((f.sent, f.durable, f.applied), (last, last, last), "{f:?}");
    assert_eq!((f.lag_records, f.lag_ms), (0, 0), "{f:?}");

    // Idle for many heartbeat intervals: heartbeats arrive, the connection
    // stays (no reconnect), and nothing moves.
    let connects = transport.connects.load(Ordering::SeqCst);
    let delivered = transport.delivered.load(Ordering::SeqCst);
    let status = follower.status();
    let counts: Vec<i64> = (0..300)
        .map(|e| follower.read_count(EntityId(e), "like").unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let heartbeats = transport.delivered.load(Ordering::SeqCst) - delivered;
    assert!(
        heartbeats >= 4,
        "only {heartbeats} frames in 800 ms of idling"
    );
    assert_eq!(transport.connects.load(Ordering::SeqCst), connects);
    assert_eq!(connects, 1, "the follower reconnected during the test");
    let followers = leader.followers();
    assert_eq!(followers.len(), 1, "{followers:?}");
    assert_eq!(followers[0], f, "the leader's view of the follower moved");
    assert_eq!(leader.last_position(), last);
    let now_status = follower.status();
    assert_eq!(now_status.applied, status.applied);
    assert_eq!(now_status.applied, last);
    assert_eq!(now_status.epoch, status.epoch);
    assert_eq!(now_status.hwm, status.hwm);
    for (e, count) in counts.iter().enumerate() {
        let e = EntityId(e as u64);
        assert_eq!(follower.read_count(e, "like").unwrap(), *count);
        assert_eq!(leader.read_count(e, "like").unwrap(), *count);
    }
}
