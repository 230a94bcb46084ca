//! Pushing an image or index from a blob store to registries, with each image's SBOM attached:
//! for `build` and for `push`.

use std::collections::HashMap;

use imgbuild_oci::registry::{
    attach_artifact, push_built, ClientOptions, Reference, RegistryClient,
};
use imgbuild_oci::{BaseImage, BlobStore, Built, Digest, TransferProgress};

use crate::error::PipelineError;
use crate::report::{Attached, PushReport};

/// An artifact to attach to a pushed image (the SBOM): the image manifest it is about, its
/// media type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub subject: Digest,
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
        &reference.repository,
        options,
    )?)
}

/// Pushes `built` from `store` to every target, sharing one client per repository, and
/// attaches each of `attachments` to its subject in each repository. Blobs of `bases`, and
/// the blobs `elsewhere` names (a registry cache's), are mounted from their repository where
/// it is on the target's registry.
#[allow(clippy::too_many_arguments)]
pub async fn push_all(
    store: &BlobStore,
    built: &Built,
    targets: &[Reference],
    bases: &[&BaseImage],
    elsewhere: &[(Digest, Reference)],
    options: &ClientOptions,
    attachments: &[Attachment<'_>],
    progress: Option<&TransferProgress>,
) -> Result<Vec<PushReport>, PipelineError> {
    // One client per repository: its credentials may be a namespaced auth-file entry.
    let mut clients: HashMap<(String, String), RegistryClient> = HashMap::new();
    let mut reports = Vec::new();
    for target in targets {
        let key = (target.registry.clone(), target.repository.clone());
        if !clients.contains_key(&key) {
            clients.insert(key.clone(), client_for(target, options)?);
        }
        let client = &clients[&key];
        let mut mount_from = mounts(bases, target);
        for (digest, repo) in elsewhere {
            if repo.registry == target.registry {
                mount_from
                    .entry(*digest)
                    .or_insert_with(|| repo.repository.clone());
            }
        }
        let summary = push_built(client, store, built, target, &mount_from, progress)
            .await
            .map_err(|source| PipelineError::Push {
                target: target.to_string(),
                source,
            })?;
        tracing::debug!("pushed {target}");
        let mut attached = Vec::new();
        for a in attachments {
            let (digest, mode) = attach_artifact(
                client,
                store,
                &target.repository,
                &a.subject,
                a.artifact_type,
                a.bytes,
            )
            .await
            .map_err(|source| PipelineError::Attach {
                target: target.to_string(),
                source,
            })?;
            attached.push(Attached {
                subject: a.subject,
                artifact_type: a.artifact_type.to_string(),
                digest,
                mode,
            });
        }
        reports.push(PushReport { summary, attached });
    }
    Ok(reports)
}

/// The bases' layers that `target` can mount rather than upload: those of a base on the same
/// registry, from the base's repository.
fn mounts(bases: &[&BaseImage], target: &Reference) -> HashMap<Digest, String> {
    bases
        .iter()
        .filter_map(|b| b.origin.as_ref().map(|o| (b, o)))
        .filter(|(_, origin)| origin.registry == target.registry)
        .flat_map(|(b, origin)| {
            b.layer_digests()
                .into_iter()
                .map(|d| (d, origin.repository.clone()))
        })
        .collect()
}
