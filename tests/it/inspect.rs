//! `imgbuild inspect` and `imgbuild compare`: reports whose numbers are checked against the
//! blobs on disk, the conda-meta records read straight from the layers, and manual sums over
//! the manifests.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::common::registry::{Registry, RegistryOptions};
use crate::common::*;

fn json_of(out: &std::process::Output) -> Value {
    assert_ok(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// `name-version-build` of every conda-meta record in the layout's layers, read directly.
fn conda_meta_labels(layout: &std::path::Path) -> Vec<String> {
    let mut labels: Vec<String> = conda_meta_records(layout)
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap();
            format!("{}-{}-{}", s("name"), s("version"), s("build"))
        })
        .collect();
    labels.sort();
    labels
}

#[test]
fn inspect_json_matches_the_blobs_and_conda_meta() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let layout = ctx.path("img");
    let archive = ctx.path("img.tar");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--big-package-threshold",
        "1MiB",
        "--output",
        layout.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        "--tag",
        "app:1",
    ]));
    let report = json_of(&ctx.imgbuild(&[
        "inspect",
        &format!("oci:{}:app:1", layout.display()),
        "--json",
    ]));
    assert_eq!(report["schema"], "imgbuild.inspect/v1");
    let m = manifest(&layout);
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), m["layers"].as_array().unwrap().len());
    let mut total = 0;
    let mut total_uncompressed = 0;
    for (l, d) in layers.iter().zip(m["layers"].as_array().unwrap()) {
        assert_eq!(l["digest"], d["digest"]);
        let path = blob(&layout, l["digest"].as_str().unwrap());
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            l["size"].as_u64().unwrap(),
            on_disk,
            "compressed size = blob size"
        );
        let mut tar = Vec::new();
        let file = std::fs::File::open(&path).unwrap();
        match d["mediaType"].as_str().unwrap() {
            t if t.ends_with("+zstd") => zstd::Decoder::new(file).unwrap().read_to_end(&mut tar),
            _ => flate2::read::MultiGzDecoder::new(file).read_to_end(&mut tar),
        }
        .unwrap();
        assert_eq!(
            l["compression"],
            if d["mediaType"].as_str().unwrap().ends_with("+zstd") {
                "zstd"
            } else {
                "gzip"
            }
        );
        assert_eq!(l["uncompressed_size"].as_u64().unwrap(), tar.len() as u64);
        total += on_disk;
        total_uncompressed += tar.len() as u64;
    }
    assert_eq!(report["totals"]["size"].as_u64().unwrap(), total);
    assert_eq!(
        report["totals"]["uncompressed_size"].as_u64().unwrap(),
        total_uncompressed
    );

    // Every package in conda-meta is in exactly one layer's list, and nothing else is.
    let labels = conda_meta_labels(&layout);
    assert!(labels.len() >= 5, "{labels:?}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in layers {
        if l["kind"] == "conda" {
            for p in l["packages"].as_array().unwrap() {
                *seen.entry(p.as_str().unwrap().to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), labels);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert_eq!(
        report["packages"]["count"].as_u64().unwrap(),
        labels.len() as u64
    );
    assert_eq!(layers[layers.len() - 2]["kind"], "environment");
    assert_eq!(layers.last().unwrap()["kind"], "sbom");
    let largest = report["packages"]["largest"].as_array().unwrap();
    assert_eq!(largest[0]["name"], "bigdata", "{largest:?}");
    let sizes: Vec<u64> = largest
        .iter()
        .map(|p| p["installed_size"].as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(
        sizes[0],
        2 * 3 * 1024 * 1024,
        "bigdata installs two 3 MiB files"
    );
    let pull = report["pull_seconds"]["at_100_mbit"].as_f64().unwrap();
    assert!((pull - total as f64 * 8.0 / 1e8).abs() < 1e-6);

    // The archive reads the same.
    let from_archive = json_of(&ctx.imgbuild(&[
        "inspect",
        &format!("oci-archive:{}", archive.display()),
        "--json",
    ]));
    assert_eq!(from_archive["manifest_digest"], report["manifest_digest"]);
    assert_eq!(from_archive["layers"], report["layers"]);

    // The human table: one row per layer and the estimate.
    let table = ctx.imgbuild(&["inspect", layout.to_str().unwrap()]);
    assert_ok(&table);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("estimated pull:"), "{text}");
    assert!(text.contains("bigdata-1.0-0"), "{text}");

    // A tar that is not an OCI archive is refused, naming what is missing.
    let not_oci = ctx.path("not-oci.tar");
    sh(&format!(
        "tar cf {} -C {} img.tar",
        not_oci.display(),
        ctx.path("").display()
    ));
    assert_fails_with(
        &ctx.imgbuild(&["inspect", &format!("oci-archive:{}", not_oci.display())]),
        &["cannot read image", "no oci-layout file"],
    );

    // A missing image is an error naming it.
    let missing = ctx.path("nope");
    assert_fails_with(
        &ctx.imgbuild(&["inspect", &format!("oci:{}", missing.display())]),
        &["cannot read image", "nope"],
    );
}

#[test]
fn compare_counts_shared_layers_once() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let small = ctx.path("small");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--output",
        small.to_str().unwrap(),
        "--tag",
        &format!("{}/ml/small:1", reg.addr),
        "--push",
        "--insecure-registry",
        &reg.addr,
    ]));
    // A superset: every layer of `small`, plus an environment of its own.
    let big = ctx.path("big");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["binlib", "hello-py"]).to_str().unwrap(),
        "--base",
        &format!("oci:{}", small.display()),
        "--prefix",
        "/opt/other",
        "--output",
        big.to_str().unwrap(),
        "--tag",
        &format!("{}/ml/big:1", reg.addr),
        "--push",
        "--insecure-registry",
        &reg.addr,
    ]));
    // A fresh cache, so only what compare fetches is there.
    let fresh = ctx.path("fresh-cache");
    let gets_before = reg.count("GET /v2/ml/");
    let out = ctx.imgbuild(&[
        "compare",
        &format!("{}/ml/big:1", reg.addr),
        &format!("{}/ml/small:1", reg.addr),
        "--json",
        "--cache-dir",
        fresh.to_str().unwrap(),
        "--insecure-registry",
        &reg.addr,
    ]);
    let c = json_of(&out);
    assert_eq!(c["schema"], "imgbuild.compare/v1");

    // Manual sums over the two manifests.
    let sizes = |layout: &std::path::Path| -> BTreeMap<String, u64> {
        manifest(layout)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (b, s) = (sizes(&big), sizes(&small));
    let shared: u64 = s
        .iter()
        .filter(|(d, _)| b.contains_key(*d))
        .map(|(_, n)| n)
        .sum();
    assert!(s.keys().all(|d| b.contains_key(d)), "big is a superset");
    assert_eq!(c["shared"]["layers"].as_u64().unwrap(), s.len() as u64);
    assert_eq!(c["shared"]["size"].as_u64().unwrap(), shared);
    let big_total: u64 = b.values().sum();
    let small_total: u64 = s.values().sum();
    assert_eq!(c["image"]["size"].as_u64().unwrap(), big_total);
    assert_eq!(c["reference"]["size"].as_u64().unwrap(), small_total);
    assert_eq!(
        c["combined_size"].as_u64().unwrap(),
        big_total + small_total - shared,
        "shared layers counted once"
    );
    let ratio = c["size_ratio"].as_f64().unwrap();
    assert!((ratio - big_total as f64 / small_total as f64).abs() < 1e-9);
    // Without --deep nothing but the manifests, configs and environment layers came down.
    assert!(c["image"]["uncompressed_size"].is_null(), "{c}");
    // No conda package layer was downloaded (only configs and environment layers).
    let log = reg.log();
    let big_report = json_of(&ctx.imgbuild(&["inspect", big.to_str().unwrap(), "--json"]));
    let package_layers: Vec<String> = big_report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "conda")
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(!package_layers.is_empty());
    for digest in &package_layers {
        assert!(
            !log.lines()
                .any(|l| l.contains("GET /v2/ml/") && l.contains(digest)),
            "package layer {digest} was downloaded ({gets_before} GETs before):\n{log}"
        );
    }
    // Packages: from the environment layers' conda-meta.
    let only_big: Vec<&str> = c["only_in_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        only_big.iter().any(|p| p.starts_with("binlib-")),
        "{only_big:?}"
    );
    assert!(
        only_big.iter().any(|p| p.starts_with("hello-py-")),
        "{only_big:?}"
    );
    assert_eq!(c["only_in_reference"].as_array().unwrap().len(), 0, "{c}");

    // --deep downloads the layers: uncompressed sizes appear.
    let deep = json_of(&ctx.imgbuild(&[
        "compare",
        &format!("{}/ml/big:1", reg.addr),
        &format!("oci:{}", small.display()),
        "--json",
        "--deep",
        "--cache-dir",
        fresh.to_str().unwrap(),
        "--insecure-registry",
        &reg.addr,
    ]));
    assert!(deep["image"]["uncompressed_size"].as_u64().unwrap() > big_total);
    assert_eq!(deep["shared"]["size"].as_u64().unwrap(), shared);
}
