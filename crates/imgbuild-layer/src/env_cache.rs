//! Whole environments remembered by recipe, so a rebuild with nothing changed installs
//! nothing, reads no file and compresses nothing.
//!
//! The layer cache (see [`crate::write`]) saves recompressing package layers, but a rebuild
//! still needs a staging root: to plan layers and to write the environment layer, whose bytes
//! are only known by reading it. This cache sits one level up. Its key is everything an
//! environment's layers and activation are made from (every package's URL and sha256, the
//! requested specs, the prefix, platform, layer plan and write options, the imgbuild version
//! and [`crate::write::LAYER_FORMAT_VERSION`]); the pipeline, which knows every option,
//! computes it (imgbuild-pipeline's `env_key`), and this cache takes it as an opaque name.
//!
//! Its value: the written layers (digests, sizes, owners), the baked activation and what the
//! SBOM needs to know of the pip packages (their licenses, read from `METADATA` at install
//! time), so a hit reads no layer back. A hit is used only if every layer blob is still in
//! the store; anything unreadable is a miss.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use imgbuild_oci::{BlobStore, LayerBlob};

use crate::write::{LayerOrigin, WriteOptions, WrittenLayer};

/// A built environment: its layers, and the activation baked from it.
#[derive(Debug, Clone)]
pub struct BuiltEnvironment {
    pub layers: Vec<WrittenLayer>,
    pub path_prepend: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The license each pip distribution's `METADATA` declares, by normalized name (those
    /// that declare one).
    pub pip_licenses: BTreeMap<String, String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    layers: Vec<EntryLayer>,
    path_prepend: Vec<String>,
    env: Vec<(String, String)>,
    pip_licenses: BTreeMap<String, String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EntryLayer {
    digest: String,
    diff_id: String,
    size: u64,
    tar_size: u64,
    owners: Vec<crate::OwnerLabel>,
    dedup_saved: u64,
    created_by: String,
    /// The key its recipe is cached under, so a build that takes this environment can still
    /// keep its layers in a registry cache one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipe_key: Option<String>,
}

/// The environments cache under `dir` (`<cache>/environments`).
pub struct EnvironmentCache {
    dir: PathBuf,
}

impl EnvironmentCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The environment built for `key`, if it was and its blobs are all still in `store`.
    /// Every layer comes back marked `reused`.
    pub fn get(
        &self,
        key: &str,
        write: &WriteOptions,
        store: &BlobStore,
    ) -> Option<BuiltEnvironment> {
        let built = BuiltEnvironment::from_entry(&fs::read(self.path(key)).ok()?, write)?;
        built
            .layers
            .iter()
            .all(|l| store.contains(&l.blob.digest))
            .then_some(built)
    }

    /// Remembers `built` under `key` (temp file + rename). A failure only costs reuse, so it
    /// is logged, not returned.
    pub fn put(&self, key: &str, built: &BuiltEnvironment) {
        crate::write::remember_entry(&self.path(key), &built.entry(), "environment");
    }
}

impl BuiltEnvironment {
    /// The environment an entry (as [`Self::entry_json`] wrote it) describes, its layers
    /// marked `reused`; `None` when the bytes are not one. Nothing says its blobs exist.
    pub fn from_entry(bytes: &[u8], write: &WriteOptions) -> Option<Self> {
        let entry: Entry = serde_json::from_slice(bytes).ok()?;
        let layers = entry
            .layers
            .into_iter()
            .map(|l| {
                let digest = l.digest.parse().ok()?;
                Some(WrittenLayer {
                    blob: LayerBlob {
                        digest,
                        diff_id: l.diff_id.parse().ok()?,
                        size: l.size,
                        compression: write.compression,
                        created_by: l.created_by,
                    },
                    tar_size: l.tar_size,
                    owners: l.owners,
                    dedup_saved: l.dedup_saved,
                    origin: LayerOrigin::Reused,
                    recipe_key: l.recipe_key,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(BuiltEnvironment {
            layers,
            path_prepend: entry.path_prepend,
            env: entry.env,
            pip_licenses: entry.pip_licenses,
        })
    }

    /// This environment as an entry, the JSON the local and the registry caches keep.
    pub fn entry_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.entry()).expect("serializable")
    }

    fn entry(&self) -> Entry {
        let built = self;
        Entry {
            layers: built
                .layers
                .iter()
                .map(|l| EntryLayer {
                    digest: l.blob.digest.to_string(),
                    diff_id: l.blob.diff_id.to_string(),
                    size: l.blob.size,
                    tar_size: l.tar_size,
                    owners: l.owners.clone(),
                    dedup_saved: l.dedup_saved,
                    created_by: l.blob.created_by.clone(),
                    recipe_key: l.recipe_key.clone(),
                })
                .collect(),
            path_prepend: built.path_prepend.clone(),
            env: built.env.clone(),
            pip_licenses: built.pip_licenses.clone(),
        }
    }
}
