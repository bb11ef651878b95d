//! W1 (durable batched ingest), W2 (single-signal durable writes, raw
//! fdatasync baselines, group commit) and W3 (single-signal relaxed writes).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::{Durability, EntityId, TidalDb, Timestamp, WriteBatch};

use crate::peers::{Redb, Sqlite};
use crate::util::{
    BATCH, Better, RECORD_BYTES, Report, Sig, Sizes, TYPES, rate, tempdir, tidal_config, timed,
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

/// W1: the same signals in 1,000-signal durable batches / transactions.
pub fn w1(rep: &mut Report, base: &Path, sigs: &[Sig], landmark: u64) {
    let n = sigs.len();
    let dir = tempdir(base);
    let db = TidalDb::open(tidal_config(dir.path(), Durability::Sync, 64)).expect("open");
    let (_, d) = timed(|| {
        for chunk in sigs.chunks(BATCH) {
            db.write(tidal_batch(chunk)).expect("write");
        }
    });
    let st = db.status();
    let tidal = rate(n, d);
    rep.row(
        "W1",
        "tidal Sync, WriteBatch 1000",
        tidal,
        "signals/s",
        &format!("{n} signals, fsync mean {} us", st.fsync_mean_us),
    );
    db.close().expect("close");
    drop(dir);

    let dir = tempdir(base);
    let mut sq = Sqlite::open(dir.path(), true, landmark);
    let (_, d) = timed(|| {
        for chunk in sigs.chunks(BATCH) {
            sq.write_batch(chunk);
        }
    });
    let sqlite = rate(n, d);
    rep.row("W1", "sqlite FULL, 1000-row txn", sqlite, "signals/s", "");
    drop(sq);
    drop(dir);

    let dir = tempdir(base);
    let rd = Redb::open(dir.path(), true, landmark);
    let (_, d) = timed(|| {
        for chunk in sigs.chunks(BATCH) {
            rd.write_batch(chunk);
        }
    });
    let redb = rate(n, d);
    rep.row("W1", "redb Immediate, 1000-row txn", redb, "signals/s", "");
    drop(rd);
    drop(dir);

    rep.vs("W1", tidal, "sqlite", sqlite, "signals/s", Better::Higher);
    rep.vs("W1", tidal, "redb", redb, "signals/s", Better::Higher);
    rep.target("W1", tidal, 4_000_000.0, "signals/s", Better::Higher);
}

/// The raw baseline: `count` records of [`RECORD_BYTES`], each written and
/// `sync_data`'ed, into a file zero-filled and synced ahead (`prealloc`) or
/// appended to a growing file.
fn raw_fdatasync(dir: &Path, count: usize, prealloc: bool) -> f64 {
    let path = dir.join(if prealloc { "raw-pre" } else { "raw-append" });
    let record = [0xA5u8; RECORD_BYTES];
    if prealloc {
        let f = File::create(&path).expect("raw create");
        let zeros = vec![0u8; 1 << 20];
        let mut left = count * RECORD_BYTES + 4096;
        while left > 0 {
            let n = left.min(zeros.len());
            (&f).write_all(&zeros[..n]).expect("raw zero-fill");
            left -= n;
        }
        f.sync_all().expect("raw sync");
        let (_, d) = timed(|| {
            for i in 0..count {
                f.write_all_at(&record, (i * RECORD_BYTES) as u64)
                    .expect("raw write");
                f.sync_data().expect("raw fdatasync");
            }
        });
        rate(count, d)
    } else {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("raw open");
        f.sync_all().expect("raw sync");
        let (_, d) = timed(|| {
            for _ in 0..count {
                f.write_all(&record).expect("raw write");
                f.sync_data().expect("raw fdatasync");
            }
        });
        rate(count, d)
    }
}

/// W2: single-signal durable writes, 1 thread against raw fdatasync loops
/// (and the peers' one-row durable commits); 32 threads against 1.
pub fn w2(rep: &mut Report, base: &Path, sizes: &Sizes, sigs: &[Sig], landmark: u64) {
    let n = sizes.w2_writes.min(sigs.len());
    let dir = tempdir(base);
    let raw_pre = raw_fdatasync(dir.path(), n, true);
    let raw_app = raw_fdatasync(dir.path(), n, false);
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
    drop(dir);

    let dir = tempdir(base);
    let db = TidalDb::open(tidal_config(dir.path(), Durability::Sync, 64)).expect("open");
    let (_, d) = timed(|| {
        for s in &sigs[..n] {
            db.signal(
                TYPES[s.ty as usize],
                EntityId(s.entity),
                s.weight,
                Timestamp(s.at),
            )
            .expect("signal");
        }
    });
    let one = rate(n, d);
    rep.row(
        "W2",
        "tidal Sync, 1 thread",
        one,
        "writes/s",
        &format!("fsync mean {} us", db.status().fsync_mean_us),
    );

    // 32 threads on the same database: group commit.
    let batches_before = db.status().batches;
    let db = Arc::new(db);
    let threads = 32;
    let per = sizes.w2_per_thread;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            let mine: Vec<Sig> = sigs
                .iter()
                .cycle()
                .skip(t * per)
                .take(per)
                .copied()
                .collect();
            std::thread::spawn(move || {
                for s in mine {
                    db.signal(
                        TYPES[s.ty as usize],
                        EntityId(s.entity),
                        s.weight,
                        Timestamp(s.at),
                    )
                    .expect("signal");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    let many = rate(threads * per, start.elapsed());
    let st = db.status();
    rep.row(
        "W2",
        "tidal Sync, 32 threads",
        many,
        "writes/s",
        &format!(
            "{} writes in {} batches (group commit)",
            threads * per,
            st.batches - batches_before
        ),
    );
    drop(db);
    drop(dir);

    let dir = tempdir(base);
    let mut sq = Sqlite::open(dir.path(), true, landmark);
    let (_, d) = timed(|| {
        for s in &sigs[..n] {
            sq.write_one(s);
        }
    });
    let sqlite = rate(n, d);
    rep.row("W2", "sqlite FULL, autocommit", sqlite, "writes/s", "");
    drop(sq);
    drop(dir);

    let dir = tempdir(base);
    let rd = Redb::open(dir.path(), true, landmark);
    let (_, d) = timed(|| {
        for s in &sigs[..n] {
            rd.write_batch(std::slice::from_ref(s));
        }
    });
    let redb = rate(n, d);
    rep.row("W2", "redb Immediate, 1-row txn", redb, "writes/s", "");
    drop(rd);
    drop(dir);

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
    rep.vs("W2-32t", many, "tidal-1t", one, "writes/s", Better::Higher);
    rep.target("W2-32t-speedup", many / one, 20.0, "x", Better::Higher);
}

/// W3: single-signal writes under `Periodic(100 ms)`, 1 thread, against
/// SQLite NORMAL autocommit and redb `Durability::None` one-row commits.
pub fn w3(rep: &mut Report, base: &Path, sizes: &Sizes, sigs: &[Sig], landmark: u64) {
    let n = sizes.w3_writes.min(sigs.len());
    let dir = tempdir(base);
    let relaxed = Durability::Periodic(Duration::from_millis(100));
    let db = TidalDb::open(tidal_config(dir.path(), relaxed, 64)).expect("open");
    let (_, d) = timed(|| {
        for s in &sigs[..n] {
            db.signal(
                TYPES[s.ty as usize],
                EntityId(s.entity),
                s.weight,
                Timestamp(s.at),
            )
            .expect("signal");
        }
    });
    let tidal = rate(n, d);
    rep.row(
        "W3",
        "tidal Periodic(100ms), 1 thread",
        tidal,
        "writes/s",
        &format!("{n} writes"),
    );
    db.close().expect("close");
    drop(dir);

    let m = sizes.w3_peer_writes.min(sigs.len());
    let dir = tempdir(base);
    let mut sq = Sqlite::open(dir.path(), false, landmark);
    let (_, d) = timed(|| {
        for s in &sigs[..m] {
            sq.write_one(s);
        }
    });
    let sqlite = rate(m, d);
    rep.row(
        "W3",
        "sqlite NORMAL, autocommit",
        sqlite,
        "writes/s",
        &format!("{m} writes"),
    );
    drop(sq);
    drop(dir);

    let dir = tempdir(base);
    let rd = Redb::open(dir.path(), false, landmark);
    let (_, d) = timed(|| {
        for s in &sigs[..m] {
            rd.write_batch(std::slice::from_ref(s));
        }
    });
    let redb = rate(m, d);
    rep.row(
        "W3",
        "redb None, 1-row txn",
        redb,
        "writes/s",
        &format!("{m} writes"),
    );
    drop(rd);
    drop(dir);

    rep.vs("W3", tidal, "sqlite", sqlite, "writes/s", Better::Higher);
    rep.vs("W3", tidal, "redb", redb, "writes/s", Better::Higher);
    rep.target("W3", tidal, 2_000_000.0, "writes/s", Better::Higher);
}
