//! Pulling a base image: manifest (resolved for the platform when it is an index), config and
//! layers into the blob store, every blob digest-checked. Layers stay compressed as they are.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use crate::image::ImagePlatform;
use crate::registry::{ClientOptions, Reference, RegistriesConf, RegistryClient, RegistryError};
use crate::{BaseImage, BlobStore, Digest};

/// Pulls `reference` for `platform` into `store` from the first of its sources that has it:
/// the mirrors registries.conf names for it, then its own location (see
/// [`crate::registry::RegistriesConf`]). `fetch_layers` says, for the source the image comes
/// from, whether its layers are needed here (see [`pull_image`]). The image remembers that
/// source as its origin, so its layers are mounted from there.
pub async fn pull_image_from_sources(
    reference: &Reference,
    options: &ClientOptions,
    platform: &ImagePlatform,
    store: &BlobStore,
    fetch_layers: impl Fn(&Reference) -> bool,
) -> Result<BaseImage, RegistryError> {
    let sources =
        RegistriesConf::load(options.registries_conf.as_deref())?.pull_sources(reference)?;
    let only_one = sources.len() == 1;
    let mut failed = Vec::new();
    for source in sources {
        let mut options = options.clone();
        if source.insecure {
            options
                .insecure_hosts
                .push(source.reference.registry.clone());
        }
        let at = &source.reference;
        let pulled =
            match RegistryClient::new(&at.registry, at.api_host(), &at.repository, &options) {
                Ok(client) => pull_image(&client, at, platform, store, fetch_layers(at)).await,
                Err(e) => Err(e),
            };
        match pulled {
            Ok(image) => {
                if source.mirror {
                    tracing::info!("pulled {reference} from its mirror {at}");
                }
                return Ok(image);
            }
            Err(e) if only_one => return Err(e),
            Err(e) => {
                tracing::warn!("cannot pull {reference} from {at}: {e}");
                failed.push((at.clone(), e));
            }
        }
    }
    Err(RegistryError::NoSource {
        reference: Box::new(reference.clone()),
        failed,
    })
}

/// Pulls `reference` for `platform` into `store` and returns it as a base image. With
/// `fetch_layers` false only the manifest and config come down: for a build that is only
/// pushed to the base's own registry, where the layers are mounted rather than uploaded.
pub async fn pull_image(
    client: &RegistryClient,
    reference: &Reference,
    platform: &ImagePlatform,
    store: &BlobStore,
    fetch_layers: bool,
) -> Result<BaseImage, RegistryError> {
    let repo = reference.repository.as_str();
    let unexpected = |message: String| RegistryError::Unexpected {
        registry: reference.registry.clone(),
        repository: repo.to_string(),
        message,
    };
    let (mut bytes, _) = client
        .get_manifest(repo, &reference.manifest_reference())
        .await?;
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| unexpected(format!("manifest is not JSON: {e}")))?;
    if doc.get("manifests").is_some() {
        let chosen = doc["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["platform"]["os"] == platform.os.as_str()
                    && m["platform"]["architecture"] == platform.architecture.as_str()
                    && (platform.variant.is_none()
                        || m["platform"]["variant"].is_null()
                        || m["platform"]["variant"]
                            == platform.variant.as_deref().unwrap_or_default())
            })
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| {
                unexpected(format!(
                    "{reference} has no image for {}/{}",
                    platform.os, platform.architecture
                ))
            })?
            .to_string();
        bytes = client.get_manifest(repo, &chosen).await?.0;
        doc = serde_json::from_slice(&bytes)
            .map_err(|e| unexpected(format!("manifest is not JSON: {e}")))?;
    }
    let manifest: ImageManifest = serde_json::from_value(doc)
        .map_err(|e| unexpected(format!("not an image manifest: {e}")))?;
    let manifest_digest = store.put_bytes(&bytes)?;
    let digest_of =
        |d: &Descriptor| Digest::try_from(d.digest()).map_err(|e| unexpected(e.to_string()));
    let config_digest = digest_of(manifest.config())?;
    client.pull_blob(repo, &config_digest, store).await?;
    let config: ImageConfiguration = serde_json::from_slice(&store.read(&config_digest)?)
        .map_err(|e| unexpected(format!("image config is not valid: {e}")))?;
    if config.os().to_string() != platform.os
        || config.architecture().to_string() != platform.architecture
    {
        return Err(unexpected(format!(
            "{reference} is {}/{}, but the target platform is {}/{}",
            config.os(),
            config.architecture(),
            platform.os,
            platform.architecture
        )));
    }
    if fetch_layers {
        for layer in manifest.layers() {
            client.pull_blob(repo, &digest_of(layer)?, store).await?;
        }
    }
    Ok(BaseImage::from_parts(
        config,
        manifest.layers().clone(),
        manifest_digest,
        store.clone(),
        Some(reference.clone()),
    ))
}
