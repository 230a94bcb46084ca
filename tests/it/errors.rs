//! Bad input: each gives a specific message, a non-zero exit, no panic and no partial output.

use std::path::Path;

use crate::common::*;

fn no_output_left(dir: &Path) {
    assert!(!dir.exists(), "{} was left behind", dir.display());
    let parent = dir.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".imgbuild-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary output left behind: {leftovers:?}"
    );
}

#[test]
fn missing_spec_file() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let missing = ctx.path("nope.yml");
    let res = ctx.imgbuild(&[
        "--spec",
        missing.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["cannot read spec file", "nope.yml", "No such file"]);
    no_output_left(&out);
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    let ctx = TestContext::new();
    let spec = ctx.path("environment.yml");
    std::fs::write(
        &spec,
        "channels:\n  - x\ndependencies:\n  - python\n   - bad: [\n",
    )
    .unwrap();
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = assert_fails_with(&res, &["environment.yml:", "invalid YAML"]);
    assert!(
        err.contains("environment.yml:5:") || err.contains("environment.yml:4:"),
        "{err}"
    );
    no_output_left(&out);
}

#[test]
fn unknown_package_gets_the_solver_explanation() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["doesnotexist"]).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = assert_fails_with(
        &res,
        &[
            "cannot solve the environment for linux/amd64",
            "doesnotexist",
        ],
    );
    assert!(
        !err.contains("Unsolvable(["),
        "debug dump instead of a message:\n{err}"
    );
    no_output_left(&out);
}

#[test]
fn unsatisfiable_versions_get_the_solver_explanation() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox>=9"]).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["cannot solve the environment", "busybox >=9"]);
    no_output_left(&out);
}

#[test]
fn unreachable_channel_names_the_url() {
    let ctx = TestContext::new();
    // Port 9 (discard) is closed on the loopback interface.
    let spec = ctx.spec_with_channel("http://127.0.0.1:9/nochannel", &["busybox"]);
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &["could not fetch repodata", "http://127.0.0.1:9/nochannel"],
    );
    no_output_left(&out);
}

#[test]
fn sha256_mismatch_names_the_package_and_leaves_no_cache_entry() {
    let ctx = TestContext::new();
    // A copy of the fixture channel whose repodata promises other bytes for busybox.
    let channel = ctx.path("badchannel");
    sh(&format!(
        "cp -r {} {}",
        fixture().dir.display(),
        channel.display()
    ));
    let repodata = channel.join("linux-64/repodata.json");
    let mut doc = read_json(&repodata);
    let wrong = "0".repeat(64);
    let entry = doc["packages.conda"]["busybox-1.36.1-h0_0.conda"]
        .as_object_mut()
        .expect("busybox record");
    entry.insert("sha256".into(), wrong.clone().into());
    std::fs::write(&repodata, serde_json::to_vec(&doc).unwrap()).unwrap();
    let server = FileServer::start(&channel);
    let spec = ctx.spec_with_channel(&format!("{}/", server.url), &["busybox"]);
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["busybox-1.36.1-h0_0", &wrong]);
    no_output_left(&out);
    // Nothing of busybox is left in the package cache that a later build could trust.
    let pkgs = ctx.path("cache/pkgs");
    if pkgs.exists() {
        let left: Vec<_> = walk(&pkgs)
            .into_iter()
            .filter(|p| p.contains("busybox") && !p.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "cache holds {left:?}");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn output_dir_that_is_not_a_layout_is_refused_before_any_work() {
    let ctx = TestContext::new();
    let out = ctx.path("home");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "precious").unwrap();
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &["neither an empty directory nor an OCI image layout", "home"],
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    // Refused before solving: the channel was never asked.
    assert!(!ctx.path("cache/pkgs").exists());
}

#[test]
fn prefix_longer_than_a_binary_placeholder_is_refused_with_the_limit() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let long = "/opt/this-prefix-is-much-longer-than-32-characters";
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["binlib"]).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--prefix",
        long,
    ]);
    assert_fails_with(
        &res,
        &[
            long,
            "binlib-2.1-h0_0",
            "lib/libbinlib.so.2",
            "at most 32 characters",
        ],
    );
    no_output_left(&out);
}

/// A pip: section needs Python in the environment and uv on the machine; each missing piece
/// is named, and nothing is written.
#[test]
fn pip_section_without_python_or_uv_is_explained() {
    let ctx = TestContext::new();
    let spec = ctx.path("environment.yml");
    std::fs::write(
        &spec,
        format!(
            "channels: [{}/]\ndependencies:\n  - busybox\n  - pip:\n    - requests\n",
            fixture().server.url
        ),
    )
    .unwrap();
    let out = ctx.path("img");
    let args = [
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    assert_fails_with(
        &ctx.imgbuild(&args),
        &["pip: section needs Python", "add python to dependencies"],
    );
    no_output_left(&out);
    // No uv: not on PATH and none named.
    let res = ctx.imgbuild_env(&args, &[("PATH", "/nonexistent"), ("IMGBUILD_UV", "")]);
    assert_fails_with(&res, &["uv is needed", "pip install uv", "--uv PATH"]);
    no_output_left(&out);
    let res = ctx.imgbuild_env(&args, &[("IMGBUILD_UV", "/nonexistent/uv")]);
    assert_fails_with(&res, &["--uv /nonexistent/uv"]);
    no_output_left(&out);
}

#[test]
fn nothing_to_write_and_bad_flags_are_explained() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["busybox"]);
    let res = ctx.imgbuild(&["--spec", spec.to_str().unwrap()]);
    assert_fails_with(&res, &["--output DIR", "--archive FILE"]);
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--platform",
        "windows/amd64",
    ]);
    assert_fails_with(&res, &["unknown platform 'windows/amd64'", "linux/arm64"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--prefix",
        "opt/conda",
    ]);
    assert_fails_with(&res, &["invalid --prefix 'opt/conda'", "absolute"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--base",
        "oci:/nonexistent:x",
    ]);
    assert_fails_with(
        &res,
        &[
            "cannot use --base oci:/nonexistent:x",
            "/nonexistent/index.json",
        ],
    );
    no_output_left(&out);
}

#[test]
fn layer_budget_over_dockers_limit_is_refused_before_any_work() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib"]);
    let base = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        base.to_str().unwrap(),
    ]));
    let base_layers = manifest(&base)["layers"].as_array().unwrap().len();
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        &format!("oci:{}", base.display()),
        "--max-layers",
        "124",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &[
            &format!("the base image has {base_layers} layers"),
            "up to 124 (--max-layers)",
            "over 125",
            "plus one for the SBOM",
            &format!("--max-layers {} or fewer", 125 - base_layers - 1),
        ],
    );
    assert!(
        !stderr(&res).contains("installed into staging"),
        "refused before installing"
    );
    no_output_left(&out);
}

/// A tag a layout cannot carry (skopeo and podman could not name the image) is refused before
/// any work, naming the tag and the rule; nothing is written.
#[test]
fn a_tag_that_cannot_name_an_image_is_refused_up_front() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    for (tag, why) in [
        ("", "it is empty"),
        ("my repo:tag", "not a letter, a digit or a separator"),
        ("repo:a\nb", "not a letter, a digit or a separator"),
        ("repo//x", "empty component"),
    ] {
        let out = ctx.path("img");
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--tag",
            tag,
        ]);
        assert_fails_with(
            &res,
            &["cannot name an image in a layout", why, "llm-env:cu118"],
        );
        assert!(!out.exists(), "{tag:?}: something was written");
        assert!(
            !stderr(&res).contains("solved"),
            "{tag:?}: work was done first"
        );
    }
}

/// YAML made to hurt the parser: 100 000 nested `[` (serde_yaml took 42 s on it), and a 50 MB
/// spec of 500 000 dependencies. Each is refused before parsing, saying which limit it broke and
/// where (the times are printed, not asserted: see docs/reliability.md).
#[test]
fn yaml_that_nests_too_deep_or_is_too_big_fails_at_once() {
    let ctx = TestContext::new();
    let deep = ctx.path("deep.yml");
    std::fs::write(
        &deep,
        format!("name: x\ndependencies: {}\n", "[".repeat(100_000)),
    )
    .unwrap();
    let big = ctx.path("big.yml");
    let mut text = String::from("name: x\nchannels:\n  - conda-forge\ndependencies:\n");
    for i in 0..500_000 {
        text.push_str(&format!(
            "  - package-number-{i:08}-with-a-rather-long-name-from-a-big-conda-export>=1.0.0,<2.0.0a0  # pinned\n"
        ));
    }
    assert!(text.len() > 45 << 20, "{}", text.len());
    std::fs::write(&big, text).unwrap();
    let lock = ctx.path("deep.lock.yml");
    std::fs::write(
        &lock,
        format!("version: 6\nenvironments: {}\n", "{a: ".repeat(50_000)),
    )
    .unwrap();
    for (args, needles) in [
        (
            vec!["--spec", deep.to_str().unwrap()],
            vec!["deep.yml", "line 2 nests more than 64 levels deep"],
        ),
        (
            vec!["--spec", big.to_str().unwrap()],
            vec!["big.yml", "larger than 4 MiB"],
        ),
        (
            vec!["--lock", lock.to_str().unwrap()],
            vec!["deep.lock.yml", "line 2 nests more than 64 levels deep"],
        ),
    ] {
        let started = std::time::Instant::now();
        let img = ctx.path("img");
        let mut all = args.clone();
        all.extend(["--output", img.to_str().unwrap()]);
        let res = ctx.imgbuild(&all);
        assert_fails_with(&res, &needles);
        eprintln!("{:?}: refused in {:.2?}", args[1], started.elapsed());
        assert!(!ctx.path("img").exists());
    }
}

/// `--output` on a file system that fills up (a 2 MiB tmpfs; the image is ~4 MiB): the error
/// names the file being written there, not the cache blob it was copied from, and nothing is
/// left on the small file system (no half layout, no temporary beside it).
#[test]
fn a_full_disk_names_the_file_being_written_and_leaves_no_half_layout() {
    let ctx = TestContext::new();
    let small = ctx.path("small");
    std::fs::create_dir_all(&small).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=2m tmpfs {}",
        small.display()
    ));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(small.clone());
    let out = small.join("img");
    let spec = ctx.spec(&["bigdata", "whereami"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = assert_fails_with(&res, &["No space left on device"]);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains(&format!("cannot write the image layout {}", out.display())),
        "{line}"
    );
    assert!(
        !line.contains(ctx.path("cache").to_str().unwrap()),
        "names the cache: {line}"
    );
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left on the full file system: {left:?}");
}
