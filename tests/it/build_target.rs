//! The target, not the host: virtual packages from flags, other architectures, CPU
//! builds on GPU-less hosts called out.

use crate::common::*;

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
