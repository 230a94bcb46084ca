//! The registry as a shared environment cache (`--cache-to` / `--cache-from`): a runner that
//! starts with an empty cache directory takes a whole environment another runner built — its
//! layers, activation and SBOM facts — from a registry repository, instead of downloading,
//! installing and compressing it again. The format is imgbuild-oci's `registry::cache`.
//!
//! Trust: anyone who can push to a cache repository can make builds that read it use what
//! they pushed, so keep one repository per trust level (CI of protected branches writes one;
//! pull-request builds only read it, or have their own). A build checks what it can: every
//! blob an entry lists must be there; the entry must describe exactly the layers the manifest
//! lists; and blobs a build downloads (for a layout, an archive, or a registry other than the
//! cache's) are checked against their digest and their diff_id before use — a mismatch makes
//! the build ignore the entry (warned) and build the environment itself. A build that only
//! pushes to the cache's registry does not download the layers, so it trusts the entry's
//! diff_ids as the repository's writers do.
//!
//! Not yet: per-layer entries (a changed package still rebuilds the whole environment), and
//! pruning old entries.

use std::collections::HashMap;

use imgbuild_layer::{BuiltEnvironment, WriteOptions};
use imgbuild_oci::registry::cache::{get_entry, put_entry, EntryBlob, NewEntry};
use imgbuild_oci::registry::{ClientOptions, Reference};
use imgbuild_oci::{BlobStore, Digest};

use crate::push::client_for;

/// Registry repositories that hold environments: `from` is read, `to` is written (and, like
/// BuildKit's, not read unless it is also in `from`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryCache {
    pub to: Option<Reference>,
    pub from: Vec<Reference>,
}

impl RegistryCache {
    pub fn is_empty(&self) -> bool {
        self.to.is_none() && self.from.is_empty()
    }
}

/// An environment taken from a registry cache.
pub(crate) struct RemoteEnvironment {
    pub environment: BuiltEnvironment,
    /// Where its layer blobs are.
    pub repository: Reference,
}

/// The environment `key` from the first repository of `cache.from` that has a usable entry.
/// With `local`, its layer blobs are downloaded into `store` and checked (digest and diff_id);
/// without, only their presence in the registry is. Registry trouble is a miss (warned): a
/// cache never fails a build.
pub(crate) async fn lookup(
    cache: &RegistryCache,
    options: &ClientOptions,
    key: &str,
    write: &WriteOptions,
    store: &BlobStore,
    local: bool,
) -> Option<RemoteEnvironment> {
    for repo in &cache.from {
        match lookup_one(repo, options, key, write, store, local).await {
            Ok(Some(environment)) => {
                return Some(RemoteEnvironment {
                    environment,
                    repository: repo.clone(),
                })
            }
            Ok(None) => {}
            Err(why) => tracing::warn!("registry cache {repo}: {why}; not used"),
        }
    }
    None
}

async fn lookup_one(
    repo: &Reference,
    options: &ClientOptions,
    key: &str,
    write: &WriteOptions,
    store: &BlobStore,
    local: bool,
) -> Result<Option<BuiltEnvironment>, String> {
    let client = client_for(repo, options).map_err(|e| e.to_string())?;
    let Some((json, blobs)) = get_entry(&client, &repo.repository, key, store)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let Some(environment) = BuiltEnvironment::from_entry(&json, write) else {
        return Err("its entry is not one this imgbuild reads".into());
    };
    let listed: Vec<(Digest, u64)> = blobs.iter().map(|b| (b.digest, b.size)).collect();
    let described: Vec<(Digest, u64)> = environment
        .layers
        .iter()
        .map(|l| (l.blob.digest, l.blob.size))
        .collect();
    if listed != described {
        return Err("its entry describes other layers than its manifest lists".into());
    }
    if local {
        for layer in &environment.layers {
            let digest = layer.blob.digest;
            client
                .pull_blob(&repo.repository, &digest, store)
                .await
                .map_err(|e| e.to_string())?;
            let media_type = write.compression.media_type().to_string();
            let actual = imgbuild_layer::readback::diff_id(&store.path(&digest), &media_type)
                .map_err(|e| e.to_string())?;
            if actual != layer.blob.diff_id {
                // The blob is what its digest says (pull_blob checked); the entry lied about
                // what it holds.
                return Err(format!(
                    "layer {digest} has diff_id {actual}, but the entry says {}",
                    layer.blob.diff_id
                ));
            }
        }
    }
    Ok(Some(environment))
}

/// Writes `environment` as the entry `key` into `cache.to`, its blobs mounted from
/// `mount_from` (digest → repository on that registry) or uploaded from `store`. Failure is
/// warned, never an error: the image is already built.
pub(crate) async fn remember(
    cache: &RegistryCache,
    options: &ClientOptions,
    key: &str,
    environment: &BuiltEnvironment,
    store: &BlobStore,
    mount_from: &HashMap<Digest, String>,
    created: &str,
) {
    let Some(to) = &cache.to else { return };
    let layers: Vec<EntryBlob> = environment
        .layers
        .iter()
        .map(|l| EntryBlob {
            digest: l.blob.digest,
            size: l.blob.size,
            media_type: l.blob.compression.media_type().to_string(),
        })
        .collect();
    let result = async {
        let client = client_for(to, options).map_err(|e| e.to_string())?;
        let entry = environment.entry_json();
        let new = NewEntry {
            key,
            entry: &entry,
            layers: &layers,
            created,
        };
        put_entry(&client, &to.repository, new, mount_from, store)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(digest) => tracing::info!("environment kept in the registry cache {to} ({digest})"),
        Err(why) => tracing::warn!("could not write the registry cache {to}: {why}"),
    }
}
