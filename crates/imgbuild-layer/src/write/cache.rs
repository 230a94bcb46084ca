//! The layer cache: a planned layer's recipe (its packages and the write options) → the
//! layer written from it, so an unchanged package layer is not compressed again.

use std::fs::{self};
use std::path::Path;

use imgbuild_oci::{BlobStore, LayerBlob};
use sha2::{Digest as _, Sha256};

use super::tar::bytes;
use super::{LayerOrigin, WriteOptions, WrittenLayer, LAYER_FORMAT_VERSION};
use crate::plan::PlannedLayer;

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedLayer {
    digest: String,
    diff_id: String,
    size: u64,
    tar_size: u64,
    dedup_saved: u64,
}

fn recipe_key(layer: &PlannedLayer, options: &WriteOptions) -> Option<String> {
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

pub(super) fn cached(
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Option<WrittenLayer> {
    let path = options
        .layer_cache
        .as_ref()?
        .join(format!("{}.json", recipe_key(layer, options)?));
    let entry: CachedLayer = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let digest = entry.digest.parse().ok()?;
    if !store.contains(&digest) {
        return None;
    }
    Some(WrittenLayer {
        blob: LayerBlob {
            digest,
            diff_id: entry.diff_id.parse().ok()?,
            size: entry.size,
            compression: options.compression,
            created_by: layer.description(),
        },
        tar_size: entry.tar_size,
        owners: layer.owners.clone(),
        dedup_saved: entry.dedup_saved,
        origin: LayerOrigin::Reused,
    })
}

/// Remembers a written layer under its recipe (temp file + rename; a failure only costs reuse).
pub(super) fn remember(layer: &PlannedLayer, options: &WriteOptions, written: &WrittenLayer) {
    let (Some(dir), Some(key)) = (options.layer_cache.as_ref(), recipe_key(layer, options)) else {
        return;
    };
    let entry = CachedLayer {
        digest: written.blob.digest.to_string(),
        diff_id: written.blob.diff_id.to_string(),
        size: written.blob.size,
        tar_size: written.tar_size,
        dedup_saved: written.dedup_saved,
    };
    remember_entry(&dir.join(format!("{key}.json")), &entry, "layer");
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
