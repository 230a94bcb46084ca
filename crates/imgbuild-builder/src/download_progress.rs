//! Counting download bytes for a progress display (conda packages and wheels alike).

use std::sync::atomic::AtomicU64;

/// Packages downloaded, and their bytes: expected (as each download learns its length) and
/// received. Packages already in the cache (or copied from `file://` channels) do not count.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    pub packages: AtomicU64,
    pub total: AtomicU64,
    pub done: AtomicU64,
}
