//! The build pipeline: a [`BuildPlan`] in, an image in its [`Outputs`] and a [`BuildReport`]
//! out.
//!
//! ```text
//! BuildPlan ──resolve──▶ Resolved ──environment key──▶ cached BuiltEnvironment
//!   (spec | lock,          (records, requested,          │ or: install ▶ StagingRoot
//!    base, target,          pip wheels)                  │     ▶ layers (early + planned)
//!    options)                                            ▼
//!                     SBOM layer + config + manifest ▶ BuiltImage ▶ layout / archive / push
//!                                                                  ▶ BuildReport
//! ```
//!
//! The stages themselves live in the crates below this one: imgbuild-builder (conda and pip:
//! solve, lock files, install, activation, SBOM), imgbuild-layer (staging root → layers, the
//! layer and environment caches), imgbuild-oci (blobs, images, layouts, archives,
//! registries). This crate owns the order they run in and the decisions that join them: which
//! base layers are downloaded, when an environment is taken from the cache, which staging
//! root is reused, which big layers start while packages are still being linked.
//!
//! Why a crate of its own rather than the top of imgbuild-builder: the pipeline needs all
//! three crates, and imgbuild-builder must stay free of OCI and layer concerns (it is the
//! conda side only), so the join sits above them; the CLI sits above it and only parses flags
//! into a plan and prints the report.
//!
//! What it does not do: read flags, environment variables or `x-imgbuild` (the CLI's
//! settings do, and hand over a finished [`BuildPlan`]), print anything (it logs with
//! `tracing` and reports progress to an [`Observer`]), or pick defaults a user did not ask
//! for beyond the ones named here ([`DEFAULT_BASE`], [`DEFAULT_PREFIX`]).

mod builder;
mod env_key;
mod environment;
mod error;
mod observer;
mod plan;
mod push;
mod registry_cache;
mod report;
mod resolve;
mod sbom_layer;

pub use builder::{human_bytes, oci_platform, open_cache, Builder, VersionSkew};
pub use env_key::{environment_key, EnvironmentKey};
pub use error::{BaseError, PipelineError};
pub use observer::{ByteCounter, Observer, Silent, Stage};
pub use plan::{
    BadBase, BaseSource, BuildPlan, Outputs, PipOptions, Source, DEFAULT_BASE, DEFAULT_PREFIX,
};
pub use push::{client_for, push_all, Attachment};
pub use registry_cache::RegistryCache;
pub use report::{
    Attached, BuildReport, Downloads, EnvironmentOrigin, IndexReport, LayerReport, PushReport,
};
pub use resolve::Resolved;
