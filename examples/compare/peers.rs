//! The peers, holding the same data as TidalDb in the same key layout:
//! one row per (entity, signal type) whose value is the forward-decayed sum
//! `sum w * 2^((t - L)/h)` against a fixed landmark `L` (the time-invariant
//! key TidalDb ranks by), updated by read-modify-write.
//!
//! - SQLite (rusqlite, bundled library): WAL mode, `synchronous=FULL` when
//!   durable and `NORMAL` when relaxed; a `WITHOUT ROWID` table keyed by
//!   `(entity, ty)`, updated by `INSERT .. ON CONFLICT DO UPDATE SET s = s +
//!   excluded.s`, with an index on `(ty, s)` for per-type top-k; a 1 GiB
//!   page cache per connection.
//! - redb: a table keyed by `(entity, ty)` holding the sum, updated by get +
//!   insert inside a write transaction; `Durability::Immediate` when durable,
//!   `Durability::None` when relaxed (redb 4 has no "eventual" level).

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rusqlite::Connection;

use crate::util::{Sig, key};

/// SQLite's page cache per connection, KiB: 1 GiB, as redb's default
/// cache, so neither peer is starved next to TidalDb's all-in-memory state
/// (SQLite's default of 2 MiB made W1 at 1M entities 5x slower).
const SQLITE_CACHE_KIB: u64 = 1 << 20;

const SCORES: TableDefinition<(u64, u8), f64> = TableDefinition::new("scores");

/// SQLite with the scores table.
pub struct Sqlite {
    pub conn: Connection,
    landmark: u64,
}

const UPSERT: &str = "INSERT INTO scores(entity, ty, s) VALUES (?1, ?2, ?3) \
                      ON CONFLICT(entity, ty) DO UPDATE SET s = s + excluded.s";

impl Sqlite {
    /// Opens (creating) `dir/scores.sqlite`.
    pub fn open(dir: &Path, durable: bool, landmark: u64) -> Sqlite {
        let conn = Connection::open(dir.join("scores.sqlite")).expect("sqlite open");
        Self::setup(&conn, durable);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS scores(entity INTEGER NOT NULL, ty INTEGER NOT NULL, \
             s REAL NOT NULL, PRIMARY KEY(entity, ty)) WITHOUT ROWID; \
             CREATE INDEX IF NOT EXISTS scores_by_s ON scores(ty, s);",
        )
        .expect("sqlite schema");
        Sqlite { conn, landmark }
    }

    /// A second connection to the same file (readers, background writers).
    pub fn connect(dir: &Path, durable: bool, landmark: u64) -> Sqlite {
        let conn = Connection::open(dir.join("scores.sqlite")).expect("sqlite open");
        Self::setup(&conn, durable);
        Sqlite { conn, landmark }
    }

    fn setup(conn: &Connection, durable: bool) {
        let sync = if durable { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-{SQLITE_CACHE_KIB};"
        ))
        .expect("sqlite pragmas");
    }

    /// One transaction holding every signal of `sigs`.
    pub fn write_batch(&mut self, sigs: &[Sig]) {
        let tx = self.conn.transaction().expect("sqlite begin");
        {
            let mut st = tx.prepare_cached(UPSERT).expect("sqlite prepare");
            for s in sigs {
                st.execute((s.entity as i64, s.ty as i64, key(s, self.landmark)))
                    .expect("sqlite upsert");
            }
        }
        tx.commit().expect("sqlite commit");
    }

    /// One autocommit statement.
    pub fn write_one(&mut self, s: &Sig) {
        let mut st = self.conn.prepare_cached(UPSERT).expect("sqlite prepare");
        st.execute((s.entity as i64, s.ty as i64, key(s, self.landmark)))
            .expect("sqlite upsert");
    }

    /// The stored key of `(entity, ty)`, 0 when absent.
    pub fn read_key(&self, entity: u64, ty: u8) -> f64 {
        let mut st = self
            .conn
            .prepare_cached("SELECT s FROM scores WHERE entity = ?1 AND ty = ?2")
            .expect("sqlite prepare");
        let mut rows = st.query((entity as i64, ty as i64)).expect("sqlite query");
        match rows.next().expect("sqlite row") {
            Some(r) => r.get(0).expect("sqlite col"),
            None => 0.0,
        }
    }

    /// Top-k of one type by the stored key (which ranks as the decayed
    /// score does), through the `(ty, s)` index.
    pub fn top(&self, ty: u8, k: usize, out: &mut Vec<(u64, f64)>) {
        out.clear();
        let mut st = self
            .conn
            .prepare_cached("SELECT entity, s FROM scores WHERE ty = ?1 ORDER BY s DESC LIMIT ?2")
            .expect("sqlite prepare");
        let mut rows = st.query((ty as i64, k as i64)).expect("sqlite query");
        while let Some(r) = rows.next().expect("sqlite row") {
            let e: i64 = r.get(0).expect("sqlite col");
            out.push((e as u64, r.get(1).expect("sqlite col")));
        }
    }
}

/// redb with the scores table.
pub struct Redb {
    pub db: redb::Database,
    durable: bool,
    landmark: u64,
}

impl Redb {
    /// Creates `dir/scores.redb`.
    pub fn open(dir: &Path, durable: bool, landmark: u64) -> Redb {
        let db = redb::Database::create(dir.join("scores.redb")).expect("redb open");
        Redb {
            db,
            durable,
            landmark,
        }
    }

    /// One write transaction applying every signal of `sigs` by
    /// read-modify-write.
    pub fn write_batch(&self, sigs: &[Sig]) {
        let mut tx = self.db.begin_write().expect("redb begin");
        let level = if self.durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(level).expect("redb durability");
        {
            let mut t = tx.open_table(SCORES).expect("redb table");
            for s in sigs {
                let k = (s.entity, s.ty);
                let old = t.get(&k).expect("redb get").map_or(0.0, |v| v.value());
                t.insert(&k, old + key(s, self.landmark))
                    .expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }

    /// A durable commit of nothing, so a relaxed load ends on disk.
    pub fn persist(&self) {
        let mut tx = self.db.begin_write().expect("redb begin");
        tx.set_durability(redb::Durability::Immediate)
            .expect("redb durability");
        tx.commit().expect("redb commit");
    }

    /// A read transaction and its table, for point reads.
    pub fn reader(&self) -> redb::ReadOnlyTable<(u64, u8), f64> {
        let tx = self.db.begin_read().expect("redb read");
        tx.open_table(SCORES).expect("redb table")
    }
}

/// The stored key of `(entity, ty)` in an open redb table, 0 when absent.
pub fn redb_read(t: &redb::ReadOnlyTable<(u64, u8), f64>, entity: u64, ty: u8) -> f64 {
    t.get(&(entity, ty))
        .expect("redb get")
        .map_or(0.0, |v| v.value())
}
