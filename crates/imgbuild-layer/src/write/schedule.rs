//! Writing a whole plan: the writer threads, largest layer first, and the layers written
//! early (while packages were still being linked) taken where they still match.

use std::path::Path;

use imgbuild_oci::BlobStore;

use super::{remember, write_layer, LayerOrigin, WriteOptions, WrittenLayer};
use crate::plan::PlannedLayer;
use crate::LayerError;

/// Writes every planned layer into `store`, concurrently; results are in plan order.
///
/// One writer thread per core, plus one, takes layers largest first, so the biggest layer is
/// not left to run alone at the end, and a writer waiting on its blob's fsync does not leave
/// the compression pool without work. The writers are plain threads, not rayon tasks: gzip compression
/// runs on the rayon pool (see `pargz.rs`), and a rayon worker waiting for its compression
/// could steal and run a whole other layer in the meantime, serializing the build.
pub fn write_layers(
    root: &Path,
    layers: &[PlannedLayer],
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<Vec<WrittenLayer>, LayerError> {
    write_layers_with(root, layers, options, store, &NothingPrewritten)
}

/// Layers whose writing started before the plan was made (imgbuild-layer's `early.rs` starts
/// big packages' layers while the rest is still being linked). The writer asks, per planned
/// layer, whether one was started and takes it if it still matches.
pub trait Prewritten: Sync {
    /// Whether a write was started for this planned layer.
    fn has(&self, layer: &PlannedLayer) -> bool;
    /// The started layer for `layer` if it is exactly what writing `layer` from `root` now
    /// would give; waits for it to finish. `None`: write it again.
    fn take(&self, root: &Path, layer: &PlannedLayer) -> Option<WrittenLayer>;
}

/// Nothing was written early.
pub struct NothingPrewritten;

impl Prewritten for NothingPrewritten {
    fn has(&self, _: &PlannedLayer) -> bool {
        false
    }

    fn take(&self, _: &Path, _: &PlannedLayer) -> Option<WrittenLayer> {
        None
    }
}

/// [`write_layers`], taking what `prewritten` holds for a layer where it matches (see
/// `early.rs`). Layers written early are taken last, so the writers first do the ones nobody
/// has started.
pub fn write_layers_with(
    root: &Path,
    layers: &[PlannedLayer],
    options: &WriteOptions,
    store: &BlobStore,
    prewritten: &dyn Prewritten,
) -> Result<Vec<WrittenLayer>, LayerError> {
    let early: Vec<bool> = layers.iter().map(|l| prewritten.has(l)).collect();
    if let Some(p) = &options.progress {
        // Early writes count their own bytes.
        p.add_total(
            layers
                .iter()
                .zip(&early)
                .filter(|(_, &e)| !e)
                .map(|(l, _)| l.size)
                .sum(),
        );
    }
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| (early[i], std::cmp::Reverse(layers[i].size)));
    let write_one = |i: usize| -> Result<WrittenLayer, LayerError> {
        let layer = &layers[i];
        if early[i] {
            if let Some(mut written) = prewritten.take(root, layer) {
                if written.origin == LayerOrigin::Written {
                    remember(layer, options, &written);
                    written.origin = LayerOrigin::WrittenWhileInstalling;
                }
                return Ok(written);
            }
            if let Some(p) = &options.progress {
                p.add_total(layer.size);
            }
        }
        write_layer(root, layer, options, store)
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<WrittenLayer, LayerError>>>> =
        std::sync::Mutex::new((0..layers.len()).map(|_| None).collect());
    let workers =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) + 1).min(layers.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let result = write_one(i);
                let failed = result.is_err();
                results.lock().expect("no writer panicked")[i] = Some(result);
                if failed {
                    // Let the other writers run out of work quickly.
                    next.store(order.len(), std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let results = results.into_inner().expect("no writer panicked");
    let mut written = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results {
        match result {
            Some(Ok(w)) => written.push(w),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}
