//! Spec → exact package records, with rattler's repodata gateway and resolvo.

use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_repodata_gateway::Gateway;
use rattler_solve::{resolvo::Solver, ChannelPriority, SolveError, SolverImpl, SolverTask};

use crate::error::{chain, BuildError};
use crate::spec::EnvSpec;
use crate::target::Target;
use crate::Context;

/// Fetches repodata for every channel × {target subdir, noarch} and solves `spec` for
/// `target` with strict channel priority. Records come back sorted by package name.
pub async fn solve(
    ctx: &Context,
    spec: &EnvSpec,
    target: &Target,
) -> Result<Vec<RepoDataRecord>, BuildError> {
    let channels = spec.resolved_channels()?;
    let gateway = Gateway::builder()
        .with_cache_dir(ctx.repodata_cache_dir())
        .with_package_cache(ctx.package_cache())
        .with_client(ctx.client.clone())
        .finish();
    let subdirs = [target.platform.subdir(), Subdir::NoArch];
    tracing::info!(
        "fetching repodata from {} for {}",
        channels
            .iter()
            .map(|c| c.base_url.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        target.platform
    );
    let output = gateway
        .query(channels.clone(), subdirs, spec.dependencies.clone())
        .recursive(true)
        .execute()
        .await
        .map_err(|e| BuildError::Repodata { message: chain(&e) })?;

    let mut task = SolverTask::from_iter(&output.repodata);
    task.specs = spec.dependencies.clone();
    task.virtual_packages = target.virtual_packages();
    task.channel_priority = ChannelPriority::Strict;
    let result = Solver.solve(task).map_err(|e| match e {
        SolveError::Unsolvable(problems) => BuildError::Unsolvable {
            platform: target.platform.to_string(),
            problems,
        },
        other => BuildError::Solver(other.to_string()),
    })?;
    let mut records = result.records;
    records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
    Ok(records)
}

/// Names of solved packages that need a C library (`__glibc`): they will not run on `scratch`.
pub fn packages_needing_glibc(records: &[RepoDataRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| {
            r.package_record
                .depends
                .iter()
                .any(|d| d.starts_with("__glibc"))
        })
        .map(|r| r.package_record.name.as_normalized().to_string())
        .collect()
}
