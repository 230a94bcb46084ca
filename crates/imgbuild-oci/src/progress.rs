//! Byte counters a progress display polls while blobs are written or uploaded. Plain atomics:
//! the workers that move bytes never wait on whoever draws them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes to move and moved so far.
#[derive(Debug, Default)]
pub struct TransferProgress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

impl TransferProgress {
    /// Announces `bytes` more to move.
    pub fn add_total(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `bytes` moved.
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes back `bytes` counted as moved (an upload that starts over).
    pub fn rewind(&self, bytes: u64) {
        self.done.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// `(done, total)` now.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
