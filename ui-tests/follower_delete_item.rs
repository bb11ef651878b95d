// A write on a follower must not compile, and the error must say why.
use tidal::{EntityId, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.delete_item(EntityId(1));
}

fn main() {}
