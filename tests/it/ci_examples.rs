//! The CI examples in examples/ci (issue 17): the GitHub Actions workflow and the GitLab CI
//! pipeline validate against their published schemas (check-jsonschema's bundled copies, so
//! offline), the Kubernetes Job is an Indexed Job, and every imgbuild flag they use exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci")
}

fn check_jsonschema() -> PathBuf {
    let path = std::env::var_os("IMGBUILD_CHECK_JSONSCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/oracle-venv/bin/check-jsonschema")
        });
    assert!(
        path.is_file(),
        "{} is missing: run .ci/run (it installs check-jsonschema from PyPI into target/oracle-venv)",
        path.display()
    );
    path
}

#[test]
fn workflow_files_validate_against_their_schemas() {
    for (file, schema) in [
        ("github-actions.yml", "vendor.github-workflows"),
        ("gitlab-ci.yml", "vendor.gitlab-ci"),
    ] {
        let out = Command::new(check_jsonschema())
            .args(["--builtin-schema", schema])
            .arg(examples().join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let job: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(examples().join("k8s-indexed-job.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    assert_eq!(job["spec"]["completionMode"].as_str(), Some("Indexed"));
}

#[test]
fn every_flag_the_examples_use_is_one_imgbuild_has() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let known = [
        help(&["build"]),
        help(&["index"]),
        help(&["cache", "prune"]),
    ]
    .concat();
    // Flags of the other programs the examples run.
    let others = ["--locked", "--break-system-packages"];
    for file in [
        "github-actions.yml",
        "gitlab-ci.yml",
        "k8s-indexed-job.yaml",
    ] {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        assert!(text.contains("imgbuild build"), "{file}");
        for token in text.split(|c: char| c.is_whitespace() || c == '"' || c == '=') {
            let Some(flag) = token.strip_prefix("--") else {
                continue;
            };
            let flag = format!(
                "--{}",
                flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            );
            if flag == "--" || others.contains(&flag.as_str()) {
                continue;
            }
            assert!(
                known.contains(&format!("{flag} ")) || known.contains(&format!("{flag}\n")),
                "{file} uses {flag}, which imgbuild does not have"
            );
        }
    }
}
