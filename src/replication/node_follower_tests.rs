//! Unit tests of the follower's I/O loop (`node_follower.rs`), driven by a
//! scripted leader on an [`InProcessTransport`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::config::{ClusterConfig, Config, NodeRole};
use crate::crdt::hlc::Hlc;
use crate::db::TidalDb;
use crate::error::{Result, TidalError};
use crate::replication::in_process::InProcessTransport;
use crate::replication::message::Message;
use crate::replication::transport::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Transport,
};
use crate::storage::SimStorage;
use crate::types::{EntityId, Epoch, NodeId, Position, SeqNo, ShardId, Timestamp};
use crate::wal::format::{BatchMeta, encode_batch};
use crate::wal::record::Record;

/// A batch of two signals on entity `first`, SeqNos `first..=first + 1`.
fn batch(first: u64) -> Bytes {
    typed_batch(first, 0)
}

/// [`batch`] with signals of type `signal_type`.
fn typed_batch(first: u64, signal_type: u16) -> Bytes {
    let meta = BatchMeta {
        shard: ShardId(0),
        first_seqno: SeqNo(first),
        epoch: Epoch::FIRST,
        hlc: Hlc::new(1_000 + first, 0),
        record_count: 2,
    };
    let record = Record::Signal {
        signal_type,
        entity: EntityId(first),
        weight: 1.0,
        at: Timestamp(1_000),
    };
    let mut bytes = Vec::new();
    encode_batch(&meta, &[record.clone(), record], &mut bytes);
    Message::Batch {
        bytes: Bytes::from(bytes),
        hlc: Hlc::new(1_000 + first, 0),
    }
    .encode()
}

/// The next hello the follower sends on `frames`.
async fn next_hello(frames: &mut Box<dyn FrameReceiver>) -> Position {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .expect("a hello within 10 s")
            .expect("recv")
            .expect("the follower keeps the connection");
        if let Ok(Message::Hello { last, .. }) = Message::decode(&frame) {
            return last;
        }
    }
}

/// A transport handing the follower connections prepared in advance, so
/// what a connection holds when the follower first reads it is fixed.
struct Scripted(Mutex<VecDeque<Box<dyn Connection>>>);

impl Transport for Scripted {
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Listener>>> {
        Box::pin(async { Err(TidalError::Closed) })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>>> {
        let next = self.0.lock().expect("lock").pop_front();
        Box::pin(async move { next.ok_or(TidalError::Closed) })
    }
}

/// A connected pair: (the follower's end, the leader's end).
async fn pair() -> (Box<dyn Connection>, Box<dyn Connection>) {
    let transport = InProcessTransport::new();
    let mut listener = transport.listen().await.expect("listen");
    let follower_end = transport.connect().await.expect("connect");
    let leader_end = listener.accept().await.expect("accept");
    (follower_end, leader_end)
}

/// A follower with one signal type, on a simulated disk.
fn config() -> Config {
    Config::builder("/f")
        .signal_type("like", Duration::from_secs(60))
        .node_id(NodeId(2))
        .cluster(ClusterConfig {
            role: NodeRole::Follower,
            ..ClusterConfig::default()
        })
        .storage(Arc::new(SimStorage::default()))
        .build()
        .expect("config")
}

fn welcome() -> Bytes {
    Message::Welcome {
        leader_epoch: Epoch::FIRST,
        leader_node: NodeId(1),
        divergence: None,
        hlc: Hlc::new(1_000, 0),
    }
    .encode()
}

/// A follower whose first connection holds `frames` (and then ends, when
/// `close`), with the leader's ends of both connections: `hello` reads the
/// second one; the other ends stay open for the test's length.
struct Script {
    follower: TidalDb<crate::role::Follower>,
    hello: Box<dyn FrameReceiver>,
    _first_reader: Box<dyn FrameReceiver>,
    _first_sender: Option<Box<dyn FrameSender>>,
    _second_sender: Box<dyn FrameSender>,
}

async fn follower_after(frames: Vec<Bytes>, close: bool) -> Script {
    let (first, leader_end) = pair().await;
    let (mut to_follower, from_first) = leader_end.split();
    for frame in frames {
        to_follower.send(frame).await.expect("send");
    }
    let first_sender = (!close).then_some(to_follower);
    let (second, leader_end) = pair().await;
    let (to_second, hello) = leader_end.split();
    let transport = Arc::new(Scripted(Mutex::new(VecDeque::from([first, second]))));
    let follower = TidalDb::open_follower(config(), transport).expect("open");
    Script {
        follower,
        hello,
        _first_reader: from_first,
        _first_sender: first_sender,
        _second_sender: to_second,
    }
}

/// Batches the follower took off a connection just before it closed are
/// appended, not dropped: the receiver counted them as received when it
/// handed them out, and its next hello names them. Dropping them made that
/// hello claim records the log did not hold; the leader, agreeing, streamed
/// on from there and the follower stalled below what it claimed (or would
/// have logged a gap). The first connection holds a welcome, three batches
/// and its end before the follower reads anything, so the follower's drain
/// of ready frames meets the end in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_drained_before_the_connection_closed_are_logged_before_the_next_hello() {
    // Bound whole: the connection ends it holds stay open to the end.
    let mut script = follower_after(vec![welcome(), batch(1), batch(3), batch(5)], true).await;
    let follower = &script.follower;

    let claimed = next_hello(&mut script.hello).await;
    assert_eq!(
        claimed,
        Position::new(Epoch::FIRST, SeqNo(6)),
        "the second hello names the three batches"
    );
    assert_eq!(
        follower.last_position(),
        claimed,
        "the log holds what the hello claims"
    );
    assert_eq!(
        follower.read_count(EntityId(5), "like").expect("read"),
        2,
        "the last batch is applied"
    );
}

/// A batch the follower checked (CRC, shard, continuity) but could not
/// apply (a signal type it does not have) ends the session after the
/// batches before it, and the next hello names only those: the receiver,
/// which counted the refused batch as logged when it handed it out, starts
/// over from the log. Naming the refused batch would have let the leader
/// stream on after it, past a hole in the follower's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_batch_the_next_hello_names_only_what_was_logged() {
    // Bound whole: the connection ends it holds stay open to the end.
    let mut script = follower_after(vec![welcome(), batch(1), typed_batch(3, 7)], false).await;
    let follower = &script.follower;

    let claimed = next_hello(&mut script.hello).await;
    assert_eq!(
        claimed,
        Position::new(Epoch::FIRST, SeqNo(2)),
        "the second hello names the first batch only"
    );
    assert_eq!(follower.last_position(), claimed);
}
