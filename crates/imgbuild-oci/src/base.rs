//! An image to build on top of: its config and layers, where its blobs are, and where it
//! came from. Read from a layout by [`crate::layout`], pulled by [`crate::pull`].

use oci_spec::image::{Descriptor, ImageConfiguration};

use crate::reference::Reference;
use crate::{BlobStore, Digest};

/// An image read from a layout, to build on top of.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
    pub manifest_digest: Digest,
    source: BlobStore,
    /// Where the base came from when it was pulled from a registry (blobs can be mounted
    /// from there instead of uploaded).
    pub origin: Option<Reference>,
}

impl BaseImage {
    pub(crate) fn from_parts(
        config: ImageConfiguration,
        layers: Vec<Descriptor>,
        manifest_digest: Digest,
        source: BlobStore,
        origin: Option<Reference>,
    ) -> Self {
        Self {
            config,
            layers,
            manifest_digest,
            source,
            origin,
        }
    }

    /// Where the image's blobs are (the layout, or the blob store it was pulled into).
    pub fn source(&self) -> &BlobStore {
        &self.source
    }

    /// Digests of the base's layers.
    pub fn layer_digests(&self) -> Vec<Digest> {
        self.layers
            .iter()
            .filter_map(|l| Digest::try_from(l.digest()).ok())
            .collect()
    }
}

impl BaseImage {
    /// This image as something to push or write out: its manifest (read from its source)
    /// with `platform`.
    pub fn as_built(
        &self,
        platform: &crate::ImagePlatform,
    ) -> Result<crate::Built, crate::OciError> {
        let bytes = self.source.read(&self.manifest_digest)?;
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| crate::OciError::Invalid {
                path: self.source.path(&self.manifest_digest),
                what: "image manifest",
                message: e.to_string(),
            })?;
        let digest_of = |d: &Descriptor| {
            d.digest()
                .to_string()
                .parse::<Digest>()
                .map_err(|e| crate::OciError::Invalid {
                    path: self.source.path(&self.manifest_digest),
                    what: "descriptor",
                    message: e.to_string(),
                })
        };
        let config_digest = digest_of(manifest.config())?;
        let mut blobs = vec![config_digest];
        for layer in manifest.layers() {
            blobs.push(digest_of(layer)?);
        }
        let descriptor = oci_spec::image::DescriptorBuilder::default()
            .media_type(oci_spec::image::MediaType::ImageManifest)
            .digest(self.manifest_digest.to_oci())
            .size(bytes.len() as u64)
            .build()
            .map_err(|e| crate::OciError::Invalid {
                path: self.source.path(&self.manifest_digest),
                what: "descriptor",
                message: e.to_string(),
            })?;
        Ok(crate::Built::Image(Box::new(crate::BuiltImage {
            manifest: descriptor,
            manifest_digest: self.manifest_digest,
            config_digest,
            blobs,
            platform: platform.clone(),
        })))
    }
}
