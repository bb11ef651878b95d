//! Preference export: closed sessions become JSON Lines of (chosen,
//! rejected) pairs: chosen = a positive event's entity of that session
//! (not a hard negative of the user), rejected = one of the user's hard
//! negatives (from any session) that this session showed. Open sessions
//! are not exported; an export continues from the previous one's
//! `through`; a position older than the retained log is `NotRetained`.

use std::collections::BTreeSet;
use std::time::Duration;

use tidal::{
    Config, EntityId, Position, SessionId, TidalDb, TidalError, Timestamp, UserId, WriteBatch,
};

/// (user, session, chosen, rejected) of every line, checking each line is
/// exactly the documented object.
fn parse(out: &[u8]) -> BTreeSet<(u64, u64, u64, u64)> {
    let text = std::str::from_utf8(out).unwrap();
    text.lines()
        .map(|line| {
            let inner = line.strip_prefix('{').unwrap().strip_suffix('}').unwrap();
            let fields: Vec<(&str, u64)> = inner
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once(':').unwrap();
                    (k.trim_matches('"'), v.parse().unwrap())
                })
                .collect();
            let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            assert_eq!(
                names,
                ["user", "session", "chosen", "rejected", "closed_seqno"]
            );
            (fields[0].1, fields[1].1, fields[2].1, fields[3].1)
        })
        .collect()
}

#[test]
fn closed_sessions_export_their_chosen_and_rejected_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let db = TidalDb::open(
        Config::builder(dir.path())
            .signal_type("click", Duration::from_secs(3_600))
            .segment_bytes(4096)
            .build()
            .unwrap(),
    )
    .unwrap();
    let now = Timestamp::now();
    let (u, s1, s2, s3) = (UserId(7), SessionId(1), SessionId(2), SessionId(3));
    let e = EntityId;
    // Session 1: clicks 10, 11 and 13, skips 12.
    db.write(
        WriteBatch::new()
            .open_session(s1, u, now)
            .record_session_event(s1, e(10), "click", 1.0, now)
            .record_session_event(s1, e(11), "click", 2.0, now)
            .record_session_event(s1, e(12), "click", -1.0, now)
            .record_session_event(s1, e(13), "click", 1.0, now)
            .close_session(s1, now),
    )
    .unwrap();
    // Session 2: skips 13 (a hard negative from now on, also for session 1)
    // and clicks 14; stays open for now.
    db.write(
        WriteBatch::new()
            .open_session(s2, u, now)
            .record_session_event(s2, e(13), "click", -1.0, now)
            .record_session_event(s2, e(14), "click", 1.0, now),
    )
    .unwrap();
    let mut out = Vec::new();
    let first = db
        .export_preferences(Position::default(), &mut out)
        .unwrap();
    assert_eq!((first.sessions, first.expired), (1, 0));
    // Session 1: chosen 10 and 11 (13 is now a hard negative), rejected 12
    // and 13 (both negatives it showed).
    let want: BTreeSet<_> = [
        (7, 1, 10, 12),
        (7, 1, 10, 13),
        (7, 1, 11, 12),
        (7, 1, 11, 13),
    ]
    .into();
    assert_eq!(parse(&out), want);
    assert_eq!(first.lines, 4);

    // Session 2 closes and session 3 (no negatives seen) too: the next
    // export, from where the first stopped, has only session 2's pairs.
    db.write(
        WriteBatch::new()
            .close_session(s2, now)
            .open_session(s3, u, now)
            .record_session_event(s3, e(20), "click", 1.0, now)
            .close_session(s3, now),
    )
    .unwrap();
    let mut out = Vec::new();
    let next = db
        .export_preferences(Position::new(tidal::Epoch(1), first.through), &mut out)
        .unwrap();
    assert_eq!((next.sessions, next.lines), (2, 1));
    assert_eq!(parse(&out), [(7, 2, 14, 13)].into());

    // Once the log before a position is retired, exporting from it is refused.
    for b in 0..20u64 {
        let mut batch = WriteBatch::new();
        for i in 0..30u64 {
            batch = batch.signal("click", e(1_000 + b * 30 + i), 1.0, now);
        }
        db.write(batch).unwrap();
    }
    db.checkpoint().unwrap();
    for b in 0..20u64 {
        let mut batch = WriteBatch::new();
        for i in 0..30u64 {
            batch = batch.signal("click", e(2_000 + b * 30 + i), 1.0, now);
        }
        db.write(batch).unwrap();
    }
    db.checkpoint().unwrap();
    let first_retained = db.status().first_retained;
    assert!(first_retained.0 > 2, "{first_retained}");
    let err = db
        .export_preferences(Position::default(), &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, TidalError::NotRetained { field: "since", .. }),
        "{err}"
    );
}
