//! Pushing an image from a blob store to registries, with its SBOM attached: for `build` and
//! for `push`.

use std::collections::HashMap;

use imgbuild_oci::registry::{
    attach_artifact, push_image, ClientOptions, Reference, RegistryClient,
};
use imgbuild_oci::{BaseImage, BlobStore, Digest, TransferProgress};

use crate::error::PipelineError;
use crate::report::{Attached, PushReport};

/// An artifact to attach to a pushed image (the SBOM): its media type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub artifact_type: &'a str,
    pub bytes: &'a [u8],
}

/// The client for `reference`'s registry.
pub fn client_for(
    reference: &Reference,
    options: &ClientOptions,
) -> Result<RegistryClient, PipelineError> {
    Ok(RegistryClient::new(
        &reference.registry,
        reference.api_host(),
        options,
    )?)
}

/// Pushes `manifest` from `store` to every target, sharing one client per registry, and
/// attaches `attachment` to it in each repository. Blobs of `base` are mounted from its
/// repository where it lives on the target's registry.
pub async fn push_all(
    store: &BlobStore,
    manifest: &Digest,
    targets: &[Reference],
    base: Option<&BaseImage>,
    options: &ClientOptions,
    attachment: Option<Attachment<'_>>,
    progress: Option<&TransferProgress>,
) -> Result<Vec<PushReport>, PipelineError> {
    let mut clients: HashMap<String, RegistryClient> = HashMap::new();
    let mut reports = Vec::new();
    for target in targets {
        if !clients.contains_key(&target.registry) {
            clients.insert(target.registry.clone(), client_for(target, options)?);
        }
        let client = &clients[&target.registry];
        let mount_from = mounts(base, target);
        let summary = push_image(client, store, manifest, target, &mount_from, progress)
            .await
            .map_err(|source| PipelineError::Push {
                target: target.to_string(),
                source,
            })?;
        tracing::debug!("pushed {target}");
        let attached = match attachment {
            Some(a) => {
                let (digest, mode) = attach_artifact(
                    client,
                    store,
                    &target.repository,
                    manifest,
                    a.artifact_type,
                    a.bytes,
                )
                .await
                .map_err(|source| PipelineError::Attach {
                    target: target.to_string(),
                    source,
                })?;
                Some(Attached {
                    artifact_type: a.artifact_type.to_string(),
                    digest,
                    mode,
                })
            }
            None => None,
        };
        reports.push(PushReport { summary, attached });
    }
    Ok(reports)
}

/// The base's layers that `target` can mount rather than upload: those of a base on the same
/// registry, from the base's repository.
fn mounts(base: Option<&BaseImage>, target: &Reference) -> HashMap<Digest, String> {
    base.and_then(|b| b.origin.as_ref().map(|o| (b, o)))
        .filter(|(_, origin)| origin.registry == target.registry)
        .map(|(b, origin)| {
            b.layer_digests()
                .into_iter()
                .map(|d| (d, origin.repository.clone()))
                .collect()
        })
        .unwrap_or_default()
}
