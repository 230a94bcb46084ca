//! Who owns each file of a staging root.
//!
//! Conda packages list their files in `conda-meta/<name>-<version>-<build>.json`; a Python
//! distribution in `lib/pythonX.Y/site-packages` whose `.dist-info` no conda record lists was
//! installed by the pip step, and its `RECORD` lists its files; everything else (conda-meta
//! itself, files written by the environment step) belongs to the environment. Every path ends
//! up with exactly one owner.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    /// A PyPI distribution installed by the pip step.
    Pip {
        name: String,
        version: String,
        /// sha256 of its `RECORD`, which lists every file with its hash: the identity of
        /// what it installed.
        record_sha256: String,
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

/// An owner's name, as layers, the layer cache, the environment cache and reports carry it.
/// Its text — `NAME-VERSION-BUILD` for a conda package, `pip:NAME-VERSION` for a pip
/// distribution, `environment`, and `sbom` for the SBOM's own layer — is what the caches store
/// and what [`crate::plan::PlannedLayer::kind`] turns into a history line, so [`fmt::Display`]
/// and [`FromStr`] are each other's inverse and that text is part of the cache format. Labels
/// order as their text does (the layer plan sorts by it, so the order is part of the digests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerLabel {
    /// `NAME-VERSION-BUILD`.
    Conda(String),
    /// `pip:NAME-VERSION`.
    Pip { name: String, version: String },
    /// `conda-meta` and the files no package owns.
    Environment,
    /// The layer that holds only the SBOM.
    Sbom,
}

const PIP_PREFIX: &str = "pip:";

impl OwnerLabel {
    /// `NAME-VERSION` of a pip distribution.
    pub fn as_pip(&self) -> Option<String> {
        match self {
            Self::Pip { name, version } => Some(format!("{name}-{version}")),
            _ => None,
        }
    }
}

impl fmt::Display for OwnerLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conda(label) => f.write_str(label),
            Self::Pip { name, version } => write!(f, "{PIP_PREFIX}{name}-{version}"),
            Self::Environment => f.write_str("environment"),
            Self::Sbom => f.write_str("sbom"),
        }
    }
}

impl FromStr for OwnerLabel {
    type Err = std::convert::Infallible;

    /// Every text is some label: `environment` and `sbom` cannot be conda labels (those have
    /// two dashes), and a pip distribution's version has no dash (PEP 440's normal form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "environment" => Self::Environment,
            "sbom" => Self::Sbom,
            _ => match s
                .strip_prefix(PIP_PREFIX)
                .and_then(|rest| rest.rsplit_once('-'))
            {
                Some((name, version)) => Self::Pip {
                    name: name.to_string(),
                    version: version.to_string(),
                },
                None => Self::Conda(s.to_string()),
            },
        })
    }
}

impl Ord for OwnerLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for OwnerLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<&str> for OwnerLabel {
    fn eq(&self, other: &&str) -> bool {
        other.parse::<OwnerLabel>().is_ok_and(|o| o == *self)
    }
}

impl serde::Serialize for OwnerLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OwnerLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.parse().unwrap_or_else(|never| match never {}))
    }
}

impl Owner {
    /// Its label (see [`OwnerLabel`]).
    pub fn label(&self) -> OwnerLabel {
        match &self.kind {
            OwnerKind::Conda {
                name,
                version,
                build,
                ..
            } => OwnerLabel::Conda(format!("{name}-{version}-{build}")),
            OwnerKind::Pip { name, version, .. } => OwnerLabel::Pip {
                name: name.clone(),
                version: version.clone(),
            },
            OwnerKind::Environment => OwnerLabel::Environment,
        }
    }

    /// The package name, for conda owners.
    pub fn package_name(&self) -> Option<&str> {
        match &self.kind {
            OwnerKind::Conda { name, .. } => Some(name),
            OwnerKind::Pip { .. } | OwnerKind::Environment => None,
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
            let (kind, files) = record_owner(root, &read_record(&record_path)?, &record_path)?;
            let idx = owners.len();
            let paths = files
                .into_iter()
                .filter(|f| claimed.insert(f.clone(), idx).is_none())
                .collect();
            owners.push(Owner {
                kind,
                paths,
                size: 0,
            });
        }
    }

    for dist_info in unclaimed_dist_infos(root, &claimed)? {
        let idx = owners.len();
        let (owner, listed) = pip_owner(root, &dist_info)?;
        let paths = listed
            .into_iter()
            .filter(|p| claimed.insert(p.clone(), idx).is_none())
            .collect();
        owners.push(Owner { paths, ..owner });
    }

    let mut env_paths = Vec::new();
    for entry in WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|source| LayerError::Walk {
            root: root.to_path_buf(),
            source,
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
        owner.finish(root);
    }
    Ok(owners)
}

/// Reads a conda-meta record.
pub(crate) fn read_record(record_path: &Path) -> Result<PrefixRecord, LayerError> {
    PrefixRecord::from_path(record_path).map_err(|source| LayerError::Record {
        path: record_path.to_path_buf(),
        source,
    })
}

/// The owner a conda-meta record (read from `record_path`) describes, with every file it lists
/// that is installed — before any other package's claims are taken into account (see
/// [`collect_owners`]).
pub(crate) fn conda_owner(
    root: &Path,
    record: &PrefixRecord,
    record_path: &Path,
) -> Result<Owner, LayerError> {
    let (kind, paths) = record_owner(root, record, record_path)?;
    let mut owner = Owner {
        kind,
        paths,
        size: 0,
    };
    owner.finish(root);
    Ok(owner)
}

/// A conda-meta record's package identity and the files it lists that are installed, in the
/// record's order.
fn record_owner(
    root: &Path,
    record: &PrefixRecord,
    record_path: &Path,
) -> Result<(OwnerKind, Vec<PathBuf>), LayerError> {
    let pkg = &record.repodata_record.package_record;
    let mut paths = Vec::new();
    for file in &record.files {
        check_relative(file, record_path)?;
        if root.join(file).symlink_metadata().is_err() {
            tracing::warn!(
                "{}: lists {} but it is not installed",
                record_path.display(),
                file.display()
            );
            continue;
        }
        paths.push(file.clone());
    }
    let kind = OwnerKind::Conda {
        name: pkg.name.as_normalized().to_string(),
        version: pkg.version.to_string(),
        build: pkg.build.to_string(),
        sha256: pkg.sha256.map(|h| hex::encode(h.as_slice())),
    };
    Ok((kind, paths))
}

impl Owner {
    /// Sorts the paths by bytes and sums the sizes of what they name.
    fn finish(&mut self, root: &Path) {
        self.paths.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        self.size = self
            .paths
            .iter()
            .filter_map(|p| root.join(p).symlink_metadata().ok())
            .filter(|m| !m.is_dir())
            .map(|m| m.len())
            .sum();
    }
}

/// `lib/python*/site-packages/*.dist-info` directories whose RECORD no conda record claims,
/// sorted.
fn unclaimed_dist_infos(
    root: &Path,
    claimed: &BTreeMap<PathBuf, usize>,
) -> Result<Vec<PathBuf>, LayerError> {
    let lib = root.join("lib");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&lib) else {
        return Ok(out);
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("python") {
            continue;
        }
        let site = entry.path().join("site-packages");
        let Ok(dists) = fs::read_dir(&site) else {
            continue;
        };
        for dist in dists.filter_map(Result::ok) {
            let path = dist.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.extension().is_some_and(|e| e == "dist-info")
                && path.join("RECORD").is_file()
                && !claimed.contains_key(&rel.join("RECORD"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The owner a pip-installed `.dist-info` describes, and the paths (relative to `root`) its
/// RECORD lists that exist.
fn pip_owner(root: &Path, dist_info: &Path) -> Result<(Owner, Vec<PathBuf>), LayerError> {
    use sha2::Digest as _;
    let record_path = dist_info.join("RECORD");
    let record = fs::read(&record_path).map_err(|e| LayerError::io(&record_path, e))?;
    let stem = dist_info
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (name, version) = stem.split_once('-').unwrap_or((&stem, ""));
    let site = dist_info.parent().expect("dist-info has a parent");
    let site_rel = site.strip_prefix(root).expect("under root");
    let mut paths = Vec::new();
    for line in String::from_utf8_lossy(&record).lines() {
        let Some(file) = line.rsplitn(3, ',').nth(2) else {
            continue;
        };
        let file = file.trim_matches('"');
        let Some(rel) = normalize_join(site_rel, Path::new(file)) else {
            return Err(LayerError::UnsafePath {
                path: PathBuf::from(file),
                context: record_path.display().to_string(),
            });
        };
        if root.join(&rel).symlink_metadata().is_ok() {
            paths.push(rel);
        }
    }
    let owner = Owner {
        kind: OwnerKind::Pip {
            name: name.to_lowercase().replace('_', "-"),
            version: version.to_string(),
            record_sha256: hex::encode(sha2::Sha256::digest(&record)),
        },
        paths: Vec::new(),
        size: 0,
    };
    Ok((owner, paths))
}

/// `base/rel` with `..` resolved, or `None` if it leaves the root.
fn normalize_join(base: &Path, rel: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out: Vec<&std::ffi::OsStr> = base.iter().collect();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.iter().collect())
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
