//! Talking to OCI registries (the distribution API): references, credentials, push and pull.

mod auth;
mod client;
mod push;
mod reference;
mod referrers;

use std::path::PathBuf;

pub use auth::{resolve_credentials, CredentialSource, Credentials};
pub use client::{ClientOptions, RegistryClient, CHUNK_SIZE};
pub use push::{push_image, PushSummary, Tally, CONCURRENT_UPLOADS};
pub use reference::{ParseReferenceError, Reference, DOCKER_HUB};
pub use referrers::{attach_artifact, referrers_tag, ReferrersMode};

/// What can go wrong talking to a registry. Messages name the registry and repository and
/// never contain credentials, tokens or upload-session URLs.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Reference(#[from] ParseReferenceError),
    #[error("cannot reach registry {registry}: {message}")]
    Transport { registry: String, message: String },
    #[error("registry {registry} refused access to repository '{repository}': {hint}")]
    Unauthorized {
        registry: String,
        repository: String,
        hint: String,
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
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Oci(#[from] crate::OciError),
}
