//! What a crash leaves of a file's unsynced writes, per [`CrashMode`].

use std::collections::BTreeSet;

use super::{CrashMode, Node, Op, PAGE_BYTES};

pub(super) use crate::splitmix::SplitMix64;

/// Draws for a simulated crash: which writes and pages it keeps.
impl SplitMix64 {
    /// Uniform-enough in `0..=n`.
    pub(super) fn up_to(&mut self, n: u64) -> u64 {
        match n.checked_add(1) {
            Some(m) => self.next_u64() % m,
            None => self.next_u64(),
        }
    }

    pub(super) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

pub(super) fn apply(data: &mut Vec<u8>, op: &Op, cut: Option<usize>) {
    match op {
        Op::Write { offset, bytes } => {
            let bytes = &bytes[..cut.unwrap_or(bytes.len()).min(bytes.len())];
            if bytes.is_empty() {
                // Like pwrite of nothing: the file does not grow.
                return;
            }
            // Offsets were checked against usize when the write was made.
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(bytes.len());
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => data.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

impl Node {
    /// The content this file has after a crash in `mode`.
    pub(super) fn after_crash(&self, mode: CrashMode, rng: &mut SplitMix64) -> Vec<u8> {
        let mut out = self.synced.clone();
        match mode {
            CrashMode::DropUnsynced => {}
            CrashMode::TornPrefix { .. } => {
                let n = self.unsynced.len() as u64;
                let keep = usize::try_from(rng.up_to(n)).unwrap_or(0);
                for op in &self.unsynced[..keep] {
                    apply(&mut out, op, None);
                }
                if let Some(op @ Op::Write { bytes, .. }) = self.unsynced.get(keep) {
                    let cut = usize::try_from(rng.up_to(bytes.len() as u64)).unwrap_or(0);
                    apply(&mut out, op, Some(cut));
                }
            }
            CrashMode::RandomPages { .. } => out = self.random_pages(rng),
        }
        out
    }

    /// Synced content with a random subset of the dirty pages replaced by
    /// their current content. The length grows to cover the surviving pages
    /// (never past the current length); a truncation survives or not as a
    /// whole.
    fn random_pages(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let mut dirty = BTreeSet::new();
        let mut prev_len = self.synced.len() as u64;
        let mut truncated = false;
        for op in &self.unsynced {
            let (lo, hi) = match op {
                Op::Write { offset, bytes } => {
                    let end = offset.saturating_add(bytes.len() as u64);
                    prev_len = prev_len.max(end);
                    (*offset, end)
                }
                Op::SetLen(len) => {
                    truncated |= *len < prev_len;
                    let r = ((*len).min(prev_len), (*len).max(prev_len));
                    prev_len = *len;
                    r
                }
            };
            if hi > lo {
                dirty.extend(lo / PAGE_BYTES..hi.div_ceil(PAGE_BYTES));
            }
        }
        let cur_len = self.data.len();
        let mut out = self.synced.clone();
        let mut len = if truncated && rng.coin() {
            cur_len
        } else {
            out.len()
        };
        out.resize(out.len().max(cur_len), 0);
        for page in dirty {
            if !rng.coin() {
                continue;
            }
            let start = usize::try_from(page * PAGE_BYTES).unwrap_or(usize::MAX);
            let end = start.saturating_add(PAGE_BYTES as usize);
            let end_out = end.min(out.len());
            let end_data = end_out.min(cur_len).max(start.min(end_out));
            // The page as it is now: current bytes, zeros past a truncation.
            if start < end_out {
                out[start..end_data].copy_from_slice(&self.data[start..end_data]);
                out[end_data..end_out].fill(0);
            }
            if end.min(cur_len) > len {
                len = end.min(cur_len);
            }
        }
        out.truncate(len);
        out
    }
}
