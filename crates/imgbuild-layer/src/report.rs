//! The size report of `imgbuild inspect` and the side-by-side of `imgbuild compare`, as plain
//! data whose JSON form is a documented contract (`schema` names its version; fields are only
//! ever added).
//!
//! Compressed sizes come from the manifest; uncompressed sizes and conda-meta records from
//! the layer blobs that are at hand (all of them for a local image; for a registry image the
//! caller fetches the environment layer, or every layer with `--deep`). Pull times are the
//! compressed bytes over the given link speed: what every node pays at scale-out.

use std::collections::{BTreeMap, BTreeSet};

use imgbuild_oci::inspect::{layer_infos, transfer_seconds, LayerKind};
use imgbuild_oci::{BaseImage, BlobStore};
use serde::Serialize;

use crate::readback::{read_layer, PackageRecord};
use crate::LayerError;

/// How many of the largest packages a report lists.
pub const LARGEST: usize = 15;

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// `imgbuild.inspect/v1`.
    pub schema: &'static str,
    /// The image as the user named it.
    pub image: String,
    pub manifest_digest: String,
    pub layers: Vec<LayerReport>,
    pub totals: Totals,
    pub packages: PackagesReport,
    pub pull_seconds: PullEstimate,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub digest: String,
    /// Compressed bytes (the blob, as the manifest says).
    pub size: u64,
    /// Bytes of the uncompressed tar; `null` when the blob was not read.
    pub uncompressed_size: Option<u64>,
    pub media_type: String,
    /// `gzip`, `zstd` or `none`, from the media type.
    pub compression: &'static str,
    pub created_by: Option<String>,
    /// `conda` (with `packages`), `environment` or `base`.
    #[serde(flatten)]
    pub kind: LayerKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub layers: usize,
    pub size: u64,
    /// `null` unless every layer was read.
    pub uncompressed_size: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackagesReport {
    /// Every conda package in the image (`name-version-build`, sorted): from conda-meta where
    /// it was read, else from the layers' history.
    pub all: Vec<String>,
    pub count: usize,
    /// The largest by installed size (needs conda-meta), largest first.
    pub largest: Vec<PackageSize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageSize {
    pub name: String,
    pub version: String,
    pub build: String,
    pub installed_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullEstimate {
    pub at_100_mbit: f64,
    pub at_1_gbit: f64,
}

impl ImageReport {
    /// Reports on `image`; layer blobs are read from `blobs` where present there.
    pub fn new(name: &str, image: &BaseImage, blobs: &BlobStore) -> Result<Self, LayerError> {
        let mut layers = Vec::new();
        // Later layers win for the same record path, as in the image's filesystem.
        let mut records: BTreeMap<String, PackageRecord> = BTreeMap::new();
        for info in layer_infos(image) {
            let path = blobs.path(&info.digest);
            let uncompressed_size = if path.is_file() {
                let contents = read_layer(&path, &info.media_type)?;
                for r in contents.records {
                    records.insert(r.record_path.clone(), r);
                }
                Some(contents.tar_size)
            } else {
                None
            };
            layers.push(LayerReport {
                digest: info.digest.to_string(),
                size: info.size,
                uncompressed_size,
                compression: compression_of(&info.media_type),
                media_type: info.media_type,
                created_by: info.created_by,
                kind: info.kind,
            });
        }
        let size: u64 = layers.iter().map(|l| l.size).sum();
        let uncompressed_size = layers
            .iter()
            .map(|l| l.uncompressed_size)
            .sum::<Option<u64>>();
        let mut all: BTreeSet<String> = records.values().map(PackageRecord::label).collect();
        if all.is_empty() {
            for l in &layers {
                if let LayerKind::Conda { packages } = &l.kind {
                    all.extend(packages.iter().cloned());
                }
            }
        }
        let mut largest: Vec<PackageSize> = records
            .values()
            .map(|r| PackageSize {
                name: r.name.clone(),
                version: r.version.clone(),
                build: r.build.clone(),
                installed_size: r.installed_size,
            })
            .collect();
        largest.sort_by(|a, b| {
            b.installed_size
                .cmp(&a.installed_size)
                .then_with(|| a.name.cmp(&b.name))
        });
        largest.truncate(LARGEST);
        Ok(Self {
            schema: "imgbuild.inspect/v1",
            image: name.to_string(),
            manifest_digest: image.manifest_digest.to_string(),
            totals: Totals {
                layers: layers.len(),
                size,
                uncompressed_size,
            },
            layers,
            packages: PackagesReport {
                count: all.len(),
                all: all.into_iter().collect(),
                largest,
            },
            pull_seconds: PullEstimate {
                at_100_mbit: transfer_seconds(size, 100e6),
                at_1_gbit: transfer_seconds(size, 1e9),
            },
        })
    }
}

/// How a layer is compressed, by its media type (OCI's and Docker's).
fn compression_of(media_type: &str) -> &'static str {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        "zstd"
    } else if media_type.ends_with("gzip") {
        "gzip"
    } else {
        "none"
    }
}

/// Two images side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// `imgbuild.compare/v1`.
    pub schema: &'static str,
    pub image: Side,
    pub reference: Side,
    /// Layers (same digest) in both: a registry or a node stores and pulls them once.
    pub shared: Shared,
    /// Bytes to store both images, shared layers once.
    pub combined_size: u64,
    /// What a node that holds the reference fetches to run the image: the image's layers the
    /// reference does not have (whole layers; the manifest and config are not counted).
    pub fetch_for_image: Shared,
    /// `image.size / reference.size`.
    pub size_ratio: f64,
    /// Packages (`name-version-build`) in one image and not the other; empty lists when either
    /// image lists no conda packages.
    pub only_in_image: Vec<String>,
    pub only_in_reference: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub image: String,
    pub manifest_digest: String,
    pub layers: usize,
    pub size: u64,
    pub uncompressed_size: Option<u64>,
    pub packages: usize,
    pub pull_seconds: PullEstimate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Shared {
    pub layers: usize,
    pub size: u64,
}

impl Comparison {
    pub fn new(image: &ImageReport, reference: &ImageReport) -> Self {
        let side = |r: &ImageReport| Side {
            image: r.image.clone(),
            manifest_digest: r.manifest_digest.clone(),
            layers: r.totals.layers,
            size: r.totals.size,
            uncompressed_size: r.totals.uncompressed_size,
            packages: r.packages.count,
            pull_seconds: r.pull_seconds.clone(),
        };
        let digests = |r: &ImageReport| -> BTreeMap<String, u64> {
            r.layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect()
        };
        let (a, b) = (digests(image), digests(reference));
        let shared: Vec<u64> = a
            .iter()
            .filter(|(d, _)| b.contains_key(*d))
            .map(|(_, s)| *s)
            .collect();
        let missing: Vec<u64> = a
            .iter()
            .filter(|(d, _)| !b.contains_key(*d))
            .map(|(_, s)| *s)
            .collect();
        let union: u64 = a.values().sum::<u64>()
            + b.iter()
                .filter(|(d, _)| !a.contains_key(*d))
                .map(|(_, s)| s)
                .sum::<u64>();
        let (pa, pb): (BTreeSet<_>, BTreeSet<_>) = (
            image.packages.all.iter().cloned().collect(),
            reference.packages.all.iter().cloned().collect(),
        );
        let comparable = !pa.is_empty() && !pb.is_empty();
        Self {
            schema: "imgbuild.compare/v1",
            image: side(image),
            reference: side(reference),
            shared: Shared {
                layers: shared.len(),
                size: shared.iter().sum(),
            },
            combined_size: union,
            fetch_for_image: Shared {
                layers: missing.len(),
                size: missing.iter().sum(),
            },
            size_ratio: if reference.totals.size == 0 {
                0.0
            } else {
                image.totals.size as f64 / reference.totals.size as f64
            },
            only_in_image: if comparable {
                pa.difference(&pb).cloned().collect()
            } else {
                Vec::new()
            },
            only_in_reference: if comparable {
                pb.difference(&pa).cloned().collect()
            } else {
                Vec::new()
            },
        }
    }
}
