//! Build-cache entries kept in a registry repository, so that runners which start with an
//! empty cache directory reuse what another runner built (issue 17).
//!
//! An entry is an OCI artifact: an image manifest whose `artifactType` and config media type
//! are [`ENVIRONMENT_ENTRY`], whose config blob is the entry itself (JSON, written by
//! imgbuild-layer's environment cache: each layer's digest, diff_id, size and owners, the
//! baked activation, what the SBOM needs), and whose `layers` are the environment's layer
//! blobs — so the registry keeps them alive for as long as the entry, and a reader learns
//! with one HEAD each that they are there. It is tagged `env-<key>`, where the key is the hash
//! of everything the environment is made from: two runners that write the same tag write the
//! same environment, so concurrent writers cannot clobber each other with something else.
//!
//! What this module does not do: decide when an entry may be trusted (the pipeline checks
//! what it downloads) or compute keys.

use std::collections::HashMap;

use bytes::Bytes;
use oci_spec::image::ImageManifest;

use super::push::ensure_blob;
use super::{RegistryClient, RegistryError};
use crate::canonical::to_canonical_json;
use crate::{BlobStore, Digest};

/// Media type (and artifact type) of an environment entry's config blob.
pub const ENVIRONMENT_ENTRY: &str = "application/vnd.imgbuild.cache.environment.v1+json";

/// Media type (and artifact type) of a layer entry's config blob.
pub const LAYER_ENTRY: &str = "application/vnd.imgbuild.cache.layer.v1+json";

/// What an entry remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A whole environment (tag `env-<environment key>`): its layers, activation and SBOM
    /// facts; its blobs are the environment's layers.
    Environment,
    /// One layer (tag `layer-<recipe key>`, the key imgbuild-layer's layer cache files it
    /// under: its packages' identities, its paths and the write options): the layer's digest,
    /// diff_id and sizes; its one blob is the layer. So a runner whose environment changed in
    /// one package still takes every other layer from the registry instead of compressing it.
    Layer,
}

impl EntryKind {
    const ALL: [EntryKind; 2] = [EntryKind::Environment, EntryKind::Layer];

    /// The tag of the entry for `key`.
    pub fn tag(self, key: &str) -> String {
        match self {
            EntryKind::Environment => format!("env-{key}"),
            EntryKind::Layer => format!("layer-{key}"),
        }
    }

    /// The media type of its config blob (and its artifact type).
    pub fn media_type(self) -> &'static str {
        match self {
            EntryKind::Environment => ENVIRONMENT_ENTRY,
            EntryKind::Layer => LAYER_ENTRY,
        }
    }

    /// The kind of entry a tag names, if it names one.
    pub fn of_tag(tag: &str) -> Option<EntryKind> {
        Self::ALL
            .into_iter()
            .find(|k| tag.starts_with(&k.tag("")) && tag.len() > k.tag("").len())
    }
}

/// The tag of the entry for environment key `key`.
pub fn entry_tag(key: &str) -> String {
    EntryKind::Environment.tag(key)
}

/// A layer an entry lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// An entry to write.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub kind: EntryKind,
    /// The environment or layer recipe key (the tag is [`EntryKind::tag`] of it).
    pub key: &'a str,
    /// The entry's JSON.
    pub entry: &'a [u8],
    /// The environment's layer blobs.
    pub layers: &'a [EntryBlob],
    /// When it was made (RFC 3339), recorded as the manifest's creation time.
    pub created: &'a str,
}

/// Writes `new` into `repository`, with its layers as its blobs: each one already there is
/// left, one in `mount_from` (digest → repository on this registry) is mounted, any other is
/// uploaded from `store`. Returns the entry's manifest digest.
pub async fn put_entry(
    client: &RegistryClient,
    repository: &str,
    new: NewEntry<'_>,
    mount_from: &HashMap<Digest, String>,
    store: &BlobStore,
) -> Result<Digest, RegistryError> {
    let NewEntry {
        kind,
        key,
        entry,
        layers,
        created,
    } = new;
    for layer in layers {
        let from = mount_from.get(&layer.digest).map(String::as_str);
        ensure_blob(
            client,
            repository,
            &layer.digest,
            layer.size,
            from,
            store,
            None,
        )
        .await?;
    }
    let config = store.put_bytes(entry)?;
    ensure_blob(
        client,
        repository,
        &config,
        entry.len() as u64,
        None,
        store,
        None,
    )
    .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": kind.media_type(),
        "config": {"mediaType": kind.media_type(), "digest": config.to_string(), "size": entry.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
        "annotations": {"org.opencontainers.image.created": created},
    });
    let bytes = to_canonical_json(&manifest).map_err(crate::OciError::json("cache entry"))?;
    let digest = Digest::of(&bytes);
    client
        .put_manifest(
            repository,
            &kind.tag(key),
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(bytes),
        )
        .await?;
    Ok(digest)
}

/// The `kind` entry for `key` in `repository`: its JSON and its layers, if it is there, is
/// an imgbuild entry of that kind, and every layer blob it lists is there with its size.
/// `Ok(None)` for no entry (or one that no longer holds); errors are the registry's.
pub async fn get_entry(
    client: &RegistryClient,
    repository: &str,
    kind: EntryKind,
    key: &str,
    scratch: &BlobStore,
) -> Result<Option<(Vec<u8>, Vec<EntryBlob>)>, RegistryError> {
    let entry_tag = |key: &str| kind.tag(key);
    let bytes = match client.get_manifest(repository, &entry_tag(key)).await {
        Ok((bytes, _)) => bytes,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
        tracing::warn!(
            "{repository}:{}: not an image manifest; ignored",
            entry_tag(key)
        );
        return Ok(None);
    };
    if manifest.config().media_type().to_string() != kind.media_type() {
        tracing::warn!(
            "{repository}:{}: not an imgbuild cache entry; ignored",
            entry_tag(key)
        );
        return Ok(None);
    }
    let parse = |d: &oci_spec::image::Descriptor| d.digest().to_string().parse::<Digest>().ok();
    let Some(config) = parse(manifest.config()) else {
        return Ok(None);
    };
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let Some(digest) = parse(l) else {
            return Ok(None);
        };
        if !client.blob_exists(repository, &digest).await? {
            tracing::warn!(
                "{repository}:{}: blob {digest} is gone; the entry is not used",
                entry_tag(key)
            );
            return Ok(None);
        }
        layers.push(EntryBlob {
            digest,
            size: l.size(),
            media_type: l.media_type().to_string(),
        });
    }
    client.pull_blob(repository, &config, scratch).await?;
    Ok(Some((scratch.read(&config)?, layers)))
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries deleted (their tags), oldest first.
    pub deleted: Vec<String>,
    /// Entries kept.
    pub kept: usize,
}

/// Deletes the entries of `repository` made more than `older_than` seconds before `now`
/// (seconds since the epoch), by their manifest digest — except a layer entry whose layer a
/// kept environment entry still lists (a layer made long ago is still in use while new
/// environments have it). Only entries are deleted, never a blob: a layer another entry or an
/// image still uses stays, and the registry's garbage collection removes the blobs nothing
/// references any more. Tags that are not entries, and entries without a readable creation
/// time, are left alone.
pub async fn prune(
    client: &RegistryClient,
    repository: &str,
    older_than: u64,
    now: i64,
) -> Result<Pruned, RegistryError> {
    struct Found {
        kind: EntryKind,
        tag: String,
        digest: Digest,
        created: Option<i64>,
        layers: Vec<String>,
    }
    let mut found = Vec::new();
    for tag in client.list_tags(repository).await? {
        let Some(kind) = EntryKind::of_tag(&tag) else {
            continue;
        };
        let (bytes, _) = client.get_manifest(repository, &tag).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if value["config"]["mediaType"] != kind.media_type() {
            continue;
        }
        found.push(Found {
            kind,
            tag,
            digest: Digest::of(&bytes),
            created: value["annotations"]["org.opencontainers.image.created"]
                .as_str()
                .and_then(crate::parse_rfc3339_utc),
            layers: value["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["digest"].as_str().map(str::to_string))
                .collect(),
        });
    }
    let old = |f: &Found| f.created.is_some_and(|t| now - t > older_than as i64);
    let in_use: std::collections::HashSet<&str> = found
        .iter()
        .filter(|f| f.kind == EntryKind::Environment && !old(f))
        .flat_map(|f| f.layers.iter().map(String::as_str))
        .collect();
    let mut doomed: Vec<&Found> = found
        .iter()
        .filter(|f| {
            old(f)
                && (f.kind == EntryKind::Environment
                    || !f.layers.iter().any(|l| in_use.contains(l.as_str())))
        })
        .collect();
    doomed.sort_by_key(|f| (f.created, f.tag.clone()));
    let mut deleted = Vec::new();
    for f in &doomed {
        client.delete_manifest(repository, &f.digest).await?;
        deleted.push(f.tag.clone());
    }
    Ok(Pruned {
        kept: found.len() - deleted.len(),
        deleted,
    })
}
