//! One HTTP download into a temporary file, hashed as it arrives, with the bytes counted for
//! the progress display; and the retry rule shared by every download imgbuild makes: only a
//! failure that could go away by itself (a broken connection, a 5xx or 429) is tried again. A
//! 404, a hash mismatch or a local error fails at once, with one message.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::download_progress::DownloadProgress;

/// Attempts for a download that fails on the network (not on a status or a hash).
pub(crate) const ATTEMPTS: u32 = 3;

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum DownloadError {
    /// Worth another attempt: the connection broke, the server is overloaded.
    Transient(DownloadFailure),
    /// Will not change by asking again: 404, 403.
    Final(DownloadFailure),
    /// Writing the file failed here.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What went wrong on the wire, with the HTTP client's error as the source.
#[derive(Debug, thiserror::Error)]
pub enum DownloadFailure {
    #[error("the request failed")]
    Request(#[source] reqwest_middleware::Error),
    #[error("reading the response failed")]
    Body(#[source] reqwest::Error),
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
}

/// A finished download: its temporary file (removed when dropped unless persisted) and the
/// sha256 of its bytes.
pub(crate) struct Downloaded {
    pub file: tempfile::TempPath,
    pub sha256: [u8; 32],
}

/// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] transient failures.
pub(crate) async fn with_retries<T, F, Fut>(url: &str, mut attempt: F) -> Result<T, DownloadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DownloadError>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(DownloadError::Transient(failure)) if n < ATTEMPTS => {
                tracing::warn!(
                    error = &failure as &dyn std::error::Error,
                    "downloading {url} failed; trying again"
                );
                tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// One attempt: `url` into a temporary file in `dir` (named `.download-*`).
pub(crate) async fn download(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    dir: &Path,
    progress: Option<&DownloadProgress>,
) -> Result<Downloaded, DownloadError> {
    let io = |source| DownloadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| DownloadError::Transient(DownloadFailure::Request(e)))?;
    let status = response.status();
    if !status.is_success() {
        let failure = DownloadFailure::Status(status);
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            DownloadError::Transient(failure)
        } else {
            DownloadError::Final(failure)
        });
    }
    let length = response.content_length().unwrap_or(0);
    if let Some(p) = progress {
        p.total.fetch_add(length, Ordering::Relaxed);
    }
    let temp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io)?;
    let (file, temp_path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut response = response;
    let result: Result<(), DownloadError> = async {
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| DownloadError::Transient(DownloadFailure::Body(e)))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            received += chunk.len() as u64;
            if let Some(p) = progress {
                p.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        file.flush().await.map_err(io)?;
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
    Ok(Downloaded {
        file: temp_path,
        sha256: hasher.finalize().into(),
    })
}
