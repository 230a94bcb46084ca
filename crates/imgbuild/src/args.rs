//! Command-line arguments. Names here are a contract with users, docs and other tools.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imgbuild_oci::Compression;

#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build minimal, reproducible OCI images from conda environment.yml files, without a daemon",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Bare flags mean `build`.
    #[command(flatten)]
    pub build: BuildArgs,

    /// Only print errors and the final summary.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Print debug logs (repeat for more).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text, or as one JSON object per line (for log collectors; no progress
    /// line is drawn then).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from an environment.yml.
    Build(Box<BuildArgs>),
    /// Push an image from an OCI image layout to a registry.
    Push(PushArgs),
    /// Solve an environment.yml for one or more platforms and write a lock file (pixi.lock format).
    Lock(LockArgs),
    /// Show what an image is made of: layers, sizes, packages, estimated pull time.
    Inspect(InspectArgs),
    /// Compare an image with a reference image (e.g. one built on an Anaconda base).
    Compare(CompareArgs),
    /// Merge images pushed by digest (one per platform, e.g. from a CI matrix) into one image
    /// index under a tag, without downloading their layers.
    Index(IndexArgs),
    /// Manage a registry build cache (--cache-to).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Log in to a registry: check the credentials and keep them in the containers auth.json
    /// (the file podman and skopeo use), for builds and pushes to read.
    Login(LoginArgs),
    /// Remove a registry's credentials from the containers auth.json.
    Logout(LogoutArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// The registry: HOST or HOST:PORT, or HOST[:PORT]/NAMESPACE for credentials used only
    /// for repositories under that namespace.
    #[arg(value_name = "REGISTRY")]
    pub registry: String,

    /// The user name.
    #[arg(long, short)]
    pub username: String,

    /// Read the password from standard input (the only way: never on the command line).
    #[arg(long, required = true)]
    pub password_stdin: bool,

    /// The auth file to write. Default: REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// Allow plain HTTP or an unverified TLS certificate for this registry HOST[:PORT] only.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// A directory of `*.crt` CA certificates to trust for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// The registry as given to `login`: HOST[:PORT] or HOST[:PORT]/NAMESPACE.
    #[arg(value_name = "REGISTRY")]
    pub registry: String,

    /// The auth file to change (default as for `login`).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Delete the entries of a registry cache repository older than a given age (the
    /// registry must allow deletes; its garbage collection then frees unused blobs).
    Prune(PruneArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The cache repository: REGISTRY/REPOSITORY.
    #[arg(value_name = "REPOSITORY")]
    pub repository: String,

    /// Delete entries made longer ago than this: 30d, 12h, 45m or 90s.
    #[arg(long, value_name = "AGE")]
    pub older_than: String,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    /// The index to write: REGISTRY/REPOSITORY:TAG.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,

    /// An image (or index) to include, by digest: REGISTRY/REPOSITORY@sha256:…, on the same
    /// registry. Repeat it; the index lists them in this order.
    #[arg(long = "add", value_name = "REFERENCE@DIGEST", required = true)]
    pub add: Vec<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Where `inspect` and `compare` read images from, and how.
#[derive(Debug, Clone, Args)]
pub struct ReadImageArgs {
    /// Platform to pick when the image is an index.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Registry images: download every layer, for uncompressed sizes and the conda-meta of
    /// every layer (default: manifest, config and imgbuild's environment layer only).
    #[arg(long)]
    pub deep: bool,

    /// Print the report as JSON (documented in docs/user-guide.md).
    #[arg(long)]
    pub json: bool,

    /// Where registry blobs are cached.
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// oci:DIR[:TAG] (an OCI layout), oci-archive:FILE[:TAG] (an OCI archive; a plain path to a
    /// directory or file works too) or a registry reference.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    #[command(flatten)]
    pub read: ReadImageArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The image to judge, as for `inspect`.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The image to compare it with, as for `inspect`.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,

    #[command(flatten)]
    pub read: ReadImageArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// environment.yml to solve.
    #[arg(long, value_name = "FILE")]
    pub spec: std::path::PathBuf,

    /// Platforms to solve for (repeatable); default linux/amd64.
    #[arg(long = "platform", value_name = "PLATFORM")]
    pub platforms: Vec<String>,

    /// CUDA version of the target (__cuda), e.g. 11.8.
    #[arg(long, value_name = "VER")]
    pub cuda: Option<String>,

    /// glibc version of the target (__glibc); default 2.28.
    #[arg(long, value_name = "VER")]
    pub glibc: Option<String>,

    /// The uv program that resolves the pip: section; default: uv on PATH.
    #[arg(long, value_name = "PATH", env = "IMGBUILD_UV")]
    pub uv: Option<std::path::PathBuf>,

    /// Let the pip: section resolve to source distributions (built on this machine, so only
    /// for its own platform).
    #[arg(long)]
    pub allow_sdist: bool,

    /// Where to write the lock file; default: next to the spec, environment.yml → environment.lock.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Repodata cache.
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry credentials USER:PASSWORD (else IMGBUILD_REGISTRY_USER/_PASSWORD, then
    /// --authfile, then the containers auth.json files podman and skopeo write, then
    /// ~/.docker/config.json, then anonymous).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,

    /// A containers auth.json (as `podman login --authfile` writes) to take credentials from
    /// instead of the default locations.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,

    /// A directory of `*.crt` CA certificates to trust for the registry, instead of its
    /// certs.d directories (/etc/containers/certs.d/HOST:PORT, ~/.config/containers/certs.d/…,
    /// /etc/docker/certs.d/…).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Allow plain HTTP or an unverified TLS certificate for this registry HOST[:PORT] only. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// The registries.conf (containers-registries.conf(5), v2) whose mirrors base images are
    /// pulled from, alone. Default: ~/.config/containers/registries.conf or
    /// /etc/containers/registries.conf, with their registries.conf.d drop-ins.
    #[arg(long, value_name = "FILE", env = "CONTAINERS_REGISTRIES_CONF")]
    pub registries_conf: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// The OCI image layout to push from, DIR or DIR:TAG.
    #[arg(value_name = "LAYOUT[:TAG]")]
    pub layout: String,

    /// Where to push: REGISTRY/REPOSITORY[:TAG].
    #[arg(value_name = "REFERENCE")]
    pub reference: String,

    /// Push only this platform's image when the layout entry is an image index. Default: the
    /// whole index (each platform's image, then the index).
    #[arg(long)]
    pub platform: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SbomFormatArg {
    Spdx,
    Cyclonedx,
}

#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// environment.yml to build (name, channels, dependencies). With --lock, it only says
    /// what was asked for (conda-meta/history) and gives its x-imgbuild options.
    #[arg(long, value_name = "FILE", required_unless_present = "lock")]
    pub spec: Option<PathBuf>,

    /// Build exactly the packages of this lock file (pixi.lock, conda-lock.yml, @EXPLICIT): no solve.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// The pixi.lock environment to build.
    #[arg(long, value_name = "NAME", requires = "lock")]
    pub environment: Option<String>,

    /// Also write the solve as a lock file next to the spec (environment.yml → environment.lock).
    #[arg(long, conflicts_with = "lock")]
    pub write_lock: bool,

    /// The uv program that resolves and installs the pip: section; default: uv on PATH.
    #[arg(long, value_name = "PATH", env = "IMGBUILD_UV")]
    pub uv: Option<PathBuf>,

    /// Byte-compile pip packages (deterministic unchecked-hash .pyc files); needs a target the
    /// build machine can run. Default: no __pycache__ from pip packages.
    #[arg(long)]
    pub compile: bool,

    /// Let the pip: section use source distributions, built on this machine with the
    /// environment's own Python (so only for this machine's platform). Default: wheels only.
    #[arg(long)]
    pub allow_sdist: bool,

    /// Target platform: linux/amd64, linux/arm64, linux/ppc64le (or conda subdirs linux-64,
    /// linux-aarch64, linux-ppc64le). Repeat it or give a comma list for an image index of
    /// several platforms. Default: the spec's x-imgbuild platforms; for --lock, every platform
    /// of the lock; else linux/amd64.
    #[arg(long = "platform", value_name = "PLATFORM", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Keep the built environment in this registry repository (REGISTRY/REPOSITORY), for
    /// builds on other machines to take with --cache-from. Default: x-imgbuild cache-to.
    #[arg(long, value_name = "REPOSITORY")]
    pub cache_to: Option<String>,

    /// Take the environment from this registry repository when another build kept it there
    /// (--cache-to): nothing is downloaded, installed or written for it. Repeatable (read in
    /// order); read-only. Default: x-imgbuild cache-from.
    #[arg(long, value_name = "REPOSITORY")]
    pub cache_from: Vec<String>,

    /// Build several platforms even when they resolve to different versions of a package
    /// (the differences are listed as a warning). Default: such a build is refused.
    #[arg(long)]
    pub allow_version_skew: bool,

    /// Where the environment lives inside the image. Default: x-imgbuild prefix, else /opt/conda.
    #[arg(long)]
    pub prefix: Option<String>,

    /// Base image: a registry reference (`debian:bookworm-slim`,
    /// `gcr.io/distroless/base-debian12`, `registry.example.com/base@sha256:…`),
    /// `oci:DIR[:TAG]` (an OCI image layout on disk), or `scratch` (nothing).
    /// Default: x-imgbuild base, else docker.io/library/debian:bookworm-slim.
    #[arg(long, env = "IMGBUILD_BASE", value_name = "REF")]
    pub base: Option<String>,

    /// Write an OCI image layout to this directory (new, empty, or an existing layout).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Write an OCI archive (a tar of the layout) that `podman load` accepts.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// Name the image NAME[:TAG]; recorded verbatim as org.opencontainers.image.ref.name. Repeatable.
    #[arg(long = "tag", short = 't', value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// CUDA version of the target (sets the __cuda virtual package), e.g. 11.8.
    #[arg(long, value_name = "VER")]
    pub cuda: Option<String>,

    /// glibc version of the target (the __glibc virtual package); default 2.28.
    #[arg(long, value_name = "VER")]
    pub glibc: Option<String>,

    /// Package and repodata cache; two builds may share it.
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Entrypoint: a JSON array (`["python","-m","app"]`) or a single program path.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    /// Default arguments: a JSON array, or a string split on whitespace.
    #[arg(long, value_name = "CMD")]
    pub cmd: Option<String>,

    /// Environment variable for the image, KEY=VALUE. Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Run the packages' activate.d scripts (in a sandbox: no network, read-only environment,
    /// throwaway HOME) instead of only reading their plain `export` lines. They are code by
    /// whoever published each package; without this flag none of it runs on this machine.
    #[arg(long)]
    pub run_activation_scripts: bool,

    /// Working directory of the image.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User the image runs as (name, uid or uid:gid).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Image label, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// After building, push every --tag that names a registry (REGISTRY/REPO:TAG).
    #[arg(long)]
    pub push: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Layer compression: zstd (the default, at the level docs/benchmarks.md chose), zstd:LEVEL
    /// (1-19), or gzip for runtimes older than containerd 1.5, CRI-O/podman with
    /// containers/storage 1.24, Docker 23.
    #[arg(long, value_name = "gzip|zstd|zstd:LEVEL", default_value_t = Compression::default())]
    pub compression: Compression,

    /// Also write the SBOM to this file (it is always in the image, under
    /// <prefix>/conda-meta/imgbuild.spdx.json or imgbuild.cdx.json).
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,

    /// SBOM format: SPDX 2.3 JSON or CycloneDX 1.5 JSON.
    #[arg(long, value_enum, default_value = "spdx")]
    pub sbom_format: SbomFormatArg,

    /// Packages installed larger than this get a layer of their own (e.g. 32MiB, 500KiB, 1000000).
    #[arg(long, default_value = "32MiB", value_name = "SIZE")]
    pub big_package_threshold: String,

    /// Refuse a package whose archive expands to more than this (a decompression bomb fills the
    /// disk otherwise). The largest real packages (CUDA, pytorch) are a few GiB.
    #[arg(long, default_value = "16GiB", value_name = "SIZE")]
    pub max_package_size: String,

    /// Most layers the environment may use (the base image's come on top).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_layers: usize,
}
