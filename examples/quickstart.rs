//! The main job on the embedded default: a Single node.
//!
//! `cargo run --release --example quickstart` uses a fresh temporary
//! directory; `cargo run --release --example quickstart -- <dir>` uses (and
//! reuses) `<dir>`. It writes creators, items, embeddings and a few thousand
//! signals, prints a decay score, the trending top-10 and the items most
//! similar to one item, reopens the database, prints the same answers again
//! and exits non-zero if they differ.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tidal::{Config, EntityId, Retrieve, Scored, Search, TidalDb, Timestamp, WriteBatch};

const DIMENSION: usize = 16;
const CREATORS: u64 = 10;
const ITEMS: u64 = 200;

fn config(dir: &std::path::Path) -> tidal::Result<Config> {
    Config::builder(dir)
        .signal_type("view", Duration::from_secs(3_600))
        .signal_type("like", Duration::from_secs(24 * 3_600))
        .signal_type("skip", Duration::from_secs(3_600))
        .dimension(DIMENSION)
        .build()
}

/// A deterministic embedding: items of one creator point the same way.
fn embedding(item: u64) -> Vec<f32> {
    let creator = item % CREATORS;
    (0..DIMENSION as u64)
        .map(|d| {
            let base = if d == creator { 1.0 } else { 0.05 };
            base + ((item * 31 + d * 17) % 13) as f32 / 100.0
        })
        .collect()
}

fn populate(db: &TidalDb, now: Timestamp) -> tidal::Result<()> {
    let mut batch = WriteBatch::new();
    for c in 0..CREATORS {
        let name = format!("creator-{c}");
        batch = batch.write_creator(EntityId(1_000 + c), &[("name", name.as_str())]);
    }
    for i in 0..ITEMS {
        let lang = if i % 3 == 0 { "fr" } else { "en" };
        batch = batch
            .write_item(
                EntityId(i),
                Some(EntityId(1_000 + i % CREATORS)),
                &[("lang", lang)],
            )
            .write_item_embedding(EntityId(i), &embedding(i));
    }
    db.write(batch)?;
    // A few thousand signals over the last hours, popularity skewed to low ids.
    let mut batch = WriteBatch::new();
    for n in 0..5_000u64 {
        let item = (n * n + 7 * n) % (1 + n % ITEMS);
        let age_ms = (n * 7_919) % (6 * 3_600_000);
        let at = Timestamp(now.0.saturating_sub(age_ms));
        let (kind, weight) = match n % 10 {
            0 => ("skip", -1.0),
            1 | 2 => ("like", 1.0),
            _ => ("view", 1.0),
        };
        batch = batch.signal(kind, EntityId(item), weight, at);
        if batch.len() == 1_000 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        db.write(batch)?;
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
struct Answers {
    score: f64,
    trending: Vec<Scored>,
    similar: Vec<Scored>,
}

fn answers(db: &TidalDb, at: Timestamp) -> tidal::Result<Answers> {
    Ok(Answers {
        score: db.read_decay_score(EntityId(0), "view", at)?,
        trending: db.retrieve(&Retrieve::top(10, "view", at))?,
        similar: db.search(&Search::new(embedding(3), 6).exclude([EntityId(3)]))?,
    })
}

fn print(label: &str, a: &Answers) {
    println!("{label}");
    println!("  decay score of item 0 (view): {:.6}", a.score);
    println!("  trending top-10 (view):");
    for s in &a.trending {
        println!("    item {:>4}  {:.4}", s.id, s.score);
    }
    println!("  most similar to item 3:");
    for s in &a.similar {
        println!("    item {:>4}  cosine {:.4}", s.id, s.score);
    }
}

fn run() -> tidal::Result<bool> {
    let (dir, _temp) = match std::env::args().nth(1) {
        Some(d) => (PathBuf::from(d), None),
        None => {
            let t = tempfile::tempdir().map_err(|e| tidal::TidalError::Io {
                op: "create temp dir",
                path: std::env::temp_dir(),
                source: e,
            })?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!("database in {}", dir.display());
    let now = Timestamp::now();
    let db = TidalDb::open(config(&dir)?)?;
    if db.get_item(EntityId(0)).is_none() {
        populate(&db, now)?;
        println!("wrote {CREATORS} creators, {ITEMS} items with embeddings, 5000 signals");
    } else {
        println!("reusing the database already in this directory");
    }
    let before = answers(&db, now)?;
    print("answers:", &before);
    db.close()?;

    let db = TidalDb::open(config(&dir)?)?;
    let after = answers(&db, now)?;
    print("after reopening:", &after);
    let status = db.status();
    println!(
        "applied {} ({} records replayed in {:?})",
        status.applied, status.recovery.records_replayed, status.recovery.duration
    );
    db.close()?;
    Ok(before == after)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => {
            println!("same answers after reopening: ok");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("answers differ after reopening");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
