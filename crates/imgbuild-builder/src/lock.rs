//! Lock files: `imgbuild lock` writes the pixi.lock format (through rattler_lock), with the
//! target's virtual packages recorded per platform; `build --lock` reads pixi.lock, conda-lock
//! v1 (`conda-lock.yml`) and `@EXPLICIT` files and never solves or reads repodata.

use std::path::Path;
use std::str::FromStr;

use rattler_conda_types::package::{ArchiveIdentifier, DistArchiveIdentifier};
use rattler_conda_types::PackageArchiveHash;
use rattler_conda_types::{
    Channel, ExplicitEnvironmentSpec, GenericVirtualPackage, MatchSpec, PackageName, PackageRecord,
    ParseStrictness, RepoDataRecord, VersionWithSource,
};
use rattler_lock::{
    LockFile, PackageHashes, PlatformData, PlatformName, PypiDistributionData, PypiPackageData,
    UrlOrPath,
};
use url::Url;

use crate::pip::PipPackage;
use crate::target::TargetPlatform;

/// The lock formats `build --lock` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFormat {
    /// pixi.lock (what `imgbuild lock` writes).
    Pixi,
    /// conda-lock's unified `conda-lock.yml`, version 1.
    CondaLockV1,
    /// `conda list --explicit` / conda-lock rendered files.
    Explicit,
}

/// The exact packages of one environment and platform, from a lock file.
#[derive(Debug, Clone)]
pub struct LockedEnvironment {
    pub format: LockFormat,
    /// Sorted by package name.
    pub records: Vec<RepoDataRecord>,
    /// How many records carry a sha256 or md5 that downloads are checked against.
    pub hashed: usize,
    /// The specs the environment was solved from, when the lock records them (a lock written
    /// by `imgbuild lock` does, in its header); they end up in `conda-meta`.
    pub requested: Option<Vec<MatchSpec>>,
    /// The PyPI wheels of the `pip:` section (pixi.lock only).
    pub pip: Vec<PipPackage>,
}

/// The header line in which `imgbuild lock` records the requested specs. pixi.lock has no
/// field for them; a comment keeps the file a valid pixi.lock for every other reader, like
/// the `# input_hash:` comment of conda-lock's rendered files.
const REQUESTED_HEADER: &str = "# imgbuild-requested-specs: ";

/// The requested specs from a lock's header comment, if it has one.
fn requested_from_header(text: &str, path: &Path) -> Result<Option<Vec<MatchSpec>>, LockError> {
    let Some(json) = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(REQUESTED_HEADER))
    else {
        return Ok(None);
    };
    let invalid = |message: String| LockError::Invalid {
        path: path.to_path_buf(),
        message: format!("bad '{}' line: {message}", REQUESTED_HEADER.trim()),
    };
    let specs: Vec<String> = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    specs
        .iter()
        .map(|s| {
            MatchSpec::from_str(s, ParseStrictness::Lenient)
                .map_err(|e| invalid(format!("{s}: {e}")))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A problem with a lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not a lock file imgbuild reads (pixi.lock as written by `imgbuild lock`, \
         conda-lock v1 conda-lock.yml, or an @EXPLICIT file)"
    )]
    UnknownFormat { path: std::path::PathBuf },
    #[error("{path}: no environment '{name}' (environments: {})", .available.join(", "))]
    NoEnvironment {
        path: std::path::PathBuf,
        name: String,
        available: Vec<String>,
    },
    #[error("{path}: no packages for {subdir}")]
    NoPlatform {
        path: std::path::PathBuf,
        subdir: String,
        /// The platform as `imgbuild lock --platform` takes it.
        platform: String,
    },
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot write lock file {path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Reads the packages for `platform` (and `environment`, for pixi.lock; default `default`).
pub fn read_lock(
    path: &Path,
    environment: Option<&str>,
    platform: TargetPlatform,
) -> Result<LockedEnvironment, LockError> {
    let invalid = |message: String| LockError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = crate::bounded::read(path, crate::bounded::LOCK)
        .map_err(|source| LockError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .map_err(|too_much| invalid(too_much.to_string()))?;
    parse_lock(&text, path, environment, platform)
}

/// [`read_lock`] on text already read; `path` names it in messages and anchors relative paths.
pub fn parse_lock(
    text: &str,
    path: &Path,
    environment: Option<&str>,
    platform: TargetPlatform,
) -> Result<LockedEnvironment, LockError> {
    let invalid = |message: String| LockError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    crate::bounded::check_depth(text, crate::bounded::LOCK.max_depth)
        .map_err(|too_much| invalid(too_much.to_string()))?;
    let subdir = platform.subdir();
    let (format, records) = if text.lines().any(|l| l.trim() == "@EXPLICIT") {
        (LockFormat::Explicit, read_explicit(text, path, platform)?)
    } else {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|_| LockError::UnknownFormat {
                path: path.to_path_buf(),
            })?;
        if doc.get("package").is_some() && doc.get("metadata").is_some() {
            (
                LockFormat::CondaLockV1,
                read_conda_lock_v1(&doc, path, platform)?,
            )
        } else if doc.get("environments").is_some() {
            let dir = path.parent().unwrap_or(Path::new("."));
            let lock = LockFile::from_str_with_base_directory(text, Some(dir))
                .map_err(|e| invalid(e.to_string()))?;
            let name = environment.unwrap_or("default");
            let env = lock
                .environment(name)
                .ok_or_else(|| LockError::NoEnvironment {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    available: lock.environments().map(|(n, _)| n.to_string()).collect(),
                })?;
            let lock_platform =
                lock.platforms()
                    .find(|p| p.subdir() == subdir)
                    .ok_or_else(|| LockError::NoPlatform {
                        path: path.to_path_buf(),
                        subdir: subdir.to_string(),
                        platform: platform.to_string(),
                    })?;
            let mut pip: Vec<PipPackage> = env
                .pypi_packages(lock_platform)
                .map(|pkgs| {
                    pkgs.map(|p| pip_from_lock(p, name, subdir.as_str()))
                        .collect()
                })
                .transpose()
                .map_err(invalid)?
                .unwrap_or_default();
            // In the order a solve gives them (by name), so a build from the lock is the same
            // image as the build the lock was written from.
            pip.sort();
            let records = env
                .conda_repodata_records(lock_platform)
                .map_err(|e| invalid(e.to_string()))?
                .ok_or_else(|| {
                    invalid(format!("environment '{name}' has no packages for {subdir}"))
                })?;
            let mut locked = finish(LockFormat::Pixi, records);
            locked.requested = requested_from_header(text, path)?;
            locked.pip = pip;
            return Ok(locked);
        } else {
            return Err(LockError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    if records.is_empty() {
        return Err(LockError::NoPlatform {
            path: path.to_path_buf(),
            subdir: subdir.to_string(),
            platform: platform.to_string(),
        });
    }
    Ok(finish(format, records))
}

/// The platforms the lock at `path` has packages for (for pixi.lock, in `environment`), in
/// the order [`TargetPlatform::ALL`] lists them. An `@EXPLICIT` file names at most one
/// (`# platform:`); without that line, the platform its packages' subdirs name (linux/amd64
/// when they are all noarch).
pub fn lock_platforms(
    path: &Path,
    environment: Option<&str>,
) -> Result<Vec<TargetPlatform>, LockError> {
    let text = crate::bounded::read(path, crate::bounded::LOCK)
        .map_err(|source| LockError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .map_err(|too_much| LockError::Invalid {
            path: path.to_path_buf(),
            message: too_much.to_string(),
        })?;
    let mut found = Vec::new();
    for platform in TargetPlatform::ALL {
        match parse_lock(&text, path, environment, platform) {
            Ok(locked) if locked.format == LockFormat::Explicit => {
                if locked
                    .records
                    .iter()
                    .any(|r| r.package_record.subdir == platform.subdir().as_str())
                {
                    found.push(platform);
                }
            }
            Ok(_) => found.push(platform),
            Err(LockError::NoPlatform { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() && text.lines().any(|l| l.trim() == "@EXPLICIT") {
        found.push(TargetPlatform::LinuxAmd64);
    }
    Ok(found)
}

fn finish(format: LockFormat, mut records: Vec<RepoDataRecord>) -> LockedEnvironment {
    records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
    let hashed = records
        .iter()
        .filter(|r| r.package_record.sha256.is_some() || r.package_record.md5.is_some())
        .count();
    LockedEnvironment {
        format,
        records,
        hashed,
        requested: None,
        pip: Vec::new(),
    }
}

/// A locked PyPI package as imgbuild installs it: a wheel URL with its sha256.
fn pip_from_lock(package: &PypiPackageData, env: &str, subdir: &str) -> Result<PipPackage, String> {
    let PypiPackageData::Distribution(dist) = package else {
        return Err(format!(
            "environment '{env}' has a PyPI source package for {subdir}; imgbuild installs wheels only"
        ));
    };
    let name = dist.name.to_string();
    let url = match &*dist.location {
        UrlOrPath::Url(url) => url.to_string(),
        UrlOrPath::Path(path) => {
            return Err(format!(
                "PyPI package {name} is locked to the local path {path}; imgbuild installs wheels from an index"
            ))
        }
    };
    let sha256 = match &dist.hash {
        Some(PackageHashes::Sha256(h) | PackageHashes::Md5Sha256(_, h)) => {
            hex::encode(h.as_slice())
        }
        _ => return Err(format!("PyPI package {name} has no sha256 in the lock")),
    };
    Ok(PipPackage {
        name: crate::pip::normalize_name(&name),
        version: dist.version.to_string(),
        url,
        sha256,
        license: None,
    })
}

/// The lock entry of a resolved PyPI package.
fn pip_to_lock(package: &PipPackage) -> Result<PypiPackageData, String> {
    let url = Url::parse(&package.url).map_err(|e| format!("{}: {e}", package.url))?;
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&package.sha256, &mut sha)
        .map_err(|e| format!("{}: sha256 {}: {e}", package.name, package.sha256))?;
    Ok(PypiPackageData::Distribution(Box::new(
        PypiDistributionData {
            name: pep508_rs::PackageName::from_str(&package.name).map_err(|e| e.to_string())?,
            version: pep440_rs::Version::from_str(&package.version).map_err(|e| e.to_string())?,
            location: rattler_lock::Verbatim::new(UrlOrPath::Url(url)),
            index_url: None,
            hash: Some(PackageHashes::Sha256(sha.into())),
            requires_dist: Vec::new(),
            requires_python: None,
        },
    )))
}

/// A record for a package known only by its URL (and maybe hashes), as in explicit files.
fn record_from_url(url: Url, path: &Path) -> Result<RepoDataRecord, LockError> {
    let invalid = |message: String| LockError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut clean = url.clone();
    clean.set_fragment(None);
    let file = clean
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default()
        .to_string();
    let identifier = DistArchiveIdentifier::try_from_filename(&file).ok_or_else(|| {
        invalid(format!(
            "'{clean}' does not end in a conda package file name"
        ))
    })?;
    let ArchiveIdentifier {
        name,
        version,
        build_string,
    } = identifier.identifier.clone();
    let subdir = clean
        .path_segments()
        .and_then(|s| s.rev().nth(1).map(str::to_string))
        .unwrap_or_default();
    let mut record = PackageRecord::new(
        PackageName::new_unchecked(name),
        VersionWithSource::from_str(&version).map_err(|e| invalid(format!("{clean}: {e}")))?,
        build_string
            .parse()
            .map_err(|e| invalid(format!("{clean}: {e:?}")))?,
    );
    record.subdir = subdir;
    let channel = clean.as_str().rsplitn(3, '/').nth(2).map(str::to_string);
    Ok(RepoDataRecord {
        package_record: record,
        identifier,
        url: clean,
        channel,
    })
}

fn read_explicit(
    text: &str,
    path: &Path,
    platform: TargetPlatform,
) -> Result<Vec<RepoDataRecord>, LockError> {
    let spec =
        ExplicitEnvironmentSpec::from_reader(text.as_bytes()).map_err(|e| LockError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if let Some(p) = spec.platform {
        if p != platform.subdir() {
            return Err(LockError::NoPlatform {
                path: path.to_path_buf(),
                subdir: platform.subdir().to_string(),
                platform: platform.to_string(),
            });
        }
    }
    spec.packages
        .into_iter()
        .map(|entry| {
            let hash = entry
                .package_archive_hash()
                .map_err(|e| LockError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("{}: {e}", entry.url),
                })?;
            let mut record = record_from_url(entry.url, path)?;
            match hash {
                Some(PackageArchiveHash::Md5(h)) => record.package_record.md5 = Some(h),
                Some(PackageArchiveHash::Sha256(h)) => record.package_record.sha256 = Some(h),
                None => {}
            }
            Ok(record)
        })
        .collect()
}

fn read_conda_lock_v1(
    doc: &serde_yaml::Value,
    path: &Path,
    platform: TargetPlatform,
) -> Result<Vec<RepoDataRecord>, LockError> {
    let invalid = |message: String| LockError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if doc["version"].as_u64() != Some(1) {
        return Err(invalid(format!(
            "conda-lock version {:?} is not supported (only 1)",
            doc["version"]
        )));
    }
    let subdir = platform.subdir().to_string();
    let mut out = Vec::new();
    for (i, pkg) in doc["package"]
        .as_sequence()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if pkg["platform"].as_str() != Some(subdir.as_str())
            || pkg["category"].as_str().is_some_and(|c| c != "main")
        {
            continue;
        }
        let name = pkg["name"].as_str().unwrap_or("?");
        if pkg["manager"].as_str() != Some("conda") {
            return Err(invalid(format!(
                "package[{i}] '{name}' is managed by {:?}; imgbuild installs conda packages only for now",
                pkg["manager"]
            )));
        }
        let url = pkg["url"]
            .as_str()
            .and_then(|u| Url::parse(u).ok())
            .ok_or_else(|| invalid(format!("package[{i}] '{name}' has no valid url")))?;
        let mut record = record_from_url(url, path)?;
        let hash = |key: &str| pkg["hash"][key].as_str().map(str::to_string);
        if let Some(h) = hash("sha256") {
            record.package_record.sha256 = Some(
                parse_hex(&h)
                    .ok_or_else(|| invalid(format!("package '{name}': bad sha256")))?
                    .into(),
            );
        }
        if let Some(h) = hash("md5") {
            let mut bytes = [0u8; 16];
            if hex::decode_to_slice(&h, &mut bytes).is_err() {
                return Err(invalid(format!("package '{name}': bad md5")));
            }
            record.package_record.md5 = Some(bytes.into());
        }
        if let Some(deps) = pkg["dependencies"].as_mapping() {
            record.package_record.depends = deps
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} {}",
                        k.as_str().unwrap_or_default(),
                        v.as_str().unwrap_or_default()
                    )
                    .trim()
                    .to_string()
                })
                .collect();
        }
        out.push(record);
    }
    Ok(out)
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
}

/// One platform's solve, as `imgbuild lock` records it.
pub struct SolvedPlatform {
    pub platform: TargetPlatform,
    pub virtual_packages: Vec<GenericVirtualPackage>,
    pub records: Vec<RepoDataRecord>,
    /// The resolved `pip:` section.
    pub pip: Vec<PipPackage>,
}

/// Writes a pixi.lock with one `default` environment solved from `requested`; replaced
/// atomically.
pub fn write_lock(
    path: &Path,
    channels: &[Channel],
    requested: &[MatchSpec],
    solved: &[SolvedPlatform],
) -> Result<(), LockError> {
    let err = |message: String| LockError::Write {
        path: path.to_path_buf(),
        message,
    };
    let platforms = solved
        .iter()
        .map(|s| PlatformData {
            name: PlatformName::from(&s.platform.subdir()),
            subdir: s.platform.subdir(),
            virtual_packages: s.virtual_packages.iter().map(|v| v.to_string()).collect(),
        })
        .collect();
    let mut builder = LockFile::builder()
        .with_platforms(platforms)
        .map_err(|e| err(e.to_string()))?;
    builder.set_channels("default", channels.iter().map(|c| c.base_url.to_string()));
    for s in solved {
        let name = PlatformName::from(&s.platform.subdir());
        builder
            .add_environment_platform("default", &name)
            .map_err(|e| err(e.to_string()))?;
        for record in &s.records {
            builder
                .add_conda_package("default", &name, record.clone().into())
                .map_err(|e| err(e.to_string()))?;
        }
        for package in &s.pip {
            builder
                .add_pypi_package("default", name.as_str(), pip_to_lock(package).map_err(err)?)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let specs: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
    let text = format!(
        "# Written by imgbuild {}; `imgbuild build --lock` installs exactly these packages.\n\
         {REQUESTED_HEADER}{}\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_json::to_string(&specs).expect("strings serialize"),
        builder
            .finish()
            .render_to_string()
            .map_err(|e| err(e.to_string()))?
    );
    // A lock file is committed and read by others: 0644, like any file a user writes.
    imgbuild_fs::write_atomically(
        path,
        text.as_bytes(),
        0o644,
        imgbuild_fs::Durability::Synced,
    )
    .map_err(|e| err(e.to_string()))
}
