use std::path::PathBuf;

/// A problem with the user's spec file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: invalid YAML: {message}")]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: invalid package spec '{spec}': {message}")]
    MatchSpec {
        path: PathBuf,
        spec: String,
        message: String,
    },
    #[error("{path}: invalid channel '{channel}': {message}")]
    Channel {
        path: PathBuf,
        channel: String,
        message: String,
    },
}

/// Everything that can go wrong between a spec and a staging root.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Prefix(#[from] imgbuild_fs::PrefixError),
    #[error(transparent)]
    InvalidTarget(#[from] crate::target::TargetError),
    #[error(transparent)]
    CacheDir(#[from] crate::cache_dir::CacheDirError),
    #[error(
        "could not fetch repodata (check that every channel URL is right and reachable from \
         this machine)"
    )]
    Repodata {
        #[source]
        source: Box<rattler_repodata_gateway::GatewayError>,
    },
    #[error("cannot solve the environment for {platform}:\n{}", .problems.join("\n"))]
    Unsolvable {
        platform: String,
        problems: Vec<String>,
        /// A package needs a GPU driver (`__cuda`) and the target was given none.
        needs_cuda: bool,
    },
    #[error(transparent)]
    UnsafePackage(#[from] crate::package_check::UnsafeEntry),
    #[error(transparent)]
    UnsafeArchive(#[from] crate::extract::UnsafeArchive),
    #[error("the solver failed")]
    Solver(#[source] Box<rattler_solve::SolveError>),
    #[error("could not download or extract {package} from {url}")]
    Fetch {
        package: String,
        url: String,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "prefix '{prefix}' ({prefix_len} characters) is too long for {package}: its file '{file}' \
         has a binary placeholder of {max_len} characters; the prefix can be at most {max_len} \
         characters"
    )]
    PrefixTooLong {
        prefix: String,
        prefix_len: usize,
        package: String,
        file: String,
        max_len: usize,
    },
    #[error("cannot lock the package cache in {path}")]
    CacheLock {
        path: PathBuf,
        #[source]
        source: rattler_cache::package_cache::PackageCacheError,
    },
    #[error("could not install the environment: {message}")]
    Install { message: String },
    #[error("cannot create the HTTP client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("could not link the packages into the staging root")]
    Link {
        #[source]
        source: Box<rattler::install::InstallerError>,
    },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
