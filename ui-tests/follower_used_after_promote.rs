// `promote` consumes the follower: the old value cannot be used again.
use tidal::{EntityId, Epoch, Follower, TidalDb, Timestamp};

fn promote_then_read(follower: TidalDb<Follower>) {
    let _leader = follower.promote(Epoch(2));
    let _ = follower.read_decay_score(EntityId(1), "like", Timestamp(0));
}

fn main() {}
