//! Inspects a TidalDb data directory, read-only, like `pg_waldump`: META,
//! segments, snapshots, every checksum, the epoch history, diverged
//! suffixes; with `--batches` every batch, with `--records` also their
//! records. Exits 1 when anything is damaged (naming file and offset), 2 on
//! a usage error or a directory that holds no database, 0 otherwise (a
//! torn tail is reported but is not damage: recovery cuts it).
//!
//! ```text
//! cargo run --release --example inspect -- <data_dir> [--batches] [--records]
//! ```
//!
//! A directory holding `shard-N` subdirectories (a `ShardedDb`) and no
//! `META` is inspected shard by shard.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tidal::inspect::{BatchReport, DirReport, InspectOptions, inspect_dir};

fn main() -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    let mut options = InspectOptions::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--batches" => options.batches = true,
            "--records" => {
                options.batches = true;
                options.records = true;
            }
            "-h" | "--help" => return usage(),
            a if a.starts_with('-') => {
                eprintln!("unknown option {a}");
                return usage();
            }
            a if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return usage(),
        }
    }
    let Some(dir) = dir else {
        return usage();
    };
    if !dir.is_dir() {
        eprintln!("{} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let mut damaged = false;
    for d in data_dirs(&dir) {
        let report = inspect_dir(&d, options);
        if report.meta.is_none() && report.shards.is_empty() && report.is_clean() {
            eprintln!("{} is not a TidalDb data directory", d.display());
            return ExitCode::from(2);
        }
        print_report(&report);
        damaged |= !report.is_clean();
    }
    if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: inspect <data_dir> [--batches] [--records]");
    ExitCode::from(2)
}

/// The directory itself, or its `shard-N` subdirectories when it is the
/// root of a `ShardedDb` (no `META` of its own).
fn data_dirs(dir: &Path) -> Vec<PathBuf> {
    if dir.join("META").exists() {
        return vec![dir.to_path_buf()];
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-"))
                && p.join("META").exists()
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        shards
    }
}

fn print_report(r: &DirReport) {
    println!("== {}", r.dir.display());
    match &r.meta {
        Some(m) => {
            println!("META");
            println!(
                "  format version {}, node {}, shard {} of {}, dimension {}",
                m.format_version, m.node_id, m.shard_id, m.shard_count, m.dimension
            );
            for (id, (name, half_life_ms)) in m.signal_types.iter().enumerate() {
                println!("  signal type {id}: {name:?}, half-life {half_life_ms} ms");
            }
            println!(
                "  landmark half-lives {}, score floor {}, session retention {} ms, idempotency TTL {} ms",
                m.landmark_half_lives, m.score_floor, m.session_retention_ms, m.idempotency_ttl_ms
            );
            println!("  replicated-identity fingerprint {:#018x}", m.fingerprint);
        }
        None => println!("META: none readable (see damage and notes)"),
    }
    for s in &r.shards {
        println!("shard {}", s.shard);
        println!("  segments: {}", s.segments.len());
        for seg in &s.segments {
            let last = seg.last.map_or("-".into(), |p| p.to_string());
            println!(
                "    {}  first SeqNo {}  size {} B  data to {}  {} batches  {} records  last {}",
                name(&seg.file),
                seg.first_seqno,
                seg.size_bytes,
                seg.end_offset,
                seg.batch_count,
                seg.record_count,
                last
            );
            print_batches(&seg.batches);
        }
        println!("  snapshots: {}", s.snapshots.len());
        for snap in &s.snapshots {
            let sections: Vec<String> = snap
                .sections
                .iter()
                .map(|(id, v, len)| format!("{id}v{v}:{len}B"))
                .collect();
            println!(
                "    {}  SeqNo {}  epoch {}  size {} B  sections [{}]  checksums {}",
                name(&snap.file),
                snap.seqno,
                snap.epoch.map_or("-".into(), |e| e.to_string()),
                snap.size_bytes,
                sections.join(" "),
                if snap.ok { "ok" } else { "BAD" }
            );
        }
        let last = s.last.map_or("none".into(), |p| p.to_string());
        println!("  last logged position {last}");
    }
    println!("epoch history: {}", r.epochs.len());
    for e in &r.epochs {
        let role = if e.replicated { "leader" } else { "single" };
        println!(
            "  epoch {} from SeqNo {}, {role} node {}  ({})",
            e.epoch,
            e.start,
            e.leader_node,
            name(&e.source)
        );
    }
    println!("diverged suffixes: {}", r.diverged.len());
    for d in &r.diverged {
        let show = |s: Option<tidal::SeqNo>| s.map_or("-".into(), |s| s.to_string());
        println!(
            "    {}  epoch {}  SeqNos {}..={}  {} batches  {} records  size {} B{}",
            name(&d.file),
            d.epoch.map_or("-".into(), |e| e.to_string()),
            show(d.first_seqno),
            show(d.last_seqno),
            d.batch_count,
            d.record_count,
            d.size_bytes,
            if d.merged { "  (merged)" } else { "" }
        );
        print_batches(&d.batches);
    }
    if let Some(e) = r.highest_epoch_seen {
        println!("highest epoch seen (EPOCH): {e}");
    }
    println!(
        "replication positions: none stored on disk (follower acknowledgements and the HWM are kept in memory)"
    );
    for f in &r.other_files {
        println!("other file: {}", f.display());
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    for t in &r.torn_tails {
        println!(
            "torn tail: {} at offset {}: {} (recovery cuts it)",
            t.file.display(),
            t.offset,
            t.what
        );
    }
    for d in &r.damage {
        println!(
            "DAMAGE: {} at offset {}: {}",
            d.file.display(),
            d.offset,
            d.what
        );
    }
    if r.is_clean() {
        println!("verdict: every checksum holds");
    } else {
        println!("verdict: {} damaged place(s)", r.damage.len());
    }
}

fn print_batches(batches: &[BatchReport]) {
    for b in batches {
        println!(
            "      @{}  SeqNo {}..={}  epoch {}  hlc {}  {} records  {} B payload",
            b.offset, b.first_seqno, b.last_seqno, b.epoch, b.hlc, b.record_count, b.payload_bytes
        );
        for (seqno, record) in &b.records {
            println!("        {seqno}: {record}");
        }
    }
}

fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}
