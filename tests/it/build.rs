//! Builds that succeed: what lands in the image, and that it runs.

use std::path::Path;

use crate::common::*;

/// Build the standard fixture env once into `out`, returning the CLI output.
pub(crate) fn build_fixture(ctx: &TestContext, out: &Path, extra: &[&str]) -> std::process::Output {
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let mut args = vec![
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "fixture:v1",
        "--big-package-threshold",
        "1MiB",
    ];
    args.extend_from_slice(extra);
    ctx.imgbuild(&args)
}

#[test]
fn build_produces_a_valid_image_that_runs_under_podman() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let res = build_fixture(
        &ctx,
        &out,
        &["--archive", ctx.path("img.tar").to_str().unwrap()],
    );
    assert_ok(&res);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.starts_with("digest: sha256:"), "{stdout}");

    // Third-party readers agree, and busybox from the env runs.
    let report = validate_image(
        &format!("{}:fixture:v1", out.display()),
        Some("/opt/conda/bin/busybox echo ok"),
    );
    assert!(
        report.contains("podman run /opt/conda/bin/busybox echo ok -> ok"),
        "{report}"
    );

    // The text placeholder was replaced: the script prints the final prefix, under podman.
    let name = format!("localhost/imgbuild-it-{}:latest", std::process::id());
    sh(&format!(
        "skopeo copy oci:{}:fixture:v1 containers-storage:{name}",
        out.display()
    ));
    let printed = sh(&format!(
        "podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {name} /opt/conda/bin/whereami"
    ));
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &name])
        .output();
    assert_eq!(printed.trim(), "prefix=/opt/conda");

    // The archive loads into podman.
    let loaded = sh(&format!(
        "podman load -i {} 2>&1",
        ctx.path("img.tar").display()
    ));
    assert!(loaded.contains("Loaded image"), "{loaded}");
    let id = loaded
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &id])
        .output();
}

#[test]
fn image_contents_are_relocated_normalized_and_layered() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    assert_ok(&build_fixture(&ctx, &out, &["--compression", "zstd"]));
    let entries = layer_entries(&out);
    let find = |p: &str| {
        entries
            .iter()
            .find(|e| e.path.trim_end_matches('/') == p)
            .unwrap_or_else(|| {
                panic!(
                    "{p} not in image; have {:?}",
                    entries.iter().map(|e| &e.path).collect::<Vec<_>>()
                )
            })
    };

    // Text placeholder and shebang rewritten for the final prefix.
    let script = String::from_utf8(find("opt/conda/bin/whereami").data.clone()).unwrap();
    assert!(
        script.starts_with("#!/opt/conda/bin/busybox sh\n"),
        "{script}"
    );
    assert!(!script.contains("anaconda1anaconda2"), "{script}");
    // Binary placeholder rewritten and padded with NULs to the same length.
    let lib = &find("opt/conda/lib/libbinlib.so.2").data;
    let needle = b"/opt/conda/share/binlib\0";
    assert!(lib.windows(needle.len()).any(|w| w == needle), "{lib:?}");
    assert!(!lib.windows(11).any(|w| w == b"anaconda1an"));
    // Symlinks are kept as symlinks.
    let wai = find("opt/conda/bin/wai");
    assert_eq!(wai.kind, tar::EntryType::Symlink);
    assert_eq!(wai.link.as_deref(), Some("whereami"));
    // noarch python: files under the python's site-packages, entry point with the final python.
    find("opt/conda/lib/python3.10/site-packages/hello_py/__init__.py");
    let ep = String::from_utf8(find("opt/conda/bin/hello-py").data.clone()).unwrap();
    assert!(ep.starts_with("#!/opt/conda/bin/python3.10"), "{ep}");
    assert_eq!(find("opt/conda/bin/hello-py").mode, 0o755);

    // No host state: no cache tag, no cache paths in conda-meta, readable records, fixed mtimes.
    assert!(!entries.iter().any(|e| e.path.ends_with("CACHEDIR.TAG")));
    let record = entries
        .iter()
        .find(|e| e.path.starts_with("opt/conda/conda-meta/whereami-"))
        .expect("conda-meta record");
    let text = String::from_utf8_lossy(&record.data);
    for host in [
        "extracted_package_dir",
        "package_tarball_full_path",
        "\"link\"",
        "/tmp/",
        "cache",
    ] {
        assert!(
            !text.contains(host),
            "conda-meta record contains {host}:\n{text}"
        );
    }
    assert_eq!(record.mode, 0o644);
    // Parent directories are present.
    for dir in ["opt", "opt/conda", "opt/conda/bin"] {
        assert_eq!(find(dir).kind, tar::EntryType::Directory);
    }

    // Layering: the big package alone (with its duplicate file as a hard link), conda-meta last.
    let manifest = manifest(&out);
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let config = config(&out);
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history.len(), layers.len());
    assert_eq!(history[0], "imgbuild: conda packages bigdata-1.0-0");
    assert!(
        history[history.len() - 2].contains("environment"),
        "{history:?}"
    );
    assert_eq!(
        history.last().unwrap(),
        "imgbuild: sbom (conda-meta/imgbuild.spdx.json)",
        "the SBOM layer is last"
    );
    let copy = find("opt/conda/share/bigdata/weights-copy.bin");
    let orig = find("opt/conda/share/bigdata/weights.bin");
    assert_eq!(
        [copy.kind, orig.kind]
            .iter()
            .filter(|t| **t == tar::EntryType::Link)
            .count(),
        1,
        "one of the identical files is a hard link"
    );

    // Config: env, platform, timestamps.
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(
            &"PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
        "{env:?}"
    );
    assert!(env.contains(&"CONDA_PREFIX=/opt/conda"), "{env:?}");
    assert!(env.contains(&"LANG=C.UTF-8"), "{env:?}");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert!(entries
        .iter()
        .all(|e| e.kind != tar::EntryType::Regular || e.mode == 0o644 || e.mode == 0o755));
}

#[test]
fn file_channels_and_tar_bz2_packages_work_offline() {
    let ctx = TestContext::new();
    let channel = format!("file://{}", fixture().dir.display());
    let spec = ctx.spec_with_channel(&channel, &["whereami"]);
    let out = ctx.path("img");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]));
    let entries = layer_entries(&out);
    assert!(entries.iter().any(|e| e.path == "opt/conda/bin/whereami"));
}
