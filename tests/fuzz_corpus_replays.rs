//! The committed fuzz corpus replays through the fuzz targets' own entry
//! points (`tidal::fuzzing`), so the stable test run exercises every
//! decoder and round-trip oracle the nightly fuzzers do.
//!
//! Every file under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`
//! (crash files kept as regressions) must run without a panic. The seeds
//! `tidal::fuzzing::seeds()` builds with the real encoders must all be in
//! the committed corpus, byte for byte, and must decode all the way
//! (`Outcome::Decoded`), so the oracles are reached and a format change
//! cannot leave a stale corpus behind. After such a change, rewrite the
//! seeds with `cargo test --release --test fuzz_corpus_replays -- --ignored`.

use std::fs;
use std::path::{Path, PathBuf};

use tidal::fuzzing::{self, Outcome};

const TARGETS: [&str; 5] = ["batch", "records", "snapshot", "meta", "message"];

fn run(target: &str, bytes: &[u8]) -> Outcome {
    match target {
        "batch" => fuzzing::batch(bytes),
        "records" => fuzzing::records(bytes),
        "snapshot" => fuzzing::snapshot(bytes),
        "meta" => fuzzing::meta(bytes),
        "message" => fuzzing::message(bytes),
        other => panic!("unknown fuzz target {other}"),
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The regular files of `dir` (none if it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_corpus_and_crash_file_replays_without_a_panic() {
    let mut replayed = 0;
    for target in TARGETS {
        for sub in ["corpus", "artifacts"] {
            for path in files(&fuzz_dir().join(sub).join(target)) {
                let bytes = fs::read(&path).expect("read corpus file");
                // A panic here names the file through the backtrace message.
                eprintln!("replaying {}", path.display());
                run(target, &bytes);
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= TARGETS.len(),
        "corpus missing: {replayed} files"
    );
}

#[test]
fn the_seeds_are_committed_and_decode_all_the_way() {
    let seeds = fuzzing::seeds();
    for target in TARGETS {
        assert!(
            seeds.iter().filter(|(t, _, _)| *t == target).count() >= 2,
            "target {target} has fewer than two seeds"
        );
    }
    for (target, name, bytes) in seeds {
        assert_eq!(run(target, &bytes), Outcome::Decoded, "{target}/{name}");
        let path = fuzz_dir().join("corpus").join(target).join(&name);
        let committed = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; rewrite the seeds (see module docs)",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{} is stale; rewrite the seeds (see module docs)",
            path.display()
        );
    }
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus"]
fn write_seed_corpus() {
    for (target, name, bytes) in fuzzing::seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}
