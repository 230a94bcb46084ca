//! Progress as the build makes it: stages as they start, and byte counters to poll while a
//! stage moves bytes. A progress bar, a log shipper or a test implements [`Observer`]; the
//! default ([`Silent`]) ignores everything. Logs (`tracing`) are separate and always written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use imgbuild_builder::download_progress::DownloadProgress;
use imgbuild_oci::TransferProgress;

/// A stage of a build, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the base image (from a layout or a registry).
    Base,
    /// Solving the spec (and the pip section).
    Solving,
    /// Reading the lock file.
    ReadingLock,
    /// Downloading and installing packages, and writing the environment's layers.
    Installing,
    /// The SBOM, the config and the manifest; the layout and archive.
    WritingImage,
    Pushing,
}

impl Stage {
    /// How a person reads the stage, e.g. on a progress line.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Base => "reading the base image",
            Stage::Solving => "solving",
            Stage::ReadingLock => "reading the lock file",
            Stage::Installing => "downloading and installing packages",
            Stage::WritingImage => "writing the image",
            Stage::Pushing => "pushing",
        }
    }
}

/// A byte counter a stage advances: `(done, total)` now.
#[derive(Clone)]
pub struct ByteCounter {
    /// What the bytes are, e.g. `downloading`.
    pub label: &'static str,
    source: Counted,
}

#[derive(Clone)]
enum Counted {
    Downloads(Arc<DownloadProgress>),
    Transfer(Arc<TransferProgress>),
}

impl ByteCounter {
    pub fn downloads(label: &'static str, p: &Arc<DownloadProgress>) -> Self {
        Self {
            label,
            source: Counted::Downloads(p.clone()),
        }
    }

    pub fn transfer(label: &'static str, p: &Arc<TransferProgress>) -> Self {
        Self {
            label,
            source: Counted::Transfer(p.clone()),
        }
    }

    /// `(done, total)` bytes; the total grows as work is discovered.
    pub fn snapshot(&self) -> (u64, u64) {
        match &self.source {
            Counted::Downloads(p) => (
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
            ),
            Counted::Transfer(p) => p.snapshot(),
        }
    }
}

/// Hears of a build's progress. Calls come from the build's task; keep them quick.
pub trait Observer: Send + Sync {
    /// `stage` starts; `counters` (in the order their bytes start moving) are advanced while
    /// it runs and are worth polling until the next stage starts or the build ends.
    fn stage(&self, stage: Stage, counters: &[ByteCounter]) {
        let _ = (stage, counters);
    }

    /// The build ended (either way): nothing more will be reported.
    fn finished(&self) {}
}

/// The observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {}
