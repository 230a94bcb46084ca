//! Solved records → a staging root laid out for its final prefix.
//!
//! Packages are downloaded (or copied from `file://` channels) into the shared package cache
//! and checked against the sha256 their record promises, then linked by rattler's `Installer`
//! with `with_alternative_target_prefix`: placeholders, shebangs and noarch-python paths come
//! out as they must be at the final prefix, although the files sit in a temporary directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::try_join_all;
use rattler::install::{ExternalSymlinkPolicy, Installer, LinkOptions, Reporter, Transaction};
use rattler_cache::package_cache::{CacheMetadata, PackageCache};
use rattler_conda_types::package::{FileMode, PathsJson};
use rattler_conda_types::{MatchSpec, PrefixRecord, RepoDataRecord};
use tempfile::TempDir;

use crate::error::BuildError;
use crate::normalize::normalize_staging_root;
use crate::target::TargetPlatform;
use crate::Context;
use imgbuild_fs::InstallPrefix;

/// An installed environment, ready to be cut into layers: a temporary directory (removed when
/// this value is dropped), or the reusable staging root of its prefix and platform (kept, and
/// locked while this value lives).
#[derive(Debug)]
pub struct StagingRoot {
    dir: StagingDir,
    pub prefix: InstallPrefix,
    pub records: Vec<RepoDataRecord>,
    /// What the install did to a reused root (`None` for a fresh one: everything linked).
    pub updated: Option<RootUpdate>,
}

/// What rattler did to a reused staging root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootUpdate {
    pub linked: usize,
    pub unlinked: usize,
    pub unchanged: usize,
}

#[derive(Debug)]
enum StagingDir {
    Temporary(TempDir),
    Reused {
        path: PathBuf,
        /// Held (locked) while this build uses the directory.
        _lock: std::fs::File,
    },
}

impl StagingRoot {
    /// The directory whose contents become `<prefix>` in the image.
    pub fn path(&self) -> &Path {
        match &self.dir {
            StagingDir::Temporary(dir) => dir.path(),
            StagingDir::Reused { path, .. } => path,
        }
    }

    /// The environment's activation (variables and `PATH` entries), evaluated for the image.
    pub fn activation(
        &self,
        platform: TargetPlatform,
        scripts: crate::activation::ActivationScripts,
    ) -> Result<crate::activation::Activation, BuildError> {
        crate::activation::bake(self.path(), &self.prefix, platform, scripts)
    }
}

/// Whether [`install`] may reuse the staging root an earlier build left for the same prefix
/// and platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// Update the earlier root in place: rattler links only the packages that changed and
    /// unlinks the ones that went, so a one-package upgrade does not relink a whole CUDA
    /// environment. Only for roots that hold nothing but conda packages.
    Reuse,
    /// A fresh temporary root (the environment gets more than conda packages, e.g. pip's).
    Fresh,
}

/// Marks a reusable root whose update has not finished: an interrupted install may have left
/// files no record lists, so such a root is wiped before use.
const INCOMPLETE: &str = ".incomplete";

/// The reusable root for `prefix` and `platform` under `parent`, locked for this build, or
/// `None` when another build holds it (that build's root is left alone; this one uses a
/// temporary root).
fn reusable_root(
    parent: &Path,
    prefix: &InstallPrefix,
    platform: TargetPlatform,
) -> Result<Option<(PathBuf, std::fs::File)>, BuildError> {
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(
        format!("{}\n{}", prefix.as_str(), platform.subdir()).as_bytes(),
    ));
    let path = parent.join(format!("root-{}", &key[..16]));
    let lock_path = parent.join(format!("root-{}.lock", &key[..16]));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| BuildError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(BuildError::io(&lock_path, e)),
    }
    let marker = parent.join(format!("root-{}{INCOMPLETE}", &key[..16]));
    if marker.exists() && path.exists() {
        tracing::info!(
            "{} was left half-updated; starting it afresh",
            path.display()
        );
        std::fs::remove_dir_all(&path).map_err(|e| BuildError::io(&path, e))?;
    }
    std::fs::create_dir_all(&path).map_err(|e| BuildError::io(&path, e))?;
    std::fs::write(&marker, b"").map_err(|e| BuildError::io(&marker, e))?;
    Ok(Some((path, lock)))
}

/// Fetches, checks and links `records` into a staging root under the cache directory.
///
/// `requested` are the specs the user asked for: they go into each matching record's
/// `requested_spec(s)` and into `conda-meta/history`, stamped with `timestamp` (the image's
/// fixed time), so conda inside the image knows what was asked for and what came as a
/// dependency. `on_linked` hears of each package as soon as it is linked.
#[allow(clippy::too_many_arguments)]
pub async fn install(
    ctx: &Context,
    records: &[RepoDataRecord],
    requested: &[MatchSpec],
    prefix: &InstallPrefix,
    platform: TargetPlatform,
    timestamp: u64,
    staging: Staging,
    on_linked: Option<OnLinked>,
) -> Result<StagingRoot, BuildError> {
    let cache = ctx.package_cache_for(platform);
    let packages_dir = ctx.cache().packages_for(platform);
    // rattler's cache updates an entry in place only under the cache's global lock (its
    // per-package metadata files are not locks): without it, two builds sharing a cache
    // directory extract the same package at once and one fails renaming its temporary copy
    // into place. The lock is let go before linking, where rattler's installer takes it itself.
    let cache_lock = cache
        .acquire_global_lock()
        .await
        .map_err(|source| BuildError::CacheLock {
            path: packages_dir.clone(),
            source,
        })?;
    let fetched =
        try_join_all(records.iter().map(|r| fetch(ctx, &cache, &packages_dir, r))).await?;
    let mut installed_sizes = HashMap::new();
    let mut all_paths = Vec::with_capacity(records.len());
    for (record, meta) in records.iter().zip(&fetched) {
        let paths = PathsJson::from_package_directory_with_deprecated_fallback(meta.path())
            .map_err(|e| BuildError::io(meta.path(), e))?;
        let size = check_package(record, meta.path(), &paths, prefix)?;
        installed_sizes.insert(label(record), size);
        all_paths.push(paths);
    }
    // Nothing is linked before every entry of every package is known to stay in the root.
    let entries: Vec<crate::package_check::PackageEntries<'_>> = records
        .iter()
        .zip(&fetched)
        .zip(&all_paths)
        .map(
            |((record, meta), paths)| crate::package_check::PackageEntries {
                package: label(record),
                dir: meta.path(),
                paths,
            },
        )
        .collect();
    if let Err(refused) = crate::package_check::check_environment(&entries) {
        // Leave no trace: the refused package's extracted files go from the package cache.
        if let Some(e) = entries.iter().find(|e| e.package == refused.package) {
            let _ = std::fs::remove_dir_all(e.dir);
            let mut lock = e.dir.as_os_str().to_owned();
            lock.push(".lock");
            let _ = std::fs::remove_file(lock);
        }
        return Err(refused.into());
    }
    drop(entries);
    drop(cache_lock);

    let staging_parent = ctx.cache().staging();
    std::fs::create_dir_all(&staging_parent).map_err(|e| BuildError::io(&staging_parent, e))?;
    let reused = match staging {
        Staging::Reuse => reusable_root(&staging_parent, prefix, platform)?,
        Staging::Fresh => None,
    };
    let dir = match reused {
        Some((path, lock)) => StagingDir::Reused { path, _lock: lock },
        None => StagingDir::Temporary(
            tempfile::Builder::new()
                .prefix("env-")
                .tempdir_in(&staging_parent)
                .map_err(|e| BuildError::io(&staging_parent, e))?,
        ),
    };
    let mut root = StagingRoot {
        dir,
        prefix: prefix.clone(),
        records: records.to_vec(),
        updated: None,
    };

    let mut installer = Installer::new().with_link_options(LinkOptions {
        // rattler would otherwise probe with a new symlink for every package: hundreds of inodes
        // made and deleted, which ext4 then scans past for the inodes the install needs.
        allow_symbolic_links: Some(can_symlink(root.path())),
        ..LinkOptions::default()
    });
    if let Some(on_linked) = on_linked {
        installer.set_reporter(LinkReporter {
            root: root.path().to_path_buf(),
            installed_sizes,
            started: Mutex::new(Vec::new()),
            on_linked,
        });
    }
    let result = installer
        .with_package_cache(cache)
        .with_download_client(ctx.client.clone())
        .with_target_platform(platform.subdir())
        .with_alternative_target_prefix(PathBuf::from(prefix.as_str()))
        // Link scripts would run on the build host, against the staging path.
        .with_execute_link_scripts(false)
        .with_external_symlink_policy(ExternalSymlinkPolicy::Deny)
        .with_requested_specs(requested.to_vec())
        .install(root.path(), records.to_vec())
        .await
        .map_err(|e| BuildError::Link {
            source: Box::new(e),
        })?;
    if let StagingDir::Reused { path, .. } = &root.dir {
        let t = &result.transaction;
        let update = RootUpdate {
            linked: t.installed_packages().count(),
            unlinked: t.removed_packages().count(),
            unchanged: t.unchanged_packages().len(),
        };
        tracing::info!(
            "staging root {} updated: {} packages linked, {} unlinked, {} unchanged",
            path.display(),
            update.linked,
            update.unlinked,
            update.unchanged,
        );
        root.updated = Some(update);
    }

    normalize_staging_root(root.path())?;
    crate::history::write(root.path(), records, requested, timestamp)?;
    if let StagingDir::Reused { path, .. } = &root.dir {
        let marker = PathBuf::from(format!("{}{INCOMPLETE}", path.display()));
        std::fs::remove_file(&marker).map_err(|e| BuildError::io(&marker, e))?;
    }
    Ok(root)
}

/// The package of `record` in the package cache, fetched and extracted if it is not there:
/// downloaded (or read from a `file://` channel), checked against the sha256 the record
/// promises, then extracted by [`crate::extract`], which checks every entry before it touches
/// the disk. rattler's cache does the bookkeeping (a temporary directory renamed into place).
async fn fetch(
    ctx: &Context,
    cache: &PackageCache,
    packages_dir: &Path,
    record: &RepoDataRecord,
) -> Result<CacheMetadata, BuildError> {
    let fetch_error = |source: Arc<dyn std::error::Error + Send + Sync>| BuildError::Fetch {
        package: record.identifier.to_string(),
        url: record.url.to_string(),
        source,
    };
    let job = Arc::new(FetchJob {
        url: record.url.clone(),
        package: label(record),
        sha256: record.package_record.sha256.map(|h| h.into()),
        client: ctx.client.clone(),
        progress: ctx.download_progress.clone(),
        downloads_dir: packages_dir.to_path_buf(),
        max_bytes: ctx.max_package_size,
    });
    let result = cache
        .get_or_fetch(
            &record.package_record,
            move |dest| {
                let job = job.clone();
                async move { job.run(&dest).await.map(|sha| Some(sha.into())) }
            },
            None,
        )
        .await;
    result.map_err(|e| {
        use rattler_cache::package_cache::{PackageCacheError, PackageCacheLayerError};
        let inner = match &e {
            PackageCacheError::LayerError(layer) => match layer.downcast_ref() {
                Some(PackageCacheLayerError::FetchError(inner)) => Some(inner.clone()),
                _ => None,
            },
            _ => None,
        };
        let Some(inner) = inner else {
            return fetch_error(Arc::new(e));
        };
        let Some(failure) = inner.downcast_ref::<FetchFailure>() else {
            return fetch_error(inner);
        };
        if !matches!(failure, FetchFailure::Download(_) | FetchFailure::Io { .. }) {
            // Refused or not what was promised: leave no trace of it in the package cache
            // (rattler's cache removed the extraction; its metadata file stays otherwise).
            let entry = packages_dir.join(label(record));
            let mut lock = entry.into_os_string();
            lock.push(".lock");
            let _ = std::fs::remove_file(lock);
        }
        match failure {
            FetchFailure::Extract(crate::extract::ExtractError::Refused(r)) => {
                BuildError::UnsafeArchive(r.clone())
            }
            FetchFailure::Extract(crate::extract::ExtractError::Listed(r)) => {
                BuildError::UnsafePackage(r.clone())
            }
            FetchFailure::Extract(crate::extract::ExtractError::Io { path, source })
            | FetchFailure::Io { path, source } => BuildError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            _ => fetch_error(inner),
        }
    })
}

/// Everything one package fetch needs, owned (rattler's cache runs it as a `'static` task).
struct FetchJob {
    url: url::Url,
    package: String,
    sha256: Option<[u8; 32]>,
    client: reqwest_middleware::ClientWithMiddleware,
    progress: Option<Arc<crate::download_progress::DownloadProgress>>,
    downloads_dir: PathBuf,
    max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
enum FetchFailure {
    #[error(transparent)]
    Download(crate::download::DownloadFailure),
    #[error("{0} is not a local path")]
    NotLocal(url::Url),
    #[error(
        "the archive has sha256 {actual}, but the channel's record promises {expected}; it was \
         not used (a changed upload, a proxy rewriting files, or stale repodata)"
    )]
    HashMismatch { expected: String, actual: String },
    #[error(transparent)]
    Extract(crate::extract::ExtractError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchJob {
    /// Fetches the archive, checks its hash and extracts it into `dest`; returns its sha256.
    async fn run(&self, dest: &Path) -> Result<[u8; 32], FetchFailure> {
        use crate::download::{download, with_retries, DownloadError};
        let (archive, sha256, _download) = if self.url.scheme() == "file" {
            let path = self
                .url
                .to_file_path()
                .map_err(|()| FetchFailure::NotLocal(self.url.clone()))?;
            let hashed = path.clone();
            let sha = tokio::task::spawn_blocking(move || hash_file(&hashed))
                .await
                .expect("hashing does not panic")
                .map_err(|source| FetchFailure::Io {
                    path: path.clone(),
                    source,
                })?;
            (path, sha, None)
        } else {
            if let Some(p) = &self.progress {
                p.packages
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let downloaded = with_retries(self.url.as_str(), || {
                download(
                    &self.client,
                    self.url.as_str(),
                    &self.downloads_dir,
                    self.progress.as_deref(),
                )
            })
            .await
            .map_err(|e| match e {
                DownloadError::Transient(f) | DownloadError::Final(f) => FetchFailure::Download(f),
                DownloadError::Io { path, source } => FetchFailure::Io { path, source },
            })?;
            // The archive keeps the URL's file name: its suffix says how to read it.
            let named = dest.with_extension("download");
            std::fs::create_dir_all(&named).map_err(|source| FetchFailure::Io {
                path: named.clone(),
                source,
            })?;
            let path = named.join(
                self.url
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or("package"),
            );
            let sha = downloaded.sha256;
            downloaded
                .file
                .persist(&path)
                .map_err(|e| FetchFailure::Io {
                    path: path.clone(),
                    source: e.error,
                })?;
            (path.clone(), sha, Some(RemoveOnDrop(named)))
        };
        if let Some(expected) = self.sha256.filter(|e| *e != sha256) {
            return Err(FetchFailure::HashMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(sha256),
            });
        }
        let (dest, package, max) = (dest.to_path_buf(), self.package.clone(), self.max_bytes);
        tokio::task::spawn_blocking(move || {
            crate::extract::extract(&archive, &dest, &package, max)?;
            // rattler's installer validates the cache entry the same way before linking; one
            // it found invalid it would fetch and extract again itself, unchecked.
            rattler_cache::validation::validate_package_directory(
                &dest,
                rattler_cache::validation::ValidationMode::Skip,
            )
            .map(|_| ())
            .map_err(crate::extract::ExtractError::NotAPackage)
        })
        .await
        .expect("extraction does not panic")
        .map_err(FetchFailure::Extract)?;
        Ok(sha256)
    }
}

/// A directory removed (with what is in it) when this value is dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Whether symbolic links can be made in `dir` (what rattler would ask for each package).
fn can_symlink(dir: &Path) -> bool {
    let probe = dir.join(".imgbuild-symlink-probe");
    let _ = std::fs::remove_file(&probe);
    let ok = std::os::unix::fs::symlink("./", &probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Called as each package is linked into the staging root: the root, the package's label
/// (`name-version-build`, the stem of its conda-meta record) and the installed size of every
/// package of the environment by label (from their `paths.json`). Lets layers of big packages
/// start while the rest is still being linked.
pub type OnLinked = Arc<dyn Fn(&Path, &str, &HashMap<String, u64>) + Send + Sync>;

/// `name-version-build`, as in conda-meta file names.
fn label(record: &RepoDataRecord) -> String {
    let p = &record.package_record;
    format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build)
}

/// Tells [`OnLinked`] about each package rattler has finished linking (its conda-meta record
/// is written by then); every other report is ignored.
struct LinkReporter {
    root: PathBuf,
    installed_sizes: HashMap<String, u64>,
    /// Labels by link index.
    started: Mutex<Vec<String>>,
    on_linked: OnLinked,
}

impl Reporter for LinkReporter {
    fn on_link_start(&self, _operation: usize, record: &RepoDataRecord) -> usize {
        let mut started = self.started.lock().expect("lock not poisoned");
        started.push(label(record));
        started.len() - 1
    }

    fn on_link_complete(&self, index: usize) {
        let label = self.started.lock().expect("lock not poisoned")[index].clone();
        (self.on_linked)(&self.root, &label, &self.installed_sizes);
    }

    fn on_transaction_start(&self, _: &Transaction<PrefixRecord, RepoDataRecord>) {}
    fn on_transaction_operation_start(&self, _: usize) {}
    fn on_populate_cache_start(&self, _: usize, _: &RepoDataRecord) -> usize {
        0
    }
    fn on_validate_start(&self, _: usize) -> usize {
        0
    }
    fn on_validate_complete(&self, _: usize) {}
    fn on_download_start(&self, _: usize) -> usize {
        0
    }
    fn on_download_progress(&self, _: usize, _: u64, _: Option<u64>) {}
    fn on_download_completed(&self, _: usize) {}
    fn on_populate_cache_complete(&self, _: usize) {}
    fn on_unlink_start(&self, _: usize, _: &PrefixRecord) -> usize {
        0
    }
    fn on_unlink_complete(&self, _: usize) {}
    fn on_transaction_operation_complete(&self, _: usize) {}
    fn on_transaction_complete(&self) {}
    fn on_post_link_start(&self, _: &str, _: &str) -> usize {
        0
    }
    fn on_post_link_complete(&self, _: usize, _: bool) {}
    fn on_pre_unlink_start(&self, _: &str, _: &str) -> usize {
        0
    }
    fn on_pre_unlink_complete(&self, _: usize, _: bool) {}
}

/// Checks a fetched package against the prefix and returns its installed size.
///
/// Binary placeholders can only be replaced by a prefix that is no longer than they are:
/// checked before linking so the error names the package, the file and the limit.
fn check_package(
    record: &RepoDataRecord,
    package_dir: &Path,
    paths: &PathsJson,
    prefix: &InstallPrefix,
) -> Result<u64, BuildError> {
    let installed_size = paths
        .paths
        .iter()
        .map(|entry| {
            entry.size_in_bytes.unwrap_or_else(|| {
                package_dir
                    .join(&entry.relative_path)
                    .symlink_metadata()
                    .map_or(0, |m| m.len())
            })
        })
        .sum();
    let tightest = paths
        .paths
        .iter()
        .filter_map(|entry| {
            let ph = entry.prefix_placeholder.as_ref()?;
            (ph.file_mode == FileMode::Binary)
                .then_some((ph.placeholder.len(), &entry.relative_path))
        })
        .min_by_key(|(len, _)| *len);
    match tightest {
        Some((max_len, file)) if prefix.as_str().len() > max_len => {
            Err(BuildError::PrefixTooLong {
                prefix: prefix.to_string(),
                prefix_len: prefix.as_str().len(),
                package: record.identifier.to_string(),
                file: file.display().to_string(),
                max_len,
            })
        }
        _ => Ok(installed_size),
    }
}
