//! Reading the PEP 751 `pylock.toml` uv writes for one target: one file to install per package.
//!
//! A package comes as `wheels = [...]` (every wheel of the release that fits the platform;
//! [`crate::wheel::choose`] takes the one an installer would), as `archive = {url|path}` (a
//! direct reference: `name @ https://…/x.whl` or a local wheel file), or as `sdist` (built only
//! with `--allow-sdist`).

use std::path::Path;

use toml::Value;

use super::{normalize_name, PipError, PipPackage};
use crate::wheel::{self, TargetTags, WheelFile};

/// The packages of `text`, a pylock.toml whose relative paths are relative to `dir`.
pub(crate) fn packages(
    text: &str,
    dir: &Path,
    tags: &TargetTags,
) -> Result<Vec<PipPackage>, PipError> {
    let bad = |message: String| PipError::Pylock { message };
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let mut out = Vec::new();
    for pkg in doc
        .get("packages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let s = |k: &str| pkg.get(k).and_then(Value::as_str).map(str::to_string);
        let name = s("name").ok_or_else(|| bad("a package without a name".into()))?;
        let version = s("version").ok_or_else(|| bad(format!("{name}: no version")))?;
        let (url, sha256) = if let Some(wheels) = pkg.get("wheels").and_then(Value::as_array) {
            let files = wheels
                .iter()
                .map(|w| wheel_file(w, &name, dir))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let chosen = wheel::choose(&name, &version, &files, tags)?;
            (chosen.url.clone(), chosen.sha256.clone())
        } else if let Some(archive) = pkg.get("archive") {
            let file = wheel_file(archive, &name, dir).map_err(bad)?;
            (file.url, file.sha256)
        } else if let Some(sdist) = pkg.get("sdist") {
            let file = wheel_file(sdist, &name, dir).map_err(bad)?;
            (file.url, file.sha256)
        } else {
            return Err(bad(format!(
                "{name}: no wheels, archive or sdist (a directory or VCS source?)"
            )));
        };
        out.push(PipPackage {
            name: normalize_name(&name),
            version,
            url,
            sha256,
            license: None,
        });
    }
    out.sort();
    Ok(out)
}

/// A file entry (`{url|path, hashes}`) as a URL and sha256; a path becomes a `file://` URL.
fn wheel_file(entry: &Value, name: &str, dir: &Path) -> Result<WheelFile, String> {
    let url = match (
        entry.get("url").and_then(Value::as_str),
        entry.get("path").and_then(Value::as_str),
    ) {
        (Some(url), _) => url.to_string(),
        (None, Some(path)) => {
            let path = dir.join(path);
            url::Url::from_file_path(&path)
                .map_err(|()| format!("{name}: path {} is not absolute", path.display()))?
                .to_string()
        }
        (None, None) => return Err(format!("{name}: a file without a URL or path")),
    };
    let sha256 = entry
        .get("hashes")
        .and_then(|h| h.get("sha256"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name}: {url} has no sha256"))?
        .to_string();
    Ok(WheelFile {
        file_name: wheel::file_name_of(&url),
        url,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetPlatform;

    // Abridged from what uv 0.13.9 wrote for
    // `charset-normalizer nvidia-cudnn-cu11 tqdm @ https://…whl ./w/six-…whl` (2026-12-02).
    const PYLOCK: &str = r#"
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "charset-normalizer"
version = "3.5.3"
wheels = [
    { url = "https://files.example/charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl", size = 263382, hashes = { sha256 = "2a6f" } },
    { url = "https://files.example/charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl", size = 234407, hashes = { sha256 = "26c6" } },
    { url = "https://files.example/charset_normalizer-3.5.3-py3-none-any.whl", size = 68878, hashes = { sha256 = "96e2" } },
]

[[packages]]
name = "nvidia-cudnn-cu11"
version = "8.5.0.96"
wheels = [
    { url = "https://files.example/nvidia_cudnn_cu11-8.5.0.96-2-py3-none-manylinux1_x86_64.whl", hashes = { sha256 = "b2" } },
    { url = "https://files.example/nvidia_cudnn_cu11-8.5.0.96-py3-none-manylinux1_x86_64.whl", hashes = { sha256 = "b0" } },
]

[[packages]]
name = "tqdm"
version = "4.67.1"
archive = { url = "https://files.example/tqdm-4.67.1-py3-none-any.whl", hashes = { sha256 = "2644" } }

[[packages]]
name = "six"
version = "1.16.0"
archive = { path = "w/six-1.16.0-py2.py3-none-any.whl", hashes = { sha256 = "8abb" } }
"#;

    #[test]
    fn one_file_per_package() {
        let tags = TargetTags::new(TargetPlatform::LinuxAmd64, 28, (3, 11), false).unwrap();
        let got = packages(PYLOCK, Path::new("/lock"), &tags).unwrap();
        let pick: Vec<(&str, &str)> = got
            .iter()
            .map(|p| (p.name.as_str(), p.sha256.as_str()))
            .collect();
        assert_eq!(
            pick,
            [
                ("charset-normalizer", "2a6f"),
                ("nvidia-cudnn-cu11", "b2"),
                ("six", "8abb"),
                ("tqdm", "2644"),
            ]
        );
        assert_eq!(got[2].url, "file:///lock/w/six-1.16.0-py2.py3-none-any.whl");
    }

    #[test]
    fn no_fitting_wheel_names_the_package_and_the_wheels() {
        let tags = TargetTags::new(TargetPlatform::LinuxArm64, 28, (3, 11), false).unwrap();
        let e = packages(PYLOCK, Path::new("/lock"), &tags)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "nvidia-cudnn-cu11 8.5.0.96 has no wheel for the target \
                 (cp311-cp311-manylinux_2_28_aarch64); the index has: \
                 nvidia_cudnn_cu11-8.5.0.96-2-py3-none-manylinux1_x86_64.whl, \
                 nvidia_cudnn_cu11-8.5.0.96-py3-none-manylinux1_x86_64.whl"
            ),
            "{e}"
        );
    }
}
