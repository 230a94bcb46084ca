//! Reproducibility: the same inputs give the same digest, whatever the cache.

use crate::build::build_fixture;
use crate::common::*;

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
