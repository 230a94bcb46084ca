//! A package archive (`.conda` or `.tar.bz2`) → a package-cache directory, every tar entry
//! checked before it touches the disk.
//!
//! Why not rattler_package_streaming's extraction, which the rest of the package cache is
//! built on: it skips `..` entries silently, turns FIFOs and device nodes into whatever the tar
//! crate makes of them, follows no budget (a 3.4 KB `.tar.bz2` expanded to 4 GiB), and does not
//! look at `paths.json`'s hashes. Here, an entry is refused by name unless it is a regular file,
//! a directory, a symlink, or a hard link to a file earlier in the same package; its path must
//! be relative and normalized and must not go through a symlink the archive made; the entries'
//! sizes must stay within a budget; and after the archive, every file `paths.json` lists must be
//! there with the size and sha256 it declares (hashed while it is written, not read again).
//! File modes are kept as rattler keeps them (`mode & 0o777`), so images are byte-identical.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use rattler_conda_types::package::{PackageFile as _, PathType, PathsJson};
use sha2::{Digest as _, Sha256};

use crate::package_check::UnsafeEntry;

/// Why a package archive is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing {package}: its archive entry '{entry}' {rule}; nothing was installed from it \
     (the package is malformed or hostile: remove it from the environment or fix the channel)"
)]
pub struct UnsafeArchive {
    pub package: String,
    pub entry: String,
    pub rule: String,
    /// Set when the rule broken is the size limit: the limit, in bytes.
    pub size_limit: Option<u64>,
}

/// What can stop an extraction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExtractError {
    #[error(transparent)]
    Refused(#[from] UnsafeArchive),
    /// A file `paths.json` lists is not what the archive holds.
    #[error(transparent)]
    Listed(#[from] UnsafeEntry),
    /// The archive cannot be read (truncated, not a zip, bad compression).
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    /// The extracted files do not make a conda package (rattler's cache validation).
    #[error("not a conda package")]
    NotAPackage(#[source] rattler_cache::validation::PackageValidationError),
    /// Writing the extracted files failed (the path is where).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A file written from the archive: its size and sha256.
type Written = (u64, [u8; 32]);

struct Unpacker<'a> {
    dest: &'a Path,
    package: &'a str,
    max_bytes: u64,
    used: u64,
    symlinks: HashSet<PathBuf>,
    files: HashMap<PathBuf, Written>,
}

/// Extracts `archive` into the empty directory `dest`, refusing anything unsafe (module docs).
/// `package` names the package in refusals; `max_bytes` caps the sum of the entries' sizes.
pub(crate) fn extract(
    archive: &Path,
    dest: &Path,
    package: &str,
    max_bytes: u64,
) -> Result<(), ExtractError> {
    let mut unpacker = Unpacker {
        dest,
        package,
        max_bytes,
        used: 0,
        symlinks: HashSet::new(),
        files: HashMap::new(),
    };
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let corrupt = |e: &dyn std::fmt::Display| ExtractError::Corrupt(e.to_string());
    let open = || {
        File::open(archive).map_err(|source| ExtractError::Io {
            path: archive.to_path_buf(),
            source,
        })
    };
    match name.as_deref() {
        Some(n) if n.ends_with(".tar.bz2") => {
            let reader = BufReader::with_capacity(1 << 20, open()?);
            unpacker.unpack_tar(rattler_package_streaming::read::stream_tar_bz2(reader))?;
        }
        Some(n) if n.ends_with(".conda") => {
            let mut zip = zip::ZipArchive::new(BufReader::new(open()?)).map_err(|e| corrupt(&e))?;
            for i in 0..zip.len() {
                let member = zip.by_index(i).map_err(|e| corrupt(&e))?;
                // `info-*.tar.zst` and `pkg-*.tar.zst`, found by file name like rattler does
                // (some real archives keep them under a directory); anything else is skipped.
                let section = member.name().is_ok_and(|n| {
                    let file = n.rsplit('/').next().unwrap_or_default();
                    (file.starts_with("pkg-") || file.starts_with("info-"))
                        && file.ends_with(".tar.zst")
                });
                if section {
                    let decoder =
                        zstd::stream::read::Decoder::new(member).map_err(|e| corrupt(&e))?;
                    unpacker.unpack_tar(tar::Archive::new(decoder))?;
                }
            }
        }
        _ => {
            return Err(ExtractError::Corrupt(format!(
                "{} is neither a .conda nor a .tar.bz2 archive",
                archive.display()
            )))
        }
    }
    unpacker.check_paths_json()
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &Path, rule: impl Into<String>) -> ExtractError {
        ExtractError::Refused(UnsafeArchive {
            package: self.package.to_string(),
            entry: entry.display().to_string(),
            rule: rule.into(),
            size_limit: None,
        })
    }

    fn io(&self, rel: &Path, source: std::io::Error) -> ExtractError {
        ExtractError::Io {
            path: self.dest.join(rel),
            source,
        }
    }

    fn unpack_tar<R: Read>(&mut self, mut archive: tar::Archive<R>) -> Result<(), ExtractError> {
        let corrupt = |e: std::io::Error| ExtractError::Corrupt(e.to_string());
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::XGlobalHeader {
                continue;
            }
            let raw = entry.path().map_err(corrupt)?.into_owned();
            let path = normalized(&raw).map_err(|rule| self.refuse(&raw, rule))?;
            if path.as_os_str().is_empty() {
                continue; // "./", the package root
            }
            if let Some(link) = path
                .ancestors()
                .skip(1)
                .find(|a| self.symlinks.contains(*a))
            {
                return Err(self.refuse(
                    &raw,
                    format!(
                        "goes through {}, a symlink earlier in the archive",
                        link.display()
                    ),
                ));
            }
            self.used = self.used.saturating_add(entry.size());
            if self.used > self.max_bytes {
                let mut refused = self.refuse(
                    &raw,
                    format!(
                        "takes the package past {} expanded (the limit; the largest real \
                         packages are a few GiB)",
                        human(self.max_bytes)
                    ),
                );
                if let ExtractError::Refused(r) = &mut refused {
                    r.size_limit = Some(self.max_bytes);
                }
                return Err(refused);
            }
            let target = self.dest.join(&path);
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.make_room(&raw, &path)?;
                    let written = self.write_file(&mut entry, &path)?;
                    self.files.insert(path, written);
                }
                tar::EntryType::Directory => {
                    std::fs::create_dir_all(&target).map_err(|e| self.io(&path, e))?;
                }
                tar::EntryType::Symlink => {
                    let link = entry
                        .link_name()
                        .map_err(corrupt)?
                        .ok_or_else(|| self.refuse(&raw, "is a symlink without a target"))?;
                    self.make_room(&raw, &path)?;
                    std::os::unix::fs::symlink(&link, &target).map_err(|e| self.io(&path, e))?;
                    self.symlinks.insert(path);
                }
                tar::EntryType::Link => {
                    let link = entry
                        .link_name()
                        .map_err(corrupt)?
                        .ok_or_else(|| self.refuse(&raw, "is a hard link without a target"))?;
                    let source = normalized(&link)
                        .ok()
                        .filter(|l| self.files.contains_key(l));
                    let Some(source) = source else {
                        return Err(self.refuse(
                            &raw,
                            format!(
                                "is a hard link to '{}', which is not a file earlier in the package",
                                link.display()
                            ),
                        ));
                    };
                    self.make_room(&raw, &path)?;
                    std::fs::hard_link(self.dest.join(&source), &target)
                        .map_err(|e| self.io(&path, e))?;
                    let written = self.files[&source];
                    self.files.insert(path, written);
                }
                other => {
                    return Err(self.refuse(
                        &raw,
                        format!(
                            "is a {}: packages hold only files, directories and links",
                            describe(other)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Creates `path`'s parent directories and removes an earlier entry at `path` itself (a
    /// later entry of a tar wins, as with tar(1)); a directory there is not replaced.
    fn make_room(&mut self, raw: &Path, path: &Path) -> Result<(), ExtractError> {
        let target = self.dest.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(path, e))?;
        }
        match target.symlink_metadata() {
            Ok(m) if m.is_dir() => Err(self.refuse(raw, "replaces a directory of the package")),
            Ok(_) => {
                self.symlinks.remove(path);
                self.files.remove(path);
                std::fs::remove_file(&target).map_err(|e| self.io(path, e))
            }
            Err(_) => Ok(()),
        }
    }

    fn write_file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<Written, ExtractError> {
        use std::os::unix::fs::PermissionsExt as _;
        let target = self.dest.join(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| self.io(path, e))?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mut writer = std::io::BufWriter::with_capacity(128 * 1024, file);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 128 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write_all(&buf[..n]).map_err(|e| self.io(path, e))?;
            size += n as u64;
        }
        let file = writer
            .into_inner()
            .map_err(|e| self.io(path, e.into_error()))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| self.io(path, e))?;
        Ok((size, hasher.finalize().into()))
    }

    /// Every file `paths.json` lists is in the archive, with its declared size and sha256.
    fn check_paths_json(&self) -> Result<(), ExtractError> {
        if !self.dest.join("info/paths.json").is_file() {
            return Ok(()); // an old package: info/files only, checked after extraction
        }
        let paths = PathsJson::from_package_directory(self.dest)
            .map_err(|e| ExtractError::Corrupt(format!("info/paths.json: {e}")))?;
        for entry in &paths.paths {
            if entry.path_type != PathType::HardLink {
                continue;
            }
            let rel = &entry.relative_path;
            // Paths that are not normalized, or go through a symlink, are refused with their
            // own reasons by package_check before anything is linked.
            let Ok(path) = normalized(rel) else { continue };
            if path.ancestors().any(|a| self.symlinks.contains(a)) {
                continue;
            }
            let refuse = |rule: String| {
                ExtractError::Listed(UnsafeEntry {
                    package: self.package.to_string(),
                    entry: rel.display().to_string(),
                    rule,
                })
            };
            let Some(&(size, sha)) = self.files.get(&path) else {
                return Err(refuse("is not in the package's archive".into()));
            };
            if let Some(declared) = entry.size_in_bytes.filter(|d| *d != size) {
                return Err(refuse(format!(
                    "is {size} bytes, but paths.json declares {declared}"
                )));
            }
            if let Some(declared) = entry.sha256.filter(|d| d[..] != sha[..]) {
                return Err(refuse(format!(
                    "has sha256 {}, but paths.json declares {}",
                    hex::encode(sha),
                    hex::encode(declared)
                )));
            }
        }
        Ok(())
    }
}

/// `path` without a leading `./`; an error names what makes it unsafe.
fn normalized(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir if out.as_os_str().is_empty() => {}
            Component::CurDir => return Err("has a '.' component"),
            Component::ParentDir => return Err("leaves the package with '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

fn describe(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special tar entry",
    }
}

fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}
