//! The pipeline as a library: cache, early-layer and staging behaviour asserted on the
//! `BuildReport`, not on log text.

use std::path::Path;

use imgbuild_builder::activation::ActivationScripts;
use imgbuild_builder::install::RootUpdate;
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::{EnvSpec, InstallPrefix, Target, TargetPlatform};
use imgbuild_layer::{LayerOrigin, PlanOptions};
use imgbuild_oci::{Compression, RuntimeConfig};
use imgbuild_pipeline::{
    BaseSource, BuildPlan, Builder, Downloads, EnvironmentOrigin, Outputs, PipOptions, Source,
};

use crate::common::*;

fn plan(spec: &Path) -> BuildPlan {
    BuildPlan {
        source: Source::Spec {
            spec: Box::new(EnvSpec::from_path(spec).unwrap()),
            write_lock: None,
        },
        base: BaseSource::Scratch,
        target: Target::new(TargetPlatform::LinuxAmd64, None, None).unwrap(),
        prefix: InstallPrefix::parse("/opt/conda").unwrap(),
        runtime: RuntimeConfig::default(),
        layers: PlanOptions {
            big_package_threshold: 1 << 20,
            ..PlanOptions::default()
        },
        compression: Compression::Gzip,
        mtime: 0,
        pip: PipOptions::default(),
        activation: ActivationScripts::Evaluate,
        sbom_format: SbomFormat::Spdx,
        max_package_size: imgbuild_builder::DEFAULT_MAX_PACKAGE_SIZE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_where_every_layer_and_the_environment_came_from() {
    let ctx = TestContext::new();
    let packages = ["whereami", "binlib", "hello-py", "bigdata"];
    let spec = ctx.spec(&packages);
    let builder = Builder::new(&ctx.path("cache")).unwrap();
    let to = |dir: &str| Outputs {
        layout: Some(ctx.path(dir)),
        tags: vec!["t".into()],
        ..Outputs::default()
    };

    // A fresh cache: everything downloaded, installed into a new reusable root, written.
    let first = builder.build(&plan(&spec), &to("first")).await.unwrap();
    let EnvironmentOrigin::Installed {
        staging: Some(update),
    } = first.environment
    else {
        panic!("{:?}", first.environment)
    };
    assert_eq!(update.unlinked + update.unchanged, 0, "{update:?}");
    assert!(update.linked >= packages.len(), "{update:?}");
    assert_eq!(first.downloads.packages, update.linked as u64);
    assert_eq!(first.layers_from(LayerOrigin::Reused), 0);
    // bigdata (over the 1 MiB threshold) got its layer while the rest was still linking.
    let big = first
        .layers
        .iter()
        .find(|l| l.owners == ["bigdata-1.0-0"])
        .expect("bigdata has a layer of its own");
    assert_eq!(big.origin, LayerOrigin::WrittenWhileInstalling);
    assert_eq!(first.layers.last().unwrap().owners, ["sbom"]);
    assert_eq!(
        manifest_digest(&ctx.path("first")),
        first.manifest_digest.to_string()
    );

    // Nothing changed: the environment comes whole from the cache.
    let second = builder.build(&plan(&spec), &to("second")).await.unwrap();
    assert_eq!(second.environment, EnvironmentOrigin::Cached);
    assert_eq!(second.downloads, Downloads::default());
    assert_eq!(second.layers_from(LayerOrigin::Reused), second.layers.len());
    assert_eq!(second.manifest_digest, first.manifest_digest);

    // One package fewer: the reused root unlinks it and keeps the rest; the package layers
    // that did not change come from the layer cache.
    let spec = ctx.spec(&packages[1..]);
    let third = builder.build(&plan(&spec), &to("third")).await.unwrap();
    let EnvironmentOrigin::Installed {
        staging:
            Some(RootUpdate {
                linked,
                unlinked,
                unchanged,
            }),
    } = third.environment
    else {
        panic!("{:?}", third.environment)
    };
    assert_eq!((linked, unlinked), (0, 1), "{:?}", third.environment);
    assert_eq!(unchanged, update.linked - 1);
    assert_eq!(third.downloads, Downloads::default());
    let reused_big = third
        .layers
        .iter()
        .find(|l| l.owners == ["bigdata-1.0-0"])
        .unwrap();
    assert_eq!(reused_big.origin, LayerOrigin::Reused);
    assert_eq!(reused_big.digest, big.digest);
    assert_ne!(third.manifest_digest, first.manifest_digest);
}

/// A build of `spec` with a builder on `cache` (opened for this build alone, as a CLI run
/// would) into the layout `out`; the report and what opening the cache swept.
async fn build_into(
    cache: &Path,
    spec: &Path,
    out: &Path,
) -> (
    imgbuild_pipeline::BuildReport,
    imgbuild_builder::cache_dir::Sweep,
) {
    let builder = Builder::new(cache).unwrap();
    let outputs = Outputs {
        layout: Some(out.to_path_buf()),
        ..Outputs::default()
    };
    let report = builder.build(&plan(spec), &outputs).await.unwrap();
    (report, builder.sweep().clone())
}

fn manifest_digest(layout: &Path) -> String {
    read_json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Moved from build_caches.rs, where it read the log: a fresh cache downloads exactly the
/// archives' sizes the records state and writes every layer; an unchanged rebuild installs
/// and writes nothing; a cached layer whose blob is gone is written again, to the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_package_layers_come_from_the_layer_cache() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let cache = ctx.path("cache");
    let build = |dir: &'static str| {
        let (spec, cache, out) = (spec.clone(), cache.clone(), ctx.path(dir));
        async move { build_into(&cache, &spec, &out).await.0 }
    };
    let first = build("first").await;
    let records = conda_meta_records(&ctx.path("first"));
    let bytes: u64 = records.iter().map(|r| r["size"].as_u64().unwrap()).sum();
    assert_eq!(first.downloads.packages, records.len() as u64);
    assert_eq!(first.downloads.package_bytes, bytes);
    assert_eq!(first.layers_from(LayerOrigin::Reused), 0);
    assert_eq!(first.layers.last().unwrap().owners, ["sbom"]);
    assert_eq!(first.layers.last().unwrap().origin, LayerOrigin::Written);

    let second = build("second").await;
    assert_eq!(second.environment, EnvironmentOrigin::Cached);
    assert_eq!(second.downloads, Downloads::default());
    assert_eq!(second.layers_from(LayerOrigin::Reused), second.layers.len());
    assert_eq!(manifest(&ctx.path("first")), manifest(&ctx.path("second")));

    // The first layer's blob goes: the environment is installed again (its cache entry
    // names a blob that is gone), that layer and the environment layer are written again,
    // the other package layers and the SBOM layer come from the layer cache.
    let gone = first.layers[0].digest.to_string();
    std::fs::remove_file(blob(&cache, &gone)).unwrap();
    let third = build("third").await;
    assert!(
        matches!(third.environment, EnvironmentOrigin::Installed { .. }),
        "{:?}",
        third.environment
    );
    let written: Vec<_> = third
        .layers
        .iter()
        .filter(|l| l.origin != LayerOrigin::Reused)
        .map(|l| l.holds())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written.contains(&"environment".to_string()), "{written:?}");
    assert_eq!(third.layers[0].digest, first.layers[0].digest);
    assert_eq!(manifest(&ctx.path("first")), manifest(&ctx.path("third")));
}

/// Moved from build_caches.rs: a big package's layer written while the rest is still being
/// linked is the layer a build writes after the install (one whose staging root was complete,
/// so nothing was linked and every layer came after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_written_while_installing_equal_layers_written_after() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami", "binlib", "hello-py", "bigdata"]);
    let cache = ctx.path("cache");
    let build = |dir: &'static str| {
        let (spec, cache, out) = (spec.clone(), cache.clone(), ctx.path(dir));
        async move {
            let (report, _) = build_into(&cache, &spec, &out).await;
            let how = |holds: &str| {
                report
                    .layers
                    .iter()
                    .find(|l| l.holds().starts_with(holds))
                    .unwrap_or_else(|| panic!("no {holds} layer: {report:?}"))
                    .origin
            };
            let origins = [how("bigdata-"), how("environment"), how("sbom")];
            (manifest(&out), origins)
        }
    };
    let (early, how) = build("early").await;
    assert_eq!(
        how,
        [
            LayerOrigin::WrittenWhileInstalling,
            LayerOrigin::Written,
            LayerOrigin::Written
        ]
    );
    for dir in ["layers", "environments", "blobs"] {
        std::fs::remove_dir_all(cache.join(dir)).unwrap();
    }
    let (late, how) = build("late").await;
    assert_eq!(how[0], LayerOrigin::Written);
    assert_eq!(early, late);
}

/// Moved from build_caches.rs: the image of a changed environment, made in a cache whose
/// root held the previous one, is the image a fresh cache makes — packages added, removed and
/// with other requested specs; a root left half-updated is wiped, not trusted; a root another
/// build holds is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_staging_root_gives_the_image_a_fresh_one_gives() {
    let ctx = TestContext::new();
    let build = |dir: String, deps: &'static [&'static str], cache: String| {
        let (spec, cache, out) = (ctx.spec(deps), ctx.path(&cache), ctx.path(&dir));
        async move {
            let (report, sweep) = build_into(&cache, &spec, &out).await;
            (manifest(&out), report, sweep)
        }
    };
    let steps: &[&'static [&'static str]] = &[
        &["whereami", "binlib", "hello-py"],
        &["whereami", "hello-py", "torchlike"],
        &["whereami", "binlib>=0", "hello-py"],
        &["whereami"],
    ];
    for (i, deps) in steps.iter().enumerate() {
        let (reused, report, _) = build(format!("reused{i}"), deps, "cache".into()).await;
        let (fresh, ..) = build(format!("fresh{i}"), deps, format!("fresh-cache{i}")).await;
        assert_eq!(
            reused, fresh,
            "step {i} ({deps:?}) differs from a fresh build"
        );
        if i == 1 {
            // binlib went, torchlike came; whereami, hello-py and their dependencies stayed.
            assert_eq!(
                report.environment,
                EnvironmentOrigin::Installed {
                    staging: Some(RootUpdate {
                        linked: 1,
                        unlinked: 1,
                        unchanged: 4
                    })
                }
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
    let marker = ctx.path(&format!("cache/staging/{}.incomplete", roots[0]));
    std::fs::write(marker, b"").unwrap();
    let deps: &'static [&'static str] = &["whereami", "binlib"];
    let (again, _, sweep) = build("again".into(), deps, "cache".into()).await;
    let (fresh, ..) = build("again-fresh".into(), deps, "fresh-cache-again".into()).await;
    assert_eq!(again, fresh);
    // The build found the cache idle and removed the half-updated root and its marker first.
    assert!(
        matches!(
            sweep,
            imgbuild_builder::cache_dir::Sweep::Swept { entries: 2, .. }
        ),
        "{sweep:?}"
    );
    assert!(!root.join("stray-file").exists());
    // While another build holds the root, a build uses a temporary one and leaves it alone.
    let lock = std::fs::File::open(ctx.path(&format!("cache/staging/{}.lock", roots[0]))).unwrap();
    lock.lock().unwrap();
    let deps: &'static [&'static str] = &["whereami", "hello-py"];
    let (busy, report, _) = build("busy".into(), deps, "cache".into()).await;
    let (fresh, ..) = build("busy-fresh".into(), deps, "fresh-cache-busy".into()).await;
    drop(lock);
    assert_eq!(busy, fresh);
    assert_eq!(
        report.environment,
        EnvironmentOrigin::Installed { staging: None }
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
