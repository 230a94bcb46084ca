//! What can go wrong with the `pip:` section or with running uv.

use std::path::{Path, PathBuf};

use crate::wheel::{NoWheelForTarget, TagsError};

/// A problem with the `pip:` section or with running uv.
#[derive(Debug, thiserror::Error)]
pub enum PipError {
    #[error(
        "{origin}: '{line}' is an editable install; editable installs point at a source tree \
         outside the image and have no place in an image build. Build a wheel and list it, \
         or publish the package to an index"
    )]
    Editable { origin: String, line: String },
    #[error(
        "{origin}: '{line}' installs from version control; a VCS checkout is not reproducible \
         in an image build. Pin a released version from an index instead"
    )]
    Vcs { origin: String, line: String },
    #[error("{origin}: '{line}': {message}")]
    Line {
        origin: String,
        line: String,
        message: String,
    },
    #[error(
        "uv is needed for the pip: section but was not found on PATH; install it with \
         `pip install uv` (or see https://docs.astral.sh/uv/)"
    )]
    UvMissing,
    #[error("the uv program {path} cannot be used: {message}")]
    UvUnusable { path: PathBuf, message: String },
    #[error("the pip: section needs Python, but the environment has no python package; add python to dependencies")]
    NoPython,
    #[error("resolving the pip: section for {platform} (Python {python}) failed:\n{message}")]
    Resolve {
        platform: String,
        python: String,
        message: String,
    },
    #[error(
        "source distributions are built on this machine with the environment's own Python, \
         so only for this machine's platform ({host}), not {target}"
    )]
    SdistCrossPlatform { target: String, host: String },
    #[error(
        "compiling bytecode runs the environment's Python, which cannot run here: the target \
         is {target} and this machine is {host}"
    )]
    CompileCrossPlatform { target: String, host: String },
    #[error(
        "{name} {version} is a source distribution ({url}), and only wheels are installed \
         unless source builds are allowed"
    )]
    SdistNotAllowed {
        name: String,
        version: String,
        url: String,
    },
    #[error("resolving the pip: section: {0}")]
    NoWheel(#[from] NoWheelForTarget),
    #[error(transparent)]
    Tags(#[from] TagsError),
    #[error("uv wrote a pylock.toml imgbuild cannot read: {message}")]
    Pylock { message: String },
    #[error("downloading {name} from {url} failed")]
    Download {
        name: String,
        url: String,
        #[source]
        source: crate::download::DownloadFailure,
    },
    #[error(
        "{name}: {url} has sha256 {actual}, but the lock promises {expected}; the file was \
         not used (a changed upload, a proxy rewriting files, or a stale lock: lock again)"
    )]
    HashMismatch {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("installing pip packages failed:\n{message}")]
    Install { message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PipError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PipError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
