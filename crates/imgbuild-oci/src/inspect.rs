//! What an image's layers hold, from its manifest and config alone: the layer list behind
//! `imgbuild inspect` and `imgbuild compare`.
//!
//! imgbuild names each layer's packages in the config history, like `docker history` shows
//! `RUN` lines, so the split of an image into packages is known without downloading a layer.
//! The encoding, written by imgbuild-layer and read here ([`LayerKind::created_by`] and
//! [`LayerKind::from_created_by`]; it is part of every image's digest, so it never changes):
//!
//! | layer | `created_by` |
//! |---|---|
//! | conda packages | `imgbuild: conda packages NAME-VERSION-BUILD …` (space-separated) |
//! | pip packages | `imgbuild: pip packages NAME-VERSION …` |
//! | the environment | `imgbuild: environment (conda-meta and files no package owns)` |
//! | the SBOM | `imgbuild: sbom (PATH …)` |
//!
//! Anything else (and a layer without history) is `Base`.

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::{BaseImage, Digest};

/// What a layer holds, as its history entry tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LayerKind {
    /// conda packages, by `name-version-build`.
    Conda { packages: Vec<String> },
    /// PyPI packages installed by the pip step, by `name-version`.
    Pip { packages: Vec<String> },
    /// `conda-meta/` and files no package owns.
    Environment,
    /// The software bill of materials imgbuild writes, and the files it is in (not part of
    /// the JSON report: every SBOM layer holds one file of a known name).
    Sbom {
        #[serde(skip)]
        files: Vec<String>,
    },
    /// Anything not made by imgbuild (the base image).
    Base,
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub digest: Digest,
    /// Compressed size, from the manifest.
    pub size: u64,
    pub media_type: String,
    /// The config history's `created_by` for this layer, if any.
    pub created_by: Option<String>,
    pub kind: LayerKind,
    pub descriptor: Descriptor,
}

/// The layers of `image`, each matched with its history entry (entries marked
/// `empty_layer` have no layer and are skipped, as the OCI spec says).
pub fn layer_infos(image: &BaseImage) -> Vec<LayerInfo> {
    let history: Vec<Option<String>> = image
        .config
        .history()
        .as_ref()
        .map(|h| {
            h.iter()
                .filter(|e| e.empty_layer() != Some(true))
                .map(|e| e.created_by().clone())
                .collect()
        })
        .unwrap_or_default();
    image
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let digest = Digest::try_from(d.digest()).ok()?;
            let created_by = history.get(i).cloned().flatten();
            let kind = created_by
                .as_deref()
                .map_or(LayerKind::Base, LayerKind::from_created_by);
            Some(LayerInfo {
                digest,
                size: d.size(),
                media_type: d.media_type().to_string(),
                created_by,
                kind,
                descriptor: d.clone(),
            })
        })
        .collect()
}

const CONDA: &str = "imgbuild: conda packages ";
const PIP: &str = "imgbuild: pip packages ";
const ENVIRONMENT: &str = "imgbuild: environment (conda-meta and files no package owns)";
const SBOM: &str = "imgbuild: sbom";

impl LayerKind {
    /// The history line of a layer of this kind (see the module docs); `None` for `Base`,
    /// whose lines are the base image's own.
    pub fn created_by(&self) -> Option<String> {
        Some(match self {
            LayerKind::Conda { packages } => format!("{CONDA}{}", packages.join(" ")),
            LayerKind::Pip { packages } => format!("{PIP}{}", packages.join(" ")),
            LayerKind::Environment => ENVIRONMENT.to_string(),
            LayerKind::Sbom { files } => format!("{SBOM} ({})", files.join(" ")),
            LayerKind::Base => return None,
        })
    }

    /// What a history line says the layer holds.
    pub fn from_created_by(created_by: &str) -> Self {
        let list = |l: &str| l.split_whitespace().map(str::to_string).collect();
        if let Some(l) = created_by.strip_prefix(CONDA) {
            LayerKind::Conda { packages: list(l) }
        } else if let Some(l) = created_by.strip_prefix(PIP) {
            LayerKind::Pip { packages: list(l) }
        } else if created_by.starts_with("imgbuild: environment") {
            LayerKind::Environment
        } else if let Some(rest) = created_by.strip_prefix(SBOM) {
            let files = rest.trim().trim_start_matches('(').trim_end_matches(')');
            LayerKind::Sbom { files: list(files) }
        } else {
            LayerKind::Base
        }
    }
}

/// Seconds to download `bytes` at `bits_per_second`, ignoring latency and decompression.
pub fn transfer_seconds(bytes: u64, bits_per_second: f64) -> f64 {
    bytes as f64 * 8.0 / bits_per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_history() {
        assert_eq!(
            LayerKind::from_created_by("imgbuild: conda packages zlib-1.3-h0_0 xz-5.4-h0_0"),
            LayerKind::Conda {
                packages: vec!["zlib-1.3-h0_0".into(), "xz-5.4-h0_0".into()]
            }
        );
        assert_eq!(
            LayerKind::from_created_by(
                "imgbuild: environment (conda-meta and files no package owns)"
            ),
            LayerKind::Environment
        );
        assert_eq!(
            LayerKind::from_created_by("/bin/sh -c apt-get install -y curl"),
            LayerKind::Base
        );
        assert!((transfer_seconds(100_000_000, 1e8) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn every_kind_survives_its_history_line() {
        for kind in [
            LayerKind::Conda {
                packages: vec!["zlib-1.3-h0_0".into(), "xz-5.4-h0_0".into()],
            },
            LayerKind::Pip {
                packages: vec!["torch-2.0.1".into()],
            },
            LayerKind::Environment,
            LayerKind::Sbom {
                files: vec!["conda-meta/imgbuild.spdx.json".into()],
            },
        ] {
            let line = kind.created_by().unwrap();
            assert_eq!(LayerKind::from_created_by(&line), kind, "{line}");
        }
        assert_eq!(LayerKind::Base.created_by(), None);
    }
}
