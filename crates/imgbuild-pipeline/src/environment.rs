//! Resolved packages → the environment's layers and activation: installed into a staging
//! root while big packages' layers are already being written, wheels downloaded beside the
//! conda install, then cut into layers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbuild_builder::download_progress::DownloadProgress;
use imgbuild_builder::install::{self, RootUpdate};
use imgbuild_builder::pip::{self, PipTarget, Uv};
use imgbuild_builder::wheel_fetch::WheelCache;
use imgbuild_builder::Context;
use imgbuild_builder::StagingRoot;
use imgbuild_layer::{
    collect_owners, plan_layers, write_layers_with, BuiltEnvironment, EarlyLayers, LayerOrigin,
    StartedLayers, WriteOptions, WrittenLayer,
};
use imgbuild_oci::BlobStore;

use crate::error::PipelineError;
use crate::plan::BuildPlan;
use crate::resolve::Resolved;

/// The pip step of an environment: which uv, for what.
pub(crate) struct PipStep {
    pub uv: Uv,
    pub target: PipTarget,
}

/// A freshly built environment, and what building it took.
pub(crate) struct Installed {
    pub environment: BuiltEnvironment,
    /// What the install did to a reused staging root.
    pub update: Option<RootUpdate>,
    /// The time the pip step added to the build (its downloads overlap the conda install).
    pub pip_time: Duration,
}

/// Installs `resolved` as `plan` says, cuts it into layers and bakes its activation.
pub(crate) async fn build_environment(
    ctx: &Context,
    plan: &BuildPlan,
    resolved: &Resolved,
    pip_step: Option<&PipStep>,
    wheel_downloads: &Arc<DownloadProgress>,
    write_options: &WriteOptions,
    store: &BlobStore,
) -> Result<Installed, PipelineError> {
    let t = Instant::now();
    // Big packages' layers start as soon as rattler has linked them (see imgbuild-layer's
    // early.rs); the plan below decides whether they are used.
    let python = resolved
        .records
        .iter()
        .map(|r| &r.package_record)
        .find(|p| p.name.as_normalized() == "python")
        .map(|p| format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build))
        .unwrap_or_default();
    let early = Arc::new(EarlyLayers::new(
        python,
        plan.layers.big_package_threshold,
        plan.layers.max_big_layers(),
        write_options.clone(),
        store.clone(),
    ));
    let on_linked: install::OnLinked = {
        let early = Arc::clone(&early);
        Arc::new(move |root, label, sizes| early.linked(root, label, sizes))
    };
    let conda = install::install(
        ctx,
        &resolved.records,
        &resolved.requested,
        &plan.prefix,
        plan.target.platform,
        write_options.mtime,
        // A root that gets pip's files is not reused: only conda's are tracked in conda-meta.
        if pip_step.is_some() {
            install::Staging::Fresh
        } else {
            install::Staging::Reuse
        },
        Some(on_linked),
    );
    let wheel_cache = WheelCache::new(&ctx.cache_dir);
    let wheels = async {
        match pip_step {
            Some(_) => {
                let t = Instant::now();
                let files = wheel_cache
                    .fetch(&ctx.client, &resolved.pip, Some(wheel_downloads.clone()))
                    .await?;
                Ok::<_, PipelineError>((files, t.elapsed()))
            }
            None => Ok((Vec::new(), Duration::ZERO)),
        }
    };
    let ((staging, conda_time), (wheel_files, fetch_time)) = tokio::try_join!(
        async {
            let staging = conda.await?;
            Ok::<_, PipelineError>((staging, t.elapsed()))
        },
        wheels
    )?;
    let prewritten = early.finish();
    tracing::info!("installed into staging root in {:.1?}", t.elapsed());
    let (pip_licenses, pip_time) = match pip_step {
        Some(step) => {
            let (licenses, took) = install_pip(step, plan, resolved, &wheel_files, &staging)?;
            // The wheels downloaded beside the conda install; only the wait for them counts.
            (licenses, took + fetch_time.saturating_sub(conda_time))
        }
        None => (BTreeMap::new(), Duration::ZERO),
    };

    let layers = cut_layers(plan, &staging, write_options, store, prewritten).await?;
    let activation = staging.activation(plan.target.platform, plan.activation)?;
    Ok(Installed {
        environment: BuiltEnvironment {
            layers,
            path_prepend: activation.path_prepend,
            env: activation.env,
            pip_licenses,
        },
        update: staging.updated,
        pip_time,
    })
}

/// Installs the wheels into the staging root; returns each distribution's declared license
/// and the time it took.
fn install_pip(
    step: &PipStep,
    plan: &BuildPlan,
    resolved: &Resolved,
    wheel_files: &[std::path::PathBuf],
    staging: &StagingRoot,
) -> Result<(BTreeMap<String, String>, Duration), PipelineError> {
    let t = Instant::now();
    let installed = tokio::task::block_in_place(|| {
        pip::install(
            &step.uv,
            &resolved.pip,
            wheel_files,
            &step.target,
            staging.path(),
            plan.prefix.as_str(),
            plan.pip.compile,
        )
    })?;
    tracing::info!(
        "installed {} pip packages in {:.1?}",
        resolved.pip.len(),
        t.elapsed()
    );
    let licenses = installed
        .into_iter()
        .filter_map(|p| Some((p.name, p.license?)))
        .collect();
    Ok((licenses, t.elapsed()))
}

/// Plans the staging root's layers and writes them, taking those written early.
async fn cut_layers(
    plan: &BuildPlan,
    staging: &StagingRoot,
    write_options: &WriteOptions,
    store: &BlobStore,
    prewritten: StartedLayers,
) -> Result<Vec<WrittenLayer>, PipelineError> {
    let t = Instant::now();
    let owners = collect_owners(staging.path())?;
    let layer_plan = plan_layers(&owners, &plan.layers)?;
    let root = staging.path().to_path_buf();
    let (store, write_options) = (store.clone(), write_options.clone());
    let layers = tokio::task::spawn_blocking(move || {
        write_layers_with(&root, &layer_plan, &write_options, &store, &prewritten)
    })
    .await
    .map_err(PipelineError::task)??;
    let count = |origin| layers.iter().filter(|l| l.origin == origin).count();
    let (reused, early) = (
        count(LayerOrigin::Reused),
        count(LayerOrigin::WrittenWhileInstalling),
    );
    tracing::info!(
        "layers: {} written ({early} while installing), {} reused from the layer cache, in {:.1?}",
        layers.len() - reused,
        reused,
        t.elapsed()
    );
    Ok(layers)
}
