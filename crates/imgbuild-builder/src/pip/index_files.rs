//! What a package index offers, for the error when no wheel of a requirement fits the target.
//!
//! uv says *that* a release has no wheel with a matching tag, and on which platforms wheels
//! exist; a user deciding what to pin wants the files themselves. On that failure (only then:
//! a successful resolve asks the index nothing here) the index's PEP 691 JSON page of each
//! package uv names is read and its wheels of the release in question are listed.

use std::time::Duration;

use serde::Deserialize;
use uv_distribution_filename::WheelFilename;

use crate::wheel::TargetTags;

/// The index pip and uv use when none is given.
const PYPI: &str = "https://pypi.org/simple";
/// Files listed before "and N more".
const LISTED: usize = 12;

#[derive(Deserialize)]
struct Page {
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    filename: String,
}

/// For each package uv's `stderr` says has no fitting wheel: a line naming the target's tag
/// and the wheels the index has for that release. Empty when uv said nothing of the kind or
/// the index cannot be read (the error is still uv's, and complete without this).
pub(crate) fn explain_missing_wheels(
    stderr: &str,
    index_url: Option<&str>,
    tags: &TargetTags,
) -> String {
    let missing = missing_wheels(stderr);
    if missing.is_empty() {
        return String::new();
    }
    let index = index_url.unwrap_or(PYPI).trim_end_matches('/').to_string();
    // A thread of its own with a small runtime: the resolve is synchronous and may itself run
    // inside the build's tokio runtime (under `block_in_place`), where blocking on a future
    // of the outer runtime is not allowed.
    let pages = std::thread::spawn(move || fetch_pages(&index, missing))
        .join()
        .unwrap_or_default();
    let mut out = String::new();
    for (m, files) in pages {
        let Some((version, wheels)) = release_wheels(&files, &m) else {
            out.push_str(&format!(
                "\n{}{} has no wheel for the target ({}): the index has no wheel of it at \
                 all, only source distributions",
                m.name,
                m.constraint,
                tags.best()
            ));
            continue;
        };
        let more = wheels.len().saturating_sub(LISTED);
        out.push_str(&format!(
            "\n{} {version} has no wheel for the target ({}); the index has: {}{}",
            m.name,
            tags.best(),
            wheels[..wheels.len().min(LISTED)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// A package uv says has no wheel that fits.
#[derive(Debug, PartialEq, Eq)]
struct Missing {
    name: String,
    /// The versions uv speaks of: `<=2.2.2`, `==1.4.2` (empty for all).
    constraint: String,
    /// The release a hint names (`Wheels are available for `NAME` (vVERSION)`).
    hinted: Option<String>,
}

/// Each package uv says lacks a fitting wheel, from its "NAME… has no wheels with a matching
/// … tag" / "has no usable wheels" lines and "Wheels are available for `NAME` (vVERSION)"
/// hints.
fn missing_wheels(stderr: &str) -> Vec<Missing> {
    let mut out: Vec<Missing> = Vec::new();
    for line in stderr.lines() {
        let mut rest = line;
        while let Some(at) = [" has no wheels with a matching", " has no usable wheels"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min()
        {
            let before = &rest[..at];
            let spec = before.rsplit([' ', '(']).next().unwrap_or_default();
            let name = spec
                .split(['=', '<', '>', '!', '~', '['])
                .next()
                .unwrap_or_default()
                .to_string();
            let constraint = spec[name.len()..].to_string();
            if !name.is_empty() && !out.iter().any(|m| m.name == name) {
                out.push(Missing {
                    name,
                    constraint,
                    hinted: None,
                });
            }
            rest = &rest[at + 1..];
        }
    }
    for line in stderr.lines() {
        let Some(tail) = line.split("are available for `").nth(1) else {
            continue;
        };
        let Some((name, after)) = tail.split_once('`') else {
            continue;
        };
        let version = after
            .trim_start()
            .strip_prefix("(v")
            .and_then(|v| v.split(')').next());
        if let (Some(entry), Some(v)) = (out.iter_mut().find(|m| m.name == name), version) {
            entry.hinted = Some(v.to_string());
        }
    }
    out
}

fn fetch_pages(index: &str, missing: Vec<Missing>) -> Vec<(Missing, Vec<String>)> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .build()
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in missing {
            let url = format!("{index}/{}/", super::normalize_name(&m.name));
            let page = async {
                client
                    .get(&url)
                    .header("Accept", "application/vnd.pypi.simple.v1+json")
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .json::<Page>()
                    .await
                    .ok()
            };
            if let Some(page) = page.await {
                let files = page.files.into_iter().map(|f| f.filename).collect();
                out.push((m, files));
            } else {
                tracing::debug!("cannot read {url} to list its wheels");
            }
        }
        out
    })
}

/// The wheels of the release `m` is about: the hinted one, else the newest within its
/// constraint that has wheels. `None` if no release in the constraint has any.
fn release_wheels(files: &[String], m: &Missing) -> Option<(String, Vec<String>)> {
    let constraint: Option<uv_pep440::VersionSpecifiers> = if m.constraint.is_empty() {
        None
    } else {
        m.constraint.parse().ok()
    };
    let wheels: Vec<(WheelFilename, &String)> = files
        .iter()
        .filter_map(|f| Some((f.parse::<WheelFilename>().ok()?, f)))
        .filter(|(w, _)| constraint.as_ref().is_none_or(|c| c.contains(&w.version)))
        .collect();
    let version = match &m.hinted {
        Some(v) => v.clone(),
        None => wheels.iter().map(|(w, _)| &w.version).max()?.to_string(),
    };
    let mut names: Vec<String> = wheels
        .iter()
        .filter(|(w, _)| w.version.to_string() == version)
        .map(|(_, f)| (*f).clone())
        .collect();
    names.sort();
    (!names.is_empty()).then_some((version, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    // What uv 0.13.9 printed for `pywin32` on x86_64-manylinux_2_28, Python 3.11.
    const STDERR: &str = "error: No solution found when resolving dependencies
  cause: Because pywin32<=302 has no wheels with a matching Python ABI tag (e.g., `cp311`) and only the following versions of pywin32 are available:
             pywin32<=302
             pywin32>=303
         we can conclude that pywin32<303 cannot be used.
         And because pywin32>=303 has no wheels with a matching platform tag (e.g., `manylinux_2_28_x86_64`) and you require pywin32, we can conclude that your requirements are unsatisfiable.

hint: Wheels are available for `pywin32` (v312) on the following platforms: `win32`, `win_amd64`, `win_arm64`";

    fn missing(name: &str, constraint: &str, hinted: Option<&str>) -> Missing {
        Missing {
            name: name.into(),
            constraint: constraint.into(),
            hinted: hinted.map(str::to_string),
        }
    }

    #[test]
    fn packages_without_wheels_are_read_from_uvs_message() {
        assert_eq!(
            missing_wheels(STDERR),
            [missing("pywin32", "<=302", Some("312"))]
        );
        assert!(missing_wheels("error: network unreachable").is_empty());
        assert_eq!(
            missing_wheels(
                "  cause: Because basicsr==1.4.2 has no usable wheels and you require basicsr==1.4.2, we"
            ),
            [missing("basicsr", "==1.4.2", None)]
        );
    }

    #[test]
    fn the_release_in_question_is_listed() {
        let files: Vec<String> = [
            "pywin32-311-cp311-cp311-win_amd64.whl",
            "pywin32-312-cp311-cp311-win_amd64.whl",
            "pywin32-312-cp311-cp311-win32.whl",
            "pywin32-312.tar.gz",
            "pywin32-200.tar.gz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (v, names) = release_wheels(&files, &missing("pywin32", "", None)).unwrap();
        assert_eq!(v, "312");
        assert_eq!(
            names,
            [
                "pywin32-312-cp311-cp311-win32.whl",
                "pywin32-312-cp311-cp311-win_amd64.whl"
            ]
        );
        let (v, names) = release_wheels(&files, &missing("pywin32", "<312", None)).unwrap();
        assert_eq!((v.as_str(), names.len()), ("311", 1));
        assert!(release_wheels(&files, &missing("pywin32", "<300", None)).is_none());
        assert!(release_wheels(&files[3..], &missing("pywin32", "", None)).is_none());
    }
}
