// A write on a follower must not compile, and the error must say why.
use tidal::{SessionId, Timestamp, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.close_session(SessionId(1), Timestamp(0));
}

fn main() {}
