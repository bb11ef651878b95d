//! W1 (durable batched ingest), W2 (single-signal durable writes, raw
//! fdatasync baselines, group commit) and W3 (single-signal relaxed writes).
//!
//! The disk these machines share swings by 10x within seconds (fdatasync
//! measured at 0.12 ms and 3.5 ms a few seconds apart), so the systems of a
//! workload are not run one after another: each system's stream is cut into
//! `rounds` parts and the systems take turns, part by part, with the order
//! rotated every round. A system's rate is its writes over the sum of its
//! turns, so every system sees the same mix of fast and slow disk moments.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::{Durability, EntityId, TidalDb, Timestamp, WriteBatch};

use crate::peers::{Redb, Sqlite};
use crate::util::{
    BATCH, Better, RECORD_BYTES, Report, Sig, Sizes, TYPES, rate, tempdir, tidal_config,
};

fn tidal_batch(sigs: &[Sig]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for s in sigs {
        b = b.signal(
            TYPES[s.ty as usize],
            EntityId(s.entity),
            s.weight,
            Timestamp(s.at),
        );
    }
    b
}

fn tidal_one(db: &TidalDb, s: &Sig) {
    db.signal(
        TYPES[s.ty as usize],
        EntityId(s.entity),
        s.weight,
        Timestamp(s.at),
    )
    .expect("signal");
}

/// What a system does with one part of its stream.
type Part<'a> = Box<dyn FnMut(&[Sig]) + 'a>;

/// One system in an interleaved run: its stream and what it does with a part.
struct Turn<'a> {
    sigs: &'a [Sig],
    run: Part<'a>,
}

/// Runs every system's stream in `rounds` parts (cut on `align`-signal
/// boundaries), taking turns; returns each system's writes per second.
fn interleaved(rounds: usize, align: usize, turns: &mut [Turn<'_>]) -> Vec<f64> {
    let mut spent = vec![Duration::ZERO; turns.len()];
    let bounds = |len: usize, r: usize| {
        let units = len.div_ceil(align);
        ((r * units / rounds) * align).min(len)
    };
    for r in 0..rounds {
        for k in 0..turns.len() {
            let i = (k + r) % turns.len();
            let t = &mut turns[i];
            let part = &t.sigs[bounds(t.sigs.len(), r)..bounds(t.sigs.len(), r + 1)];
            let start = Instant::now();
            (t.run)(part);
            spent[i] += start.elapsed();
        }
    }
    turns
        .iter()
        .zip(spent)
        .map(|(t, d)| rate(t.sigs.len(), d))
        .collect()
}

/// W1: the same signals in 1,000-signal durable batches / transactions.
pub fn w1(rep: &mut Report, base: &Path, sizes: &Sizes, sigs: &[Sig], landmark: u64) {
    let n = sigs.len();
    let (td, sd, rdir) = (tempdir(base), tempdir(base), tempdir(base));
    let db = TidalDb::open(tidal_config(td.path(), Durability::Sync, 64)).expect("open");
    let mut sq = Sqlite::open(sd.path(), true, landmark);
    let rd = Redb::open(rdir.path(), true, landmark);
    let rates = interleaved(
        sizes.rounds,
        BATCH,
        &mut [
            Turn {
                sigs,
                run: Box::new(|p: &[Sig]| {
                    for c in p.chunks(BATCH) {
                        db.write(tidal_batch(c)).expect("write");
                    }
                }),
            },
            Turn {
                sigs,
                run: Box::new(|p: &[Sig]| p.chunks(BATCH).for_each(|c| sq.write_batch(c))),
            },
            Turn {
                sigs,
                run: Box::new(|p: &[Sig]| p.chunks(BATCH).for_each(|c| rd.write_batch(c))),
            },
        ],
    );
    let (tidal, sqlite, redb) = (rates[0], rates[1], rates[2]);
    rep.row(
        "W1",
        "tidal Sync, WriteBatch 1000",
        tidal,
        "signals/s",
        &format!("{n} signals, fsync mean {} us", db.status().fsync_mean_us),
    );
    rep.row("W1", "sqlite FULL, 1000-row txn", sqlite, "signals/s", "");
    rep.row("W1", "redb Immediate, 1000-row txn", redb, "signals/s", "");
    db.close().expect("close");
    rep.vs("W1", tidal, "sqlite", sqlite, "signals/s", Better::Higher);
    rep.vs("W1", tidal, "redb", redb, "signals/s", Better::Higher);
    rep.target("W1", tidal, 4_000_000.0, "signals/s", Better::Higher);
}

/// A file zero-filled and synced ahead for `count` records.
fn preallocated(path: &Path, count: usize) -> File {
    let f = File::create(path).expect("raw create");
    let zeros = vec![0u8; 1 << 20];
    let mut left = count * RECORD_BYTES + 4096;
    while left > 0 {
        let n = left.min(zeros.len());
        (&f).write_all(&zeros[..n]).expect("raw zero-fill");
        left -= n;
    }
    f.sync_all().expect("raw sync");
    f
}

/// W2: single-signal durable writes, 1 thread, against raw loops that
/// write one [`RECORD_BYTES`] record and `sync_data` it (into a file
/// zero-filled ahead, and appending to a growing file) and the peers'
/// one-row durable commits; and 32 threads against 1 (group commit).
pub fn w2(rep: &mut Report, base: &Path, sizes: &Sizes, sigs: &[Sig], landmark: u64) {
    let n = sizes.w2_writes.min(sigs.len());
    let threads = 32;
    let many = (threads * sizes.w2_per_thread).min(sigs.len());
    let (raw, td, sd, rdir) = (tempdir(base), tempdir(base), tempdir(base), tempdir(base));
    let pre = preallocated(&raw.path().join("raw-pre"), n);
    let mut app = OpenOptions::new()
        .create(true)
        .append(true)
        .open(raw.path().join("raw-append"))
        .expect("raw open");
    app.sync_all().expect("raw sync");
    let record = [0xA5u8; RECORD_BYTES];
    let mut pre_at = 0u64;
    let db = Arc::new(TidalDb::open(tidal_config(td.path(), Durability::Sync, 64)).expect("open"));
    let mut sq = Sqlite::open(sd.path(), true, landmark);
    let rd = Redb::open(rdir.path(), true, landmark);
    let group_batches = std::cell::Cell::new(0u64);
    let rates = interleaved(
        sizes.rounds,
        1,
        &mut [
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| {
                    for _ in p {
                        pre.write_all_at(&record, pre_at).expect("raw write");
                        pre.sync_data().expect("raw fdatasync");
                        pre_at += RECORD_BYTES as u64;
                    }
                }),
            },
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| {
                    for _ in p {
                        app.write_all(&record).expect("raw write");
                        app.sync_data().expect("raw fdatasync");
                    }
                }),
            },
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| p.iter().for_each(|s| tidal_one(&db, s))),
            },
            Turn {
                sigs: &sigs[..many],
                // 32 threads share the part; thread start-up is inside the turn.
                run: Box::new(|p: &[Sig]| {
                    let before = db.status().batches;
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let db = &db;
                            scope.spawn(move || {
                                p.iter()
                                    .skip(t)
                                    .step_by(threads)
                                    .for_each(|s| tidal_one(db, s));
                            });
                        }
                    });
                    group_batches.set(group_batches.get() + db.status().batches - before);
                }),
            },
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| p.iter().for_each(|s| sq.write_one(s))),
            },
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| {
                    p.iter()
                        .for_each(|s| rd.write_batch(std::slice::from_ref(s)))
                }),
            },
        ],
    );
    let [raw_pre, raw_app, one, group, sqlite, redb] = rates[..] else {
        unreachable!("six turns")
    };
    rep.row(
        "W2",
        "raw pwrite+fdatasync, prealloc",
        raw_pre,
        "writes/s",
        "75-byte records",
    );
    rep.row(
        "W2",
        "raw append+fdatasync",
        raw_app,
        "writes/s",
        "75-byte records",
    );
    rep.row(
        "W2",
        "tidal Sync, 1 thread",
        one,
        "writes/s",
        &format!(
            "{n} writes; fsync mean {} us over W2",
            db.status().fsync_mean_us
        ),
    );
    rep.row(
        "W2",
        "tidal Sync, 32 threads",
        group,
        "writes/s",
        &format!(
            "{many} writes in {} batches (group commit)",
            group_batches.get()
        ),
    );
    rep.row("W2", "sqlite FULL, autocommit", sqlite, "writes/s", "");
    rep.row("W2", "redb Immediate, 1-row txn", redb, "writes/s", "");
    rep.vs(
        "W2-1t",
        one,
        "raw-prealloc",
        raw_pre,
        "writes/s",
        Better::Higher,
    );
    rep.vs(
        "W2-1t",
        one,
        "raw-append",
        raw_app,
        "writes/s",
        Better::Higher,
    );
    rep.vs("W2-1t", one, "sqlite", sqlite, "writes/s", Better::Higher);
    rep.vs("W2-1t", one, "redb", redb, "writes/s", Better::Higher);
    rep.vs("W2-32t", group, "tidal-1t", one, "writes/s", Better::Higher);
    rep.target("W2-32t-speedup", group / one, 20.0, "x", Better::Higher);
}

/// W3: single-signal writes under `Periodic(100 ms)`, 1 thread, against
/// SQLite NORMAL autocommit and redb `Durability::None` one-row commits.
/// TidalDb runs twice: by default (each batch written at once, like
/// SQLite's NORMAL, so a process crash loses nothing written) and with
/// `write_behind_bytes` = 256 KiB (a process crash may lose the window, like
/// redb's `None`).
pub fn w3(rep: &mut Report, base: &Path, sizes: &Sizes, sigs: &[Sig], landmark: u64) {
    let n = sizes.w3_writes.min(sigs.len());
    let m = sizes.w3_peer_writes.min(sigs.len());
    let (td, sd, rdir, wd) = (tempdir(base), tempdir(base), tempdir(base), tempdir(base));
    let relaxed = Durability::Periodic(Duration::from_millis(100));
    let db = TidalDb::open(tidal_config(td.path(), relaxed, 64)).expect("open");
    let mut behind = tidal_config(wd.path(), relaxed, 64);
    behind.write_behind_bytes = 256 << 10;
    let wb = TidalDb::open(behind).expect("open");
    let mut sq = Sqlite::open(sd.path(), false, landmark);
    let rd = Redb::open(rdir.path(), false, landmark);
    let rates = interleaved(
        sizes.rounds,
        1,
        &mut [
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| p.iter().for_each(|s| tidal_one(&db, s))),
            },
            Turn {
                sigs: &sigs[..m],
                run: Box::new(|p: &[Sig]| p.iter().for_each(|s| sq.write_one(s))),
            },
            Turn {
                sigs: &sigs[..m],
                run: Box::new(|p: &[Sig]| {
                    p.iter()
                        .for_each(|s| rd.write_batch(std::slice::from_ref(s)))
                }),
            },
            Turn {
                sigs: &sigs[..n],
                run: Box::new(|p: &[Sig]| p.iter().for_each(|s| tidal_one(&wb, s))),
            },
        ],
    );
    let (tidal, sqlite, redb, behind) = (rates[0], rates[1], rates[2], rates[3]);
    rep.row(
        "W3",
        "tidal Periodic(100ms), 1 thread",
        tidal,
        "writes/s",
        &format!("{n} writes"),
    );
    rep.row(
        "W3",
        "sqlite NORMAL, autocommit",
        sqlite,
        "writes/s",
        &format!("{m} writes"),
    );
    rep.row(
        "W3",
        "redb None, 1-row txn",
        redb,
        "writes/s",
        &format!("{m} writes"),
    );
    rep.row(
        "W3",
        "tidal Periodic(100ms), write-behind 256 KiB",
        behind,
        "writes/s",
        &format!("{n} writes"),
    );
    db.close().expect("close");
    wb.close().expect("close");
    rep.vs("W3", tidal, "sqlite", sqlite, "writes/s", Better::Higher);
    rep.vs("W3", tidal, "redb", redb, "writes/s", Better::Higher);
    rep.target("W3", tidal, 2_000_000.0, "writes/s", Better::Higher);
    rep.vs(
        "W3-wb",
        behind,
        "sqlite",
        sqlite,
        "writes/s",
        Better::Higher,
    );
    rep.vs("W3-wb", behind, "redb", redb, "writes/s", Better::Higher);
    rep.target("W3-wb", behind, 2_000_000.0, "writes/s", Better::Higher);
}
