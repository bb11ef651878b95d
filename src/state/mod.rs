//! The in-memory state machine. It knows nothing of files or sockets.

pub mod entities;
pub mod sessions;
pub mod vectors;
