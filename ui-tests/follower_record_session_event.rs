// A write on a follower must not compile, and the error must say why.
use tidal::{EntityId, SessionId, Timestamp, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.record_session_event(SessionId(1), EntityId(1), "like", 1.0, Timestamp(0));
}

fn main() {}
