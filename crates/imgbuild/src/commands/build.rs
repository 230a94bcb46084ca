//! `imgbuild build`: settings → the pipeline → the printed report.

use std::sync::Arc;

use anyhow::Result;
use imgbuild_pipeline::{BaseSource, Builder, PipelineError};

use crate::args::BuildArgs;
use crate::printer::{self, Output};
use crate::settings::{build_settings, BuildSettings};

pub async fn run(args: BuildArgs, output: Output) -> Result<()> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let settings = build_settings(&args, epoch.as_deref())?;
    let cache_dir = crate::resolve_cache_dir(args.cache_dir.as_deref())?;
    let builder = Builder::new(&cache_dir)?
        .with_registry(settings.registry.clone())
        .with_registry_cache(settings.registry_cache.clone())
        .with_observer(Arc::new(crate::progress::ProgressObserver::new(
            output.draw_progress,
        )));
    let report = builder
        .build_platforms(&settings.plans, &settings.outputs, settings.skew)
        .await
        .map_err(|e| with_flags(e, &settings))?;
    printer::print_build(&report, &settings.outputs, output);
    Ok(())
}

/// The pipeline's error, with the flag to change where one is to blame.
fn with_flags(err: PipelineError, settings: &BuildSettings) -> anyhow::Error {
    match err {
        PipelineError::Base { source, .. } => {
            let hint = match settings.plans[0].base {
                BaseSource::Registry(_) => {
                    " (for a build without a registry, use --base scratch or --base oci:DIR[:TAG])"
                }
                _ => "",
            };
            anyhow::Error::new(source)
                .context(format!("cannot use --base {}{hint}", settings.base_text))
        }
        other => anyhow::Error::new(other),
    }
}
