//! W7 (reopen: log replay rate, reopen from a snapshot) and W10 (the
//! longest writer stall while a checkpoint runs under W1-style ingest), on
//! the fixture directory W4/W5 used.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidal::{Durability, EntityId, TidalDb, Timestamp, WriteBatch};

use crate::reads::{fixture_chunks, to_batch};
use crate::util::{
    BATCH, Better, Report, Rng, Sizes, TYPES, Zipf, now_ms, pct, rate, rss_bytes, tempdir,
    tidal_config, timed, us,
};

/// Reopens the fixture in `dir` twice (log replay, then from a fresh
/// checkpoint) under `Durability::Sync`, then runs W10 on the second handle.
pub fn w7_w10(rep: &mut Report, dir: &Path, sizes: &Sizes, wants: &dyn Fn(&str) -> bool) {
    let config = || tidal_config(dir, Durability::Sync, 64);
    // The log was just written, so replay reads it from the page cache.
    let (db, d) = timed(|| TidalDb::open(config()).expect("reopen (replay)"));
    let r = db.status().recovery;
    let replayed = r.records_replayed as usize;
    let replay = rate(replayed, d);
    rep.row(
        "W7",
        "tidal replay (open, no snapshot)",
        replay,
        "records/s",
        &format!(
            "{replayed} records in {:.2} s (recovery itself {:.2} s)",
            d.as_secs_f64(),
            r.duration.as_secs_f64()
        ),
    );
    if wants("W7") {
        rep.target(
            "W7-replay",
            replay,
            10_000_000.0,
            "records/s",
            Better::Higher,
        );
    }
    let (_, cd) = timed(|| db.checkpoint().expect("checkpoint"));
    rep.row(
        "W7",
        "tidal checkpoint (idle)",
        cd.as_secs_f64() * 1e3,
        "ms",
        &format!("{} entities x 3 types", sizes.entities),
    );
    db.close().expect("close");

    let rss0 = rss_bytes();
    let (db, d) = timed(|| TidalDb::open(config()).expect("reopen (snapshot)"));
    let rss1 = rss_bytes();
    let r = db.status().recovery;
    rep.row(
        "W7",
        "tidal reopen from snapshot",
        d.as_secs_f64() * 1e3,
        "ms",
        &format!(
            "snapshot used: {}; replayed {} records; recovery {:.0} ms; RSS delta {:.1} B/score",
            r.snapshot.is_some(),
            r.records_replayed,
            r.duration.as_secs_f64() * 1e3,
            rss1.saturating_sub(rss0) as f64 / (sizes.entities * 3) as f64
        ),
    );
    if wants("W7") {
        rep.target(
            "W7-snapshot-open",
            d.as_secs_f64() * 1e3,
            1_000.0,
            "ms",
            Better::Lower,
        );
    }
    if wants("W10") {
        w10(rep, db, sizes, "W10", "Sync");
        // The same under Periodic: no fsync in the write path, so what is
        // left of a stall is the checkpoint's own cost to the writer.
        let relaxed = Durability::Periodic(Duration::from_millis(100));
        let db = TidalDb::open(tidal_config(dir, relaxed, 64)).expect("reopen (periodic)");
        w10(rep, db, sizes, "W10-periodic", "Periodic(100ms)");
    } else {
        db.close().expect("close");
    }
}

/// W10: a writer commits 1,000-signal batches back to back (durable ones
/// under `Sync`); after a baseline, `checkpoint()` runs on this thread. The
/// stall is the longest write that overlapped the checkpoint; the note adds
/// the p99 of those writes and the distribution before the checkpoint, since
/// under `Sync` an fsync alone can take longer than the target.
fn w10(rep: &mut Report, db: TidalDb, sizes: &Sizes, label: &str, durability: &str) {
    let db = Arc::new(db);
    let stop = Arc::new(AtomicBool::new(false));
    let entities = sizes.entities;
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(61);
            let mut spans = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = Timestamp::now();
                let mut b = WriteBatch::new();
                for i in 0..BATCH {
                    b = b.signal(TYPES[i % 3], EntityId(rng.below(entities)), 1.0, at);
                }
                let t = Instant::now();
                db.write(b).expect("write");
                spans.push((t, t.elapsed()));
            }
            spans
        })
    };
    std::thread::sleep(Duration::from_secs_f64(sizes.w10_baseline_seconds));
    let cs = Instant::now();
    db.checkpoint().expect("checkpoint");
    let ce = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let spans = writer.join().expect("writer");
    let mut before: Vec<Duration> = spans
        .iter()
        .filter(|(t, l)| *t + *l < cs)
        .map(|s| s.1)
        .collect();
    before.sort_unstable();
    let mut during: Vec<Duration> = spans
        .iter()
        .filter(|(t, l)| *t < ce && *t + *l > cs)
        .map(|s| s.1)
        .collect();
    during.sort_unstable();
    let stall = during.last().copied().unwrap_or_default();
    rep.row(
        label,
        &format!("tidal longest write during checkpoint, {durability}"),
        us(stall) / 1e3,
        "ms",
        &format!(
            "checkpoint {:.0} ms, {} writes overlapped it (p50 {:.2} ms, p99 {:.2} ms); before: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} writes)",
            (ce - cs).as_secs_f64() * 1e3,
            during.len(),
            us(pct(&during, 0.5)) / 1e3,
            us(pct(&during, 0.99)) / 1e3,
            us(pct(&before, 0.5)) / 1e3,
            us(pct(&before, 0.99)) / 1e3,
            us(pct(&before, 1.0)) / 1e3,
            before.len()
        ),
    );
    rep.target(label, us(stall) / 1e3, 10.0, "ms", Better::Lower);
    let db = Arc::into_inner(db).expect("no other handle");
    db.close().expect("close");
}

/// W7/W8 with embeddings: the signal fixture plus one 128-d embedding per
/// entity in one database; RSS of the whole, then checkpoint and reopen
/// from the snapshot. Full mode runs it (1M x 3 scores + 1M embeddings).
pub fn with_embeddings(rep: &mut Report, base: &Path, sizes: &Sizes, zipf: &Zipf) {
    const DIM: usize = 128;
    let dir = tempdir(base);
    let relaxed = Durability::Periodic(Duration::from_millis(100));
    let config = |d| tidal_config(dir.path(), d, DIM);
    let rss0 = rss_bytes();
    let db = TidalDb::open(config(relaxed)).expect("open");
    let at = now_ms() - 30_000;
    let (_, d) = timed(|| {
        for chunk in fixture_chunks(sizes.entities, zipf, at) {
            db.write(to_batch(&chunk)).expect("load");
        }
        let mut rng = Rng::new(71);
        let mut v = vec![0f32; DIM];
        let mut id = 0u64;
        while id < sizes.entities {
            let mut b = WriteBatch::new();
            for _ in 0..BATCH.min((sizes.entities - id) as usize) {
                v.iter_mut()
                    .for_each(|x| *x = rng.unit() as f32 * 2.0 - 1.0);
                b = b.write_item_embedding(EntityId(id), &v);
                id += 1;
            }
            db.write(b).expect("embeddings");
        }
        db.flush().expect("flush");
    });
    let rss1 = rss_bytes();
    let scores = sizes.entities * 3;
    rep.row(
        "W8-emb",
        "tidal RSS, scores + embeddings",
        (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
        "MiB",
        &format!(
            "{scores} scores + {} x {DIM} embeddings (raw f32 {:.0} MiB), loaded in {:.1} s; state_bytes {:.0} MiB per copy",
            sizes.entities,
            (sizes.entities as usize * DIM * 4) as f64 / 1048576.0,
            d.as_secs_f64(),
            db.status().state_bytes as f64 / 1048576.0
        ),
    );
    let (_, cd) = timed(|| db.checkpoint().expect("checkpoint"));
    db.close().expect("close");
    let (db, d) = timed(|| TidalDb::open(config(Durability::Sync)).expect("reopen"));
    let r = db.status().recovery;
    rep.row(
        "W7-emb",
        "tidal reopen from snapshot, + embeddings",
        d.as_secs_f64() * 1e3,
        "ms",
        &format!(
            "snapshot used: {}; checkpoint took {:.0} ms; recovery {:.0} ms",
            r.snapshot.is_some(),
            cd.as_secs_f64() * 1e3,
            r.duration.as_secs_f64() * 1e3
        ),
    );
    db.close().expect("close");
}
