//! The `pip:` section: PyPI packages resolved and installed by `uv` for the *target*, without
//! running the target's Python.
//!
//! Why uv: it resolves and installs for another platform and Python (`--python-platform`,
//! `--python-version`), writes PEP 751 `pylock.toml` with one wheel URL and sha256 per package,
//! and is the fastest correct installer. Its crates are not published for use as a library, so
//! it runs as a program (found on `PATH` or given with `--uv`).
//!
//! The flow, shared by `build --spec`, `lock` and `build --lock`:
//! 1. [`PipRequirements::parse`] reads the `pip:` lines (and `-r` files). Editable and VCS lines
//!    are refused, naming the line: neither has a place in a reproducible image.
//! 2. [`resolve`] runs `uv pip compile --format pylock.toml` for the target (Python version from
//!    the solved `python` record, `manylinux_2_N` from the target glibc), wheels only. Python
//!    packages conda installed are pinned to conda's version (a pip requirement that needs
//!    another one fails, naming the conda package) and left out of the result.
//! 3. [`install`] hands uv exactly those wheels (URL + `--hash`, `--no-deps`) with `--target`
//!    a scratch directory, then moves the files into `<root>/lib/pythonX.Y/site-packages` and
//!    console scripts into `<root>/bin`, rewriting their shebangs to `#!<prefix>/bin/python`
//!    and their `RECORD` rows (path, hash, size) to match.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use rattler_conda_types::RepoDataRecord;
use sha2::{Digest as _, Sha256};

mod index_files;
mod pylock;

use crate::target::{Target, TargetPlatform};
use crate::wheel::{NoWheelForTarget, TagsError, TargetTags};

/// A problem with the `pip:` section or with running uv.
#[derive(Debug, thiserror::Error)]
pub enum PipError {
    #[error(
        "{origin}: '{line}' is an editable install; editable installs point at a source tree \
         outside the image and have no place in an image build. Build a wheel and list it, \
         or publish the package to an index"
    )]
    Editable { origin: String, line: String },
    #[error(
        "{origin}: '{line}' installs from version control; a VCS checkout is not reproducible \
         in an image build. Pin a released version from an index instead"
    )]
    Vcs { origin: String, line: String },
    #[error("{origin}: '{line}': {message}")]
    Line {
        origin: String,
        line: String,
        message: String,
    },
    #[error(
        "uv is needed for the pip: section but was not found on PATH; install it with \
         `pip install uv` (or see https://docs.astral.sh/uv/) or pass --uv PATH"
    )]
    UvMissing,
    #[error("--uv {path}: {message}")]
    UvUnusable { path: PathBuf, message: String },
    #[error("the pip: section needs Python, but the environment has no python package; add python to dependencies")]
    NoPython,
    #[error("resolving the pip: section for {platform} (Python {python}) failed:\n{message}")]
    Resolve {
        platform: String,
        python: String,
        message: String,
    },
    #[error(
        "--allow-sdist builds source distributions on this machine with the environment's own \
         Python, so it works only for this machine's platform ({host}), not {target}; drop \
         --allow-sdist and use packages that publish {target} wheels"
    )]
    SdistCrossPlatform { target: String, host: String },
    #[error("{name} {version} is a source distribution ({url}); building it needs --allow-sdist")]
    SdistNotAllowed {
        name: String,
        version: String,
        url: String,
    },
    #[error("resolving the pip: section: {0}")]
    NoWheel(#[from] NoWheelForTarget),
    #[error(transparent)]
    Tags(#[from] TagsError),
    #[error("uv wrote a pylock.toml imgbuild cannot read: {message}")]
    Pylock { message: String },
    #[error("downloading {name} from {url} failed: {message}")]
    Download {
        name: String,
        url: String,
        message: String,
    },
    #[error(
        "{name}: {url} has sha256 {actual}, but the lock promises {expected}; the file was \
         not used (a changed upload, a proxy rewriting files, or a stale lock: lock again)"
    )]
    HashMismatch {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("installing pip packages failed:\n{message}")]
    Install { message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

impl PipError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        PipError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// The requirement lines and index options of a `pip:` section, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipRequirements {
    /// Requirement lines, in order, as written.
    pub requirements: Vec<String>,
    /// `--index-url` (replaces PyPI).
    pub index_url: Option<String>,
    /// `--extra-index-url`s.
    pub extra_index_urls: Vec<String>,
    /// `--pre`.
    pub pre: bool,
}

impl PipRequirements {
    /// Parses the `pip:` lines of the spec at `spec_path`; `-r FILE` is read relative to the
    /// spec (and nested files relative to their own directory).
    pub fn parse(lines: &[String], spec_path: &Path) -> Result<Self, PipError> {
        let mut out = PipRequirements::default();
        let dir = spec_path.parent().unwrap_or(Path::new("."));
        for (i, line) in lines.iter().enumerate() {
            let origin = format!("{} pip: entry {}", spec_path.display(), i + 1);
            out.add_line(line, &origin, dir, 0)?;
        }
        Ok(out)
    }

    /// Whether there is anything to install.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    fn add_line(
        &mut self,
        raw: &str,
        origin: &str,
        dir: &Path,
        depth: usize,
    ) -> Result<(), PipError> {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            return Ok(());
        }
        let err = |message: &str| PipError::Line {
            origin: origin.to_string(),
            line: line.to_string(),
            message: message.to_string(),
        };
        if line.starts_with('-') {
            let (flag, value) = split_option(line);
            let value = || value.ok_or_else(|| err("this option needs a value"));
            match flag {
                "-e" | "--editable" => {
                    return Err(PipError::Editable {
                        origin: origin.to_string(),
                        line: line.to_string(),
                    })
                }
                "-r" | "--requirement" => {
                    if depth > 8 {
                        return Err(err("-r files nest more than 8 deep"));
                    }
                    let path = dir.join(value()?);
                    let text = fs::read_to_string(&path).map_err(|e| {
                        err(&format!("cannot read {}: {e}", path.display()))
                    })?;
                    let sub_dir = path.parent().unwrap_or(dir).to_path_buf();
                    for (n, l) in join_continuations(&text).iter().enumerate() {
                        let origin = format!("{}:{}", path.display(), n + 1);
                        self.add_line(l, &origin, &sub_dir, depth + 1)?;
                    }
                }
                "-i" | "--index-url" => self.index_url = Some(value()?.to_string()),
                "--extra-index-url" => self.extra_index_urls.push(value()?.to_string()),
                "--pre" => self.pre = true,
                "--only-binary" | "--prefer-binary" => {}
                _ => {
                    return Err(err(
                        "imgbuild understands -r, --index-url, --extra-index-url and --pre in pip: sections",
                    ))
                }
            }
            return Ok(());
        }
        if is_vcs(line) {
            return Err(PipError::Vcs {
                origin: origin.to_string(),
                line: line.to_string(),
            });
        }
        if let Some(location) = local_location(line) {
            let requirement = local_wheel(location, dir).map_err(|m| err(&m))?;
            self.requirements.push(requirement);
            return Ok(());
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(line.len());
        if name_end == 0 {
            return Err(err("expected a requirement such as 'requests>=2.31'"));
        }
        self.requirements.push(line.to_string());
        Ok(())
    }
}

/// `--flag value`, `--flag=value` or `-rvalue`.
fn split_option(line: &str) -> (&str, Option<&str>) {
    if let Some((flag, value)) = line.split_once('=').filter(|(f, _)| f.starts_with("--")) {
        return (flag, Some(value.trim()));
    }
    match line.split_once(char::is_whitespace) {
        Some((flag, value)) => (flag, Some(value.trim())),
        None if line.len() > 2 && !line.starts_with("--") => (&line[..2], Some(&line[2..])),
        None => (line, None),
    }
}

fn strip_comment(line: &str) -> &str {
    // A '#' starts a comment at the line start or after whitespace (URLs keep their fragments).
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn join_continuations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        out.push(std::mem::take(&mut current));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The location of a line that names a local file: `./x.whl`, `/abs/x.whl`, `dist/x.whl`,
/// `file:///abs/x.whl`, optionally after `name @ `.
fn local_location(line: &str) -> Option<&str> {
    let location = line.split_once(" @ ").map_or(line, |(_, l)| l).trim();
    let local = location.starts_with('.')
        || location.starts_with('/')
        || location.starts_with("file:")
        || (!location.contains("://") && location.ends_with(".whl"));
    local.then_some(location)
}

/// A local wheel file as the requirement uv gets: `name @ file:///abs/path.whl`. Directories
/// and source archives are refused: they would be built on this machine.
fn local_wheel(location: &str, dir: &Path) -> Result<String, String> {
    let path = match location.strip_prefix("file:") {
        Some(_) => url::Url::parse(location)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| format!("'{location}' is not a file URL with an absolute path"))?,
        None => dir.join(location),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !file_name.ends_with(".whl") {
        return Err(
            "only local wheel files (*.whl) are installed from a path; a source tree or archive \
             would be built on this machine. Build a wheel and list it, or publish the package"
                .to_string(),
        );
    }
    let wheel: uv_distribution_filename::WheelFilename = file_name
        .parse()
        .map_err(|e| format!("'{file_name}' is not a wheel file name: {e}"))?;
    let path = path
        .canonicalize()
        .map_err(|e| format!("cannot read the wheel {}: {e}", path.display()))?;
    let url = url::Url::from_file_path(&path)
        .map_err(|()| format!("{} is not an absolute path", path.display()))?;
    Ok(format!("{} @ {url}", wheel.name))
}

fn is_vcs(line: &str) -> bool {
    let url = line.split_once('@').map_or(line, |(_, u)| u).trim();
    ["git+", "hg+", "svn+", "bzr+"]
        .iter()
        .any(|p| url.starts_with(p) || line.starts_with(p))
}

/// One resolved PyPI package: exactly the wheel to install.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PipPackage {
    /// Normalized name (PEP 503).
    pub name: String,
    pub version: String,
    pub url: String,
    /// Hex sha256 of the wheel.
    pub sha256: String,
    /// The license its metadata declares (`License-Expression`, else `License`), once known
    /// from the installed files; for the SBOM.
    pub license: Option<String>,
}

impl PipPackage {
    /// Whether this is a source distribution (to build) rather than a wheel.
    pub fn is_sdist(&self) -> bool {
        !self
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .ends_with(".whl")
    }

    /// Where the file can be had by others: its URL, unless it is a local file (a `file://`
    /// URL names a path on the build host, which an image or SBOM must not depend on).
    pub fn published_url(&self) -> Option<&str> {
        (!self.url.starts_with("file:")).then_some(self.url.as_str())
    }

    /// `name==version`.
    pub fn label(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// PEP 503 normalized name.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The Python and platform pip packages are chosen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipTarget {
    pub platform: TargetPlatform,
    /// `3.11`.
    pub python: String,
    /// `(3, 11)`.
    pub python_version: (u8, u8),
    /// A free-threaded CPython build (`python_abi … *_cp313t`): `cp313t` wheels only.
    pub free_threaded: bool,
    /// The `N` of `manylinux_2_N`: the target glibc's minor version.
    pub manylinux_minor: u16,
    /// uv's `--python-platform`, e.g. `x86_64-manylinux_2_28`.
    pub uv_platform: String,
    /// Source distributions may be built (on this machine, with the environment's Python);
    /// only for a target this machine can run.
    pub allow_sdist: bool,
}

/// The manylinux levels uv knows as `--python-platform` values.
const MANYLINUX_MINORS: std::ops::RangeInclusive<u16> = 17..=40;

impl PipTarget {
    /// From the solved records (their `python`) and the target (its architecture and glibc).
    pub fn new(records: &[RepoDataRecord], target: &Target) -> Result<Self, PipError> {
        let python = records
            .iter()
            .find(|r| r.package_record.name.as_normalized() == "python")
            .ok_or(PipError::NoPython)?;
        let version = python.package_record.version.to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u8>());
        let python_version = match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
            _ => return Err(PipError::NoPython),
        };
        // conda-forge marks free-threaded CPython in the build string (`…_cp313t`).
        let build = python.package_record.build.to_string();
        let free_threaded = build.ends_with('t') && build.contains("_cp");
        let glibc = target.glibc.to_string();
        let minor: u16 = glibc
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(17)
            .clamp(*MANYLINUX_MINORS.start(), *MANYLINUX_MINORS.end());
        let arch = match target.platform {
            TargetPlatform::LinuxAmd64 => "x86_64",
            TargetPlatform::LinuxArm64 => "aarch64",
            TargetPlatform::LinuxPpc64le => "powerpc64le",
        };
        Ok(Self {
            platform: target.platform,
            python: format!("{}.{}", python_version.0, python_version.1),
            python_version,
            free_threaded,
            manylinux_minor: minor,
            uv_platform: format!("{arch}-manylinux_2_{minor}"),
            allow_sdist: false,
        })
    }

    /// The PEP 425 tags this target accepts, in priority order.
    pub fn tags(&self) -> Result<TargetTags, PipError> {
        Ok(TargetTags::new(
            self.platform,
            self.manylinux_minor,
            self.python_version,
            self.free_threaded,
        )?)
    }

    /// uv's `--python-version`: `3.11`, or `3.13t` for a free-threaded build.
    fn uv_python_version(&self) -> String {
        if self.free_threaded {
            format!("{}t", self.python)
        } else {
            self.python.clone()
        }
    }

    /// Lets source distributions be built (`--allow-sdist`): refused unless this machine runs
    /// the target, as the build runs the environment's own Python here.
    pub fn allowing_sdist(mut self, allow: bool) -> Result<Self, PipError> {
        if allow && self.platform != TargetPlatform::host() {
            return Err(PipError::SdistCrossPlatform {
                target: self.platform.to_string(),
                host: TargetPlatform::host().to_string(),
            });
        }
        self.allow_sdist = allow;
        Ok(self)
    }

    /// `lib/pythonX.Y/site-packages`, relative to the prefix.
    pub fn site_packages(&self) -> PathBuf {
        PathBuf::from(format!("lib/python{}/site-packages", self.python))
    }
}

/// The uv program.
#[derive(Debug, Clone)]
pub struct Uv {
    path: PathBuf,
    cache_dir: PathBuf,
}

impl Uv {
    /// `explicit` (`--uv PATH`) or `uv` on `PATH`; uv's own cache under `cache_dir`.
    pub fn find(explicit: Option<&Path>, cache_dir: &Path) -> Result<Self, PipError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => find_on_path("uv").ok_or(PipError::UvMissing)?,
        };
        let out =
            Command::new(&path)
                .arg("--version")
                .output()
                .map_err(|e| PipError::UvUnusable {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        if !out.status.success() {
            return Err(PipError::UvUnusable {
                path,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::debug!(
            "using {} ({})",
            path.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(Self {
            path,
            cache_dir: crate::cache_dir::CacheDir::new(cache_dir).uv(),
        })
    }

    /// `uv pip SUBCOMMAND` with the options every call shares: no user config, no Python
    /// downloads, imgbuild's cache, the target's platform and Python, wheels only.
    fn pip(&self, subcommand: &str, target: &PipTarget, reqs: &PipRequirements) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(["pip", subcommand, "--no-config", "--color", "never"])
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(["--python-version", &target.uv_python_version()])
            .args(["--python-platform", &target.uv_platform])
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env_remove("UV_INDEX_URL")
            .env_remove("UV_EXTRA_INDEX_URL")
            .env_remove("PIP_INDEX_URL");
        if !target.allow_sdist {
            cmd.args(["--only-binary", ":all:"]);
        }
        if let Some(url) = &reqs.index_url {
            cmd.args(["--index-url", url]);
        }
        for url in &reqs.extra_index_urls {
            cmd.args(["--extra-index-url", url]);
        }
        if reqs.pre {
            cmd.args(["--prerelease", "allow"]);
        }
        cmd
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// conda packages whose PyPI name differs from their conda name and that often carry no
/// `purls` in older repodata.
const CONDA_TO_PYPI: &[(&str, &str)] = &[
    ("pytorch", "torch"),
    ("pytorch-cpu", "torch"),
    ("pytorch-gpu", "torch"),
    ("matplotlib-base", "matplotlib"),
    ("msgpack-python", "msgpack"),
    ("py-opencv", "opencv-python"),
    ("tensorflow-base", "tensorflow"),
];

/// Python packages conda installed, as `(normalized PyPI name, version)`: every record that
/// depends on `python`, under the PyPI name(s) its `purls` give (CEP 17), else under a known
/// rename (`pytorch` is `torch` on PyPI), else under its own name. pip requirements on them are
/// satisfied by conda's build.
pub fn conda_python_dists(records: &[RepoDataRecord]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in records {
        let p = &r.package_record;
        let name = p.name.as_normalized();
        let python_dep = p.depends.iter().any(|d| {
            d == "python"
                || ["python ", "python>", "python=", "python<"]
                    .iter()
                    .any(|x| d.starts_with(x))
        });
        if name == "python" || !python_dep {
            continue;
        }
        let from_purls: Vec<String> = p
            .purls
            .iter()
            .flatten()
            .filter(|u| *u.package_type() == "pypi")
            .map(|u| normalize_name(u.name()))
            .collect();
        let names = if !from_purls.is_empty() {
            from_purls
        } else if let Some((_, pypi)) = CONDA_TO_PYPI.iter().find(|(conda, _)| *conda == name) {
            vec![pypi.to_string()]
        } else {
            vec![normalize_name(name)]
        };
        for n in names {
            out.insert(n, p.version.to_string());
        }
    }
    out
}

/// Resolves `reqs` for `target` with uv (network: the indexes), conda's Python packages pinned
/// and left out of the result.
pub fn resolve(
    uv: &Uv,
    reqs: &PipRequirements,
    target: &PipTarget,
    conda: &BTreeMap<String, String>,
) -> Result<Vec<PipPackage>, PipError> {
    let work = tempfile::Builder::new()
        .prefix("imgbuild-pip-")
        .tempdir()
        .map_err(|e| PipError::io(&std::env::temp_dir(), e))?;
    let input = work.path().join("requirements.in");
    write_lines(&input, &reqs.requirements)?;
    let constraints = work.path().join("conda-constraints.txt");
    write_lines(
        &constraints,
        &conda
            .iter()
            .map(|(n, v)| format!("{n}=={v}"))
            .collect::<Vec<_>>(),
    )?;
    // conda's Python packages as wheels with their name and version only, so uv can pin them
    // even where the index has no such version (a conda-only build).
    let stubs = work.path().join("conda-dists");
    fs::create_dir_all(&stubs).map_err(|e| PipError::io(&stubs, e))?;
    for (name, version) in conda {
        write_stub_wheel(&stubs, name, version)?;
    }
    let output = work.path().join("pylock.toml");
    let mut cmd = uv.pip("compile", target, reqs);
    cmd.arg(&input)
        .arg("--constraint")
        .arg(&constraints)
        .arg("--find-links")
        .arg(&stubs)
        .args(["--format", "pylock.toml", "--quiet", "--no-header"])
        .arg("--output-file")
        .arg(&output);
    for name in conda.keys() {
        cmd.args(["--no-emit-package", name]);
    }
    let out = run(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut message = explain_failure(&stderr, conda);
        message.push_str(&index_files::explain_missing_wheels(
            &stderr,
            reqs.index_url.as_deref(),
            &target.tags()?,
        ));
        return Err(PipError::Resolve {
            platform: target.uv_platform.clone(),
            python: target.python.clone(),
            message,
        });
    }
    let text = fs::read_to_string(&output).map_err(|e| PipError::io(&output, e))?;
    pylock::packages(&text, work.path(), &target.tags()?)
}

/// A wheel holding only the `.dist-info` of `name` `version` (no files, no dependencies): how
/// uv learns about a Python package conda installed.
fn write_stub_wheel(dir: &Path, name: &str, version: &str) -> Result<(), PipError> {
    use zip::write::SimpleFileOptions;
    let stem = format!("{}-{version}", name.replace('-', "_"));
    let path = dir.join(format!("{stem}-py3-none-any.whl"));
    let file = fs::File::create(&path).map_err(|e| PipError::io(&path, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let info = format!("{stem}.dist-info");
    let files = [
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: imgbuild\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
        (
            format!("{info}/RECORD"),
            format!("{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n"),
        ),
    ];
    for (entry, text) in files {
        zip.start_file(entry, SimpleFileOptions::default())
            .map_err(|e| PipError::io(&path, e))?;
        zip.write_all(text.as_bytes())
            .map_err(|e| PipError::io(&path, e))?;
    }
    zip.finish().map_err(|e| PipError::io(&path, e))?;
    Ok(())
}

/// The wheels for `reqs` in an environment of `records` on `target`: [`resolve`] with the
/// Python and platform they imply and conda's Python packages kept.
pub fn resolve_for(
    uv: &Uv,
    reqs: &PipRequirements,
    records: &[RepoDataRecord],
    target: &Target,
    allow_sdist: bool,
) -> Result<Vec<PipPackage>, PipError> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let pip_target = PipTarget::new(records, target)?.allowing_sdist(allow_sdist)?;
    resolve(uv, reqs, &pip_target, &conda_python_dists(records))
}

/// uv's explanation, with a pointer at conda when a conda-installed package is involved and at
/// `--allow-sdist`-free alternatives when only source distributions exist.
fn explain_failure(stderr: &str, conda: &BTreeMap<String, String>) -> String {
    let mut message = stderr.trim().to_string();
    let involved: Vec<String> = conda
        .iter()
        .filter(|(name, version)| {
            let needle = format!("{name}=={version}");
            stderr.contains(&needle)
        })
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    if !involved.is_empty() {
        message.push_str(&format!(
            "\nThe pip requirements conflict with Python packages conda installed ({}): conda's \
             versions are kept. Change the pip requirement, or pin a conda version that satisfies it.",
            involved.join(", ")
        ));
    }
    if stderr.contains("no usable wheels") || stderr.contains("no wheels") {
        message.push_str(
            "\nimgbuild installs wheels only (--only-binary :all:), built for the target \
             platform; choose a version that publishes wheels for it, or pass --allow-sdist to \
             build source distributions on this machine (only for its own platform).",
        );
    }
    message
}

fn write_lines(path: &Path, lines: &[String]) -> Result<(), PipError> {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).map_err(|e| PipError::io(path, e))
}

fn run(mut cmd: Command) -> Result<std::process::Output, PipError> {
    tracing::debug!("running {cmd:?}");
    cmd.output().map_err(|e| PipError::Install {
        message: format!("cannot run {:?}: {e}", cmd.get_program()),
    })
}

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
/// afterwards (see [`write_replacing`]), so the cache's files stay as uv unpacked them.
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
        return Err(PipError::Install {
            message: format!(
                "--compile runs the environment's Python, which cannot run here: the target is {} \
                 and this machine is {}; build without --compile",
                target.platform,
                TargetPlatform::host()
            ),
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
fn fix_record(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<PipRequirements, PipError> {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        PipRequirements::parse(&lines, Path::new("/spec/environment.yml"))
    }

    #[test]
    fn requirement_lines_users_write() {
        let r = parse(&[
            "six",
            "pyyaml==6.*",
            "requests[socks]>=2.31,<3 ; python_version >= '3.8'",
            "--extra-index-url https://example.org/simple",
            "--index-url=https://mirror.example/simple  # our mirror",
        ])
        .unwrap();
        assert_eq!(r.requirements.len(), 3);
        assert_eq!(r.extra_index_urls, ["https://example.org/simple"]);
        assert_eq!(
            r.index_url.as_deref(),
            Some("https://mirror.example/simple")
        );
    }

    #[test]
    fn editable_vcs_and_paths_are_refused_naming_the_line() {
        let e = parse(&["six", "-e ."]).unwrap_err().to_string();
        assert!(
            e.contains("pip: entry 2") && e.contains("'-e .'") && e.contains("editable"),
            "{e}"
        );
        let e = parse(&["git+https://github.com/x/y.git"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("version control"), "{e}");
        let e = parse(&["y @ git+https://github.com/x/y.git@v1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("version control"), "{e}");
        let e = parse(&["./local"]).unwrap_err().to_string();
        assert!(e.contains("only local wheel files"), "{e}");
        let e = parse(&["./missing-1.0-py3-none-any.whl"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read the wheel /spec/./missing-1.0-py3-none-any.whl"),
            "{e}"
        );
        assert!(parse(&["--no-binary :all:"]).is_err());
    }

    #[test]
    fn local_wheels_become_file_urls_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("dist")).unwrap();
        let wheel = dir.path().join("dist/Foo_Bar-1.0-2-py3-none-any.whl");
        fs::write(&wheel, b"PK").unwrap();
        let spec = dir.path().join("environment.yml");
        let url = url::Url::from_file_path(wheel.canonicalize().unwrap()).unwrap();
        for line in [
            "./dist/Foo_Bar-1.0-2-py3-none-any.whl".to_string(),
            "dist/Foo_Bar-1.0-2-py3-none-any.whl".to_string(),
            format!("foo-bar @ {url}"),
            url.to_string(),
        ] {
            let r = PipRequirements::parse(std::slice::from_ref(&line), &spec).unwrap();
            assert_eq!(r.requirements, [format!("foo-bar @ {url}")], "{line}");
        }
        let e = PipRequirements::parse(&["./dist/foo-1.0.tar.gz".to_string()], &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only local wheel files"), "{e}");
    }

    #[test]
    fn requirement_files_are_read_relative_to_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("base.txt"),
            "six\n# comment\ntqdm \\\n  >=4\n",
        )
        .unwrap();
        fs::write(dir.path().join("bad.txt"), "six\n-e ./src\n").unwrap();
        let spec = dir.path().join("environment.yml");
        let r = PipRequirements::parse(&["-r base.txt".to_string()], &spec).unwrap();
        assert_eq!(r.requirements, ["six", "tqdm   >=4"]);
        let e = PipRequirements::parse(&["-r bad.txt".to_string()], &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.txt:2"), "{e}");
    }

    #[test]
    fn shebangs_point_at_the_prefix_python() {
        let s = rewrite_shebang(b"#!/root/.venv/bin/python\nimport sys\n", "/opt/conda");
        assert_eq!(s, b"#!/opt/conda/bin/python\nimport sys\n");
        let tramp = b"#!/bin/sh\n'''exec' \"/very/long/python\" \"$0\" \"$@\"\n' '''\nimport sys\n";
        assert_eq!(
            rewrite_shebang(tramp, "/opt/conda"),
            b"#!/opt/conda/bin/python\nimport sys\n"
        );
        let long = format!("/{}", "p".repeat(130));
        let s = String::from_utf8(rewrite_shebang(b"#!/x/python\nimport sys\n", &long)).unwrap();
        assert!(
            s.starts_with("#!/bin/sh\n'''exec' '/ppp") && s.ends_with("' '''\nimport sys\n"),
            "{s}"
        );
    }

    #[test]
    fn conda_python_packages_go_by_their_pypi_names() {
        use rattler_conda_types::{PackageName, PackageRecord, VersionWithSource};
        let record = |name: &str, depends: &[&str], purl: Option<&str>| {
            let mut p = PackageRecord::new(
                PackageName::new_unchecked(name),
                "2.1.0".parse::<VersionWithSource>().unwrap(),
                "0".parse().unwrap(),
            );
            p.depends = depends.iter().map(|d| d.to_string()).collect();
            p.purls = purl.map(|u| [u.parse().unwrap()].into_iter().collect());
            RepoDataRecord {
                package_record: p,
                identifier: format!("{name}-2.1.0-0.conda").parse().unwrap(),
                url: url::Url::parse("https://example.org/x.conda").unwrap(),
                channel: None,
            }
        };
        let dists = conda_python_dists(&[
            record("python", &[], None),
            record("pytorch", &["python >=3.10,<3.11"], None),
            record(
                "pyyaml",
                &["python_abi 3.10.* *_cp310", "python"],
                Some("pkg:pypi/pyyaml"),
            ),
            record("typing_extensions", &["python >=3.8"], None),
            record("libzlib", &["libgcc"], None),
            record("attrs-odd", &["python"], Some("pkg:pypi/attrs")),
        ]);
        let names: Vec<&str> = dists.keys().map(String::as_str).collect();
        assert_eq!(names, ["attrs", "pyyaml", "torch", "typing-extensions"]);
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("PyYAML"), "pyyaml");
        assert_eq!(normalize_name("typing_extensions"), "typing-extensions");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
    }

    #[test]
    fn licenses_come_from_metadata() {
        let m = |s: &str| metadata_license(s);
        assert_eq!(
            m("Name: a\nLicense-Expression: MIT\nLicense: x\n\nbody").as_deref(),
            Some("MIT")
        );
        assert_eq!(
            m("Name: a\nLicense: BSD-3-Clause\n").as_deref(),
            Some("BSD-3-Clause")
        );
        assert_eq!(
            m("Name: a\nClassifier: License :: OSI Approved :: MIT License\n").as_deref(),
            Some("MIT License")
        );
        assert_eq!(m("Name: a\nLicense: UNKNOWN\n"), None);
    }

    #[test]
    fn record_rows_follow_moved_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("RECORD");
        fs::write(
            &record,
            "tqdm/__init__.py,sha256=abc,10\nbin/tqdm,sha256=old,5\ntqdm-1.dist-info/direct_url.json,sha256=x,9\ntqdm-1.dist-info/uv_cache.json,sha256=y,9\ntqdm-1.dist-info/RECORD,,\n",
        )
        .unwrap();
        let mut scripts = BTreeMap::new();
        scripts.insert("bin/tqdm".to_string(), ("sha256=new".to_string(), 42));
        fix_record(&record, &scripts, "../../../").unwrap();
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            "tqdm/__init__.py,sha256=abc,10\n../../../bin/tqdm,sha256=new,42\ntqdm-1.dist-info/RECORD,,\n"
        );
    }
}
