//! The distribution API over reqwest: authentication, retries, blobs and manifests.
//!
//! Written on reqwest rather than oci-client because pushing multi-GB layers needs things its
//! `push()` does not do: HEAD before upload, cross-repository mount, chunked uploads read from
//! disk (bounded memory), and per-request retries with backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncReadExt;
use url::Url;

use super::auth::{resolve_credentials, Challenge, CredentialSource, Credentials};
use super::tls::{tls_failure, TlsFailure, TlsFiles};
use super::{RegistryError, TrustSummary};

mod auth_flow;
mod blobs;
mod manifests;

/// Bytes per PATCH when uploading a large blob; also the most a single upload holds in memory.
pub const CHUNK_SIZE: usize = 16 << 20;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--creds`: wins over every other source of credentials.
    pub credentials: Option<Credentials>,
    /// `--authfile`: a containers auth.json to read instead of the default ones.
    pub auth_file: Option<std::path::PathBuf>,
    /// `--cert-dir`: the directory of `*.crt` CAs for the registry, instead of its certs.d
    /// directories (skopeo's meaning).
    pub cert_dir: Option<std::path::PathBuf>,
    /// The registries.conf to read mirrors from for pulls, instead of the default files
    /// (`--registries-conf`).
    pub registries_conf: Option<std::path::PathBuf>,
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
    /// What TLS trusts and presents beyond the defaults, for messages.
    trust: TrustSummary,
    /// A server asked for a client certificate this client does not have.
    asked_for_client_cert: Arc<AtomicBool>,
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
    /// lives at `host`, for repositories under `namespace` (`acme/llm-env`, or `""` for the
    /// whole registry): the credentials are those of the most specific auth-file entry for
    /// it (`host/acme/llm-env`, `host/acme`, then `host`), as podman picks them.
    pub fn new(
        registry: &str,
        host: &str,
        namespace: &str,
        options: &ClientOptions,
    ) -> Result<Self, RegistryError> {
        let insecure = options
            .insecure_hosts
            .iter()
            .any(|h| h == host || h == registry);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // A registry that stops answering mid-request is a transient failure, not a hang.
            .read_timeout(Duration::from_secs(60));
        let tls =
            TlsFiles::load(registry, options.cert_dir.as_deref()).map_err(RegistryError::Config)?;
        let trust = TrustSummary {
            ca_sources: tls.ca_sources.clone(),
            client_cert: tls.identity.as_ref().map(|id| id.file.clone()),
        };
        let asked_for_client_cert = Arc::new(AtomicBool::new(false));
        let config = tls
            .client_config(insecure, asked_for_client_cert.clone())
            .map_err(|e| RegistryError::Config(format!("cannot set up TLS: {e}")))?;
        builder = builder.tls_backend_preconfigured(config);
        let http = builder
            .build()
            .map_err(|e| RegistryError::Config(format!("cannot create HTTP client: {e}")))?;
        Ok(Self {
            registry: registry.to_string(),
            host: host.to_string(),
            http,
            insecure,
            trust,
            asked_for_client_cert,
            creds: resolve_credentials(
                registry,
                namespace,
                options.credentials.as_ref(),
                options.auth_file.as_deref(),
            )?,
            state: Mutex::new(AuthState::default()),
            negotiating: tokio::sync::Mutex::new(()),
            max_attempts: options.max_attempts.unwrap_or(6).max(1),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Checks the client's credentials against the registry (`GET /v2/`, answering its
    /// challenge as any request would): `Ok` when the registry accepts them.
    pub async fn check_login(&self) -> Result<(), RegistryError> {
        let resp = self
            .send(Call::new(Method::GET, self.url("v2/"), &[], ""))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail_response("", "GET /v2/", resp).await)
        }
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
                    // A certificate refused, on either side, is refused again if asked again
                    // (a connection cut after the server asked for a client certificate we
                    // do not have was cut for that).
                    let failure = tls_failure(&e).or_else(|| {
                        (self.trust.client_cert.is_none()
                            && self.asked_for_client_cert.load(Ordering::Relaxed))
                        .then_some(TlsFailure::ClientCertificate)
                    });
                    if let Some(failure) = failure {
                        return Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            failure,
                            trust: self.trust.clone(),
                            source: e.without_url(),
                        });
                    }
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
                        let e = e.without_url();
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "{} {}: retrying",
                            call.method,
                            redact(&url)
                        );
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(RegistryError::Transport {
                        registry: self.registry.clone(),
                        action: format!("{} {}", call.method, redact(&url)),
                        source: e.without_url(),
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
