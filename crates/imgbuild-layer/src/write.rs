//! Writing one planned layer: walk → tar → sha256 (diff_id) → compress → sha256 (digest) →
//! temporary blob file → rename. One pass; the uncompressed tar never touches the disk.
//!
//! Entries are in byte order of their path, every header is built from scratch (mode
//! normalized to 0755/0644, uid/gid 0, mtime from `SOURCE_DATE_EPOCH`, no user names, no
//! xattrs), and every ancestor directory is present, so the bytes depend only on the files'
//! contents, names and link targets.

use std::path::{Path, PathBuf};

use imgbuild_oci::{BlobStore, Compression, LayerBlob};

use crate::plan::PlannedLayer;
use crate::LayerError;

mod cache;
mod encoder;
mod schedule;
mod tar;

pub(crate) use cache::remember_entry;
use cache::{cached, remember};
pub use cache::{recipe_key, LayerEntry, RemoteLayer, RemoteLayers};
pub use schedule::{write_layers, write_layers_with, NothingPrewritten, Prewritten};
use tar::write_layer_uncached;

/// How layers are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Where the staging root lives inside the image, e.g. `/opt/conda`.
    pub prefix: imgbuild_fs::InstallPrefix,
    pub compression: Compression,
    /// mtime of every entry (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// Where finished layers are remembered by recipe (see [`PlannedLayer::recipe`]); a layer
    /// whose recipe is there and whose blob is still in the store is not written again.
    pub layer_cache: Option<PathBuf>,
    /// Bytes to write and written so far, for a progress display.
    pub progress: Option<std::sync::Arc<WriteProgress>>,
    /// Where else finished layers may be kept by recipe (a registry cache), asked when the
    /// layer cache has none.
    pub remote: Option<std::sync::Arc<dyn RemoteLayers>>,
}

/// Counters a progress display can poll while layers are written: installed bytes of all
/// planned layers, and of those done (a layer from the cache counts as done at once).
pub type WriteProgress = imgbuild_oci::TransferProgress;

impl WriteOptions {
    fn advance(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            p.advance(bytes);
        }
    }
}

/// Bumped whenever the tar layout or the compressed bytes change, so layers cached by an older
/// imgbuild are not reused (7: binary-looking gzip blocks at libdeflate level 1).
pub const LAYER_FORMAT_VERSION: u32 = 7;

/// A layer that is now in the blob store.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub blob: LayerBlob,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Owners in this layer.
    pub owners: Vec<crate::OwnerLabel>,
    /// Bytes not stored again because an identical file was already in the layer.
    pub dedup_saved: u64,
    pub origin: LayerOrigin,
    /// The key its recipe is cached under ([`recipe_key`]); `None` for the environment layer.
    pub recipe_key: Option<String>,
}

/// How a layer came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOrigin {
    /// Written after the install, from the staging root.
    Written,
    /// Written while the environment was still being installed (see `early.rs`).
    WrittenWhileInstalling,
    /// Taken from the layer or environment cache: no file was read, nothing was compressed.
    Reused,
    /// Taken from a registry cache's layer entry: nothing was compressed, and the blob was
    /// downloaded (digest- and diff_id-checked) only if it is needed here.
    RegistryCache,
}

impl LayerOrigin {
    /// For logs: `written`, `written while installing`, `reused` or `from the registry cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerOrigin::Written => "written",
            LayerOrigin::WrittenWhileInstalling => "written while installing",
            LayerOrigin::Reused => "reused",
            LayerOrigin::RegistryCache => "from the registry cache",
        }
    }
}

/// Writes one layer into `store`, or takes it from the layer cache.
pub fn write_layer(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    let written = write_layer_unremembered(root, layer, options, store)?;
    if written.origin == LayerOrigin::Written {
        remember(layer, options, &written);
    }
    Ok(written)
}

/// [`write_layer`] without remembering the result in the layer cache (early layers are
/// remembered once they are known to match the plan).
pub(crate) fn write_layer_unremembered(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    if let Some(hit) = cached(layer, options, store) {
        options.advance(layer.size);
        return Ok(hit);
    }
    let written = write_layer_uncached(root, layer, options, store)?;
    tracing::debug!("wrote layer {}", layer.description());
    Ok(written)
}
