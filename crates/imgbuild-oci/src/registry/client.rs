//! The distribution API over reqwest: authentication, retries, blobs and manifests.
//!
//! Written on reqwest rather than oci-client because pushing multi-GB layers needs things its
//! `push()` does not do: HEAD before upload, cross-repository mount, chunked uploads read from
//! disk (bounded memory), and per-request retries with backoff.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use url::Url;

use super::auth::{resolve_credentials, Challenge, CredentialSource, Credentials};
use super::RegistryError;
use crate::{BlobStore, Digest, TransferProgress};

/// Bytes per PATCH when uploading a large blob; also the most a single upload holds in memory.
pub const CHUNK_SIZE: usize = 16 << 20;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--creds`: wins over every other source of credentials.
    pub credentials: Option<Credentials>,
    /// Hosts (`host` or `host:port`) that may use plain HTTP or an unverified certificate.
    pub insecure_hosts: Vec<String>,
    /// Attempts per request for transient failures (connection errors, 429, 5xx).
    pub max_attempts: Option<u32>,
}

#[derive(Default)]
struct AuthState {
    basic: bool,
    tokens: HashMap<String, String>,
    plain_http: bool,
}

/// A client for one registry host.
pub struct RegistryClient {
    registry: String,
    host: String,
    http: reqwest::Client,
    insecure: bool,
    creds: Option<(Credentials, CredentialSource)>,
    state: Mutex<AuthState>,
    /// Held while answering a challenge, so concurrent requests fetch one token, not many.
    negotiating: tokio::sync::Mutex<()>,
    max_attempts: u32,
}

/// What a request is for: its scope(s) for token auth and a label for messages.
struct Call<'a> {
    method: Method,
    url: Url,
    scopes: &'a [String],
    headers: HeaderMap,
    body: Option<Bytes>,
    repository: &'a str,
}

impl<'a> Call<'a> {
    /// A request without extra headers or a body.
    fn new(method: Method, url: Url, scopes: &'a [String], repository: &'a str) -> Self {
        Self {
            method,
            url,
            scopes,
            headers: HeaderMap::new(),
            body: None,
            repository,
        }
    }
}

impl RegistryClient {
    /// A client for `registry` (as in a reference: `docker.io`, `127.0.0.1:5000`) whose API
    /// lives at `host`.
    pub fn new(registry: &str, host: &str, options: &ClientOptions) -> Result<Self, RegistryError> {
        let insecure = options
            .insecure_hosts
            .iter()
            .any(|h| h == host || h == registry);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // A registry that stops answering mid-request is a transient failure, not a hang.
            .read_timeout(Duration::from_secs(60));
        if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
            let pem = std::fs::read(&path).map_err(|e| {
                RegistryError::Config(format!("SSL_CERT_FILE={}: {e}", Path::new(&path).display()))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Config(format!("SSL_CERT_FILE={}: {e}", Path::new(&path).display()))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Config(format!("cannot create HTTP client: {e}")))?;
        Ok(Self {
            registry: registry.to_string(),
            host: host.to_string(),
            http,
            insecure,
            creds: resolve_credentials(registry, options.credentials.as_ref())?,
            state: Mutex::new(AuthState::default()),
            negotiating: tokio::sync::Mutex::new(()),
            max_attempts: options.max_attempts.unwrap_or(6).max(1),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn base(&self) -> Url {
        let scheme = if self.state.lock().expect("auth state").plain_http {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{}/", self.host)).expect("host makes a URL")
    }

    fn url(&self, path: &str) -> Url {
        self.base().join(path).expect("API paths are valid")
    }

    /// Sends a request with auth and retries; returns the response whatever its status,
    /// except 401 (after auth was tried) and transient failures after the last attempt.
    async fn send(&self, call: Call<'_>) -> Result<Response, RegistryError> {
        let mut attempt = 0u32;
        let mut auth_tried = false;
        let mut url = call.url.clone();
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(call.method.clone(), url.clone())
                .headers(call.headers.clone());
            let used_auth = self.auth_header(call.scopes);
            if let Some(h) = &used_auth {
                req = req.header(AUTHORIZATION, h);
            }
            if let Some(body) = &call.body {
                req = req.body(body.clone());
            } else if matches!(call.method, Method::PUT | Method::POST | Method::PATCH) {
                req = req.header(CONTENT_LENGTH, "0");
            }
            let result = req.send().await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    // An insecure host may speak plain HTTP: switch once, as Docker does.
                    if self.insecure
                        && url.scheme() == "https"
                        && (e.is_connect() || e.is_request())
                    {
                        self.state.lock().expect("auth state").plain_http = true;
                        url.set_scheme("http").expect("http is a valid scheme");
                        attempt -= 1;
                        continue;
                    }
                    // A connection that cannot be made (refused, no such host, a certificate
                    // that does not verify) is not made by asking again; a broken one is.
                    if attempt < self.max_attempts && !e.is_connect() {
                        tracing::warn!("{} {}: {}; retrying", call.method, redact(&url), e);
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(RegistryError::Transport {
                        registry: self.registry.clone(),
                        message: format!("{} {}: {}", call.method, redact(&url), error_chain(&e)),
                    });
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                if auth_tried {
                    return Err(self.unauthorized(call.repository));
                }
                auth_tried = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                self.authenticate(
                    challenge,
                    call.scopes,
                    call.repository,
                    used_auth.as_deref(),
                )
                .await?;
                attempt -= 1;
                continue;
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
                && attempt < self.max_attempts
            {
                tracing::warn!("{} {}: {}; retrying", call.method, redact(&url), status);
                backoff(attempt).await;
                continue;
            }
            return Ok(response);
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let state = self.state.lock().expect("auth state");
        if let Some(token) = state.tokens.get(&scopes.join(" ")) {
            return Some(format!("Bearer {token}"));
        }
        if state.basic {
            return self.creds.as_ref().map(|(c, _)| c.basic_header());
        }
        None
    }

    fn unauthorized(&self, repository: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: repository.to_string(),
            hint: match &self.creds {
                Some((c, source)) => format!(
                    "the registry rejected the credentials for user '{}' from {source}; check the user name and password",
                    c.username
                ),
                None => "no credentials were found; pass --creds USER:PASSWORD, set IMGBUILD_REGISTRY_USER and \
                         IMGBUILD_REGISTRY_PASSWORD, or log in with `docker login`"
                    .to_string(),
            },
        }
    }

    /// Answers a 401. `rejected` is the Authorization header the refused request carried: when
    /// another task has already replaced it (or it was a token that has since expired and been
    /// refreshed), nothing is fetched.
    async fn authenticate(
        &self,
        challenge: Option<Challenge>,
        scopes: &[String],
        repository: &str,
        rejected: Option<&str>,
    ) -> Result<(), RegistryError> {
        let _negotiating = self.negotiating.lock().await;
        if self.auth_header(scopes).as_deref() != rejected {
            return Ok(());
        }
        match challenge {
            Some(Challenge::Basic) | None => {
                if self.creds.is_none() {
                    return Err(self.unauthorized(repository));
                }
                self.state.lock().expect("auth state").basic = true;
                Ok(())
            }
            Some(Challenge::Bearer { realm, params }) => {
                let mut url = Url::parse(&realm).map_err(|e| RegistryError::Unexpected {
                    registry: self.registry.clone(),
                    repository: repository.to_string(),
                    message: format!("token realm '{realm}' is not a URL: {e}"),
                })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(service) = params.get("service") {
                        q.append_pair("service", service);
                    }
                    for scope in scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req = self.http.get(url.clone());
                if let Some((c, _)) = &self.creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let resp = req.send().await.map_err(|e| RegistryError::Transport {
                    registry: self.registry.clone(),
                    message: format!("token request to {}: {}", redact(&url), error_chain(&e)),
                })?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.unauthorized(repository));
                }
                if !resp.status().is_success() {
                    return Err(RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: format!(
                            "token server {} answered {}",
                            redact(&url),
                            resp.status()
                        ),
                    });
                }
                let body: serde_json::Value =
                    resp.json().await.map_err(|e| RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: format!("token server answered something that is not JSON: {e}"),
                    })?;
                let token = body["token"]
                    .as_str()
                    .or_else(|| body["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: "token server answered without a token".into(),
                    })?;
                self.state
                    .lock()
                    .expect("auth state")
                    .tokens
                    .insert(scopes.join(" "), token.to_string());
                Ok(())
            }
        }
    }

    fn fail(&self, repository: &str, what: &str, status: StatusCode, body: &str) -> RegistryError {
        let body = body.chars().take(300).collect::<String>();
        match status {
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: format!("{what}: {body}"),
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                what: what.to_string(),
            },
            _ => RegistryError::Unexpected {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: format!("{what}: {status} {body}"),
            },
        }
    }

    /// The error for a response with an unexpected status, with the start of its body.
    async fn fail_response(&self, repository: &str, what: &str, resp: Response) -> RegistryError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        self.fail(repository, what, status, &body)
    }

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
                    tracing::warn!("upload of {digest} failed ({e}); starting it again");
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
        let io = |e: std::io::Error| RegistryError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
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
            return Err(RegistryError::Io {
                path: path.to_path_buf(),
                message: format!(
                    "content does not match its digest {digest}; the blob store is corrupt"
                ),
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

    /// Puts a manifest (or index) under `reference` (a tag or digest); returns the response
    /// headers (`OCI-Subject` tells whether the registry indexes referrers itself).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<HeaderMap, RegistryError> {
        let scopes = [push_scope(repository)];
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).expect("media types are ascii"),
        );
        let resp = self
            .send(Call {
                method: Method::PUT,
                url: self.url(&format!("v2/{repository}/manifests/{reference}")),
                scopes: &scopes,
                headers,
                body: Some(bytes),
                repository,
            })
            .await?;
        if resp.status().is_success() {
            Ok(resp.headers().clone())
        } else {
            Err(self
                .fail_response(repository, &format!("put manifest {reference}"), resp)
                .await)
        }
    }

    /// Fetches a manifest or index: its bytes and media type. The digest is checked when the
    /// reference is one.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Bytes, String), RegistryError> {
        let scopes = [pull_scope(repository)];
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            ),
        );
        let resp = self
            .send(Call {
                method: Method::GET,
                url: self.url(&format!("v2/{repository}/manifests/{reference}")),
                scopes: &scopes,
                headers,
                body: None,
                repository,
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail_response(repository, &format!("manifest {reference}"), resp)
                .await);
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            message: error_chain(&e),
        })?;
        if let Ok(d) = reference.parse::<Digest>() {
            if Digest::of(&bytes) != d {
                return Err(RegistryError::Unexpected {
                    registry: self.registry.clone(),
                    repository: repository.to_string(),
                    message: format!("manifest {reference} has digest {}", Digest::of(&bytes)),
                });
            }
        }
        Ok((bytes, media_type))
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
        let io_err = |e: std::io::Error| RegistryError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            message: format!("downloading {digest}: {}", error_chain(&e)),
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

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

async fn backoff(attempt: u32) {
    let ms = 200u64 * 2u64.pow(attempt.min(6));
    tokio::time::sleep(Duration::from_millis(ms.min(5_000))).await;
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A URL without its query (upload URLs carry state tokens) for messages.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    u.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let t = cause.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = cause.source();
    }
    s
}
