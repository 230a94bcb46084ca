//! Talking to OCI registries (the distribution API): references, credentials, push and pull,
//! and merging pushed images into an index.

mod auth;
pub mod cache;
mod client;
mod merge;
mod push;
mod referrers;
mod registries_conf;
mod tls;

use std::path::PathBuf;

pub use crate::reference::{ParseReferenceError, Reference, DOCKER_HUB};
pub use auth::{
    credential_files, default_auth_file, remove_login, resolve_credentials, store_login,
    CredentialSource, Credentials,
};
pub use client::{ClientOptions, RegistryClient, CHUNK_SIZE};
pub use merge::{merge_index, MergeError, Merged};
pub use push::{push_built, push_image, PushSummary, Tally, CONCURRENT_UPLOADS};
pub use referrers::{attach_artifact, referrers_tag, ReferrersMode};
pub use registries_conf::{PullSource, RegistriesConf};
pub use tls::TlsFailure;

/// What a client trusted and presented beyond the system's store: where its extra CAs came
/// from (`SSL_CERT_FILE=…`, `SSL_CERT_DIR=…`, each certs.d or `--cert-dir` `*.crt` file) and
/// its client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustSummary {
    pub ca_sources: Vec<String>,
    pub client_cert: Option<PathBuf>,
}

fn tls_message(registry: &str, failure: TlsFailure, trust: &TrustSummary) -> String {
    match failure {
        TlsFailure::ServerCertificate => {
            format!(
                "the TLS certificate of registry {registry} is not trusted (trusted: the system's \
                 CAs{})",
                if trust.ca_sources.is_empty() {
                    ", and no CA files for this registry".to_string()
                } else {
                    format!(" and {}", trust.ca_sources.join(", "))
                }
            )
        }
        TlsFailure::ClientCertificate => format!(
            "registry {registry} refused the TLS connection: it wants a client certificate, and {}",
            match &trust.client_cert {
                Some(path) => format!("it did not accept {}", path.display()),
                None => "none was found for it".to_string(),
            }
        ),
    }
}

/// What can go wrong talking to a registry. Messages name the registry and repository and
/// never contain credentials, tokens or upload-session URLs.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Reference(#[from] ParseReferenceError),
    /// The request could not be made or its body not read. `action` names the request
    /// (method and URL without its query); the source is reqwest's error without its URL,
    /// which may carry an upload session's state token.
    #[error("cannot reach registry {registry}: {action}")]
    Transport {
        registry: String,
        action: String,
        #[source]
        source: reqwest::Error,
    },
    /// A TLS handshake failed on a certificate (never retried: asking again gets the same
    /// answer). Says what was trusted or presented, from which files.
    #[error("{}", tls_message(registry, *failure, trust))]
    Tls {
        registry: String,
        failure: TlsFailure,
        trust: TrustSummary,
        #[source]
        source: reqwest::Error,
    },
    /// A 401 after authenticating. `rejected` names the user and where the credentials came
    /// from; `None` means there were none to send.
    #[error(
        "registry {registry} refused access{}: {}",
        if repository.is_empty() { String::new() } else { format!(" to repository '{repository}'") },
        match rejected.as_deref() {
            Some((user, source)) => format!(
                "the registry rejected the credentials for user '{user}' from {source}; \
                 check the user name and password"
            ),
            None => "no credentials were found".to_string(),
        }
    )]
    Unauthorized {
        registry: String,
        repository: String,
        rejected: Option<Box<(String, CredentialSource)>>,
    },
    #[error("registry {registry} denied access to repository '{repository}' ({message}); check that this account may push there")]
    Denied {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("registry {registry} has no {what} in repository '{repository}'")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },
    #[error("registry {registry}, repository '{repository}': {message}")]
    Unexpected {
        registry: String,
        repository: String,
        message: String,
    },
    /// Every source of an image (its registries.conf mirrors, then its location) failed; the
    /// source is the last one's error.
    #[error(
        "cannot pull {reference} from any of its sources: {}",
        failed.iter().map(|(at, e)| format!("{at}: {e}")).collect::<Vec<_>>().join("; ")
    )]
    NoSource {
        reference: Box<Reference>,
        failed: Vec<(Reference, RegistryError)>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: content does not match its digest {digest}; the blob store is corrupt")]
    CorruptBlob {
        path: PathBuf,
        digest: crate::Digest,
    },
    #[error(transparent)]
    Oci(#[from] crate::OciError),
}
