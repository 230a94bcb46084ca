//! `imgbuild lock` and `build --lock`: exact packages, same digests, clear refusals.

use crate::common::*;

fn digest_of(out: &std::process::Output) -> String {
    assert_ok(out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("digest: ").map(str::to_string))
        .expect("digest line")
}

#[test]
fn lock_then_build_from_lock_matches_build_from_spec() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib"]);
    let lock = ctx.path("environment.lock");
    let out = ctx.imgbuild(&["lock", "--spec", spec.to_str().unwrap(), "--cuda", "11.8"]);
    assert_ok(&out);
    assert!(
        lock.is_file(),
        "lock written next to the spec as environment.lock"
    );
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(
        text.contains("__cuda=11.8"),
        "virtual packages recorded:\n{text}"
    );
    assert!(text.contains("sha256:"), "{text}");
    assert!(
        text.contains("# imgbuild-requested-specs: [\"whereami\",\"binlib\"]\n"),
        "requested specs recorded for conda-meta:\n{text}"
    );
    for pkg in [
        "whereami-1.0-h0_0.tar.bz2",
        "binlib-2.1-h0_0.conda",
        "busybox-1.36.1-h0_0.conda",
    ] {
        assert!(text.contains(pkg), "{pkg} missing:\n{text}");
    }

    let from_lock = |dir: &str| {
        ctx.imgbuild(&[
            "build",
            "--lock",
            lock.to_str().unwrap(),
            "--output",
            ctx.path(dir).to_str().unwrap(),
        ])
    };
    let a = digest_of(&from_lock("a"));
    let b = digest_of(&from_lock("b"));
    assert_eq!(a, b, "two builds from the lock");
    let from_spec = digest_of(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ctx.path("c").to_str().unwrap(),
    ]));
    assert_eq!(
        a, from_spec,
        "build --spec and build --lock of the same solve"
    );

    // build --lock never reads repodata: with the channel's repodata gone it still builds.
    let channel = ctx.path("channel");
    sh(&format!(
        "cp -r {} {}",
        fixture().dir.display(),
        channel.display()
    ));
    let server = FileServer::start(&channel);
    let spec2 = ctx.spec_with_channel(&format!("{}/", server.url), &["whereami"]);
    let lock2 = ctx.path("offline.lock");
    assert_ok(&ctx.imgbuild(&[
        "lock",
        "--spec",
        spec2.to_str().unwrap(),
        "-o",
        lock2.to_str().unwrap(),
    ]));
    sh(&format!("rm {}/*/repodata.json", channel.display()));
    let fresh = ctx.path("fresh-cache");
    let out = ctx.imgbuild(&[
        "build",
        "--lock",
        lock2.to_str().unwrap(),
        "--cache-dir",
        fresh.to_str().unwrap(),
        "--output",
        ctx.path("d").to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        !fresh.join("repodata").exists()
            || std::fs::read_dir(fresh.join("repodata"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn write_lock_and_multi_platform_locks() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["bigdata"]);
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--write-lock",
        "--output",
        ctx.path("img").to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(ctx.path("environment.lock").is_file());

    let multi = ctx.path("multi.lock");
    let out = ctx.imgbuild(&[
        "lock",
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "-o",
        multi.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let text = std::fs::read_to_string(&multi).unwrap();
    assert!(
        text.contains("linux-64") && text.contains("linux-aarch64"),
        "{text}"
    );
    assert!(text.contains("__archspec=1=aarch64"), "{text}");
    let arm = digest_of(&ctx.imgbuild(&[
        "build",
        "--lock",
        multi.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--output",
        ctx.path("arm").to_str().unwrap(),
    ]));
    assert!(arm.starts_with("sha256:"));
    assert_eq!(config(&ctx.path("arm"))["architecture"], "arm64");
}

#[test]
fn bad_lock_files_are_refused_clearly() {
    let ctx = TestContext::new();
    let out_dir = ctx.path("img");
    let junk = ctx.path("junk.lock");
    std::fs::write(&junk, "just: [some, yaml]\n").unwrap();
    let out = ctx.imgbuild(&[
        "build",
        "--lock",
        junk.to_str().unwrap(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert_fails_with(
        &out,
        &["junk.lock", "not a lock file imgbuild reads", "@EXPLICIT"],
    );

    let lock = ctx.path("environment.lock");
    assert_ok(&ctx.imgbuild(&["lock", "--spec", ctx.spec(&["busybox"]).to_str().unwrap()]));
    let out = ctx.imgbuild(&[
        "build",
        "--lock",
        lock.to_str().unwrap(),
        "--environment",
        "gpu",
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert_fails_with(&out, &["no environment 'gpu'", "default"]);
    let out = ctx.imgbuild(&[
        "build",
        "--lock",
        lock.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert_fails_with(
        &out,
        &["no packages for linux-aarch64", "imgbuild lock --platform"],
    );
    let out = ctx.imgbuild(&[
        "build",
        "--spec",
        "x.yml",
        "--lock",
        lock.to_str().unwrap(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    // --spec beside --lock says what was asked for (the user guide's "pass the spec as
    // well"); one that cannot be read is refused by name.
    assert_fails_with(&out, &["cannot read spec file x.yml"]);
    assert!(!out_dir.exists());
}
