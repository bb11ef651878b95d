// A write on a follower must not compile, and the error must say why.
use tidal::{EntityId, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.write_creator(EntityId(2), &[("name", "x")]);
}

fn main() {}
