//! The in-memory state machine. It knows nothing of files or sockets.

pub(crate) mod decay;
pub mod signals;
mod trending;
