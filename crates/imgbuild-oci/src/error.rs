use std::path::{Path, PathBuf};

use crate::Digest;

/// Everything that can go wrong reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{0} exists and is neither an empty directory nor an OCI image layout (no 'oci-layout' \
         and 'index.json'); choose a new or empty directory, or an existing layout to add the image to"
    )]
    NotALayout(PathBuf),
    #[error(
        "{tag:?} cannot name an image in a layout: {why} (a tag is components of letters \
         and digits joined by '.', '_', '-', ':', '@', '+' or '/', e.g. llm-env:cu118 or \
         ghcr.io/acme/llm-env:cu118)"
    )]
    BadTag { tag: String, why: &'static str },
    #[error("{path}: invalid {what}: {message}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{layout}: no image tagged '{tag}' (tags there: {available})")]
    TagNotFound {
        layout: PathBuf,
        tag: String,
        available: String,
    },
    #[error("{layout}: {message}")]
    Base { layout: PathBuf, message: String },
    #[error(
        "the base image has {base} layers and the environment may use up to {budget} plus one \
         for the SBOM: {total} is over {max}, the most layers Docker and containerd accept; \
         the environment can have {fit} layers at most on this base"
    )]
    TooManyLayers {
        base: usize,
        budget: usize,
        total: usize,
        max: usize,
        fit: usize,
    },
    #[error("could not serialize {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl OciError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::Json { what, source }
    }
}
