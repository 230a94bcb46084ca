//! What a rebuild reuses: layers from the layer cache, layers written while installing,
//! staging roots; and that each gives the bytes a fresh build gives.

use crate::common::*;

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
