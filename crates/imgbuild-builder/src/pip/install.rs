//! Installing resolved wheels into a staging root: uv into a scratch directory, then moved
//! under the prefix with shebangs, `RECORD` rows and (optionally) byte-compiled pycs fixed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::{
    normalize_name, run, write_lines, PipError, PipPackage, PipRequirements, PipTarget, Uv,
};
use crate::target::TargetPlatform;

/// The license a wheel's `METADATA` declares: `License-Expression` (PEP 639), else a
/// one-line `License`, else the first `License ::` classifier's last part.
pub fn metadata_license(metadata: &str) -> Option<String> {
    let header = |key: &str| {
        metadata
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v != "UNKNOWN")
    };
    header("License-Expression:")
        .or_else(|| header("License:").filter(|v| v.len() <= 80))
        .or_else(|| {
            metadata
                .lines()
                .take_while(|l| !l.is_empty())
                .filter_map(|l| l.strip_prefix("Classifier: License ::"))
                .filter_map(|c| c.rsplit("::").next())
                .map(|c| c.trim().to_string())
                .find(|c| !c.is_empty())
        })
}

/// Installs exactly `packages` (their files already fetched: `files[i]` is `packages[i]`'s,
/// see [`crate::wheel_fetch`]) into the staging `root` of an environment whose final prefix is
/// `prefix`, and returns them with the license each one's `METADATA` declares. With `compile`,
/// byte-compiles them with the environment's own Python (unchecked-hash pycs, deterministic),
/// which needs a target the host can run.
///
/// uv unpacks each wheel once into its cache and hard-links the files from there (the cache and
/// the staging roots are on one file system, under the cache directory), so a 4.6 GB CUDA
/// environment is linked, not copied. Nothing in the staging root is written in place
/// afterwards (see `write_replacing`), so the cache's files stay as uv unpacked them.
#[allow(clippy::too_many_arguments)]
pub fn install(
    uv: &Uv,
    packages: &[PipPackage],
    files: &[PathBuf],
    target: &PipTarget,
    root: &Path,
    prefix: &str,
    compile: bool,
) -> Result<Vec<PipPackage>, PipError> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    assert_eq!(packages.len(), files.len(), "one file per package");
    if compile && target.platform != TargetPlatform::host() {
        return Err(PipError::CompileCrossPlatform {
            target: target.platform.to_string(),
            host: TargetPlatform::host().to_string(),
        });
    }
    if let Some(sdist) = packages.iter().find(|p| p.is_sdist()) {
        if !target.allow_sdist {
            return Err(PipError::SdistNotAllowed {
                name: sdist.name.clone(),
                version: sdist.version.clone(),
                url: sdist.url.clone(),
            });
        }
    }
    let site = root.join(target.site_packages());
    fs::create_dir_all(&site).map_err(|e| PipError::io(&site, e))?;
    let work = tempfile::Builder::new()
        .prefix(".imgbuild-pip-")
        .tempdir_in(root.parent().unwrap_or(root))
        .map_err(|e| PipError::io(root, e))?;
    let reqs = work.path().join("requirements.txt");
    let lines = packages
        .iter()
        .zip(files)
        .map(|(p, file)| {
            let url = url::Url::from_file_path(file).map_err(|()| PipError::Install {
                message: format!("{}: {} is not an absolute path", p.name, file.display()),
            })?;
            Ok(format!("{} @ {url} --hash=sha256:{}", p.name, p.sha256))
        })
        .collect::<Result<Vec<_>, PipError>>()?;
    write_lines(&reqs, &lines)?;
    let tree = work.path().join("target");
    let mut cmd = uv.pip("install", target, &PipRequirements::default());
    if target.allow_sdist {
        // Source builds run the environment's own Python (the target is this machine's).
        cmd.arg("--python").arg(root.join("bin/python"));
    }
    cmd.args([
        "--no-deps",
        "--require-hashes",
        "--link-mode",
        "hardlink",
        "--quiet",
    ])
    // uv falls back to copying where hard links fail (another file system); that is fine.
    .env("UV_NO_WARN_LINK_MODE", "1")
    .arg("--target")
    .arg(&tree)
    .arg("-r")
    .arg(&reqs);
    let out = run(cmd)?;
    if !out.status.success() {
        return Err(PipError::Install {
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let installed = with_licenses(packages, &tree)?;
    let moved = move_into_prefix(&tree, &site, root, prefix, &target.site_packages())?;
    if compile {
        compile_pyc(root, prefix, &site, &target.python, &moved)?;
    }
    Ok(installed)
}

/// `packages` with the license each `.dist-info/METADATA` in uv's `tree` declares.
fn with_licenses(packages: &[PipPackage], tree: &Path) -> Result<Vec<PipPackage>, PipError> {
    let mut licenses = BTreeMap::new();
    for entry in read_dir_sorted(tree)? {
        let Some(dist) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".dist-info"))
        else {
            continue;
        };
        let metadata = entry.join("METADATA");
        let text = fs::read(&metadata).map_err(|e| PipError::io(&metadata, e))?;
        let name = normalize_name(dist.split('-').next().unwrap_or_default());
        if let Some(license) = metadata_license(&String::from_utf8_lossy(&text)) {
            licenses.insert(name, license);
        }
    }
    Ok(packages
        .iter()
        .map(|p| PipPackage {
            license: licenses.get(&p.name).cloned(),
            ..p.clone()
        })
        .collect())
}

/// Moves uv's `--target` tree into place: `bin/` to `<root>/bin` with rewritten shebangs,
/// everything else into site-packages; fixes each RECORD. Returns the top-level names moved
/// into site-packages.
fn move_into_prefix(
    tree: &Path,
    site: &Path,
    root: &Path,
    prefix: &str,
    site_rel: &Path,
) -> Result<Vec<String>, PipError> {
    let bin = root.join("bin");
    // From site-packages back up to the prefix: `../../../`.
    let up = "../".repeat(site_rel.components().count());
    let mut scripts: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let tree_bin = tree.join("bin");
    if tree_bin.is_dir() {
        fs::create_dir_all(&bin).map_err(|e| PipError::io(&bin, e))?;
        for entry in read_dir_sorted(&tree_bin)? {
            let name = entry
                .file_name()
                .expect("dir entries have names")
                .to_string_lossy()
                .into_owned();
            let bytes = fs::read(&entry).map_err(|e| PipError::io(&entry, e))?;
            let bytes = rewrite_shebang(&bytes, prefix);
            let dest = bin.join(&name);
            if dest.symlink_metadata().is_ok() {
                return Err(PipError::Install {
                    message: format!(
                        "the pip packages' script bin/{name} would replace a file conda installed"
                    ),
                });
            }
            write_executable(&dest, &bytes)?;
            scripts.insert(
                format!("bin/{name}"),
                (record_hash(&bytes), bytes.len() as u64),
            );
        }
    }
    let mut moved = Vec::new();
    for entry in read_dir_sorted(tree)? {
        let name = entry
            .file_name()
            .expect("dir entries have names")
            .to_string_lossy()
            .into_owned();
        if name == "bin" || name == ".lock" {
            continue;
        }
        let dest = site.join(&name);
        if dest.symlink_metadata().is_ok() {
            return Err(PipError::Install {
                message: format!(
                    "the pip packages would replace {}/{name}, which conda installed",
                    site_rel.display()
                ),
            });
        }
        if name.ends_with(".dist-info") {
            for file in LOCAL_INSTALL_RECORDS {
                let path = entry.join(file);
                if path.exists() {
                    fs::remove_file(&path).map_err(|e| PipError::io(&path, e))?;
                }
            }
            fix_record(&entry.join("RECORD"), &scripts, &up)?;
        }
        fs::rename(&entry, &dest).map_err(|e| PipError::io(&dest, e))?;
        moved.push(name);
    }
    Ok(moved)
}

/// What uv writes into a `.dist-info` when it installs from a local file, as it does from
/// imgbuild's wheel cache: where it came from (PEP 610 `direct_url.json`, a host path) and
/// uv's cache bookkeeping (`uv_cache.json`, with the file's mtime). Both differ on every
/// machine; they are removed with their RECORD rows. The lock and the SBOM say where each
/// wheel came from.
const LOCAL_INSTALL_RECORDS: [&str; 2] = ["direct_url.json", "uv_cache.json"];

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, PipError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| PipError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), PipError> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = fs::File::create(path).map_err(|e| PipError::io(path, e))?;
    f.write_all(bytes).map_err(|e| PipError::io(path, e))?;
    f.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(|e| PipError::io(path, e))
}

/// Linux's limit on a `#!` line (bytes, without the newline).
const SHEBANG_MAX: usize = 127;

/// Points a console script at `<prefix>/bin/python`, whatever interpreter uv wrote (the host's,
/// possibly in the `/bin/sh` trampoline form uv uses for long paths).
pub fn rewrite_shebang(script: &[u8], prefix: &str) -> Vec<u8> {
    if !script.starts_with(b"#!") {
        return script.to_vec();
    }
    let mut rest = &script[script
        .iter()
        .position(|b| *b == b'\n')
        .map_or(script.len(), |i| i + 1)..];
    if script.starts_with(b"#!/bin/sh\n'''exec' ") {
        // `#!/bin/sh` / `'''exec' "python" "$0" "$@"` / `' '''`: drop all three lines.
        for _ in 0..2 {
            rest = &rest[rest
                .iter()
                .position(|b| *b == b'\n')
                .map_or(rest.len(), |i| i + 1)..];
        }
    }
    let python = format!("{prefix}/bin/python");
    let head = if python.len() + 2 <= SHEBANG_MAX {
        format!("#!{python}\n")
    } else {
        format!("#!/bin/sh\n'''exec' '{python}' \"$0\" \"$@\"\n' '''\n")
    };
    let mut out = head.into_bytes();
    out.extend_from_slice(rest);
    out
}

/// RECORD's hash form: `sha256=<urlsafe base64, no padding>`.
fn record_hash(bytes: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
    )
}

/// Rewrites the `bin/…` rows of a RECORD uv wrote for `--target` to where the scripts now are
/// (`../../../bin/…` from site-packages) with their new hash and size, and drops the rows of
/// the removed [`LOCAL_INSTALL_RECORDS`].
pub(super) fn fix_record(
    record: &Path,
    scripts: &BTreeMap<String, (String, u64)>,
    up: &str,
) -> Result<(), PipError> {
    let text = fs::read_to_string(record).map_err(|e| PipError::io(record, e))?;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let path = record_row_path(line);
        let file = path
            .trim_matches('"')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if path.contains(".dist-info/") && LOCAL_INSTALL_RECORDS.contains(&file) {
            continue;
        }
        match scripts.get(path.trim_matches('"')) {
            Some((hash, size)) => out.push_str(&format!("{up}{path},{hash},{size}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    write_replacing(record, out.as_bytes())
}

/// Writes `bytes` as a new file at `path` (temp file + rename), never through an existing
/// one: files uv installed may be hard links into its cache.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), PipError> {
    imgbuild_fs::write_atomically(path, bytes, 0o644, imgbuild_fs::Durability::Unsynced)
        .map_err(|e| PipError::io(path, e))
}

/// Byte-compiles the moved packages with the environment's Python: unchecked-hash pycs (no
/// mtimes inside), file names as they will be in the image, listed in each RECORD.
fn compile_pyc(
    root: &Path,
    prefix: &str,
    site: &Path,
    python_version: &str,
    moved: &[String],
) -> Result<(), PipError> {
    // CPython's cache tag: `cpython-311` for 3.11.
    let tag = format!("cpython-{}", python_version.replace('.', ""));
    let python = root.join("bin/python");
    let targets: Vec<PathBuf> = moved
        .iter()
        .filter(|n| !n.ends_with(".dist-info"))
        .map(|n| site.join(n))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "compileall",
            "-q",
            "-j",
            "1",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
        ])
        .arg(root)
        .args(["-p", prefix])
        .args(&targets)
        .env("SOURCE_DATE_EPOCH", "0")
        .env("PYTHONHASHSEED", "0")
        .env_remove("PYTHONPATH")
        .output()
        .map_err(|e| PipError::io(&python, e))?;
    if !out.status.success() {
        return Err(PipError::Install {
            message: format!(
                "byte-compiling with {} failed: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    // List the new pycs in the RECORD of the package that owns their source.
    for dist in moved.iter().filter(|n| n.ends_with(".dist-info")) {
        let record = site.join(dist).join("RECORD");
        let text = fs::read_to_string(&record).map_err(|e| PipError::io(&record, e))?;
        let mut extra = String::new();
        for line in text.lines() {
            let Some(stem) = record_row_path(line).strip_suffix(".py") else {
                continue;
            };
            let (dir, file) = stem.rsplit_once('/').unwrap_or(("", stem));
            let dir = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let pyc = format!("{dir}__pycache__/{file}.{tag}.pyc");
            if site.join(&pyc).is_file() {
                extra.push_str(&format!("{pyc},,\n"));
            }
        }
        if !extra.is_empty() {
            let mut all = text;
            all.push_str(&extra);
            write_replacing(&record, all.as_bytes())?;
        }
    }
    Ok(())
}

/// The path of a RECORD row (`path,hash,size`; the path may itself hold commas).
fn record_row_path(line: &str) -> &str {
    line.rsplitn(3, ',').nth(2).unwrap_or(line)
}
