//! From an `environment.yml` to an installed conda environment in a staging root.
//!
//! The pipeline is a chain of plain values: [`EnvSpec`] (parsed spec) → [`solve::solve`]
//! (repodata for the *target* platform and virtual packages, resolvo, strict channel priority)
//! → `Vec<RepoDataRecord>` → [`install::install`] (sha256-checked downloads into a shared
//! package cache, linked for the final prefix) → [`StagingRoot`]. Nothing here knows about
//! layers or images; the staging root is an ordinary directory plus the records that made it.
//! Beside that chain: lock files ([`lock`]), the `pip:` section through uv ([`pip`]),
//! activation baked for the image ([`activation`]), the SBOM ([`sbom`]) and the cache
//! directory's layout and housekeeping ([`cache_dir`]).
//!
//! What it does not do: run package code on the build host (link scripts are off, archives
//! are extracted by [`extract`], which checks every entry, activation scripts are read, not
//! run, unless asked), decide the order of a build (imgbuild-pipeline does), or know about
//! OCI, layers or registries.

pub mod activation;
pub mod activation_script;
mod bounded;
pub mod cache_dir;
mod download;
pub mod download_progress;
mod error;
pub mod extract;
pub mod history;
pub mod install;
pub mod lock;
mod normalize;
pub mod package_check;
pub mod pip;

pub mod sbom;
pub mod solve;
pub mod spec;
pub mod target;
pub mod wheel;
pub mod wheel_fetch;

use std::path::PathBuf;

use rattler_cache::package_cache::PackageCache;
use reqwest_middleware::ClientWithMiddleware;

pub use download::DownloadFailure;
pub use error::{BuildError, SpecError};
pub use imgbuild_fs::{InstallPrefix, PrefixError};
pub use install::StagingRoot;
pub use lock::{LockError, LockFormat, LockedEnvironment};
pub use spec::EnvSpec;
pub use target::{Target, TargetError, TargetPlatform};

/// What every stage shares: the cache directory and the HTTP client.
#[derive(Clone)]
pub struct Context {
    /// Root of the package cache (`pkgs/`), repodata cache (`repodata/`) and staging roots.
    pub cache_dir: PathBuf,
    pub client: ClientWithMiddleware,
    /// Where package downloads report their bytes, if anyone is watching.
    pub download_progress: Option<std::sync::Arc<download_progress::DownloadProgress>>,
    /// The most a package may expand to (the sum of its archive's entries), in bytes.
    pub max_package_size: u64,
}

/// [`Context::max_package_size`] unless told otherwise: well above the largest real packages
/// (CUDA and pytorch builds of a few GiB), far below what fills a CI runner's disk by surprise.
pub const DEFAULT_MAX_PACKAGE_SIZE: u64 = 16 << 30;

impl Context {
    /// A context with a plain HTTP client.
    pub fn new(cache_dir: PathBuf) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| BuildError::HttpClient { source })?;
        Ok(Self {
            cache_dir,
            client: reqwest_middleware::ClientBuilder::new(client).build(),
            download_progress: None,
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
        })
    }

    /// The cache's layout.
    pub fn cache(&self) -> cache_dir::CacheDir {
        cache_dir::CacheDir::new(&self.cache_dir)
    }

    pub(crate) fn repodata_cache_dir(&self) -> PathBuf {
        self.cache().repodata()
    }

    pub(crate) fn package_cache(&self) -> PackageCache {
        PackageCache::new(self.cache().packages())
    }

    /// The package cache of `platform`'s builds (see [`cache_dir::CacheDir::packages_for`]).
    pub(crate) fn package_cache_for(&self, platform: TargetPlatform) -> PackageCache {
        PackageCache::new(self.cache().packages_for(platform))
    }
}
