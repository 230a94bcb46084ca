//! Builds that succeed: what lands in the image, and that it runs.

use std::path::Path;

use crate::common::*;

const VALIDATE: &str = "../../../shared/tools/validate-image.sh";

fn validate_script() -> std::path::PathBuf {
    // The test binary runs with the crate dir as cwd; shared/ sits beside the repository.
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(VALIDATE);
    assert!(
        p.exists(),
        "{} not found: shared/ must sit beside the repository",
        p.display()
    );
    p
}

/// Build the standard fixture env once into `out`, returning the CLI output.
fn build_fixture(ctx: &TestContext, out: &Path, extra: &[&str]) -> std::process::Output {
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
    let report = sh(&format!(
        "{} {}:fixture:v1 -- /opt/conda/bin/busybox echo ok 2>&1",
        validate_script().display(),
        out.display()
    ));
    assert!(report.contains("0 failed"), "{report}");
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
fn same_inputs_give_identical_digests_even_with_another_cache_dir() {
    let ctx = TestContext::new();
    let a = ctx.path("a");
    let b = ctx.path("b");
    assert_ok(&build_fixture(&ctx, &a, &[]));
    // Second build: a different cache dir, so nothing is shared but the inputs.
    let spec = ctx.path("environment.yml");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .env("IMGBUILD_BASE", "scratch")
        .args([
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            b.to_str().unwrap(),
        ])
        .args(["--tag", "fixture:v1", "--big-package-threshold", "1MiB"])
        .args(["--cache-dir", ctx.path("other-cache").to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&res);
    let ia = std::fs::read(a.join("index.json")).unwrap();
    let ib = std::fs::read(b.join("index.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&ia), String::from_utf8_lossy(&ib));
    assert_eq!(manifest(&a), manifest(&b));
    let mut blobs_a: Vec<_> = std::fs::read_dir(a.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut blobs_b: Vec<_> = std::fs::read_dir(b.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    blobs_a.sort();
    blobs_b.sort();
    assert_eq!(blobs_a, blobs_b);

    // SOURCE_DATE_EPOCH changes the timestamps, so the digest.
    let c = ctx.path("c");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .env("IMGBUILD_BASE", "scratch")
        .args([
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            c.to_str().unwrap(),
        ])
        .args(["--tag", "fixture:v1", "--big-package-threshold", "1MiB"])
        .env("IMGBUILD_CACHE_DIR", ctx.path("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert_ok(&res);
    assert_ne!(manifest(&a), manifest(&c));
    assert_eq!(config(&c)["created"], "2023-11-14T22:13:20Z");
    assert!(layer_entries(&c).iter().all(|e| e.mtime == 1_700_000_000));
    assert!(layer_entries(&a).iter().all(|e| e.mtime == 0));
}

#[test]
fn base_image_layers_are_reused_and_runtime_options_applied() {
    let ctx = TestContext::new();
    let base = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--output",
        base.to_str().unwrap(),
        "--tag",
        "base:1",
        "--prefix",
        "/usr/local/bb",
        "--env",
        "FROM_BASE=yes",
        "--workdir",
        "/srv",
        "--cmd",
        "/usr/local/bb/bin/busybox sh",
    ]));
    let out = ctx.path("img");
    let base_ref = format!("oci:{}:base:1", base.display());
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "app:1",
        "--tag",
        "app:latest",
        "--label",
        "org.example.team=ml",
        "--entrypoint",
        r#"["/opt/conda/bin/whereami"]"#,
        "--user",
        "1000:1000",
    ]));
    let base_layers = manifest(&base)["layers"].as_array().unwrap().clone();
    let layers = manifest(&out)["layers"].as_array().unwrap().clone();
    assert_eq!(
        &layers[..base_layers.len()],
        &base_layers[..],
        "base layers reused byte for byte"
    );
    let cfg = config(&out);
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FROM_BASE=yes"), "{env:?}");
    assert!(
        env[0].starts_with("PATH=/opt/conda/bin:/usr/local/bb/bin:"),
        "{env:?}"
    );
    assert_eq!(cfg["config"]["WorkingDir"], "/srv");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(cfg["config"]["Labels"]["org.example.team"], "ml");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/opt/conda/bin/whereami");
    assert!(
        cfg["config"]["Cmd"].is_null(),
        "a new entrypoint drops the base's cmd"
    );
    // Both tags point at the same manifest, recorded verbatim.
    let index = read_json(&out.join("index.json"));
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, vec!["app:1", "app:latest"]);
    let inspect = sh(&format!("skopeo inspect oci:{}:app:latest", out.display()));
    assert!(inspect.contains("\"Architecture\": \"amd64\""), "{inspect}");
    // Runs through the entrypoint as the non-root user (so modes were normalized to readable).
    let report = sh(&format!(
        "{} {}:app:1 -- ignored-arg 2>&1",
        validate_script().display(),
        out.display()
    ));
    assert!(report.contains("-> prefix=/opt/conda"), "{report}");

    // Building again into the same layout replaces the tag instead of adding a duplicate.
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "app:1",
    ]));
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
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

#[test]
fn target_virtual_packages_come_from_flags_not_the_host() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let spec = ctx.spec(&["cudalib"]);
    // This host has no GPU; without --cuda the CUDA-only package cannot be chosen.
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["cannot solve", "__cuda", "--cuda VERSION"]);
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cuda",
        "11.8",
    ]));
    assert!(layer_entries(&out)
        .iter()
        .any(|e| e.path == "opt/conda/lib/libcudalib.txt"));

    // __glibc is the target's: a too-old --glibc makes binlib unsolvable; the default solves,
    // and on scratch imgbuild warns that the image needs a glibc base.
    let spec = ctx.spec(&["binlib"]);
    let old = ctx.path("old");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        old.to_str().unwrap(),
        "--glibc",
        "2.12",
    ]);
    assert_fails_with(&res, &["cannot solve", "__glibc"]);
    let ok = ctx.path("ok");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ok.to_str().unwrap(),
    ]);
    assert_ok(&res);
    let err = stderr(&res);
    assert!(
        err.contains("base is 'scratch'") && err.contains("binlib"),
        "{err}"
    );
}

#[test]
fn arm64_images_from_an_x86_64_host() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    // noarch packages only: the fixture channel has no linux-aarch64 subdir, like many channels.
    let spec = ctx.spec(&["bigdata"]);
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--tag",
        "arm:1",
    ]));
    let cfg = config(&out);
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(cfg["variant"], "v8");
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
    let inspect = sh(&format!(
        "skopeo --override-arch arm64 inspect oci:{}:arm:1",
        out.display()
    ));
    assert!(inspect.contains("\"Architecture\": \"arm64\""), "{inspect}");
    // The platform decides the subdir: binlib exists only for linux-64.
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["binlib"]).to_str().unwrap(),
        "--output",
        ctx.path("x").to_str().unwrap(),
        "--platform",
        "linux-aarch64",
    ]);
    assert_fails_with(
        &res,
        &["cannot solve the environment for linux/arm64", "binlib"],
    );
}

#[test]
fn a_cpu_build_picked_on_a_gpu_less_host_is_called_out() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["torchlike"]);
    let data = |out: &std::path::Path| {
        layer_entries(out)
            .into_iter()
            .find(|e| e.path == "opt/conda/lib/torchlike.txt")
            .map(|e| String::from_utf8(e.data).unwrap())
            .unwrap()
    };
    // Without --cuda: the CPU build, with a warning that names the package and the flag.
    let cpu = ctx.path("cpu");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        cpu.to_str().unwrap(),
    ]);
    assert_ok(&res);
    let err = stderr(&res);
    assert!(
        err.contains("torchlike: the solver picked a build without CUDA") && err.contains("--cuda"),
        "{err}"
    );
    assert_eq!(data(&cpu), "cpu\n");
    // With --cuda: the CUDA build, and no warning.
    let gpu = ctx.path("gpu");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        gpu.to_str().unwrap(),
        "--cuda",
        "11.8",
    ]);
    assert_ok(&res);
    assert!(!stderr(&res).contains("without CUDA"), "{}", stderr(&res));
    assert_eq!(data(&gpu), "cuda\n");
}

fn layer_digests(layout: &std::path::Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unchanged_package_layers_come_from_the_layer_cache() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let build = |dir: &str| {
        let out = ctx.path(dir);
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--big-package-threshold",
            "1MiB",
        ]);
        assert_ok(&res);
        (out, stderr(&res))
    };
    let (first, log) = build("first");
    // A fresh cache: every package is downloaded, and the bytes counted for the progress bar
    // are exactly the archives' sizes the records state.
    let records = conda_meta_records(&first);
    let bytes: u64 = records.iter().map(|r| r["size"].as_u64().unwrap()).sum();
    assert!(
        log.contains(&format!("downloaded {} packages (", records.len()))
            && log.contains(&format!(", {bytes} bytes)")),
        "{} packages, {bytes} bytes:\n{log}",
        records.len()
    );
    // The environment's layers; the SBOM layer comes after them.
    let layers = layer_digests(&first).len() - 1;
    assert!(log.contains("SBOM layer written"), "{log}");
    assert!(
        log.contains(&format!("layers: {layers} written (")) && log.contains("), 0 reused"),
        "{log}"
    );
    // Nothing changed: the whole environment comes from the cache — nothing is installed,
    // no layer is written.
    let (second, log) = build("second");
    assert!(
        log.contains(&format!(
            "environment unchanged since an earlier build: its {layers} layers reused, nothing installed or written"
        )),
        "{log}"
    );
    assert!(
        log.contains("SBOM layer reused from the layer cache"),
        "{log}"
    );
    assert!(!log.contains("installed into staging root"), "{log}");
    assert!(
        !log.contains("downloaded "),
        "nothing downloaded twice: {log}"
    );
    assert!(!log.contains(" written, "), "{log}");
    assert_eq!(manifest(&first), manifest(&second));
    // A cached layer whose blob is gone is written again, to the same digest (the environment
    // is installed again; the other package layers still come from the layer cache).
    let gone = &layer_digests(&first)[0];
    std::fs::remove_file(blob(&ctx.path("cache"), gone)).unwrap();
    let (third, log) = build("third");
    assert!(
        log.contains("layers: 2 written (") && log.contains(&format!("), {} reused", layers - 2)),
        "{log}"
    );
    assert_eq!(manifest(&first), manifest(&third));
}

/// A big package's layer is written while the rest of the environment is still being linked;
/// it is the same layer a build writes after the install (here: one whose staging root was
/// already complete, so nothing was linked and every layer came after).
#[test]
fn layers_written_while_installing_equal_layers_written_after() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let build = |dir: &str| {
        let out = ctx.path(dir);
        let res = ctx.imgbuild_env(
            &[
                "build",
                "--log-format",
                "json",
                "--spec",
                spec.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--big-package-threshold",
                "1MiB",
            ],
            // Why an early layer was not taken is logged at debug level.
            &[("IMGBUILD_LOG", "info,imgbuild_layer=debug")],
        );
        assert_ok(&res);
        let log = stderr(&res);
        let how: std::collections::BTreeMap<String, String> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|o| o["fields"]["message"] == "layer")
            .map(|o| {
                (
                    o["fields"]["holds"].as_str().unwrap().to_string(),
                    o["fields"]["how"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (manifest(&out), how, log)
    };
    let (early, how, log) = build("early");
    let bigdata = how
        .keys()
        .find(|k| k.starts_with("bigdata-"))
        .unwrap_or_else(|| panic!("no bigdata layer:\n{log}"))
        .clone();
    assert_eq!(how[&bigdata], "written while installing", "{log}");
    assert_eq!(how["environment"], "written", "{log}");
    assert_eq!(how["sbom"], "written", "{log}");
    // Same staging root, nothing else cached: rattler links nothing, so every layer is
    // written after the install.
    for dir in ["layers", "environments", "blobs"] {
        std::fs::remove_dir_all(ctx.path("cache").join(dir)).unwrap();
    }
    let (late, how, log) = build("late");
    assert_eq!(how[&bigdata], "written", "{log}");
    assert_eq!(early, late);
}

#[test]
fn adding_one_small_package_changes_one_package_layer_and_the_environment_layer() {
    let ctx = TestContext::new();
    let build = |dir: &str, deps: &[&str]| {
        let out = ctx.path(dir);
        let spec = ctx.spec(deps);
        assert_ok(&ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]));
        layer_digests(&out)
    };
    let before = build("before", &["whereami", "binlib", "hello-py"]);
    let after = build("after", &["whereami", "binlib", "hello-py", "torchlike"]);
    let new: Vec<_> = after.iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(
        new.len(),
        3,
        "one package group, the environment layer and the SBOM: {new:?}"
    );
    assert_eq!(
        new[1..],
        [&after[after.len() - 2], &after[after.len() - 1]],
        "the environment layer and the SBOM are last"
    );
}

/// The staging root is reused between builds (rattler links only what changed): each build
/// of a changed environment, made in a cache whose root held the previous one, is the image a
/// fresh cache makes — packages added, removed and with other requested specs; a root left
/// half-updated is wiped, not trusted.
#[test]
fn a_reused_staging_root_gives_the_image_a_fresh_one_gives() {
    let ctx = TestContext::new();
    let build = |dir: &str, deps: &[&str], cache: &str| {
        let out = ctx.path(dir);
        let spec = ctx.spec(deps);
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            ctx.path(cache).to_str().unwrap(),
        ]);
        assert_ok(&res);
        (manifest(&out), stderr(&res))
    };
    let steps: &[&[&str]] = &[
        &["whereami", "binlib", "hello-py"],
        &["whereami", "hello-py", "torchlike"],
        &["whereami", "binlib>=0", "hello-py"],
        &["whereami"],
    ];
    for (i, deps) in steps.iter().enumerate() {
        let (reused, log) = build(&format!("reused{i}"), deps, "cache");
        let (fresh, _) = build(&format!("fresh{i}"), deps, &format!("fresh-cache{i}"));
        assert_eq!(
            reused, fresh,
            "step {i} ({deps:?}) differs from a fresh build"
        );
        if i == 1 {
            // binlib went, torchlike came; whereami, hello-py and their dependencies stayed.
            assert!(
                log.contains("1 packages linked, 1 unlinked, 4 unchanged"),
                "{log}"
            );
        }
    }
    let roots: Vec<_> = std::fs::read_dir(ctx.path("cache/staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("root-") && !n.contains('.'))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    // An interrupted update leaves its marker: the next build starts the root afresh.
    let root = ctx.path("cache/staging").join(&roots[0]);
    std::fs::write(root.join("stray-file"), b"left by a crash").unwrap();
    std::fs::write(
        ctx.path(&format!("cache/staging/{}.incomplete", roots[0])),
        b"",
    )
    .unwrap();
    let (again, log) = build("again", &["whereami", "binlib"], "cache");
    let (fresh, _) = build("again-fresh", &["whereami", "binlib"], "fresh-cache-again");
    assert_eq!(again, fresh);
    // The build finds the cache idle and removes the half-updated root (and its marker) first.
    assert!(
        log.contains("removed 2 leftovers of interrupted builds"),
        "{log}"
    );
    assert!(!root.join("stray-file").exists());
    // While another build holds the root, a build uses a temporary one and leaves it alone.
    let lock = std::fs::File::open(ctx.path(&format!("cache/staging/{}.lock", roots[0]))).unwrap();
    lock.lock().unwrap();
    let (busy, log) = build("busy", &["whereami", "hello-py"], "cache");
    let (fresh, _) = build("busy-fresh", &["whereami", "hello-py"], "fresh-cache-busy");
    drop(lock);
    assert_eq!(busy, fresh);
    assert!(
        !log.contains("staging root /") && !log.contains(" updated: "),
        "{log}"
    );
    assert!(
        root.join("conda-meta").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("binlib-")),
        "the held root was changed"
    );
}

#[test]
fn x_imgbuild_keys_in_the_spec_apply_and_flags_win() {
    let ctx = TestContext::new();
    let spec = ctx.path("environment.yml");
    std::fs::write(
        &spec,
        format!(
            "name: x\nchannels: [{}/]\ndependencies: [whereami, cudalib]\n\
             x-imgbuild:\n  prefix: /srv/env\n  cuda: \"11.8\"\n  platforms: [linux/amd64]\n\
             \x20 entrypoint: [/srv/env/bin/whereami]\n  env: {{FROM_SPEC: \"1\", SHARED: spec}}\n\
             \x20 labels: {{team: ml}}\n",
            fixture().server.url
        ),
    )
    .unwrap();
    let out = ctx.path("img");
    // cudalib only solves with __cuda, which comes from x-imgbuild's cuda.
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--env",
        "SHARED=flag",
        "--label",
        "team=platform",
    ]));
    let cfg = config(&out);
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM_SPEC=1") && env.contains(&"SHARED=flag"),
        "{env:?}"
    );
    assert!(env.contains(&"CONDA_PREFIX=/srv/env"), "{env:?}");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/srv/env/bin/whereami");
    assert_eq!(cfg["config"]["Labels"]["team"], "platform", "flags win");
    let script = layer_entries(&out)
        .into_iter()
        .find(|e| e.path == "srv/env/bin/whereami")
        .expect("prefix from spec");
    assert!(String::from_utf8(script.data)
        .unwrap()
        .starts_with("#!/srv/env/bin/busybox"));
    // A flag wins over the spec's prefix.
    let out2 = ctx.path("img2");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
        "--prefix",
        "/opt/other",
    ]));
    assert!(layer_entries(&out2)
        .iter()
        .any(|e| e.path == "opt/other/bin/whereami"));
    // A typo in the block is an error, not silently ignored.
    std::fs::write(
        &spec,
        format!(
            "channels: [{}/]\ndependencies: [busybox]\nx-imgbuild:\n  prefx: /x\n",
            fixture().server.url
        ),
    )
    .unwrap();
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ctx.path("img3").to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["x-imgbuild", "prefx", "prefix"]);
}

#[test]
fn activation_scripts_are_baked_into_the_image_env() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let spec = ctx.spec(&["actpkg", "busybox"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "act:1",
    ]);
    assert_ok(&res);
    let cfg = config(&out);
    let env: Vec<String> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        env.contains(&"ACTPKG_HOME=/opt/conda/share/actpkg".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"ACTPKG_MODE=fast".to_string()), "{env:?}");
    assert!(
        env[0].starts_with("PATH=/opt/conda/bin:/opt/conda/libexec/actpkg:/usr/local/sbin"),
        "{env:?}"
    );
    let cache = ctx.path("cache").to_string_lossy().into_owned();
    assert!(
        env.iter()
            .all(|e| !e.contains(&cache) && !e.contains("staging")),
        "host paths leaked: {env:?}"
    );
    // A container sees the activated environment with no wrapper.
    let report = sh(&format!(
        "{}/../../../shared/tools/validate-image.sh {}:act:1 -- /opt/conda/bin/busybox sh -c 'echo $ACTPKG_HOME' 2>&1",
        env!("CARGO_MANIFEST_DIR"),
        out.display()
    ));
    assert!(report.contains("-> /opt/conda/share/actpkg"), "{report}");

    // Read, not run, so another platform's image gets them too.
    let arm = ctx.path("arm");
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["actpkg"]).to_str().unwrap(),
        "--output",
        arm.to_str().unwrap(),
        "--platform",
        "linux/arm64",
    ]);
    assert_ok(&res);
    assert!(
        stderr(&res).contains("baked activation scripts into the image (read, not run): etc/conda/activate.d/actpkg.sh"),
        "{}",
        stderr(&res)
    );
    let arm_env = config(&arm)["config"]["Env"].clone();
    assert!(
        arm_env
            .as_array()
            .unwrap()
            .contains(&"ACTPKG_HOME=/opt/conda/share/actpkg".into()),
        "{arm_env}"
    );
}
