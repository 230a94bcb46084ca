//! The cache directory that builds share: who is using it, and what a killed build left there.
//!
//! Every write into the cache goes through a temporary name that is renamed into place, so a
//! build killed with SIGKILL never leaves a corrupt entry, only temporaries that nothing would
//! ever rename. They cannot be told from the temporaries of a build that is still running by
//! looking at them, so each run holds a shared lock on `<cache>/.imgbuild-runs.lock` for its
//! whole life; a run that finds itself alone (it gets the lock exclusively) knows every
//! temporary belongs to a run that has ended, removes them, and only then becomes a shared
//! user like the others. A cache that is never idle keeps its leftovers until it is.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The cache directory could not be opened or locked.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {path} as the cache directory: {source}")]
pub struct CacheDirError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CacheDirError + '_ {
    move |source| CacheDirError {
        path: path.to_path_buf(),
        source,
    }
}

const RUNS_LOCK: &str = ".imgbuild-runs.lock";

/// The cache directory's layout, in one place. Everything a build keeps lives under it:
///
/// | path | what | written by |
/// |---|---|---|
/// | `pkgs/` | extracted conda packages (rattler's package cache) | [`crate::install`] |
/// | `repodata/` | channel repodata | [`crate::solve`] |
/// | `wheels/` | downloaded wheels, by sha256 | [`crate::wheel_fetch`] |
/// | `uv/` | uv's own cache | [`crate::pip`] |
/// | `staging/` | staging roots (reused and temporary), pip work directories | [`crate::install`] |
/// | `blobs/sha256/` | compressed layers, configs, manifests (an OCI blob store) | imgbuild-oci |
/// | `layers/` | layer recipe → written layer | imgbuild-layer |
/// | `environments/` | environment key → its layers and activation | imgbuild-layer |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// The cache at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The package cache for linux/amd64 builds (and the solver's).
    pub fn packages(&self) -> PathBuf {
        self.root.join(PKGS)
    }

    /// The package cache for builds of `platform`. rattler's cache names an entry after the
    /// package's name, version and build only, and one name-version-build can be two
    /// different archives on two platforms (`_openmp_mutex-4.5-2_gnu` is, on conda-forge):
    /// one directory for both would have each platform's build find the other's files,
    /// throw them away and fetch its own again. So each platform has its own (linux/amd64
    /// keeps `pkgs`, where caches made before multi-platform builds have it); a noarch
    /// package is kept once per platform.
    pub fn packages_for(&self, platform: crate::TargetPlatform) -> PathBuf {
        match platform {
            crate::TargetPlatform::LinuxAmd64 => self.packages(),
            crate::TargetPlatform::LinuxArm64 => self.root.join(PKGS_AARCH64),
            crate::TargetPlatform::LinuxPpc64le => self.root.join(PKGS_PPC64LE),
        }
    }

    pub fn repodata(&self) -> PathBuf {
        self.root.join(REPODATA)
    }

    pub fn wheels(&self) -> PathBuf {
        self.root.join(WHEELS)
    }

    pub fn uv(&self) -> PathBuf {
        self.root.join(UV)
    }

    pub fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// The blob store's root (blobs are under `blobs/sha256/` in it, as in an OCI layout).
    pub fn blob_store_root(&self) -> &Path {
        &self.root
    }

    pub fn layers(&self) -> PathBuf {
        self.root.join(LAYERS)
    }

    pub fn environments(&self) -> PathBuf {
        self.root.join(ENVIRONMENTS)
    }
}

const PKGS: &str = "pkgs";
const PKGS_AARCH64: &str = "pkgs-linux-aarch64";
const PKGS_PPC64LE: &str = "pkgs-linux-ppc64le";
const REPODATA: &str = "repodata";
const WHEELS: &str = "wheels";
const UV: &str = "uv";
const STAGING: &str = "staging";
const BLOBS: &str = "blobs/sha256";
const LAYERS: &str = "layers";
const ENVIRONMENTS: &str = "environments";

/// This process's registration as a user of a cache directory; lasts as long as the value.
#[derive(Debug)]
pub struct CacheRun {
    _lock: File,
}

/// What [`CacheRun::start`] did about leftovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// No other run was using the cache: these leftovers of earlier runs were removed.
    Swept { entries: usize, bytes: u64 },
    /// Other runs are using the cache; leftovers (if any) are left for a later run.
    Busy,
}

impl CacheRun {
    /// Registers a run on `cache_dir`, first removing what interrupted runs left there if no
    /// other run is using it.
    pub fn start(cache_dir: &Path) -> Result<(Self, Sweep), CacheDirError> {
        std::fs::create_dir_all(cache_dir).map_err(io_error(cache_dir))?;
        let path = cache_dir.join(RUNS_LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let sweep = match lock.try_lock() {
            Ok(()) => {
                let (entries, bytes) = sweep(cache_dir);
                Sweep::Swept { entries, bytes }
            }
            Err(std::fs::TryLockError::WouldBlock) => Sweep::Busy,
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path)(e)),
        };
        // Turns the exclusive lock into a shared one, or waits for a sweeping run to finish.
        lock.lock_shared().map_err(io_error(&path))?;
        Ok((Self { _lock: lock }, sweep))
    }
}

/// Which names in which directory of the cache are temporaries (see the module docs: only
/// called when no run owns them).
fn is_leftover(dir: &str, name: &str) -> bool {
    match dir {
        // BlobStore temporaries and atomically replaced JSON entries.
        BLOBS | LAYERS | ENVIRONMENTS => name.starts_with(".tmp-"),
        WHEELS => name.starts_with(".download-") || name.starts_with(".tmp-"),
        // Temporary staging roots, pip's work directories, and roots an update never finished
        // (a marker `root-<key>.incomplete` beside `root-<key>`).
        STAGING => {
            name.starts_with("env-")
                || name.starts_with(".imgbuild-pip-")
                || name.ends_with(".incomplete")
        }
        // rattler extracts a package into `.<name>-<version>-<build><random>` and renames it.
        PKGS | PKGS_AARCH64 | PKGS_PPC64LE => name.starts_with('.') && name != ".cache.lock",
        _ => false,
    }
}

/// Removes every leftover; returns how many entries and bytes went. Best effort: something
/// that cannot be removed stays and is logged, it does not fail the build.
fn sweep(cache_dir: &Path) -> (usize, u64) {
    let (mut entries, mut bytes) = (0, 0);
    for dir in [
        BLOBS,
        LAYERS,
        ENVIRONMENTS,
        WHEELS,
        STAGING,
        PKGS,
        PKGS_AARCH64,
        PKGS_PPC64LE,
    ] {
        let Ok(listing) = std::fs::read_dir(cache_dir.join(dir)) else {
            continue;
        };
        for entry in listing.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_leftover(dir, name) {
                continue;
            }
            let mut doomed = vec![entry.path()];
            if let Some(root) = name.strip_suffix(".incomplete") {
                doomed.push(cache_dir.join(dir).join(root));
            }
            for path in doomed {
                let size = tree_size(&path);
                match remove(&path) {
                    Ok(()) => {
                        entries += 1;
                        bytes += size;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        "cannot remove {}, left by an interrupted build: {e}",
                        path.display()
                    ),
                }
            }
        }
    }
    (entries, bytes)
}

fn remove(path: &PathBuf) -> std::io::Result<()> {
    if path.symlink_metadata()?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Bytes under `path` (not following symlinks), for the log line.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|listing| listing.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_run_removes_leftovers_and_a_second_run_leaves_them() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        for (dir, name) in [
            ("blobs/sha256", ".tmp-abc"),
            ("staging", "env-xyz"),
            ("staging", "root-0123.incomplete"),
            ("pkgs", ".busybox-1.0-0XyZ12"),
        ] {
            std::fs::create_dir_all(c.join(dir)).unwrap();
            std::fs::write(c.join(dir).join(name), b"12345").unwrap();
        }
        std::fs::create_dir_all(c.join("staging/root-0123/bin")).unwrap();
        std::fs::write(c.join("staging/root-0123/bin/x"), b"1").unwrap();
        std::fs::write(c.join("pkgs/.cache.lock"), b"").unwrap();
        std::fs::write(c.join("blobs/sha256/aaaa"), b"kept").unwrap();

        let (first, swept) = CacheRun::start(c).unwrap();
        assert_eq!(
            swept,
            Sweep::Swept {
                entries: 5,
                bytes: 21
            }
        );
        assert!(c.join("pkgs/.cache.lock").exists());
        assert!(c.join("blobs/sha256/aaaa").exists());
        assert!(!c.join("staging/root-0123").exists());

        std::fs::write(c.join("blobs/sha256/.tmp-def"), b"").unwrap();
        let (_second, swept) = CacheRun::start(c).unwrap();
        assert_eq!(swept, Sweep::Busy);
        assert!(c.join("blobs/sha256/.tmp-def").exists());
        drop(first);
    }
}
