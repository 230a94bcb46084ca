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

fn manifest_digest(layout: &Path) -> String {
    read_json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}
