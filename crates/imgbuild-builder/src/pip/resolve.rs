//! `uv pip compile` for the target: the exact wheels of the `pip:` section, pinned against
//! what conda installed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use rattler_conda_types::RepoDataRecord;

use super::{
    index_files, normalize_name, pylock, run, PipError, PipPackage, PipRequirements, PipTarget, Uv,
};
use crate::target::Target;

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
            .map_err(|e| PipError::io(&path, e.into()))?;
        zip.write_all(text.as_bytes())
            .map_err(|e| PipError::io(&path, e))?;
    }
    zip.finish().map_err(|e| PipError::io(&path, e.into()))?;
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

pub(super) fn write_lines(path: &Path, lines: &[String]) -> Result<(), PipError> {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).map_err(|e| PipError::io(path, e))
}
