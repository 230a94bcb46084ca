//! Multi-platform images from this x86_64 host (issue 16): one build, an image index with
//! amd64 and arm64 (Debian's static busybox for each, in a channel of both subdirs), checked
//! with skopeo, run with podman (arm64 under qemu-user-static via binfmt_misc), pushed to a
//! registry and copied whole to another; per-platform builds merged by `imgbuild index`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::channel::{self, text, Content, Package, PLACEHOLDER};
use crate::common::registry::{Registry, RegistryOptions};
use crate::common::*;

struct Channel {
    _dir: PathBuf,
    server: FileServer,
}

/// Debian's static busybox for arm64 (`.ci/run` unpacks `busybox-static:arm64` there).
fn arm64_busybox() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/arm64-busybox/bin/busybox");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run .ci/run, or: apt-get download busybox-static:arm64 and \
             dpkg-deb -x it into target/arm64-busybox",
            path.display()
        )
    })
}

fn package(name: &'static str, version: &'static str, subdir: &'static str) -> Package {
    Package {
        name,
        version,
        build: "h0_0",
        subdir,
        noarch: None,
        depends: vec![],
        files: vec![],
        entry_points: vec![],
        conda_format: true,
    }
}

/// busybox and whereami for linux-64 and linux-aarch64; `shareddata` (noarch, 2 MiB, a
/// layer of its own); `skewed` 2.0 on linux-64 but 1.0 on linux-aarch64; `x86only`.
fn multi_channel() -> &'static Channel {
    static CHANNEL: OnceLock<Channel> = OnceLock::new();
    CHANNEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("imgbuild-it-multi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let x86 = std::fs::read("/bin/busybox").expect("/bin/busybox: apt-get install busybox-static");
        let arm = arm64_busybox();
        for (subdir, busybox) in [("linux-64", x86), ("linux-aarch64", arm)] {
            let mut bb = package("busybox", "1.36.1", subdir);
            bb.files = vec![(
                "bin/busybox",
                Content::File {
                    bytes: busybox,
                    executable: true,
                    placeholder: None,
                },
            )];
            bb.write(&dir);
            let mut wai = package("whereami", "1.0", subdir);
            wai.depends = vec!["busybox"];
            wai.files = vec![(
                "bin/whereami",
                text(
                    format!("#!{PLACEHOLDER}/bin/busybox sh\necho \"prefix=$(echo {PLACEHOLDER}) arch=$(uname -m)\"\n"),
                    true,
                    true,
                ),
            )];
            wai.write(&dir);
            let skewed = package(
                "skewed",
                if subdir == "linux-64" { "2.0" } else { "1.0" },
                subdir,
            );
            skewed.write(&dir);
        }
        let mut shared = package("shareddata", "1.0", "noarch");
        shared.noarch = Some("generic");
        // Text-like (compressible) data, 2 MiB: over the 1 MiB threshold, so a layer of its own.
        let lines: String = (0..40_000).map(|i| format!("row {i} of the shared data\n")).collect();
        shared.files = vec![("share/shareddata/rows.txt", text(lines, false, false))];
        shared.write(&dir);
        package("x86only", "1.0", "linux-64").write(&dir);
        channel::index(&dir);
        let server = FileServer::start(&dir);
        Channel { _dir: dir, server }
    })
}

fn spec(ctx: &TestContext, deps: &[&str]) -> PathBuf {
    ctx.spec_with_channel(&format!("{}/", multi_channel().server.url), deps)
}

fn nested_index(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    read_json(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
}

fn layer_digests(m: &Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn build_two(ctx: &TestContext, deps: &[&str], out: &Path, extra: &[&str]) -> std::process::Output {
    let spec = spec(ctx, deps);
    let mut args = vec!["--spec", spec.to_str().unwrap()];
    if !extra.contains(&"--base") {
        args.extend(["--base", "scratch"]);
    }
    args.extend([
        "--platform",
        "linux/amd64,linux/arm64",
        "--big-package-threshold",
        "1MiB",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "multi:1",
    ]);
    args.extend_from_slice(extra);
    ctx.imgbuild(&args)
}

#[test]
fn one_build_makes_an_index_of_amd64_and_arm64_that_skopeo_reads_and_podman_runs() {
    let ctx = TestContext::new();
    let out = ctx.path("multi");
    let res = build_two(&ctx, &["whereami", "shareddata"], &out, &[]);
    assert_ok(&res);
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();

    // index.json names an index; the index lists both platforms with os/architecture.
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "multi:1"
    );
    let nested = nested_index(&out);
    let platforms: Vec<(String, String)> = nested["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
            (
                m["platform"]["os"].as_str().unwrap().to_string(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [
            ("linux".into(), "amd64".into()),
            ("linux".into(), "arm64".into())
        ]
    );
    assert_eq!(nested["manifests"][1]["platform"]["variant"], "v8");
    let index_digest = index["manifests"][0]["digest"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("digest: {index_digest}")),
        "{stdout}"
    );

    // skopeo sees the same index.
    let raw: Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw oci:{}:multi:1",
        out.display()
    )))
    .unwrap();
    assert_eq!(raw, nested);

    // Each manifest's config says its platform; the arm64 busybox is an aarch64 ELF.
    let amd = platform_manifest(&out, "amd64");
    let arm = platform_manifest(&out, "arm64");
    for (m, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let cfg = read_json(&blob(&out, m["config"]["digest"].as_str().unwrap()));
        assert_eq!(cfg["architecture"], arch);
        assert_eq!(cfg["os"], "linux");
    }
    let busybox = |m: &Value| {
        manifest_entries(&out, m)
            .into_iter()
            .find(|e| e.path == "opt/conda/bin/busybox")
            .expect("busybox in the image")
            .data
    };
    assert_eq!(elf_machine(&busybox(&amd)), 62, "x86_64");
    assert_eq!(elf_machine(&busybox(&arm)), 183, "aarch64");

    // A layer with the same bytes on both platforms (the noarch package's; whereami's script,
    // the same text for both) is one blob; busybox's layer differs.
    let layer_with = |m: &Value, path: &str| {
        layer_holding(&out, m, |entries| entries.iter().any(|e| e.path == path))
            .unwrap_or_else(|| panic!("no layer holds {path}"))
    };
    let rows = "opt/conda/share/shareddata/rows.txt";
    assert_eq!(layer_with(&amd, rows), layer_with(&arm, rows));
    let bb = "opt/conda/bin/busybox";
    assert_ne!(layer_with(&amd, bb), layer_with(&arm, bb));
    let stored = std::fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    let mut distinct: Vec<String> = [layer_digests(&amd), layer_digests(&arm)].concat();
    distinct.sort();
    distinct.dedup();
    // Layers once each, plus 2 configs, 2 manifests and the index.
    assert_eq!(stored, distinct.len() + 5);

    // podman picks amd64 from the index on this host; arm64 runs under qemu.
    let run = podman_run(&out, "multi:1", &["/opt/conda/bin/whereami"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "prefix=/opt/conda arch=x86_64"
    );
    let run = podman_run_platform(&out, "multi:1", Some("arm64"), &["/opt/conda/bin/whereami"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "prefix=/opt/conda arch=aarch64"
    );

    // inspect names the platforms and reports the one asked for.
    let res = ctx.imgbuild(&[
        "inspect",
        &format!("oci:{}:multi:1", out.display()),
        "--platform",
        "linux/arm64",
    ]);
    assert_ok(&res);
    let report = String::from_utf8_lossy(&res.stdout).into_owned();
    assert!(
        report.contains(
            "an index of 2 platforms: linux/amd64, linux/arm64/v8; this report is linux/arm64/v8"
        ),
        "{report}"
    );
    let arm_digest = nested["manifests"][1]["digest"].as_str().unwrap();
    assert!(
        report.lines().next().unwrap().ends_with(arm_digest),
        "the report is of the arm64 manifest {arm_digest}:\n{report}"
    );

    // The same build again, with only the package caches kept: the same index, byte for
    // byte, and nothing downloaded — busybox-1.36.1-h0_0 is two archives (one per platform)
    // under one name, and each platform's cache keeps its own.
    for dir in ["layers", "environments", "blobs", "staging"] {
        std::fs::remove_dir_all(ctx.path("cache").join(dir)).unwrap();
    }
    let again = ctx.path("again");
    let res = build_two(&ctx, &["whereami", "shareddata"], &again, &[]);
    assert_ok(&res);
    assert_eq!(read_json(&again.join("index.json")), index);
    let log = stderr(&res);
    assert!(
        !log.contains("downloaded ") && !log.contains("hash mismatch"),
        "{log}"
    );

    // And as an archive: the same index inside.
    let archive = ctx.path("multi.tar");
    assert_ok(&build_two(
        &ctx,
        &["whereami", "shareddata"],
        &ctx.path("third"),
        &["--archive", archive.to_str().unwrap()],
    ));
    let listed = sh(&format!(
        "skopeo inspect --raw oci-archive:{}:multi:1",
        archive.display()
    ));
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), nested);
}

#[test]
fn an_index_pushes_manifests_then_the_index_and_copies_whole_between_registries() {
    let (one, two) = (
        Registry::start(RegistryOptions::default()),
        Registry::start(RegistryOptions::default()),
    );
    let ctx = TestContext::new();
    let spec = spec(&ctx, &["whereami", "shareddata"]);
    let tag = format!("{}/ml/multi:1", one.addr);
    let layout = ctx.path("layout");
    let res = ctx.imgbuild(&[
        "--output",
        layout.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--big-package-threshold",
        "1MiB",
        "--tag",
        &tag,
        "--push",
        "--insecure-registry",
        &one.addr,
    ]);
    assert_ok(&res);
    let digest = pushed_digest(&res, &tag);
    let raw: Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{tag}"
    )))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(manifests.len(), 2);
    // Each platform's manifest got its own SBOM referrer.
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    for m in &manifests {
        assert!(
            stdout.contains(&format!("@{m} ("))
                || stdout.contains(&format!("referrers tag sha256-{}", &m[7..])),
            "no SBOM attached to {m}:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("attached ").count(),
        2,
        "one SBOM per platform:\n{stdout}"
    );
    // Every distinct blob was uploaded once: shared layers count once.
    let copy = ctx.path("pushed");
    sh(&format!(
        "skopeo copy --all --src-tls-verify=false docker://{tag} oci:{}:x",
        copy.display()
    ));
    let mut distinct: Vec<String> = ["amd64", "arm64"]
        .iter()
        .flat_map(|a| {
            let m = platform_manifest(&copy, a);
            let mut d = layer_digests(&m);
            d.push(m["config"]["digest"].as_str().unwrap().to_string());
            d
        })
        .collect();
    distinct.sort();
    distinct.dedup();
    let summary = push_summary(&res, &tag);
    assert!(
        summary.contains(&format!("uploaded {} blobs", distinct.len())),
        "{} distinct blobs: {summary}",
        distinct.len()
    );

    // skopeo copy --all to a second registry and back into a layout keeps every digest.
    let copied = format!("{}/mirror/multi:1", two.addr);
    sh(&format!(
        "skopeo copy --all --src-tls-verify=false --dest-tls-verify=false docker://{tag} docker://{copied}"
    ));
    let back = ctx.path("back");
    sh(&format!(
        "skopeo copy --all --src-tls-verify=false docker://{copied} oci:{}:x",
        back.display()
    ));
    let index = read_json(&back.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    // `imgbuild push` of the layout's index pushes the whole index, to the same digest.
    let again = format!("{}/ml/pushed:1", two.addr);
    let res = ctx.imgbuild(&[
        "push",
        &format!("{}:{tag}", layout.display()),
        &again,
        "--insecure-registry",
        &two.addr,
    ]);
    assert_ok(&res);
    assert_eq!(pushed_digest(&res, &again), digest);
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    assert_eq!(stdout.matches("attached ").count(), 2, "{stdout}");
    for arch in ["amd64", "arm64"] {
        let m = platform_manifest(&back, arch);
        assert!(!layer_digests(&m).is_empty());
    }
}

#[test]
fn per_platform_builds_from_separate_runners_merge_into_one_index() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let spec = spec(&ctx, &["whereami"]);
    // Two runners: separate cache dirs, each its own platform, pushed to its own repository.
    let runner = |platform: &str, repo: &str, deps: Option<&[&str]>| {
        let spec = match deps {
            Some(d) => self::spec(&ctx, d),
            None => spec.clone(),
        };
        let tag = format!("{}/{repo}:ci", reg.addr);
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--base",
            "scratch",
            "--platform",
            platform,
            "--cache-dir",
            ctx.path(&format!("cache-{repo}")).to_str().unwrap(),
            "--tag",
            &tag,
            "--push",
            "--insecure-registry",
            &reg.addr,
        ]);
        assert_ok(&res);
        format!("{}/{repo}@{}", reg.addr, pushed_digest(&res, &tag))
    };
    let amd = runner("linux/amd64", "ml/env-amd64", None);
    let arm = runner("linux/arm64", "ml/env-arm64", None);
    let target = format!("{}/ml/env:1", reg.addr);
    let merge = |adds: &[&str]| {
        let mut args = vec!["index", target.as_str()];
        for a in adds {
            args.extend(["--add", a]);
        }
        args.extend(["--insecure-registry", &reg.addr]);
        ctx.imgbuild(&args)
    };
    let blobs_before = reg.count("GET /v2/ml/env-amd64/blobs/");
    let first = merge(&[&amd, &arm]);
    assert_ok(&first);
    // Only the configs were read (one small blob per image), no layer.
    assert_eq!(
        reg.count("GET /v2/ml/env-amd64/blobs/") - blobs_before,
        1,
        "{}",
        reg.log()
    );
    let digest = pushed_digest(&first, &target);
    let raw: Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{target}"
    )))
    .unwrap();
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    // The merged index is complete in its own repository: skopeo copies it whole.
    let copy = ctx.path("copy");
    sh(&format!(
        "skopeo copy --all --src-tls-verify=false docker://{target} oci:{}:x",
        copy.display()
    ));
    // Merging again changes nothing.
    let second = merge(&[&amd, &arm]);
    assert_ok(&second);
    assert_eq!(pushed_digest(&second, &target), digest);
    // Two images for one platform are refused.
    let other_amd = runner(
        "linux/amd64",
        "ml/env-amd64-b",
        Some(&["whereami", "skewed"]),
    );
    let dup = merge(&[&amd, &other_amd]);
    assert_fails_with(&dup, &["two images for linux/amd64"]);
    // A source on another registry is refused before anything is fetched.
    let elsewhere = format!("127.0.0.2:1/ml/env@{}", pushed_digest(&second, &target));
    assert_fails_with(
        &merge(&[&amd, &elsewhere]),
        &["merges images on one registry"],
    );
    // An image not named by digest is refused with what to do.
    let by_tag = format!("{}/ml/env-amd64:ci", reg.addr);
    assert_fails_with(&merge(&[&by_tag]), &["by digest"]);
}

#[test]
fn multi_platform_errors_name_the_platform_and_the_package() {
    let ctx = TestContext::new();
    let out = ctx.path("out");
    // An unknown platform.
    let spec_file = spec(&ctx, &["whereami"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec_file.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/s390x",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["linux/s390x"]);
    // A platform asked for twice.
    let res = ctx.imgbuild(&[
        "--spec",
        spec_file.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/amd64",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["linux/amd64 is asked for twice"]);
    // A package only one platform has.
    let res = build_two(&ctx, &["whereami", "x86only"], &out, &[]);
    assert_fails_with(&res, &["linux/arm64", "x86only"]);
    // Different versions on the two platforms: refused, naming both; allowed with a warning.
    let res = build_two(&ctx, &["whereami", "skewed"], &out, &[]);
    assert_fails_with(
        &res,
        &["skewed: 2.0 on linux/amd64, 1.0 on linux/arm64", "pin them"],
    );
    let res = build_two(
        &ctx,
        &["whereami", "skewed"],
        &out,
        &["--allow-version-skew"],
    );
    assert_ok(&res);
    assert!(
        stderr(&res).contains("skewed: 2.0 on linux/amd64"),
        "{}",
        stderr(&res)
    );
    assert!(!out.join(".imgbuild-partial").exists());
    // A base without the requested platform (an amd64-only layout).
    let base = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec_file.to_str().unwrap(),
        "--base",
        "scratch",
        "--output",
        base.to_str().unwrap(),
        "--tag",
        "b",
    ]));
    let res = build_two(
        &ctx,
        &["whereami"],
        &ctx.path("on-base"),
        &["--base", &format!("oci:{}:b", base.display())],
    );
    assert_fails_with(&res, &["linux/arm64"]);
    assert!(
        !ctx.path("on-base").exists(),
        "a failed build leaves no layout"
    );
}

#[test]
fn a_lock_of_two_platforms_builds_both_and_the_spec_can_list_them() {
    let ctx = TestContext::new();
    let spec_file = spec(&ctx, &["whereami", "shareddata"]);
    let lock = ctx.path("env.lock");
    assert_ok(&ctx.imgbuild(&[
        "lock",
        "--spec",
        spec_file.to_str().unwrap(),
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "-o",
        lock.to_str().unwrap(),
    ]));
    let from_lock = ctx.path("from-lock");
    assert_ok(&ctx.imgbuild(&[
        "--lock",
        lock.to_str().unwrap(),
        "--base",
        "scratch",
        "--big-package-threshold",
        "1MiB",
        "--output",
        from_lock.to_str().unwrap(),
        "--tag",
        "multi:1",
    ]));
    let from_spec = ctx.path("from-spec");
    assert_ok(&build_two(
        &ctx,
        &["whereami", "shareddata"],
        &from_spec,
        &[],
    ));
    // The lock gives the image the spec gives (the lock records the requested specs).
    assert_eq!(
        read_json(&from_lock.join("index.json")),
        read_json(&from_spec.join("index.json"))
    );
    // --platform picks one platform of the lock: a plain image again.
    let one = ctx.path("one");
    assert_ok(&ctx.imgbuild(&[
        "--lock",
        lock.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--base",
        "scratch",
        "--output",
        one.to_str().unwrap(),
    ]));
    assert_eq!(config(&one)["architecture"], "arm64");

    // x-imgbuild: platforms builds them all.
    let listed = ctx.path("listed.yml");
    std::fs::write(
        &listed,
        format!(
            "{}x-imgbuild:\n  platforms: [linux/amd64, linux/arm64]\n  base: scratch\n",
            std::fs::read_to_string(&spec_file).unwrap()
        ),
    )
    .unwrap();
    let out = ctx.path("listed");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        listed.to_str().unwrap(),
        "--big-package-threshold",
        "1MiB",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "multi:1",
    ]));
    assert_eq!(nested_index(&out)["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn a_base_given_as_an_index_is_resolved_per_platform() {
    let ctx = TestContext::new();
    // The base: busybox for both platforms, an index (as a distro's multi-arch image is).
    let base = ctx.path("base");
    assert_ok(&build_two(&ctx, &["busybox"], &base, &[]));
    let out = ctx.path("on-base");
    let res = build_two(
        &ctx,
        &["whereami"],
        &out,
        &["--base", &format!("oci:{}:multi:1", base.display())],
    );
    assert_ok(&res);
    for arch in ["amd64", "arm64"] {
        let base_layers = layer_digests(&platform_manifest(&base, arch));
        let layers = layer_digests(&platform_manifest(&out, arch));
        assert_eq!(
            layers[..base_layers.len()],
            base_layers[..],
            "{arch} is built on the {arch} base"
        );
    }
    let run = podman_run_platform(
        &out,
        "multi:1",
        Some("arm64"),
        &["/opt/conda/bin/busybox", "uname", "-m"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "aarch64");
}
