//! What a build is asked to do, as typed values: [`BuildPlan`] (what goes into the image) and
//! [`Outputs`] (where it goes). The CLI fills them from flags, `x-imgbuild` and the
//! environment; nothing here reads any of those.

use std::path::PathBuf;

use imgbuild_builder::activation::ActivationScripts;
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::{EnvSpec, InstallPrefix, Target};
use imgbuild_layer::PlanOptions;
use imgbuild_oci::registry::Reference;
use imgbuild_oci::{Compression, RuntimeConfig};

/// The base a build starts from when nothing names one.
pub const DEFAULT_BASE: &str = "docker.io/library/debian:bookworm-slim";

/// Where the environment lives in the image when nothing says otherwise.
pub const DEFAULT_PREFIX: &str = "/opt/conda";

/// Everything that decides the image's bytes (and a few things that decide only how they are
/// made, such as where uv is).
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub source: Source,
    pub base: BaseSource,
    pub target: Target,
    pub prefix: InstallPrefix,
    /// The image's config beyond what the environment brings (entrypoint, labels, …).
    pub runtime: RuntimeConfig,
    pub layers: PlanOptions,
    pub compression: Compression,
    /// Every file's mtime and the image's creation time (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    pub pip: PipOptions,
    pub activation: ActivationScripts,
    pub sbom_format: SbomFormat,
    /// The most a conda package may expand to, in bytes.
    pub max_package_size: u64,
}

/// Where the packages come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Solve an environment.yml; with `write_lock`, also write the solve there.
    Spec {
        spec: Box<EnvSpec>,
        write_lock: Option<PathBuf>,
    },
    /// Install exactly a lock file's packages. `spec`, if given, says what was asked for
    /// (else the lock's own record of it).
    Lock {
        path: PathBuf,
        /// The pixi.lock environment (default `default`).
        environment: Option<String>,
        spec: Option<Box<EnvSpec>>,
    },
}

impl Source {
    /// The environment.yml, if there is one.
    pub fn spec(&self) -> Option<&EnvSpec> {
        match self {
            Source::Spec { spec, .. } => Some(spec),
            Source::Lock { spec, .. } => spec.as_deref(),
        }
    }
}

/// How the `pip:` section is resolved and installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipOptions {
    /// The uv program; `None`: uv on `PATH` (or the one in the cache).
    pub uv: Option<PathBuf>,
    /// Byte-compile the installed packages (deterministic unchecked-hash pycs).
    pub compile: bool,
    /// Allow source distributions (built on this machine).
    pub allow_sdist: bool,
}

/// The base image a build starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    Scratch,
    /// An OCI image layout on disk, and the tag of the image in it (the only one if `None`).
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    Registry(Reference),
}

/// Why a base reference could not be read.
#[derive(Debug, thiserror::Error)]
#[error("'{text}' is not 'scratch', 'oci:DIR[:TAG]' or a registry reference")]
pub struct BadBase {
    pub text: String,
    #[source]
    pub source: imgbuild_oci::registry::ParseReferenceError,
}

impl std::str::FromStr for BaseSource {
    type Err = BadBase;

    fn from_str(s: &str) -> Result<Self, BadBase> {
        if s == "scratch" {
            return Ok(Self::Scratch);
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = imgbuild_oci::layout::split_dir_tag(rest);
            return Ok(Self::Layout { dir, tag });
        }
        s.parse().map(Self::Registry).map_err(|source| BadBase {
            text: s.to_string(),
            source,
        })
    }
}

impl BaseSource {
    /// How the SBOM names the base (beside its digest): the reference for a registry base;
    /// for a layout only its tag, because the path is the build host's and would make the
    /// same base at two paths two images.
    pub fn sbom_name(&self) -> String {
        match self {
            BaseSource::Scratch => "scratch".to_string(),
            BaseSource::Layout { tag, .. } => {
                tag.clone().unwrap_or_else(|| "oci-layout".to_string())
            }
            BaseSource::Registry(r) => r.to_string(),
        }
    }
}

impl std::fmt::Display for BaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseSource::Scratch => f.write_str("scratch"),
            BaseSource::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            BaseSource::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            BaseSource::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Where the image goes. At least one of `layout`, `archive` and `push` must be given.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// An OCI image layout directory (new, empty, or an existing layout).
    pub layout: Option<PathBuf>,
    /// An OCI archive file.
    pub archive: Option<PathBuf>,
    /// The names of the image in the layout and archive (`org.opencontainers.image.ref.name`).
    pub tags: Vec<String>,
    /// Registries to push to, with the options to reach them.
    pub push: Vec<Reference>,
    /// A copy of the SBOM on disk.
    pub sbom_file: Option<PathBuf>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.layout.is_none() && self.archive.is_none() && self.push.is_empty()
    }
}
