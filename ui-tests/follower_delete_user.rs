// A write on a follower must not compile, and the error must say why.
use tidal::{UserId, Follower, TidalDb};

fn write_on_follower(db: &TidalDb<Follower>) {
    let _ = db.delete_user(UserId(1));
}

fn main() {}
