//! Merging images that separate runners pushed by digest into one image index under a tag: the
//! CI matrix pattern (one native runner per platform, then a merge job), done with manifests
//! and configs only — no layer is downloaded.
//!
//! Each source is an image manifest (its platform read from its config) or an index (its
//! entries taken as they are). A source in another repository of the same registry has its
//! blobs mounted and its manifest put by digest into the target repository first, so that the
//! index never points at something its repository lacks. The index's bytes depend only on the
//! sources, in the order given, so running the merge again puts the same index (same digest).

use bytes::Bytes;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::{Reference, RegistryClient, RegistryError};
use crate::index::{index_bytes, index_entries, IndexEntry, IndexError};
use crate::{BlobStore, Digest, ImagePlatform};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What a merge put.
#[derive(Debug, Clone)]
pub struct Merged {
    pub reference: Reference,
    pub digest: Digest,
    pub entries: Vec<IndexEntry>,
    /// Sources copied into the target repository (blobs mounted, manifest put by digest).
    pub copied: usize,
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{source_ref}: name an image by digest (REPOSITORY@sha256:…), as a runner pushed it")]
    NotByDigest { source_ref: String },
    #[error(
        "{source_ref} is on {registry}, the index on {target}: imgbuild index merges images on \
         one registry (copy it there first)"
    )]
    OtherRegistry {
        source_ref: String,
        registry: String,
        target: String,
    },
    #[error("{source_ref}: {message}")]
    Unreadable { source_ref: String, message: String },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Oci(#[from] crate::OciError),
}

/// Merges `sources` into an index at `target` (its tag). `scratch` holds the configs read.
pub async fn merge_index(
    client: &RegistryClient,
    target: &Reference,
    sources: &[Reference],
    scratch: &BlobStore,
) -> Result<Merged, MergeError> {
    let mut entries = Vec::new();
    let mut copied = 0;
    for source in sources {
        let name = source.to_string();
        let Some(digest) = source.digest else {
            return Err(MergeError::NotByDigest { source_ref: name });
        };
        if source.registry != target.registry {
            return Err(MergeError::OtherRegistry {
                source_ref: name,
                registry: source.registry.clone(),
                target: target.registry.clone(),
            });
        }
        let (bytes, media_type) = client
            .get_manifest(&source.repository, &digest.to_string())
            .await?;
        let unreadable = |message: String| MergeError::Unreadable {
            source_ref: source.to_string(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not JSON: {e}")))?;
        let media_type = value["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(media_type);
        let is_index = value.get("manifests").is_some();
        let mut found = if is_index {
            let index: ImageIndex = serde_json::from_value(value)
                .map_err(|e| unreadable(format!("not an image index: {e}")))?;
            let listed = index_entries(&index);
            if listed.is_empty() {
                return Err(unreadable("the index lists no platform".into()));
            }
            listed
        } else {
            let manifest: ImageManifest = serde_json::from_value(value)
                .map_err(|e| unreadable(format!("not an image manifest: {e}")))?;
            let config_digest: Digest = manifest
                .config()
                .digest()
                .to_string()
                .parse()
                .map_err(|e| unreadable(format!("config digest: {e}")))?;
            client
                .pull_blob(&source.repository, &config_digest, scratch)
                .await?;
            let config: ImageConfiguration = serde_json::from_slice(&scratch.read(&config_digest)?)
                .map_err(|e| unreadable(format!("config is not valid: {e}")))?;
            vec![IndexEntry {
                digest,
                size: bytes.len() as u64,
                media_type: media_type.clone(),
                platform: ImagePlatform {
                    os: config.os().to_string(),
                    architecture: config.architecture().to_string(),
                    variant: config.variant().clone(),
                },
            }]
        };
        if source.repository != target.repository {
            copy_into(
                client,
                source,
                &target.repository,
                &bytes,
                &media_type,
                is_index,
                scratch,
            )
            .await?;
            copied += 1;
        }
        entries.append(&mut found);
    }
    let bytes = index_bytes(&entries)?;
    let digest = Digest::of(&bytes);
    client
        .put_manifest(
            &target.repository,
            &target.manifest_reference(),
            INDEX,
            Bytes::from(bytes),
        )
        .await?;
    Ok(Merged {
        reference: target.clone(),
        digest,
        entries,
        copied,
    })
}

/// Mounts `source`'s blobs into `repository` and puts its manifest there by digest (for an
/// index, each image it lists first).
async fn copy_into(
    client: &RegistryClient,
    source: &Reference,
    repository: &str,
    bytes: &Bytes,
    media_type: &str,
    is_index: bool,
    scratch: &BlobStore,
) -> Result<(), MergeError> {
    let digest = Digest::of(bytes);
    if is_index {
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| MergeError::Unreadable {
                source_ref: source.to_string(),
                message: e.to_string(),
            })?;
        for entry in index_entries(&index) {
            let (inner, inner_type) = client
                .get_manifest(&source.repository, &entry.digest.to_string())
                .await?;
            Box::pin(copy_into(
                client,
                source,
                repository,
                &inner,
                &inner_type,
                false,
                scratch,
            ))
            .await?;
        }
    } else {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| MergeError::Unreadable {
                source_ref: source.to_string(),
                message: e.to_string(),
            })?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let d: Digest = blob.digest().to_string().parse().map_err(
                |e: crate::digest::ParseDigestError| MergeError::Unreadable {
                    source_ref: source.to_string(),
                    message: e.to_string(),
                },
            )?;
            if client.blob_exists(repository, &d).await? {
                continue;
            }
            if !client
                .mount_blob(repository, &d, &source.repository)
                .await?
            {
                return Err(MergeError::Unreadable {
                    source_ref: source.to_string(),
                    message: format!(
                        "the registry would not mount blob {d} into {repository}; push the \
                         image to {repository} by digest first"
                    ),
                });
            }
        }
    }
    client
        .put_manifest(repository, &digest.to_string(), media_type, bytes.clone())
        .await?;
    Ok(())
}
