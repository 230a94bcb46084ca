//! Deterministic, content-addressed image layers from a staging root.
//!
//! Three steps, each its own module: [`ownership`] finds which conda package (or the
//! environment itself) owns every file; [`plan`] groups owners into layers so that a layer's
//! bytes depend only on the packages in it; [`write`](mod@write) turns each planned layer into a
//! compressed tar blob in a [`imgbuild_oci::BlobStore`], hashing the tar (diff_id) and the blob
//! (digest) in the same pass — POSIX tar with PAX headers (`pax.rs`), gzip in parallel blocks
//! whose bytes do not depend on the core count (`pargz.rs`) or multithreaded zstd. Two caches
//! keep rebuilds cheap: package layers by recipe (in [`write`](mod@write)) and whole environments
//! ([`env_cache`]). A full build does not wait for the install to end: [`EarlyLayers`] writes a
//! big package's layer as soon as it is linked, and the plan takes it only if it is exactly the
//! layer it would have written (`early.rs`).
//!
//! What it does not do: install anything (it reads a staging root someone else filled, and
//! its `conda-meta`), decide when the environment cache may be used (the pipeline computes
//! the key), or talk to registries.

mod early;
pub mod env_cache;
mod hashing;
pub mod ownership;
mod pargz;
mod pax;
pub mod plan;
pub mod readback;
pub mod report;
pub mod write;

use std::path::{Path, PathBuf};

pub use early::{EarlyLayers, StartedLayers};
pub use env_cache::{BuiltEnvironment, EnvironmentCache};
pub use ownership::{collect_owners, Owner, OwnerKind, OwnerLabel};
pub use plan::{plan_layers, PlanOptions, PlannedLayer};
pub use write::{
    write_layers, write_layers_with, LayerOrigin, NothingPrewritten, Prewritten, WriteOptions,
    WriteProgress, WrittenLayer,
};

/// Everything that can go wrong while cutting layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read package record")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot walk {root}")]
    Walk {
        root: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("unsafe path '{path}' ({context})")]
    UnsafePath { path: PathBuf, context: String },
    #[error("{path} is a {kind}; images can only hold files, directories and symlinks")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error(
        "a budget of {max_layers} layers is too small: the environment needs at least {needed}"
    )]
    Budget { max_layers: usize, needed: usize },
    #[error(transparent)]
    Oci(#[from] imgbuild_oci::OciError),
}

impl LayerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
