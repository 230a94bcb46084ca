//! Who owns each file of a staging root.
//!
//! Conda packages list their files in `conda-meta/<name>-<version>-<build>.json`; everything
//! else (conda-meta itself, files written by the environment step) belongs to the
//! environment. Every path ends up with exactly one owner.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rattler_conda_types::PrefixRecord;
use walkdir::WalkDir;

use crate::LayerError;

/// What put a set of files into the staging root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerKind {
    /// A conda package, identified as `name-version-build`.
    Conda {
        name: String,
        version: String,
        build: String,
        /// The package archive's sha256, when the record has one.
        sha256: Option<String>,
    },
    /// The environment itself: `conda-meta/` and anything no package claims.
    Environment,
}

/// One owner and the paths (relative to the staging root) it owns.
#[derive(Debug, Clone)]
pub struct Owner {
    pub kind: OwnerKind,
    /// Paths relative to the staging root, sorted by bytes. Empty directories appear too.
    pub paths: Vec<PathBuf>,
    /// Bytes of regular files (symlinks count their target length).
    pub size: u64,
}

impl Owner {
    /// A short label: `name-version-build` or `environment`.
    pub fn label(&self) -> String {
        match &self.kind {
            OwnerKind::Conda {
                name,
                version,
                build,
                ..
            } => format!("{name}-{version}-{build}"),
            OwnerKind::Environment => "environment".to_string(),
        }
    }

    /// The package name, for conda owners.
    pub fn package_name(&self) -> Option<&str> {
        match &self.kind {
            OwnerKind::Conda { name, .. } => Some(name),
            OwnerKind::Environment => None,
        }
    }
}

/// Every owner of a staging root: conda packages sorted by label, then the environment.
pub fn collect_owners(root: &Path) -> Result<Vec<Owner>, LayerError> {
    let meta_dir = root.join("conda-meta");
    let mut claimed: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut owners = Vec::new();
    if meta_dir.is_dir() {
        let mut records: Vec<PathBuf> = fs::read_dir(&meta_dir)
            .map_err(|e| LayerError::io(&meta_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        records.sort();
        for record_path in records {
            let record = PrefixRecord::from_path(&record_path).map_err(|e| LayerError::Record {
                path: record_path.clone(),
                message: e.to_string(),
            })?;
            let pkg = &record.repodata_record.package_record;
            let idx = owners.len();
            let mut paths = Vec::new();
            for file in &record.files {
                check_relative(file, &record_path)?;
                if root.join(file).symlink_metadata().is_err() {
                    tracing::warn!(
                        "{}: lists {} but it is not installed",
                        record_path.display(),
                        file.display()
                    );
                    continue;
                }
                if claimed.insert(file.clone(), idx).is_none() {
                    paths.push(file.clone());
                }
            }
            owners.push(Owner {
                kind: OwnerKind::Conda {
                    name: pkg.name.as_normalized().to_string(),
                    version: pkg.version.to_string(),
                    build: pkg.build.to_string(),
                    sha256: pkg.sha256.map(|h| hex::encode(h.as_slice())),
                },
                paths,
                size: 0,
            });
        }
    }

    let mut env_paths = Vec::new();
    for entry in WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| LayerError::Walk {
            root: root.to_path_buf(),
            message: e.to_string(),
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir stays under root")
            .to_path_buf();
        let ft = entry.file_type();
        if ft.is_dir() {
            let empty = fs::read_dir(entry.path())
                .map_err(|e| LayerError::io(entry.path(), e))?
                .next()
                .is_none();
            if empty {
                env_paths.push(rel);
            }
            continue;
        }
        if !claimed.contains_key(&rel) {
            env_paths.push(rel);
        }
    }
    owners.push(Owner {
        kind: OwnerKind::Environment,
        paths: env_paths,
        size: 0,
    });

    for owner in &mut owners {
        owner.paths.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        owner.size = owner
            .paths
            .iter()
            .filter_map(|p| root.join(p).symlink_metadata().ok())
            .filter(|m| !m.is_dir())
            .map(|m| m.len())
            .sum();
    }
    Ok(owners)
}

fn check_relative(path: &Path, record: &Path) -> Result<(), LayerError> {
    use std::path::Component;
    if path.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(LayerError::UnsafePath {
            path: path.to_path_buf(),
            context: record.display().to_string(),
        })
    }
}
