//! Counting download bytes for a progress display, from rattler_cache's reporter hooks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rattler_cache::package_cache::CacheReporter;

/// Packages downloaded, and their bytes: expected (as each download learns its length) and
/// received. Packages already in the cache (or copied from `file://` channels) do not count.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    pub packages: AtomicU64,
    pub total: AtomicU64,
    pub done: AtomicU64,
}

/// Feeds one [`DownloadProgress`] from the package cache's callbacks.
pub(crate) struct Reporter {
    progress: Arc<DownloadProgress>,
    next: AtomicUsize,
    /// Per download: bytes received so far, and whether its length was counted.
    seen: Mutex<HashMap<usize, (u64, bool)>>,
}

impl Reporter {
    pub(crate) fn new(progress: Arc<DownloadProgress>) -> Self {
        Self {
            progress,
            next: AtomicUsize::new(0),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl CacheReporter for Reporter {
    fn on_validate_start(&self) -> usize {
        0
    }

    fn on_validate_complete(&self, _index: usize) {}

    fn on_download_start(&self) -> usize {
        self.progress.packages.fetch_add(1, Ordering::Relaxed);
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn on_download_progress(&self, index: usize, progress: u64, total: Option<u64>) {
        let mut seen = self.seen.lock().expect("reporter lock");
        let (received, counted) = seen.entry(index).or_default();
        if let (Some(total), false) = (total, *counted) {
            self.progress.total.fetch_add(total, Ordering::Relaxed);
            *counted = true;
        }
        if progress > *received {
            self.progress
                .done
                .fetch_add(progress - *received, Ordering::Relaxed);
            *received = progress;
        }
    }

    fn on_download_completed(&self, _index: usize) {}
}
