//! Builds a small database with a few users and sessions, then writes the
//! preference export (JSON Lines: user, session, chosen, rejected,
//! closed_seqno) to the path given as the first argument.
//!
//! ```sh
//! cargo run --release --example export_preferences -- prefs.jsonl
//! ```

use std::time::Duration;

use tidal::{Config, EntityId, Position, SessionId, TidalDb, Timestamp, UserId, WriteBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: export_preferences <output.jsonl>")?;
    let dir = tempfile::tempdir()?;
    let db = TidalDb::open(
        Config::builder(dir.path())
            .signal_type("click", Duration::from_secs(3_600))
            .signal_type("skip", Duration::from_secs(3_600))
            .build()?,
    )?;
    let now = Timestamp::now();
    // Three users, two sessions each: clicks are positive, skips negative.
    for user in 1..=3u64 {
        for visit in 0..2u64 {
            let session = SessionId(user * 10 + visit);
            let mut b = WriteBatch::new().open_session(session, UserId(user), now);
            for k in 0..5u64 {
                let item = EntityId(100 + (user * 3 + visit * 5 + k) % 12);
                let (ty, w) = if (k + user) % 3 == 0 {
                    ("skip", -1.0)
                } else {
                    ("click", 1.0)
                };
                b = b.record_session_event(session, item, ty, w, now);
            }
            db.write(b.close_session(session, now))?;
        }
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let report = db.export_preferences(Position::default(), &mut out)?;
    println!(
        "wrote {} lines from {} closed sessions to {path} (through SeqNo {})",
        report.lines, report.sessions, report.through
    );
    db.close()?;
    Ok(())
}
