//! The in-memory state machine. It knows nothing of files or sockets.

pub(crate) mod decay;
pub(crate) mod entity_hash;
pub mod signals;
mod trending;
