// A write on a follower must not compile, and the error must say why.
use tidal::{WriteBatch, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.write(WriteBatch::new());
}

fn main() {}
