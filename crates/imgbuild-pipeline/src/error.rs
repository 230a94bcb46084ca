use std::path::PathBuf;

use imgbuild_builder::pip::PipError;
use imgbuild_builder::{BuildError, LockError, SpecError};
use imgbuild_layer::LayerError;
use imgbuild_oci::registry::RegistryError;
use imgbuild_oci::OciError;

/// Everything that can stop a build. Messages describe the problem; the caller (the CLI)
/// adds which of its flags to change.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("nothing to write: no image layout, archive or registry to push to")]
    NothingToWrite,
    #[error("{platform} is asked for twice")]
    PlatformTwice { platform: String },
    /// Platforms resolved to different versions of packages they share.
    #[error(
        "the platforms would get different versions of the same packages: {}; pin them in \
         the spec to versions every platform has",
        .differences.join("; ")
    )]
    VersionSkew { differences: Vec<String> },
    #[error(transparent)]
    Index(imgbuild_oci::index::IndexError),
    /// The base image could not be read (from its layout or registry).
    #[error("cannot use the base image {base}")]
    Base {
        base: String,
        #[source]
        source: BaseError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    CacheDir(#[from] imgbuild_builder::cache_dir::CacheDirError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Pip(#[from] PipError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot write the image layout {path}")]
    WriteLayout {
        path: PathBuf,
        #[source]
        source: OciError,
    },
    #[error("cannot write the image archive {path}")]
    WriteArchive {
        path: PathBuf,
        #[source]
        source: OciError,
    },
    #[error("cannot write the SBOM to {path}")]
    WriteSbom {
        path: PathBuf,
        #[source]
        source: OciError,
    },
    #[error("push to {target} failed")]
    Push {
        target: String,
        #[source]
        source: RegistryError,
    },
    #[error("attaching the SBOM to {target} failed")]
    Attach {
        target: String,
        #[source]
        source: RegistryError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a build task failed: {0}")]
    Task(String),
}

/// Why a base image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Layout(#[from] OciError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl PipelineError {
    pub(crate) fn task(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}
