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

mod error;
mod index_files;
mod install;
mod package;
mod pylock;
mod requirements;
mod resolve;
mod target;
mod uv;

pub use error::PipError;
pub use install::{install, metadata_license, rewrite_shebang};
pub use package::{normalize_name, PipPackage};
pub use requirements::PipRequirements;
pub use resolve::{conda_python_dists, resolve, resolve_for};
pub use target::PipTarget;
pub use uv::Uv;

use resolve::write_lines;
use uv::run;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;

    use rattler_conda_types::RepoDataRecord;

    use super::install::fix_record;
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
