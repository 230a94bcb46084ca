//! An image to build on top of: its config and layers, where its blobs are, and where it
//! came from. Read from a layout by [`crate::layout`], pulled by [`crate::pull`].

use oci_spec::image::{Descriptor, ImageConfiguration};

use crate::registry::Reference;
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
