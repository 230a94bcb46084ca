//! Spec → exact package records, with rattler's repodata gateway and resolvo.

use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_repodata_gateway::Gateway;
use rattler_solve::{resolvo::Solver, ChannelPriority, SolveError, SolverImpl, SolverTask};

use crate::error::BuildError;
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
        .map_err(|e| BuildError::Repodata {
            source: Box::new(e),
        })?;

    let mut task = SolverTask::from_iter(&output.repodata);
    task.specs = spec.dependencies.clone();
    task.virtual_packages = target.virtual_packages();
    task.channel_priority = ChannelPriority::Strict;
    let result = Solver.solve(task).map_err(|e| match e {
        SolveError::Unsolvable(mut problems) => {
            let needs_cuda = target.cuda.is_none() && problems.iter().any(|p| p.contains("__cuda"));
            if needs_cuda {
                problems.push(
                    "a package needs a GPU driver (__cuda), but the target has none".to_string(),
                );
            }
            BuildError::Unsolvable {
                platform: target.platform.to_string(),
                problems,
                needs_cuda,
            }
        }
        other => BuildError::Solver(Box::new(other)),
    })?;
    let mut records = result.records;
    records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
    if target.cuda.is_none() {
        for name in cpu_builds_with_cuda_alternatives(&records, &output.repodata) {
            tracing::warn!(
                "{name}: the solver picked a build without CUDA although CUDA builds exist in the \
                 channels; the target has no GPU unless you pass --cuda VERSION (e.g. --cuda 11.8)"
            );
        }
    }
    Ok(records)
}

/// Solved packages that do not use CUDA while a build of the same package in the channels
/// does: the classic silent-CPU-pytorch trap of building on a host without a GPU.
pub fn cpu_builds_with_cuda_alternatives(
    records: &[RepoDataRecord],
    available: &[rattler_repodata_gateway::RepoData],
) -> Vec<String> {
    let uses_cuda = |r: &RepoDataRecord| {
        r.package_record
            .depends
            .iter()
            .any(|d| d.starts_with("__cuda"))
            || r.package_record.build.to_string().contains("cuda")
    };
    records
        .iter()
        .filter(|r| !uses_cuda(r))
        .filter(|r| {
            available.iter().any(|repo| {
                repo.iter()
                    .any(|c| c.package_record.name == r.package_record.name && uses_cuda(c))
            })
        })
        .map(|r| r.package_record.name.as_normalized().to_string())
        .collect()
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
