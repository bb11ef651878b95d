//! The session bridge on a follower: while the leader streams interleaved
//! events of many sessions, every read on the follower shows each session
//! as a gap-free prefix 1..=n, n at least the session's HWM on this node
//! (`SessionInfo::event_count`) read just before, and paging with
//! `session_events(session, from, limit)` walks a gap-free prefix that
//! only grows. At the end every session holds
//! all its events, in order, equal to the leader's.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::config;
use tidal::{
    EntityId, Follower, InProcessTransport, NodeRole, SessionId, TidalDb, Timestamp, UserId,
    WriteBatch,
};

const SESSIONS: u64 = 8;
const EVENTS: u64 = 60;

/// Checks every session's prefix; returns the total events seen.
fn check(f: &TidalDb<Follower>) -> u64 {
    let mut total = 0;
    for s in 0..SESSIONS {
        let Some(info) = f.session(SessionId(s)) else {
            continue;
        };
        let all = f.session_events(SessionId(s), 1, usize::MAX);
        let seqs: Vec<u32> = all.iter().map(|e| e.seq).collect();
        // Each call is its own read, so a later one may see more events
        // (replication goes on), never fewer and never a gap.
        let hwm = info.event_count;
        let n = seqs.len() as u32;
        assert!(
            n >= hwm && seqs.iter().copied().eq(1..=n),
            "session {s}: events {seqs:?}, HWM read before them {hwm}"
        );
        // Paging three at a time walks the same prefix.
        let mut paged = Vec::new();
        let mut from = 1;
        loop {
            let page = f.session_events(SessionId(s), from, 3);
            if page.is_empty() {
                break;
            }
            from = page.last().unwrap().seq + 1;
            paged.extend(page.into_iter().map(|e| e.seq));
        }
        assert!(
            paged.starts_with(&seqs) && paged.iter().copied().eq(1..=paged.len() as u32),
            "session {s}: paged {paged:?} after {seqs:?}"
        );
        total += u64::from(n);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shows_each_session_as_a_gap_free_prefix_up_to_its_hwm() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t = InProcessTransport::new();
    let leader = TidalDb::open_leader(config(ld.path(), 1, NodeRole::Leader), t.clone()).unwrap();
    let follower =
        Arc::new(TidalDb::open_follower(config(fd.path(), 2, NodeRole::Follower), t).unwrap());
    let now = Timestamp::now();
    let mut open = WriteBatch::new();
    for s in 0..SESSIONS {
        open = open.open_session(SessionId(s), UserId(100 + s), now);
    }
    leader.write_async(open).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (f, done) = (follower.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                check(&f);
                reads += 1;
            }
            reads
        })
    };
    // Each batch carries one event of several sessions, in varying order.
    for round in 0..EVENTS {
        let mut b = WriteBatch::new();
        for k in 0..SESSIONS {
            let s = (k * 3 + round) % SESSIONS;
            b = b.record_session_event(SessionId(s), EntityId(round * 10 + s), "like", 1.0, now);
        }
        let pos = leader.write_async(b).await.unwrap();
        if round % 10 == 0 {
            follower
                .wait_for(pos, Duration::from_secs(20))
                .await
                .unwrap();
        }
    }
    let end = leader.last_position();
    follower
        .wait_for(end, Duration::from_secs(20))
        .await
        .unwrap();
    done.store(true, Ordering::Release);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(check(&follower), SESSIONS * EVENTS);
    for s in 0..SESSIONS {
        let on_leader = leader.session_events(SessionId(s), 1, usize::MAX);
        let on_follower = follower.session_events(SessionId(s), 1, usize::MAX);
        assert_eq!(on_follower, on_leader, "session {s}");
        assert_eq!(
            follower.session(SessionId(s)).unwrap().event_count,
            EVENTS as u32
        );
    }
}
