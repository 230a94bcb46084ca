//! Wheels downloaded by imgbuild, not by uv, into `<cache>/wheels/<sha256>/<file name>`.
//!
//! Why not let uv download them: uv runs as a program and says nothing about bytes while it
//! works, so a 2.2 GiB pip section (torch and its CUDA wheels) would download behind a silent
//! spinner. Fetching here gives the same bytes bar as conda packages ([`DownloadProgress`]),
//! checks every byte against the sha256 the lock promises before the file gets its name, and
//! hands uv local files it only has to unpack. A cached wheel is named by its hash, so it is
//! never fetched twice and never trusted under another name.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};

use crate::download::DownloadError;
use crate::download_progress::DownloadProgress;
use crate::pip::{PipError, PipPackage};
use crate::wheel;

/// Downloads at once: enough to fill a link with a few big CUDA wheels, few enough to be polite.
const PARALLEL: usize = 4;

/// Where downloaded wheels live.
#[derive(Debug, Clone)]
pub struct WheelCache {
    dir: PathBuf,
}

impl WheelCache {
    /// The wheel cache under imgbuild's cache directory.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: crate::cache_dir::CacheDir::new(cache_dir).wheels(),
        }
    }

    /// Where `package`'s file is (or will be) kept.
    fn path_of(&self, package: &PipPackage) -> PathBuf {
        self.dir
            .join(&package.sha256)
            .join(wheel::file_name_of(&package.url))
    }

    /// The local file of every package, downloading what is not here yet (in parallel; bytes
    /// reported to `progress`). A `file://` package is used where it is.
    pub async fn fetch(
        &self,
        client: &reqwest_middleware::ClientWithMiddleware,
        packages: &[PipPackage],
        progress: Option<Arc<DownloadProgress>>,
    ) -> Result<Vec<PathBuf>, PipError> {
        futures::stream::iter(packages.iter().map(|p| {
            let progress = progress.clone();
            async move { self.fetch_one(client, p, progress.as_deref()).await }
        }))
        .buffered(PARALLEL)
        .try_collect()
        .await
    }

    async fn fetch_one(
        &self,
        client: &reqwest_middleware::ClientWithMiddleware,
        package: &PipPackage,
        progress: Option<&DownloadProgress>,
    ) -> Result<PathBuf, PipError> {
        if let Some(path) = url::Url::parse(&package.url)
            .ok()
            .filter(|u| u.scheme() == "file")
            .and_then(|u| u.to_file_path().ok())
        {
            return Ok(path);
        }
        let dest = self.path_of(package);
        if dest.is_file() {
            return Ok(dest);
        }
        let dir = dest.parent().expect("a file under the cache");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| PipError::io(dir, e))?;
        if let Some(p) = progress {
            p.packages.fetch_add(1, Ordering::Relaxed);
        }
        let downloaded = crate::download::with_retries(&package.url, || {
            crate::download::download(client, &package.url, dir, progress)
        })
        .await
        .map_err(|e| match e {
            DownloadError::Transient(source) | DownloadError::Final(source) => PipError::Download {
                name: package.name.clone(),
                url: package.url.clone(),
                source,
            },
            DownloadError::Io { path, source } => PipError::io(&path, source),
        })?;
        let actual = hex::encode(downloaded.sha256);
        if !actual.eq_ignore_ascii_case(&package.sha256) {
            return Err(PipError::HashMismatch {
                name: package.name.clone(),
                url: package.url.clone(),
                expected: package.sha256.clone(),
                actual,
            });
        }
        downloaded
            .file
            .persist(&dest)
            .map_err(|e| PipError::io(&dest, e.error))?;
        Ok(dest)
    }
}
