//! Pushing an image whose blobs are in a [`BlobStore`]: blobs first (HEAD, then mount or
//! upload only what is missing: the config alone, then the layers a few at a time), then the
//! manifest.

use std::collections::HashMap;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Reference, RegistryClient, RegistryError};
use crate::{BlobStore, Digest, TransferProgress};

/// Uploads running at once.
pub const CONCURRENT_UPLOADS: usize = 3;

/// Blobs and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub blobs: usize,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.blobs += 1;
        self.bytes += bytes;
    }
}

/// What a push did, for the summary users read in CI logs.
#[derive(Debug, Clone)]
pub struct PushSummary {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub uploaded: Tally,
    pub mounted: Tally,
    pub present: Tally,
}

/// Makes sure `repository` has the blob `digest` (of `size` bytes): already there, mounted
/// from `mount_from` (a repository on the same registry), or uploaded from `store` (fetched
/// from `mount_from` first when the registry would not mount it). The one way every push —
/// images, SBOM artifacts, cache entries — gets a blob into a repository.
pub(crate) async fn ensure_blob(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    size: u64,
    mount_from: Option<&str>,
    store: &BlobStore,
    progress: Option<&TransferProgress>,
) -> Result<Outcome, RegistryError> {
    if client.blob_exists(repository, digest).await? {
        return Ok(Outcome::Present(size));
    }
    if let Some(from) = mount_from {
        if from != repository && client.mount_blob(repository, digest, from).await? {
            return Ok(Outcome::Mounted(size));
        }
        // The registry would not mount it: fetch it from there (once) and upload.
        client.pull_blob(from, digest, store).await?;
    }
    let path = store.path(digest);
    if !path.is_file() {
        return Err(RegistryError::Config(format!(
            "blob {digest} is not in {} and not in the registry; build the image again",
            store.root().display()
        )));
    }
    client
        .upload_blob(repository, digest, &path, progress)
        .await?;
    Ok(Outcome::Uploaded(size))
}

pub(crate) enum Outcome {
    Uploaded(u64),
    Mounted(u64),
    Present(u64),
}

/// Whether the registry refused a manifest because a blob it names is unknown to it. Right
/// after another client pushed the same blob into the same repository at the same moment,
/// distribution can say so although the blob has just arrived (seen with two CI runners
/// pushing one image): worth checking the blobs and putting the manifest once more.
pub(crate) fn blob_unknown(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unexpected { message, .. } if message.contains("MANIFEST_BLOB_UNKNOWN"))
}

/// Pushes the image manifest `manifest_digest` from `store` to `reference`. `mount_from`
/// names, per blob, a repository on the same registry that already holds it (a base image);
/// such a blob need not be in `store`. `progress` counts the bytes of every blob (those the
/// registry already has or mounts count as done when that is known).
pub async fn push_image(
    client: &RegistryClient,
    store: &BlobStore,
    manifest_digest: &Digest,
    reference: &Reference,
    mount_from: &HashMap<Digest, String>,
    progress: Option<&TransferProgress>,
) -> Result<PushSummary, RegistryError> {
    let manifest_bytes = store.read(manifest_digest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        RegistryError::Config(format!(
            "manifest {manifest_digest} in {} is not JSON: {e}",
            store.root().display()
        ))
    })?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let descriptor = |d: &serde_json::Value| -> Result<(Digest, u64), RegistryError> {
        let digest = d["digest"]
            .as_str()
            .unwrap_or_default()
            .parse::<Digest>()
            .map_err(|e| RegistryError::Config(format!("manifest {manifest_digest}: {e}")))?;
        Ok((digest, d["size"].as_u64().unwrap_or(0)))
    };
    let layers: Vec<(Digest, u64)> = manifest["layers"]
        .as_array()
        .map(|a| a.iter().map(descriptor).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    let config = descriptor(&manifest["config"])?;
    let repo = reference.repository.as_str();
    if let Some(p) = progress {
        p.add_total(layers.iter().map(|(_, size)| size).sum::<u64>() + config.1);
    }
    let skipped = |size: u64| {
        if let Some(p) = progress {
            p.advance(size);
        }
    };

    let push_one = |(digest, size): (Digest, u64)| async move {
        let outcome = ensure_blob(
            client,
            repo,
            &digest,
            size,
            mount_from.get(&digest).map(String::as_str),
            store,
            progress,
        )
        .await?;
        if !matches!(outcome, Outcome::Uploaded(_)) {
            skipped(size);
        }
        Ok::<_, RegistryError>(outcome)
    };

    // The config first and alone: a registry that refuses this client (its credentials, its
    // client certificate) says so to one request, not to several at once that would each be
    // cut off mid-connection and retried.
    let config_outcome = push_one(config).await?;
    let mut outcomes: Vec<Outcome> = stream::iter(layers.iter().copied().map(push_one))
        .buffer_unordered(CONCURRENT_UPLOADS)
        .try_collect()
        .await?;
    outcomes.push(config_outcome);

    let mut summary = PushSummary {
        reference: reference.clone(),
        manifest_digest: *manifest_digest,
        uploaded: Tally::default(),
        mounted: Tally::default(),
        present: Tally::default(),
    };
    for o in outcomes {
        match o {
            Outcome::Uploaded(n) => summary.uploaded.add(n),
            Outcome::Mounted(n) => summary.mounted.add(n),
            Outcome::Present(n) => summary.present.add(n),
        }
    }
    let target = reference.manifest_reference();
    let put = || {
        client.put_manifest(
            repo,
            &target,
            &media_type,
            Bytes::from(manifest_bytes.clone()),
        )
    };
    match put().await {
        Err(e) if blob_unknown(&e) => {
            tracing::info!(
                "{reference}: the registry did not yet know a blob; checking them again"
            );
            for (digest, size) in layers.iter().chain([&config]) {
                let from = mount_from.get(digest).map(String::as_str);
                ensure_blob(client, repo, digest, *size, from, store, None).await?;
            }
            put().await?;
        }
        other => {
            other?;
        }
    }
    Ok(summary)
}

/// Pushes `built` to `reference`: an image as [`push_image`] does; an index as each of its
/// images by digest (so a client that pulls one platform finds it), then the index under
/// `reference`'s tag. The summary counts every image's blobs; its `manifest_digest` is the
/// index's.
pub async fn push_built(
    client: &RegistryClient,
    store: &BlobStore,
    built: &crate::Built,
    reference: &Reference,
    mount_from: &HashMap<Digest, String>,
    progress: Option<&TransferProgress>,
) -> Result<PushSummary, RegistryError> {
    let index = match built {
        crate::Built::Image(image) => {
            return push_image(
                client,
                store,
                &image.manifest_digest,
                reference,
                mount_from,
                progress,
            )
            .await
        }
        crate::Built::Index(index) => index,
    };
    let mut summary = PushSummary {
        reference: reference.clone(),
        manifest_digest: index.digest,
        uploaded: Tally::default(),
        mounted: Tally::default(),
        present: Tally::default(),
    };
    for image in &index.images {
        let by_digest = Reference {
            tag: None,
            digest: Some(image.manifest_digest),
            ..reference.clone()
        };
        let one = push_image(
            client,
            store,
            &image.manifest_digest,
            &by_digest,
            mount_from,
            progress,
        )
        .await?;
        for (total, part) in [
            (&mut summary.uploaded, one.uploaded),
            (&mut summary.mounted, one.mounted),
            (&mut summary.present, one.present),
        ] {
            total.blobs += part.blobs;
            total.bytes += part.bytes;
        }
    }
    client
        .put_manifest(
            &reference.repository,
            &reference.manifest_reference(),
            "application/vnd.oci.image.index.v1+json",
            Bytes::from(store.read(&index.digest)?),
        )
        .await?;
    Ok(summary)
}
