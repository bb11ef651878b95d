//! In-memory storage that can crash and fail (placeholder, being written).

/// How a crash treats unsynced writes.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Every unsynced write and directory entry is lost.
    DropUnsynced,
}

/// An injected failure.
#[derive(Clone, Copy, Debug)]
pub enum FaultKind {
    /// An I/O error.
    Io,
}

/// In-memory storage.
#[derive(Debug, Default)]
pub struct SimStorage;
