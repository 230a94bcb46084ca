//! Spec or lock → the exact packages of one platform: conda records, the specs asked for, and
//! the pip wheels. Shared by `build` and `lock`.

use std::time::Instant;

use imgbuild_builder::lock::{self, SolvedPlatform};
use imgbuild_builder::pip::{self, PipPackage, PipRequirements, Uv};
use imgbuild_builder::{solve, Context, EnvSpec, Target, TargetPlatform};
use rattler_conda_types::{MatchSpec, RepoDataRecord};

use crate::error::PipelineError;
use crate::plan::{PipOptions, Source};

/// The exact packages of an environment on one platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub platform: TargetPlatform,
    pub records: Vec<RepoDataRecord>,
    /// The specs asked for (they go into `conda-meta`).
    pub requested: Vec<MatchSpec>,
    pub pip: Vec<PipPackage>,
}

/// A lazily found uv: looked for once, when first needed.
pub(crate) struct UvFinder<'a> {
    explicit: Option<&'a std::path::Path>,
    cache_dir: &'a std::path::Path,
    found: Option<Uv>,
}

impl<'a> UvFinder<'a> {
    pub(crate) fn new(options: &'a PipOptions, cache_dir: &'a std::path::Path) -> Self {
        Self {
            explicit: options.uv.as_deref(),
            cache_dir,
            found: None,
        }
    }

    pub(crate) fn get(&mut self) -> Result<Uv, PipelineError> {
        if self.found.is_none() {
            self.found = Some(Uv::find(self.explicit, self.cache_dir)?);
        }
        Ok(self.found.clone().expect("set above"))
    }
}

/// Solves (or reads the lock of) `source` for `target`, then resolves its pip section.
pub(crate) async fn resolve(
    ctx: &Context,
    source: &Source,
    target: &Target,
    pip_options: &PipOptions,
    uv: &mut UvFinder<'_>,
) -> Result<Resolved, PipelineError> {
    let platform = target.platform;
    match source {
        Source::Lock {
            path,
            environment,
            spec,
        } => {
            let locked = lock::read_lock(path, environment.as_deref(), platform)?;
            tracing::info!(
                "{} packages from {} ({} with a hash to check)",
                locked.records.len(),
                path.display(),
                locked.hashed
            );
            // The spec, when given beside the lock, says what was asked for; else the lock's
            // own record of it (imgbuild's locks carry one).
            let requested = match (spec, locked.requested) {
                (Some(spec), _) => spec.dependencies.clone(),
                (None, Some(requested)) => requested,
                (None, None) => {
                    tracing::info!(
                        "{} does not record the requested specs; conda-meta/history will list none (give --spec too to record them)",
                        path.display()
                    );
                    Vec::new()
                }
            };
            if !locked.pip.is_empty() {
                // Locked wheels are installed by uv: find it before any work.
                uv.get()?;
                tracing::info!("{} pip packages from {}", locked.pip.len(), path.display());
            }
            Ok(Resolved {
                platform,
                records: locked.records,
                requested,
                pip: locked.pip,
            })
        }
        Source::Spec { spec, write_lock } => {
            let resolved = solve_spec(ctx, spec, target, pip_options, uv).await?;
            if let Some(path) = write_lock {
                write_lock_for(path, spec, std::iter::once((&resolved, target)))?;
                tracing::info!("wrote {}", path.display());
            }
            Ok(resolved)
        }
    }
}

/// Solves `spec` for `target` and resolves its pip section against the solve.
pub(crate) async fn solve_spec(
    ctx: &Context,
    spec: &EnvSpec,
    target: &Target,
    pip_options: &PipOptions,
    uv: &mut UvFinder<'_>,
) -> Result<Resolved, PipelineError> {
    let pip_reqs = PipRequirements::parse(&spec.pip, &spec.path)?;
    // A missing uv fails before the solve, not after it.
    if !pip_reqs.is_empty() {
        uv.get()?;
    }
    let t = Instant::now();
    let records = solve::solve(ctx, spec, target).await?;
    tracing::info!(
        "solved {} packages for {} in {:.1?}",
        records.len(),
        target.platform,
        t.elapsed()
    );
    let pip = if pip_reqs.is_empty() {
        Vec::new()
    } else {
        let t = Instant::now();
        let uv = uv.get()?;
        let pip = tokio::task::block_in_place(|| {
            pip::resolve_for(&uv, &pip_reqs, &records, target, pip_options.allow_sdist)
        })?;
        tracing::info!(
            "resolved {} pip packages for {} in {:.1?}",
            pip.len(),
            target.platform,
            t.elapsed()
        );
        pip
    };
    Ok(Resolved {
        platform: target.platform,
        records,
        requested: spec.dependencies.clone(),
        pip,
    })
}

/// Writes the lock file of `spec` at `path`: one platform per solve, each with the virtual
/// packages of the target it was solved for.
pub(crate) fn write_lock_for<'a>(
    path: &std::path::Path,
    spec: &EnvSpec,
    solved: impl Iterator<Item = (&'a Resolved, &'a Target)>,
) -> Result<(), PipelineError> {
    let platforms: Vec<SolvedPlatform> = solved
        .map(|(r, target)| SolvedPlatform {
            platform: r.platform,
            virtual_packages: target.virtual_packages(),
            records: r.records.clone(),
            pip: r.pip.clone(),
        })
        .collect();
    lock::write_lock(
        path,
        &spec.resolved_channels()?,
        &spec.dependencies,
        &platforms,
    )?;
    Ok(())
}
