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
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::download_progress::DownloadProgress;
use crate::pip::{PipError, PipPackage};
use crate::wheel;

/// Downloads at once: enough to fill a link with a few big CUDA wheels, few enough to be polite.
const PARALLEL: usize = 4;
/// Attempts for a download that fails on the network (not on a status or a hash).
const ATTEMPTS: u32 = 3;

/// Where downloaded wheels live.
#[derive(Debug, Clone)]
pub struct WheelCache {
    dir: PathBuf,
}

impl WheelCache {
    /// The wheel cache under imgbuild's cache directory.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("wheels"),
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
        let mut attempt = 1;
        loop {
            match self.download(client, package, &dest, progress).await {
                Err(DownloadError::Transient(message)) if attempt < ATTEMPTS => {
                    tracing::warn!(
                        "downloading {} failed ({message}); trying again",
                        package.url
                    );
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(DownloadError::Transient(message) | DownloadError::Final(message)) => {
                    return Err(PipError::Download {
                        name: package.name.clone(),
                        url: package.url.clone(),
                        message,
                    })
                }
                Err(DownloadError::Pip(e)) => return Err(e),
                Ok(()) => return Ok(dest),
            }
        }
    }

    /// One attempt: into a temp file beside `dest`, hashed as it arrives, renamed only when
    /// the hash matches.
    async fn download(
        &self,
        client: &reqwest_middleware::ClientWithMiddleware,
        package: &PipPackage,
        dest: &Path,
        progress: Option<&DownloadProgress>,
    ) -> Result<(), DownloadError> {
        let dir = dest.parent().expect("a file under the cache");
        let response = client
            .get(&package.url)
            .send()
            .await
            .map_err(|e| DownloadError::Transient(crate::error::chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("the server answered {status}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                DownloadError::Transient(message)
            } else {
                DownloadError::Final(message)
            });
        }
        let length = response.content_length().unwrap_or(0);
        if let Some(p) = progress {
            p.total.fetch_add(length, Ordering::Relaxed);
        }
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .map_err(|e| DownloadError::Pip(PipError::io(dir, e)))?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut response = response;
        let result: Result<(), DownloadError> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| DownloadError::Transient(crate::error::chain(&e)))?
            {
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| DownloadError::Pip(PipError::io(dir, e)))?;
                received += chunk.len() as u64;
                if let Some(p) = progress {
                    p.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            file.flush()
                .await
                .map_err(|e| DownloadError::Pip(PipError::io(dir, e)))?;
            Ok(())
        }
        .await;
        if let Some(p) = progress {
            // A retry counts its bytes again; keep the bar's total honest.
            if result.is_err() {
                p.total.fetch_sub(length, Ordering::Relaxed);
                p.done.fetch_sub(received, Ordering::Relaxed);
            }
        }
        result?;
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&package.sha256) {
            return Err(DownloadError::Pip(PipError::HashMismatch {
                name: package.name.clone(),
                url: package.url.clone(),
                expected: package.sha256.clone(),
                actual,
            }));
        }
        temp_path
            .persist(dest)
            .map_err(|e| DownloadError::Pip(PipError::io(dest, e.error)))?;
        Ok(())
    }
}

enum DownloadError {
    /// Worth another attempt: the connection broke, the server is overloaded.
    Transient(String),
    /// Will not change by asking again: 404, 403.
    Final(String),
    /// A local problem or a hash mismatch.
    Pip(PipError),
}
