// `Role` is sealed: no role can be added outside the crate.
use tidal::{NodeRole, Role};

struct Admin;

impl Role for Admin {
    const NODE_ROLE: NodeRole = NodeRole::Single;
}

fn main() {}
