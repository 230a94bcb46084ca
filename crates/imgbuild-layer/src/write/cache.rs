//! The layer cache: a planned layer's recipe (its packages and the write options) → the
//! layer written from it, so an unchanged package layer is not compressed again.

use std::fs::{self};
use std::path::Path;

use imgbuild_oci::{BlobStore, LayerBlob};
use sha2::{Digest as _, Sha256};

use super::tar::bytes;
use super::{LayerOrigin, WriteOptions, WrittenLayer, LAYER_FORMAT_VERSION};
use crate::plan::PlannedLayer;

/// What a layer cache entry keeps of a written layer (the local cache's file, and the config
/// of a registry cache's layer entry).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerEntry {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub tar_size: u64,
    pub dedup_saved: u64,
}

impl LayerEntry {
    /// The JSON both caches keep.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    /// An entry from its JSON; `None` when the bytes are not one.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// What the caches keep of `written`.
    pub fn of(written: &WrittenLayer) -> Self {
        Self {
            digest: written.blob.digest.to_string(),
            diff_id: written.blob.diff_id.to_string(),
            size: written.blob.size,
            tar_size: written.tar_size,
            dedup_saved: written.dedup_saved,
        }
    }

    /// The written layer this entry describes for `layer`; `None` if its digests do not parse.
    fn written(
        &self,
        layer: &PlannedLayer,
        options: &WriteOptions,
        key: String,
        origin: LayerOrigin,
    ) -> Option<WrittenLayer> {
        Some(WrittenLayer {
            blob: LayerBlob {
                digest: self.digest.parse().ok()?,
                diff_id: self.diff_id.parse().ok()?,
                size: self.size,
                compression: options.compression,
                created_by: layer.description(),
            },
            tar_size: self.tar_size,
            owners: layer.owners.clone(),
            dedup_saved: self.dedup_saved,
            origin,
            recipe_key: Some(key),
        })
    }
}

/// Layers kept elsewhere by recipe key, asked when the local layer cache has none (a registry
/// cache: imgbuild-pipeline's). Called from the writer threads, never from async code.
pub trait RemoteLayers: Send + Sync + std::fmt::Debug {
    /// The layer kept under `key`, if there is one that may be used.
    fn get(&self, key: &str) -> Option<RemoteLayer>;
}

/// A layer found by [`RemoteLayers::get`].
#[derive(Debug, Clone)]
pub struct RemoteLayer {
    pub entry: LayerEntry,
    /// Its blob is now in the blob store (downloaded and checked against its digest and
    /// diff_id); else it stays where it was found (an image only pushed there needs no copy).
    pub in_store: bool,
}

/// The key a planned layer is cached under, locally and in a registry cache: a hash of its
/// recipe (see [`PlannedLayer::recipe`]), its paths and the write options. `None` for a layer
/// without a recipe (the environment layer).
pub fn recipe_key(layer: &PlannedLayer, options: &WriteOptions) -> Option<String> {
    let recipe = layer.recipe.as_ref()?;
    // The paths too: a package whose file another package in the same environment claimed
    // first (a clobber) leaves that file to the other's layer, so its own layer differs.
    let mut paths = Sha256::new();
    for path in &layer.paths {
        paths.update(bytes(path));
        paths.update([0]);
    }
    let text = format!(
        "v{LAYER_FORMAT_VERSION}\nprefix={}\ncompression={:?}\nmtime={}\npaths={}\n{recipe}",
        options.prefix,
        options.compression,
        options.mtime,
        hex::encode(paths.finalize())
    );
    Some(hex::encode(Sha256::digest(text.as_bytes())))
}

/// The layer for `layer` from the local layer cache (its blob still in `store`), else from
/// the remote layers of `options`.
pub(super) fn cached(
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Option<WrittenLayer> {
    let key = recipe_key(layer, options)?;
    let local_path = options
        .layer_cache
        .as_ref()
        .map(|dir| dir.join(format!("{key}.json")));
    if let Some(path) = &local_path {
        let local = fs::read(path)
            .ok()
            .and_then(|bytes| LayerEntry::from_json(&bytes))
            .and_then(|e| e.written(layer, options, key.clone(), LayerOrigin::Reused))
            .filter(|w| store.contains(&w.blob.digest));
        if local.is_some() {
            return local;
        }
    }
    let remote = options.remote.as_ref()?.get(&key)?;
    let written = remote
        .entry
        .written(layer, options, key, LayerOrigin::RegistryCache)?;
    if let (true, Some(path)) = (remote.in_store, &local_path) {
        remember_entry(path, &remote.entry, "layer");
    }
    Some(written)
}

/// Remembers a written layer under its recipe (temp file + rename; a failure only costs reuse).
pub(super) fn remember(layer: &PlannedLayer, options: &WriteOptions, written: &WrittenLayer) {
    let (Some(dir), Some(key)) = (options.layer_cache.as_ref(), recipe_key(layer, options)) else {
        return;
    };
    remember_entry(
        &dir.join(format!("{key}.json")),
        &LayerEntry::of(written),
        "layer",
    );
}

/// Writes a cache entry as JSON (temp file + rename, via the OCI crate). A failure only costs
/// reuse later, so it is logged, not returned.
pub(crate) fn remember_entry(path: &Path, entry: &impl serde::Serialize, what: &str) {
    let bytes = serde_json::to_vec(entry).expect("serializable");
    let dir = path.parent().unwrap_or(Path::new("."));
    let result = fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            imgbuild_oci::layout::write_atomically(path, &bytes).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(
            "could not record the {what} in the cache {}: {e}",
            dir.display()
        );
    }
}
