// A write on a follower must not compile, and the error must say why.
use tidal::{EntityId, Timestamp, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.signal("like", EntityId(1), 1.0, Timestamp(0));
}

fn main() {}
