//! Blobs: existence checks, cross-repository mounts, chunked uploads, downloads.

use std::path::Path;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::registry::RegistryError;
use crate::{BlobStore, Digest, TransferProgress};

use super::{backoff, pull_scope, push_scope, read_full, Call, RegistryClient, CHUNK_SIZE};

impl RegistryClient {
    /// Whether the blob is in `repository`.
    pub async fn blob_exists(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let scopes = [pull_scope(repository)];
        let resp = self
            .send(Call::new(
                Method::HEAD,
                self.url(&format!("v2/{repository}/blobs/{digest}")),
                &scopes,
                repository,
            ))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.fail(repository, &format!("HEAD blob {digest}"), s, "")),
        }
    }

    /// Asks the registry to link a blob from another repository on the same registry.
    /// `Ok(true)` when mounted; `Ok(false)` when the registry would rather have an upload.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let scopes = [push_scope(repository), pull_scope(from)];
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let resp = self
            .send(Call {
                method: Method::POST,
                url,
                scopes: &scopes,
                headers: HeaderMap::new(),
                body: None,
                repository,
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session was opened instead; leave it to expire.
                Ok(false)
            }
            _ => Err(self
                .fail_response(repository, &format!("mount {digest} from {from}"), resp)
                .await),
        }
    }

    /// Uploads the blob at `path` (whose sha256 is `digest`) to `repository`: one PUT when it
    /// fits in a chunk, otherwise PATCH chunks of [`CHUNK_SIZE`] read from disk, then PUT.
    /// A failed upload is restarted from a new session a few times.
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        progress: Option<&TransferProgress>,
    ) -> Result<u64, RegistryError> {
        let mut last = None;
        for round in 1..=3u32 {
            let mut sent = 0u64;
            let attempt = self
                .upload_once(repository, digest, path, progress, &mut sent)
                .await;
            if attempt.is_err() {
                // This attempt's bytes are sent again (or not at all): uncount them.
                if let Some(p) = progress {
                    p.rewind(sent);
                }
            }
            match attempt {
                Ok(n) => return Ok(n),
                Err(e @ (RegistryError::Transport { .. } | RegistryError::Unexpected { .. }))
                    if round < 3 =>
                {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "upload of {digest} failed; starting it again"
                    );
                    if self.blob_exists(repository, digest).await.unwrap_or(false) {
                        if let Some(p) = progress {
                            p.advance(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
                        }
                        return Ok(0);
                    }
                    last = Some(e);
                    backoff(round).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("loop ran"))
    }

    /// One upload from the start; `sent` counts the bytes the registry accepted so far (and
    /// `progress` with it), so a failed attempt can be taken back.
    async fn upload_once(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        progress: Option<&TransferProgress>,
        sent: &mut u64,
    ) -> Result<u64, RegistryError> {
        let mut accepted = |n: u64| {
            *sent += n;
            if let Some(p) = progress {
                p.advance(n);
            }
        };
        let scopes = [push_scope(repository)];
        let io = |source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        let resp = self
            .send(Call::new(
                Method::POST,
                self.url(&format!("v2/{repository}/blobs/uploads/")),
                &scopes,
                repository,
            ))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .fail_response(repository, "start blob upload", resp)
                .await);
        }
        let mut location = self.location(&resp, repository)?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut final_body = Bytes::new();
        let mut buf = vec![0u8; CHUNK_SIZE.min(size as usize).max(1)];
        while offset < size {
            let n = read_full(&mut file, &mut buf).await.map_err(io)?;
            if n == 0 {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shrank while uploading",
                )));
            }
            hasher.update(&buf[..n]);
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            if offset == 0 && n as u64 == size {
                // Small blob: a single PUT carries it.
                final_body = chunk;
                break;
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                "Content-Range",
                HeaderValue::from_str(&format!("{}-{}", offset, offset + n as u64 - 1))
                    .expect("ascii"),
            );
            let resp = self
                .send(Call {
                    method: Method::PATCH,
                    url: location.clone(),
                    scopes: &scopes,
                    headers,
                    body: Some(chunk),
                    repository,
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                let s = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(self.fail(
                    repository,
                    &format!("upload chunk at {offset} of {digest}"),
                    s,
                    &body,
                ));
            }
            location = self.location(&resp, repository)?;
            offset += n as u64;
            accepted(n as u64);
        }
        if Digest::from_hasher(hasher) != *digest {
            return Err(RegistryError::CorruptBlob {
                path: path.to_path_buf(),
                digest: *digest,
            });
        }
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let final_len = final_body.len() as u64;
        let resp = self
            .send(Call {
                method: Method::PUT,
                url: location,
                scopes: &scopes,
                headers,
                body: Some(final_body),
                repository,
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .fail_response(repository, &format!("finish upload of {digest}"), resp)
                .await);
        }
        accepted(final_len);
        if let Some(d) = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
        {
            if d != digest.to_string() {
                return Err(RegistryError::Unexpected {
                    registry: self.registry.clone(),
                    repository: repository.to_string(),
                    message: format!("uploaded {digest} but the registry stored {d}"),
                });
            }
        }
        Ok(size)
    }

    fn location(&self, resp: &Response, repository: &str) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Unexpected {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: "upload response has no Location header".into(),
            })?;
        // Absolute (distribution) or relative to the registry; keep our scheme either way.
        let mut url = resp
            .url()
            .join(loc)
            .map_err(|e| RegistryError::Unexpected {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: format!("upload Location '{loc}' is not a URL: {e}"),
            })?;
        if url.host_str() == resp.url().host_str() {
            let _ = url.set_scheme(resp.url().scheme());
        }
        Ok(url)
    }

    /// Downloads a blob into `store`, streaming to a temporary file and checking its digest.
    pub async fn pull_blob(
        &self,
        repository: &str,
        digest: &Digest,
        store: &BlobStore,
    ) -> Result<(), RegistryError> {
        if store.contains(digest) {
            return Ok(());
        }
        let scopes = [pull_scope(repository)];
        let mut resp = self
            .send(Call::new(
                Method::GET,
                self.url(&format!("v2/{repository}/blobs/{digest}")),
                &scopes,
                repository,
            ))
            .await?;
        if !resp.status().is_success() {
            let s = resp.status();
            return Err(self.fail(repository, &format!("blob {digest}"), s, ""));
        }
        // Base layers can be gigabytes (CUDA): written past the page cache like built layers.
        let mut out = store.writer(resp.content_length())?;
        let path = out.path().to_path_buf();
        let io_err = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            action: format!("downloading {digest}"),
            source: e.without_url(),
        })? {
            hasher.update(&chunk);
            std::io::Write::write_all(&mut out, &chunk).map_err(io_err)?;
        }
        let temp = out.finish().map_err(io_err)?;
        let actual = Digest::from_hasher(hasher);
        if actual != *digest {
            return Err(RegistryError::Unexpected {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: format!("blob {digest} arrived with digest {actual}"),
            });
        }
        store.commit(temp, digest)?;
        Ok(())
    }
}
