//! The `pip:` section, end to end: a real CPython (this machine's, packaged as a conda
//! package), real wheels from PyPI resolved and installed by uv for the target, run under
//! podman; the lock records the wheels; arm64 gets aarch64 wheels; bad lines fail clearly.
//!
//! Needs uv (`IMGBUILD_UV` or uv on PATH; `.ci/run` installs it) and PyPI.

use std::path::Path;

use serde_json::Value;

use crate::common::cpython::{glibc_base, host_python};
use crate::common::*;

const PIP: &[&str] = &["six", "pyyaml==6.*", "tqdm"];

/// An environment.yml with the machine's Python and `pip` lines.
pub(crate) fn pip_spec(ctx: &TestContext, name: &str, pip: &[&str]) -> std::path::PathBuf {
    pip_spec_with(ctx, name, &[], pip)
}

/// Like [`pip_spec`], with more conda packages.
fn pip_spec_with(
    ctx: &TestContext,
    name: &str,
    conda: &[&str],
    pip: &[&str],
) -> std::path::PathBuf {
    let py = host_python();
    let mut text = format!(
        "name: pip-test\nchannels:\n  - {}\ndependencies:\n  - python={}\n",
        py.channel, py.short
    );
    for dep in conda {
        text.push_str(&format!("  - {dep}\n"));
    }
    text.push_str("  - pip:\n");
    for line in pip {
        text.push_str(&format!("    - \"{line}\"\n"));
    }
    let path = ctx.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn history(layout: &Path) -> Vec<String> {
    config(layout)["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn digest(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("digest: ")
        .unwrap_or_else(|| panic!("no digest: {}", stderr(out)))
        .to_string()
}

/// The entry at `path`; for a hard link (identical files are stored once), its target's.
fn file<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    let e = entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in the image"));
    match (&e.kind, &e.link) {
        (tar::EntryType::Link, Some(target)) => file(entries, target),
        _ => e,
    }
}

fn record_hash(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
    )
}

#[test]
fn pip_packages_install_for_the_target_run_and_lock() {
    let ctx = TestContext::new();
    let py = host_python();
    let base = glibc_base(&ctx.path("glibc"));
    let spec = pip_spec(&ctx, "environment.yml", PIP);
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "pip:1",
    ]);
    assert_ok(&res);
    let image = digest(&res);

    // The pip packages are in their own layers (small ones in groups by name), after the
    // conda layers, before the environment's.
    let history = history(&out);
    let pip_at: Vec<usize> = (0..history.len())
        .filter(|i| history[*i].starts_with("imgbuild: pip packages "))
        .collect();
    assert!(!pip_at.is_empty(), "no pip layer: {history:?}");
    assert!(pip_at.windows(2).all(|w| w[1] == w[0] + 1), "{history:?}");
    let pip_line = pip_at
        .iter()
        .map(|i| history[*i].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for name in ["six-", "pyyaml-6.", "tqdm-"] {
        assert!(pip_line.contains(name), "{pip_line}");
    }
    assert!(history[..pip_at[0]]
        .iter()
        .any(|h| h.starts_with("imgbuild: conda packages") && h.contains("python-")));
    assert!(
        history[pip_at[pip_at.len() - 1] + 1].starts_with("imgbuild: environment"),
        "{history:?}"
    );

    let entries = layer_entries(&out);
    let site = format!("opt/conda/lib/python{}/site-packages", py.short);
    // The console script runs the image's Python, by its final path.
    let script = file(&entries, "opt/conda/bin/tqdm");
    let text = String::from_utf8(script.data.clone()).unwrap();
    assert!(
        text.starts_with("#!/opt/conda/bin/python\n"),
        "shebang: {:?}",
        text.lines().next()
    );
    // RECORD lists it where it is, with its hash and size; INSTALLER names uv.
    let dist = entries
        .iter()
        .find(|e| {
            e.path.starts_with(&format!("{site}/tqdm-")) && e.path.ends_with(".dist-info/RECORD")
        })
        .expect("tqdm's RECORD");
    let record = String::from_utf8(dist.data.clone()).unwrap();
    let row = format!(
        "../../../bin/tqdm,{},{}",
        record_hash(&script.data),
        script.data.len()
    );
    assert!(record.lines().any(|l| l == row), "{row} not in\n{record}");
    let installer = dist.path.replace("RECORD", "INSTALLER");
    assert_eq!(file(&entries, &installer).data, b"uv");
    // No bytecode unless --compile; no host path anywhere in the pip files.
    assert!(
        !entries.iter().any(|e| e.path.contains("__pycache__")),
        "pycache in the image"
    );
    for e in entries
        .iter()
        .filter(|e| e.path.starts_with(&site) || e.path == "opt/conda/bin/tqdm")
    {
        let hay = String::from_utf8_lossy(&e.data);
        assert!(
            !hay.contains(&py.prefix),
            "{} holds the host prefix",
            e.path
        );
        assert!(!hay.contains("/tmp/"), "{} holds a staging path", e.path);
    }

    // The SBOM lists the wheels as PyPI packages.
    let sbom: Value =
        serde_json::from_slice(&file(&entries, "opt/conda/conda-meta/imgbuild.spdx.json").data)
            .unwrap();
    let purls: Vec<String> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .map(str::to_string)
        .collect();
    for name in ["six", "pyyaml", "tqdm"] {
        assert!(
            purls
                .iter()
                .any(|p| p.starts_with(&format!("pkg:pypi/{name}@"))),
            "{purls:?}"
        );
    }
    // Licenses from the wheels' METADATA (six declares MIT).
    let six = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["SPDXID"] == "SPDXRef-pypi-six")
        .unwrap();
    assert_eq!(six["licenseDeclared"], "MIT", "{six}");

    // It runs: a binary manylinux wheel (libyaml) and the console script.
    let name = format!("localhost/imgbuild-it-pip-{}:latest", std::process::id());
    sh(&format!(
        "skopeo copy oci:{}:pip:1 containers-storage:{name}",
        out.display()
    ));
    let run = |cmd: &str| {
        sh(&format!(
            "podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {name} {cmd}"
        ))
    };
    let printed = run("/opt/conda/bin/python -c 'import six, yaml; print(yaml.__with_libyaml__)'");
    let version = run("/opt/conda/bin/tqdm --version");
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &name])
        .output();
    assert_eq!(printed.trim(), "True");
    assert!(
        pip_line.contains(&format!("tqdm-{}", version.trim())),
        "{version} vs {pip_line}"
    );

    // The lock records the wheels (URL + sha256); building from it gives the same image, and
    // so does a second build from the spec with a fresh cache.
    let lock = ctx.path("pip.lock");
    assert_ok(&ctx.imgbuild(&[
        "lock",
        "--spec",
        spec.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
    ]));
    let lock_text = std::fs::read_to_string(&lock).unwrap();
    assert!(
        lock_text.contains("pypi: https://files.pythonhosted.org/"),
        "{lock_text}"
    );
    assert!(lock_text.contains("sha256: "), "{lock_text}");
    let from_lock = ctx.imgbuild(&[
        "--lock",
        lock.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        ctx.path("img-lock").to_str().unwrap(),
        "--cache-dir",
        ctx.path("cache-lock").to_str().unwrap(),
    ]);
    assert_ok(&from_lock);
    let again = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        ctx.path("img-again").to_str().unwrap(),
        "--cache-dir",
        ctx.path("cache-again").to_str().unwrap(),
    ]);
    assert_ok(&again);
    assert_eq!(digest(&again), image, "two builds, two digests");
    // Tags differ (none here), so compare manifests: same layers, same config.
    assert_eq!(manifest(&ctx.path("img-lock")), manifest(&out));
}

#[test]
fn arm64_images_get_aarch64_wheels() {
    let ctx = TestContext::new();
    let spec = pip_spec(&ctx, "environment.yml", PIP);
    let out = ctx.path("img");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--output",
        out.to_str().unwrap(),
    ]));
    let entries = layer_entries(&out);
    let so: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.path.contains("/site-packages/yaml/") && e.path.ends_with(".so"))
        .collect();
    assert!(!so.is_empty(), "pyyaml's extension is missing");
    for e in &so {
        assert!(e.path.contains("aarch64"), "{}", e.path);
        assert_eq!(
            elf_machine(&e.data),
            183,
            "{} is not an aarch64 ELF",
            e.path
        );
    }
    let wheel = entries
        .iter()
        .find(|e| e.path.contains("/pyyaml-") && e.path.ends_with(".dist-info/WHEEL"))
        .expect("pyyaml's WHEEL");
    let tags = String::from_utf8_lossy(&wheel.data);
    assert!(
        tags.lines()
            .any(|l| l.starts_with("Tag: ") && l.ends_with("_aarch64")),
        "{tags}"
    );
    // --compile would have to run the arm64 Python here.
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--compile",
        "--output",
        ctx.path("img-compiled").to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &["--compile runs the environment's Python", "linux/arm64"],
    );
}

/// One build for amd64 and arm64 (issue 16): each platform gets its own wheels (pyyaml's
/// extension is an x86_64 ELF in one image and an aarch64 ELF in the other); a pure-Python
/// wheel's layer is the same blob in both.
#[test]
fn a_two_platform_build_gets_each_platform_its_wheels() {
    let ctx = TestContext::new();
    let spec = pip_spec(&ctx, "environment.yml", PIP);
    let out = ctx.path("img");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "--base",
        "scratch",
        "--big-package-threshold",
        "1KiB",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "t",
    ]));
    let mut layers_of = Vec::new();
    for (arch, machine) in [("amd64", 62), ("arm64", 183)] {
        let m = platform_manifest(&out, arch);
        let entries = manifest_entries(&out, &m);
        let so: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.path.contains("/site-packages/yaml/") && e.path.ends_with(".so"))
            .collect();
        assert!(!so.is_empty(), "{arch}: pyyaml's extension is missing");
        for e in so {
            assert_eq!(elf_machine(&e.data), machine, "{arch}: {}", e.path);
        }
        layers_of.push(m);
    }
    // six is pure Python: its layer (over the 1 KiB threshold, so its own) is one blob.
    let six_layer = |m: &serde_json::Value| {
        layer_holding(&out, m, |entries| {
            entries
                .iter()
                .any(|e| e.path.ends_with("site-packages/six.py"))
                && !entries.iter().any(|e| e.path.contains("/yaml/"))
        })
    };
    let amd = six_layer(&layers_of[0]).expect("six has a layer of its own on amd64");
    assert_eq!(Some(amd), six_layer(&layers_of[1]));
}

#[test]
fn bad_pip_lines_fail_with_specific_errors_and_leave_nothing() {
    let ctx = TestContext::new();
    let cases: &[(&[&str], &[&str])] = &[
        (&["six", "-e ."], &["pip: entry 2", "'-e .'", "editable"]),
        (
            &["git+https://github.com/benjaminp/six.git"],
            &["pip: entry 1", "version control"],
        ),
        (
            &["imgbuild-no-such-package-4711"],
            &["imgbuild-no-such-package-4711", "not found"],
        ),
    ];
    for (i, (lines, needles)) in cases.iter().enumerate() {
        let spec = pip_spec(&ctx, &format!("env{i}.yml"), lines);
        let out = ctx.path(&format!("img{i}"));
        let cache = ctx.path(&format!("cache{i}"));
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ]);
        assert_fails_with(&res, needles);
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "output left behind for {lines:?}"
        );
        for leftover in ["environments", "layers", "staging"] {
            let dir = cache.join(leftover);
            assert!(
                !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
                "{} left behind for {lines:?}",
                dir.display()
            );
        }
    }
}

/// `--compile`: pycs for the pip packages, hash-based and unchecked (no mtime inside), listed
/// in RECORD, under their final file names; two builds agree byte for byte.
#[test]
fn compile_writes_deterministic_unchecked_hash_pycs() {
    let ctx = TestContext::new();
    let spec = pip_spec(&ctx, "environment.yml", &["six"]);
    let build = |name: &str| {
        let out = ctx.path(name);
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--compile",
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            ctx.path(&format!("cache-{name}")).to_str().unwrap(),
        ]);
        assert_ok(&res);
        (out, digest(&res))
    };
    let (out, first) = build("a");
    let (_, second) = build("b");
    assert_eq!(first, second, "--compile builds differ");
    let entries = layer_entries(&out);
    let pyc = entries
        .iter()
        .find(|e| e.path.contains("/site-packages/__pycache__/six.") && e.path.ends_with(".pyc"))
        .expect("six's pyc");
    // PEP 552 flags word: 0b01 = hash-based, source not checked.
    assert_eq!(&pyc.data[4..8], &[1, 0, 0, 0], "{}", pyc.path);
    let compiled_path = String::from_utf8_lossy(&pyc.data);
    assert!(
        compiled_path.contains("/opt/conda/lib/python"),
        "the pyc names its source by its path in the image"
    );
    let record = entries
        .iter()
        .find(|e| e.path.contains("/six-") && e.path.ends_with(".dist-info/RECORD"))
        .unwrap();
    let name = pyc.path.rsplit("site-packages/").next().unwrap();
    assert!(
        String::from_utf8_lossy(&record.data)
            .lines()
            .any(|l| l.starts_with(&format!("{name},"))),
        "{name} not in RECORD"
    );
}

/// A Python package conda installed is not installed again from PyPI — even at a version PyPI
/// does not have — and a pip requirement it cannot satisfy fails naming the conda package.
#[test]
fn conda_python_packages_are_kept_and_conflicts_named() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let spec = pip_spec_with(&ctx, "ok.yml", &["six=1.16.99"], &["six", "tqdm"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_ok(&res);
    let pip_line = history(&out)
        .into_iter()
        .find(|h| h.starts_with("imgbuild: pip packages "))
        .expect("a pip layer");
    assert!(
        pip_line.contains("tqdm-") && !pip_line.contains("six"),
        "{pip_line}"
    );
    let entries = layer_entries(&out);
    assert!(
        !entries.iter().any(|e| e.path.contains("six-1.17")),
        "six came from PyPI too"
    );

    let spec = pip_spec_with(&ctx, "conflict.yml", &["six=1.16.99"], &["six>=1.17"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ctx.path("img2").to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &[
            "conflict with Python packages conda installed",
            "six 1.16.99",
        ],
    );
}

/// Source distributions: refused by default with a pointer to --allow-sdist; built with it
/// (on this machine, by the environment's Python) and locked; refused for another platform.
#[test]
fn sdists_need_allow_sdist_and_the_host_platform() {
    let ctx = TestContext::new();
    // docopt 0.6.2 is published as an sdist only.
    let spec = pip_spec(&ctx, "environment.yml", &["docopt==0.6.2"]);
    let out = ctx.path("img");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ctx.imgbuild(&args)
    };
    assert_fails_with(
        &build(&[]),
        &["docopt", "no usable wheels", "--allow-sdist"],
    );
    assert_fails_with(
        &build(&["--allow-sdist", "--platform", "linux/arm64"]),
        &[
            "--allow-sdist builds source distributions on this machine",
            "linux/arm64",
        ],
    );
    assert_ok(&build(&["--allow-sdist"]));
    let entries = layer_entries(&out);
    assert!(
        entries
            .iter()
            .any(|e| e.path.ends_with("/site-packages/docopt.py")),
        "docopt not installed"
    );
    let lock = ctx.path("env.lock");
    assert_ok(&ctx.imgbuild(&[
        "lock",
        "--spec",
        spec.to_str().unwrap(),
        "--allow-sdist",
        "-o",
        lock.to_str().unwrap(),
    ]));
    assert!(std::fs::read_to_string(&lock)
        .unwrap()
        .contains("docopt-0.6.2.tar.gz"));
    let res = ctx.imgbuild(&[
        "--lock",
        lock.to_str().unwrap(),
        "--output",
        ctx.path("img-lock").to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &["docopt 0.6.2 is a source distribution", "--allow-sdist"],
    );
}
