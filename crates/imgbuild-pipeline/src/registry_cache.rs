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
//! Below whole environments, single layers: every layer with a recipe (a package layer, a
//! pip group) is also kept as a layer entry under its recipe key, and when the environment
//! changed (one package bumped), the layer writers ask [`RegistryLayers`] for each layer the
//! local layer cache does not have. So a fresh runner compresses only the layers that really
//! changed; the others it downloads (checked) when it needs them locally, or only names when
//! the image is pushed to the cache's registry, where they are mounted.
//!
//! Not yet: planning the layers before installing, so that packages whose layers come from
//! the cache need not be downloaded and installed at all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use imgbuild_layer::write::{LayerEntry, RemoteLayer, RemoteLayers};
use imgbuild_layer::{BuiltEnvironment, WriteOptions};
use imgbuild_oci::registry::cache::{get_entry, put_entry, EntryBlob, EntryKind, NewEntry};
use imgbuild_oci::registry::{ClientOptions, Reference, RegistryClient};
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
    let Some((json, blobs)) = get_entry(
        &client,
        &repo.repository,
        EntryKind::Environment,
        key,
        store,
    )
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
            kind: EntryKind::Environment,
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

/// The layer entries of a registry cache's `from` repositories, for the layer writers (see
/// the module docs). Each repository's tags are listed once, when it is made; an entry is
/// read only for a layer whose tag is there.
pub(crate) struct RegistryLayers {
    handle: tokio::runtime::Handle,
    repos: Vec<(Reference, RegistryClient, HashSet<String>)>,
    store: BlobStore,
    media_type: String,
    /// Download the blobs (for a layout, an archive, or a registry other than the cache's).
    local: bool,
    /// The layers taken, and the repository each is in (for pushes to mount it from).
    taken: Mutex<Vec<(Digest, Reference)>>,
}

impl std::fmt::Debug for RegistryLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLayers")
            .field(
                "repos",
                &self.repos.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .field("local", &self.local)
            .finish()
    }
}

impl RegistryLayers {
    /// The layer entries of `cache.from`; `None` when it lists none, or no repository can be
    /// listed (warned: a cache never fails a build).
    pub(crate) async fn open(
        cache: &RegistryCache,
        options: &ClientOptions,
        write: &WriteOptions,
        store: &BlobStore,
        local: bool,
    ) -> Option<Arc<Self>> {
        let mut repos = Vec::new();
        for repo in &cache.from {
            let listed = async {
                let client = client_for(repo, options).map_err(|e| e.to_string())?;
                let tags = client
                    .list_tags(&repo.repository)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((client, tags))
            }
            .await;
            match listed {
                Ok((client, tags)) => {
                    let layers: HashSet<String> = tags
                        .into_iter()
                        .filter(|t| EntryKind::of_tag(t) == Some(EntryKind::Layer))
                        .collect();
                    if !layers.is_empty() {
                        repos.push((repo.clone(), client, layers));
                    }
                }
                Err(why) => tracing::warn!("registry cache {repo}: {why}; its layers not used"),
            }
        }
        (!repos.is_empty()).then(|| {
            Arc::new(Self {
                handle: tokio::runtime::Handle::current(),
                repos,
                store: store.clone(),
                media_type: write.compression.media_type().to_string(),
                local,
                taken: Mutex::new(Vec::new()),
            })
        })
    }

    /// The layers taken so far and the repository each is in.
    pub(crate) fn taken(&self) -> Vec<(Digest, Reference)> {
        self.taken.lock().expect("no writer panicked").clone()
    }

    async fn fetch(
        &self,
        repo: &Reference,
        client: &RegistryClient,
        key: &str,
    ) -> Result<Option<RemoteLayer>, String> {
        let Some((json, blobs)) =
            get_entry(client, &repo.repository, EntryKind::Layer, key, &self.store)
                .await
                .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let entry =
            LayerEntry::from_json(&json).ok_or("its entry is not one this imgbuild reads")?;
        let digest: Digest = entry.digest.parse().map_err(|e| format!("{e}"))?;
        match blobs.as_slice() {
            [blob]
                if blob.digest == digest
                    && blob.size == entry.size
                    && blob.media_type == self.media_type => {}
            _ => return Err("its entry describes another blob than its manifest lists".into()),
        }
        if self.local {
            client
                .pull_blob(&repo.repository, &digest, &self.store)
                .await
                .map_err(|e| e.to_string())?;
            let actual =
                imgbuild_layer::readback::diff_id(&self.store.path(&digest), &self.media_type)
                    .map_err(|e| e.to_string())?;
            if actual.to_string() != entry.diff_id {
                return Err(format!(
                    "layer {digest} has diff_id {actual}, but the entry says {}",
                    entry.diff_id
                ));
            }
        }
        Ok(Some(RemoteLayer {
            entry,
            in_store: self.local,
        }))
    }
}

impl RemoteLayers for RegistryLayers {
    fn get(&self, key: &str) -> Option<RemoteLayer> {
        let tag = EntryKind::Layer.tag(key);
        for (repo, client, tags) in &self.repos {
            if !tags.contains(&tag) {
                continue;
            }
            // The writers are plain threads (never async tasks), so they may wait here.
            match self.handle.block_on(self.fetch(repo, client, key)) {
                Ok(Some(layer)) => {
                    if let Ok(digest) = layer.entry.digest.parse() {
                        self.taken
                            .lock()
                            .expect("no writer panicked")
                            .push((digest, repo.clone()));
                    }
                    return Some(layer);
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!("registry cache {repo}: {tag}: {why}; the layer is written here")
                }
            }
        }
        None
    }
}

/// Keeps each of `environment`'s layers that has a recipe as a layer entry in `cache.to`
/// (those it has no entry for yet), their blobs mounted from `mount_from` or uploaded from
/// `store`. Failure is warned, never an error.
pub(crate) async fn remember_layers(
    cache: &RegistryCache,
    options: &ClientOptions,
    environment: &BuiltEnvironment,
    store: &BlobStore,
    mount_from: &HashMap<Digest, String>,
    created: &str,
) {
    let Some(to) = &cache.to else { return };
    let result = async {
        let client = client_for(to, options).map_err(|e| e.to_string())?;
        let listed: HashSet<String> = client
            .list_tags(&to.repository)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let mut kept = 0;
        for layer in &environment.layers {
            let Some(key) = &layer.recipe_key else {
                continue;
            };
            if listed.contains(&EntryKind::Layer.tag(key)) {
                continue;
            }
            let entry = LayerEntry::of(layer).to_json();
            let blob = EntryBlob {
                digest: layer.blob.digest,
                size: layer.blob.size,
                media_type: layer.blob.compression.media_type().to_string(),
            };
            let new = NewEntry {
                kind: EntryKind::Layer,
                key,
                entry: &entry,
                layers: std::slice::from_ref(&blob),
                created,
            };
            put_entry(&client, &to.repository, new, mount_from, store)
                .await
                .map_err(|e| e.to_string())?;
            kept += 1;
        }
        Ok::<_, String>(kept)
    }
    .await;
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} layers kept in the registry cache {to}"),
        Err(why) => tracing::warn!("could not keep layers in the registry cache {to}: {why}"),
    }
}
