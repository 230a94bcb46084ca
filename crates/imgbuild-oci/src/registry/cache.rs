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

/// The tag of the entry for environment key `key`.
pub fn entry_tag(key: &str) -> String {
    format!("env-{key}")
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
    /// The environment key (the tag is [`entry_tag`] of it).
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
        "artifactType": ENVIRONMENT_ENTRY,
        "config": {"mediaType": ENVIRONMENT_ENTRY, "digest": config.to_string(), "size": entry.len()},
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
            &entry_tag(key),
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(bytes),
        )
        .await?;
    Ok(digest)
}

/// The entry for `key` in `repository`: its JSON and its layers, if it is there, is an
/// imgbuild environment entry, and every layer blob it lists is there with its size.
/// `Ok(None)` for no entry (or one that no longer holds); errors are the registry's.
pub async fn get_entry(
    client: &RegistryClient,
    repository: &str,
    key: &str,
    scratch: &BlobStore,
) -> Result<Option<(Vec<u8>, Vec<EntryBlob>)>, RegistryError> {
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
    if manifest.config().media_type().to_string() != ENVIRONMENT_ENTRY {
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
/// (seconds since the epoch), by their manifest digest. Only entries are deleted, never a
/// blob: a layer another entry or an image still uses stays, and the registry's garbage
/// collection removes the blobs nothing references any more. Tags that are not entries, and
/// entries without a readable creation time, are left alone.
pub async fn prune(
    client: &RegistryClient,
    repository: &str,
    older_than: u64,
    now: i64,
) -> Result<Pruned, RegistryError> {
    let mut old = Vec::new();
    let mut kept = 0;
    for tag in client.list_tags(repository).await? {
        if !tag.starts_with("env-") {
            continue;
        }
        let (bytes, _) = client.get_manifest(repository, &tag).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if value["config"]["mediaType"] != ENVIRONMENT_ENTRY {
            continue;
        }
        let created = value["annotations"]["org.opencontainers.image.created"]
            .as_str()
            .and_then(crate::parse_rfc3339_utc);
        match created {
            Some(t) if now - t > older_than as i64 => old.push((t, tag, Digest::of(&bytes))),
            _ => kept += 1,
        }
    }
    old.sort();
    let mut deleted = Vec::new();
    for (_, tag, digest) in old {
        client.delete_manifest(repository, &digest).await?;
        deleted.push(tag);
    }
    Ok(Pruned { deleted, kept })
}
