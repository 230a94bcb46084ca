//! Attaching an artifact (the SBOM) to a pushed image, the OCI 1.1 way: an image manifest with
//! an `artifactType` whose `subject` is the image. Registries with the referrers API index it
//! themselves (they answer the manifest PUT with an `OCI-Subject` header); for the others the
//! referrers tag schema is kept: the tag `sha256-<hex of the subject>` holds an image index
//! listing the subject's referrers, which this updates (adding, never dropping, entries).

use bytes::Bytes;

use super::push::ensure_blob;
use super::{RegistryClient, RegistryError};
use crate::{to_canonical_json, BlobStore, Digest};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// How the registry learned about the referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersMode {
    /// The registry supports the referrers API.
    Api,
    /// The `sha256-<hex>` tag's index was updated.
    TagSchema,
}

/// The tag under which the referrers tag schema keeps the index of `subject`'s referrers:
/// `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    subject.to_string().replace(':', "-")
}

/// Pushes `blob` (of media type `artifact_type`) as an artifact referring to the image manifest
/// `subject` (which must be in `store` and already pushed to `repository`). Returns the
/// artifact manifest's digest.
pub async fn attach_artifact(
    client: &RegistryClient,
    store: &BlobStore,
    repository: &str,
    subject: &Digest,
    artifact_type: &str,
    blob: &[u8],
) -> Result<(Digest, ReferrersMode), RegistryError> {
    let subject_bytes = store.read(subject)?;
    let subject_type = serde_json::from_slice::<serde_json::Value>(&subject_bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| MANIFEST.to_string());
    let empty = store.put_bytes(b"{}")?;
    let content = store.put_bytes(blob)?;
    let ensure = || async {
        for (digest, size) in [(&empty, 2), (&content, blob.len() as u64)] {
            ensure_blob(client, repository, digest, size, None, store, None).await?;
        }
        Ok::<_, RegistryError>(())
    };
    ensure().await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY, "digest": empty.to_string(), "size": 2, "data": "e30="},
        "layers": [{"mediaType": artifact_type, "digest": content.to_string(), "size": blob.len()}],
        "subject": {"mediaType": subject_type, "digest": subject.to_string(), "size": subject_bytes.len()},
    });
    let bytes = to_canonical_json(&manifest).expect("JSON values serialize");
    let digest = Digest::of(&bytes);
    let size = bytes.len();
    let reference = digest.to_string();
    let put = || client.put_manifest(repository, &reference, MANIFEST, Bytes::from(bytes.clone()));
    let headers = match put().await {
        // Another client pushing the same artifact at the same moment (see `blob_unknown`).
        Err(e) if super::push::blob_unknown(&e) => {
            tracing::info!(
                "{repository}: the registry did not yet know a blob; checking them again"
            );
            ensure().await?;
            put().await?
        }
        other => other?,
    };
    if headers.contains_key("oci-subject") {
        return Ok((digest, ReferrersMode::Api));
    }

    // The referrers tag schema.
    let tag = referrers_tag(subject);
    let mut index = match client.get_manifest(repository, &tag).await {
        Ok((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
            RegistryError::Unexpected {
                registry: client.registry().to_string(),
                repository: repository.to_string(),
                message: format!("referrers index {tag} is not JSON: {e}"),
            }
        })?,
        Err(RegistryError::NotFound { .. }) => {
            serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": []})
        }
        Err(e) => return Err(e),
    };
    let entries = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| RegistryError::Unexpected {
            registry: client.registry().to_string(),
            repository: repository.to_string(),
            message: format!("referrers index {tag} has no manifests list"),
        })?;
    if !entries
        .iter()
        .any(|m| m["digest"] == digest.to_string().as_str())
    {
        entries.push(serde_json::json!({
            "mediaType": MANIFEST,
            "digest": digest.to_string(),
            "size": size,
            "artifactType": artifact_type,
        }));
        let bytes = to_canonical_json(&index).expect("JSON values serialize");
        let put_index = || client.put_manifest(repository, &tag, INDEX, Bytes::from(bytes.clone()));
        match put_index().await {
            // The artifact manifest just put, unknown to the registry for a moment while
            // another client puts the same one (seen with concurrent runners): put both again.
            Err(e) if super::push::blob_unknown(&e) => {
                tracing::info!(
                    "{repository}: the registry did not yet know the referrer; putting it again"
                );
                put().await?;
                put_index().await?;
            }
            other => {
                other?;
            }
        }
    }
    Ok((digest, ReferrersMode::TagSchema))
}
