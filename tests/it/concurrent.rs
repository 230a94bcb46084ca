//! Builds that run at once: on one cache directory (a CI runner's shared cache), into one
//! output layout. Every build succeeds and makes the image a lone build in a fresh cache makes.

use std::process::{Child, Output, Stdio};

use crate::common::*;

const ENV_A: &[&str] = &["whereami", "binlib", "hello-py", "bigdata"];
const ENV_B: &[&str] = &["whereami", "hello-py", "torchlike"];

fn build_args<'a>(spec: &'a str, out: &'a str, tag: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--spec",
        spec,
        "--output",
        out,
        "--tag",
        tag,
        "--big-package-threshold",
        "1MiB",
    ]
}

fn spawn(ctx: &TestContext, args: &[&str]) -> Child {
    ctx.command(args, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn digest(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest line:\n{stdout}\n{}", stderr(out)))
        .to_string()
}

/// The digest a lone build of `deps` makes in a cache of its own.
fn lone_digest(deps: &[&str]) -> String {
    let ctx = TestContext::new();
    let spec = ctx.path("env.yml");
    std::fs::copy(ctx.spec(deps), &spec).unwrap();
    let out = ctx.path("out");
    let res = ctx.imgbuild(&build_args(
        spec.to_str().unwrap(),
        out.to_str().unwrap(),
        "lone:1",
    ));
    assert_ok(&res);
    digest(&res)
}

/// N builds (two environments, alternating) started at once on one fresh cache, each into its
/// own layout, for N = 2, 4 and 8: all succeed, and each makes the image of a lone build.
#[test]
fn builds_started_at_once_on_one_fresh_cache_all_succeed_with_the_lone_digests() {
    let (lone_a, lone_b) = (lone_digest(ENV_A), lone_digest(ENV_B));
    for n in [2, 4, 8] {
        let ctx = TestContext::new();
        let specs: Vec<String> = [("a.yml", ENV_A), ("b.yml", ENV_B)]
            .iter()
            .map(|(name, deps)| {
                let path = ctx.path(name);
                std::fs::copy(ctx.spec(deps), &path).unwrap();
                path.to_str().unwrap().to_string()
            })
            .collect();
        let outs: Vec<String> = (0..n)
            .map(|i| ctx.path(&format!("out{i}")).to_str().unwrap().to_string())
            .collect();
        let children: Vec<Child> = (0..n)
            .map(|i| spawn(&ctx, &build_args(&specs[i % 2], &outs[i], "c:1")))
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let res = child.wait_with_output().unwrap();
            assert_ok(&res);
            let want = if i % 2 == 0 { &lone_a } else { &lone_b };
            assert_eq!(&digest(&res), want, "build {i} of {n}:\n{}", stderr(&res));
        }
        // A later build on the same cache reuses it and still agrees.
        let res = ctx.imgbuild(&build_args(&specs[0], &outs[0], "c:2"));
        assert_ok(&res);
        assert_eq!(digest(&res), lone_a);
    }
}

/// Four builds write into one output layout at once, each under its own tag: they take turns,
/// all succeed, and the layout ends up holding all four tags, readable by skopeo.
#[test]
fn builds_into_one_output_at_once_all_land_in_it() {
    let lone = lone_digest(ENV_A);
    let ctx = TestContext::new();
    let spec = ctx.spec(ENV_A);
    let out = ctx.path("shared-out");
    let tags: Vec<String> = (0..4).map(|i| format!("shared:{i}")).collect();
    let children: Vec<Child> = tags
        .iter()
        .map(|tag| {
            spawn(
                &ctx,
                &build_args(spec.to_str().unwrap(), out.to_str().unwrap(), tag),
            )
        })
        .collect();
    for child in children {
        let res = child.wait_with_output().unwrap();
        assert_ok(&res);
        assert_eq!(digest(&res), lone);
    }
    let index = read_json(&out.join("index.json"));
    let mut names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["digest"], lone.as_str());
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["shared:0", "shared:1", "shared:2", "shared:3"]);
    for tag in &tags {
        let report = sh(&format!(
            "skopeo inspect --raw oci:{}:{tag} | sha256sum",
            out.display()
        ));
        assert_eq!(
            format!("sha256:{}", report.split_whitespace().next().unwrap()),
            lone
        );
    }
    // Nothing temporary is left beside the layout or in it.
    let beside: Vec<_> = std::fs::read_dir(ctx.tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".imgbuild"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}
