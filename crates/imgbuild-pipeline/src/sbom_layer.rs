//! The SBOM: rendered from the resolved packages and the base, written as a small layer of
//! its own (it names the base, which the environment's layers must not depend on).

use std::path::{Path, PathBuf};

use imgbuild_builder::pip::PipPackage;
use imgbuild_builder::sbom::{self, BaseImageRef, SbomFormat, SbomInput};
use imgbuild_layer::write::write_layer;
use imgbuild_layer::{BuiltEnvironment, LayerOrigin, PlannedLayer, WriteOptions, WrittenLayer};
use imgbuild_oci::{BaseImage, BlobStore};

use crate::error::PipelineError;
use crate::plan::BuildPlan;
use crate::resolve::Resolved;

/// The SBOM document of the image `plan` makes of `resolved` on `base`.
pub(crate) fn render(
    plan: &BuildPlan,
    resolved: &Resolved,
    environment: &BuiltEnvironment,
    base: Option<&BaseImage>,
) -> Vec<u8> {
    let base_ref = base.map(|b| BaseImageRef {
        name: plan.base.sbom_name(),
        digest: b.manifest_digest.to_string(),
    });
    // Licenses as the wheels' METADATA declared them at install time (kept with the
    // environment cache entry, so a cached environment reads no layer back).
    let pip: Vec<PipPackage> = resolved
        .pip
        .iter()
        .map(|p| PipPackage {
            license: environment.pip_licenses.get(&p.name).cloned(),
            ..p.clone()
        })
        .collect();
    sbom::render(
        &SbomInput {
            name: &format!("conda environment at {}", plan.prefix),
            records: &resolved.records,
            pip: &pip,
            base: base_ref.as_ref(),
            created: &imgbuild_oci::rfc3339_utc(plan.mtime as i64),
        },
        plan.sbom_format,
    )
}

/// Writes `sbom` as a layer of its own: `<prefix>/conda-meta/<file>`.
pub(crate) fn write_sbom_layer(
    staging: &Path,
    sbom: &[u8],
    format: SbomFormat,
    write_options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    let root = tempfile::Builder::new()
        .prefix("sbom-")
        .tempdir_in(staging)
        .map_err(io(staging))?;
    let rel = PathBuf::from("conda-meta").join(format.file_name());
    let meta = root.path().join("conda-meta");
    std::fs::create_dir_all(&meta).map_err(io(&meta))?;
    std::fs::write(root.path().join(&rel), sbom).map_err(io(&root.path().join(&rel)))?;
    let layer = PlannedLayer {
        owners: vec![imgbuild_layer::OwnerLabel::Sbom],
        paths: vec![rel],
        size: sbom.len() as u64,
        // The layer's bytes depend only on the document (and the write options the layer cache
        // adds), so an unchanged SBOM is taken from the layer cache, not written again.
        recipe: Some(format!("sbom\n{}", String::from_utf8_lossy(sbom))),
    };
    let written = write_layer(root.path(), &layer, write_options, store)?;
    tracing::info!(
        "SBOM layer {}",
        if written.origin == LayerOrigin::Reused {
            "reused from the layer cache"
        } else {
            "written"
        }
    );
    Ok(written)
}
