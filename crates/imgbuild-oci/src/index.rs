//! Several platforms' images as one OCI image index (`application/vnd.oci.image.index.v1+json`),
//! and [`Built`], what an output (layout, archive, registry tag) holds: one image or an index.
//!
//! The index lists each platform's manifest with its `platform` (os, architecture, variant), in
//! the order given. Two manifests for one platform are refused: a runtime picks the first match,
//! so the second would be there and never run. Blobs several images share (noarch packages,
//! pure-Python wheels) are one blob, stored and pushed once.

use std::collections::HashMap;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, MediaType, Platform,
    PlatformBuilder,
};

use crate::canonical::to_canonical_json;
use crate::image::{BuiltImage, ImagePlatform};
use crate::{BlobStore, Digest, OciError};

/// An image index whose blob is in the store, and the images it lists.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub digest: Digest,
    pub size: u64,
    pub images: Vec<BuiltImage>,
}

/// What one output holds.
#[derive(Debug, Clone)]
pub enum Built {
    Image(Box<BuiltImage>),
    Index(BuiltIndex),
}

/// Two images for one platform.
#[derive(Debug, thiserror::Error)]
#[error("two images for {platform}: {first} and {second}; an index holds one image per platform")]
pub struct DuplicatePlatform {
    pub platform: ImagePlatform,
    pub first: Digest,
    pub second: Digest,
}

impl std::fmt::Display for ImagePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl ImagePlatform {
    /// The OCI `platform` object.
    pub fn to_oci(&self) -> Result<Platform, OciError> {
        let mut platform = PlatformBuilder::default()
            .os(self.os.as_str())
            .architecture(self.architecture.as_str());
        if let Some(v) = &self.variant {
            platform = platform.variant(v.clone());
        }
        platform.build().map_err(|e| OciError::Invalid {
            path: std::path::PathBuf::new(),
            what: "platform",
            message: e.to_string(),
        })
    }

    /// The platform an OCI `platform` object names.
    pub fn from_oci(platform: &Platform) -> Self {
        Self {
            os: platform.os().to_string(),
            architecture: platform.architecture().to_string(),
            variant: platform.variant().clone(),
        }
    }
}

/// An index entry: a manifest (digest, size, media type) for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub platform: ImagePlatform,
}

/// The canonical bytes of an index listing `entries`, refusing two for one platform.
pub fn index_bytes(entries: &[IndexEntry]) -> Result<Vec<u8>, IndexError> {
    let mut seen: HashMap<&ImagePlatform, &Digest> = HashMap::new();
    for e in entries {
        if let Some(first) = seen.insert(&e.platform, &e.digest) {
            if *first != e.digest {
                return Err(IndexError::Duplicate(Box::new(DuplicatePlatform {
                    platform: e.platform.clone(),
                    first: *first,
                    second: e.digest,
                })));
            }
        }
    }
    let mut manifests = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for e in entries {
        if !listed.insert((&e.platform, e.digest)) {
            continue;
        }
        let d = DescriptorBuilder::default()
            .media_type(MediaType::from(e.media_type.as_str()))
            .digest(e.digest.to_oci())
            .size(e.size)
            .platform(e.platform.to_oci()?)
            .build()
            .map_err(|e| invalid("index entry", e))?;
        manifests.push(d);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| invalid("index", e))?;
    Ok(to_canonical_json(&index).map_err(OciError::json("image index"))?)
}

/// The entries of a parsed index (those with a platform and a sha256 digest).
pub fn index_entries(index: &ImageIndex) -> Vec<IndexEntry> {
    index
        .manifests()
        .iter()
        .filter_map(|d| {
            Some(IndexEntry {
                digest: d.digest().to_string().parse().ok()?,
                size: d.size(),
                media_type: d.media_type().to_string(),
                platform: ImagePlatform::from_oci(d.platform().as_ref()?),
            })
        })
        .collect()
}

/// The platforms an index (as bytes) lists; `None` when the bytes are not an index.
pub fn index_platforms(bytes: &[u8]) -> Option<Vec<ImagePlatform>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("manifests")?;
    let index: ImageIndex = serde_json::from_value(value).ok()?;
    Some(
        index_entries(&index)
            .into_iter()
            .map(|e| e.platform)
            .collect(),
    )
}

/// Why an index could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Duplicate(Box<DuplicatePlatform>),
    #[error(transparent)]
    Oci(#[from] OciError),
}

fn invalid(what: &'static str, e: impl std::fmt::Display) -> OciError {
    OciError::Invalid {
        path: std::path::PathBuf::new(),
        what,
        message: e.to_string(),
    }
}

/// Writes the index of `images` (one per platform, in this order) into `store`.
pub fn assemble_index(
    store: &BlobStore,
    images: Vec<BuiltImage>,
) -> Result<BuiltIndex, IndexError> {
    let entries: Vec<IndexEntry> = images
        .iter()
        .map(|i| IndexEntry {
            digest: i.manifest_digest,
            size: i.manifest.size(),
            media_type: i.manifest.media_type().to_string(),
            platform: i.platform.clone(),
        })
        .collect();
    let bytes = index_bytes(&entries)?;
    let digest = store.put_bytes(&bytes)?;
    Ok(BuiltIndex {
        digest,
        size: bytes.len() as u64,
        images,
    })
}

impl Built {
    /// The digest of the manifest or index.
    pub fn digest(&self) -> Digest {
        match self {
            Built::Image(i) => i.manifest_digest,
            Built::Index(i) => i.digest,
        }
    }

    /// The images, one per platform.
    pub fn images(&self) -> &[BuiltImage] {
        match self {
            Built::Image(i) => std::slice::from_ref(i),
            Built::Index(i) => &i.images,
        }
    }

    /// How a layout's `index.json` points at it: the manifest with its platform, or the index.
    pub fn descriptor(&self) -> Result<Descriptor, OciError> {
        match self {
            Built::Image(image) => {
                let mut d = image.manifest.clone();
                d.set_platform(Some(image.platform.to_oci()?));
                Ok(d)
            }
            Built::Index(index) => DescriptorBuilder::default()
                .media_type(MediaType::ImageIndex)
                .digest(index.digest.to_oci())
                .size(index.size)
                .build()
                .map_err(|e| invalid("index descriptor", e)),
        }
    }

    /// Every blob it takes: each image's config, layers and manifest, then the index; each
    /// once, in that order.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for image in self.images() {
            for d in image.blobs.iter().chain([&image.manifest_digest]) {
                if seen.insert(*d) {
                    out.push(*d);
                }
            }
        }
        if let Built::Index(index) = self {
            out.push(index.digest);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, digest: &[u8]) -> IndexEntry {
        IndexEntry {
            digest: Digest::of(digest),
            size: 10,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            platform: ImagePlatform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: None,
            },
        }
    }

    #[test]
    fn an_index_lists_each_platform_once_and_refuses_two_images_for_one() {
        let bytes = index_bytes(&[entry("amd64", b"a"), entry("arm64", b"b")]).unwrap();
        let index: ImageIndex = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            index_entries(&index),
            vec![entry("amd64", b"a"), entry("arm64", b"b")]
        );
        // The same image twice is listed once (a merge run again changes nothing).
        let again = index_bytes(&[entry("amd64", b"a"), entry("amd64", b"a")]).unwrap();
        let index: ImageIndex = serde_json::from_slice(&again).unwrap();
        assert_eq!(index.manifests().len(), 1);
        let err = index_bytes(&[entry("amd64", b"a"), entry("amd64", b"c")]).unwrap_err();
        assert!(
            err.to_string().contains("two images for linux/amd64"),
            "{err}"
        );
    }
}
