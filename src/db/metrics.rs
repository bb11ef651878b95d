//! Counters behind `status()`: fsyncs and committed batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters for `status()`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_total_ns: AtomicU64,
    pub(crate) fsync_last_ns: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) last_batch_records: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_fsync(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_total_ns.fetch_add(ns, Ordering::Relaxed);
        self.fsync_last_ns.store(ns, Ordering::Relaxed);
    }

    pub(crate) fn record_batch(&self, records: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.last_batch_records
            .store(records as u64, Ordering::Relaxed);
    }
}
