//! Solved records → a staging root laid out for its final prefix.
//!
//! Packages are downloaded (or copied from `file://` channels) into the shared package cache
//! and checked against the sha256 their record promises, then linked by rattler's `Installer`
//! with `with_alternative_target_prefix`: placeholders, shebangs and noarch-python paths come
//! out as they must be at the final prefix, although the files sit in a temporary directory.

use std::path::{Path, PathBuf};

use futures::future::try_join_all;
use rattler::install::{ExternalSymlinkPolicy, Installer};
use rattler_cache::package_cache::{CacheMetadata, PackageCache};
use rattler_conda_types::package::{FileMode, PathsJson};
use rattler_conda_types::{MatchSpec, RepoDataRecord};
use rattler_networking::retry_policies::default_retry_policy;
use tempfile::TempDir;

use crate::error::{chain, BuildError};
use crate::normalize::normalize_staging_root;
use crate::prefix::InstallPrefix;
use crate::target::TargetPlatform;
use crate::Context;

/// An installed environment in a temporary directory, ready to be cut into layers.
/// The directory is removed when this value is dropped.
#[derive(Debug)]
pub struct StagingRoot {
    dir: TempDir,
    pub prefix: InstallPrefix,
    pub records: Vec<RepoDataRecord>,
}

impl StagingRoot {
    /// The directory whose contents become `<prefix>` in the image.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment's activation (variables and `PATH` entries), evaluated for the image.
    pub fn activation(
        &self,
        platform: TargetPlatform,
    ) -> Result<crate::activation::Activation, BuildError> {
        crate::activation::bake(self.path(), &self.prefix, platform)
    }
}

/// Fetches, checks and links `records` into a new staging root under the cache directory.
///
/// `requested` are the specs the user asked for: they go into each matching record's
/// `requested_spec(s)` and into `conda-meta/history`, stamped with `timestamp` (the image's
/// fixed time), so conda inside the image knows what was asked for and what came as a
/// dependency.
pub async fn install(
    ctx: &Context,
    records: &[RepoDataRecord],
    requested: &[MatchSpec],
    prefix: &InstallPrefix,
    platform: TargetPlatform,
    timestamp: u64,
) -> Result<StagingRoot, BuildError> {
    let cache = ctx.package_cache();
    let fetched = try_join_all(records.iter().map(|r| fetch(ctx, &cache, r))).await?;
    for (record, meta) in records.iter().zip(&fetched) {
        check_placeholders(record, meta.path(), prefix)?;
    }

    let staging_parent = ctx.cache_dir.join("staging");
    std::fs::create_dir_all(&staging_parent).map_err(|e| BuildError::io(&staging_parent, e))?;
    let dir = tempfile::Builder::new()
        .prefix("env-")
        .tempdir_in(&staging_parent)
        .map_err(|e| BuildError::io(&staging_parent, e))?;

    Installer::new()
        .with_package_cache(cache)
        .with_download_client(ctx.client.clone())
        .with_target_platform(platform.subdir())
        .with_alternative_target_prefix(PathBuf::from(prefix.as_str()))
        // Link scripts would run on the build host, against the staging path.
        .with_execute_link_scripts(false)
        .with_external_symlink_policy(ExternalSymlinkPolicy::Deny)
        .with_requested_specs(requested.to_vec())
        .install(dir.path(), records.to_vec())
        .await
        .map_err(|e| BuildError::Install { message: chain(&e) })?;

    normalize_staging_root(dir.path())?;
    crate::history::write(dir.path(), records, requested, timestamp)?;
    Ok(StagingRoot {
        dir,
        prefix: prefix.clone(),
        records: records.to_vec(),
    })
}

async fn fetch(
    ctx: &Context,
    cache: &PackageCache,
    record: &RepoDataRecord,
) -> Result<CacheMetadata, BuildError> {
    let err = |e: &dyn std::error::Error| BuildError::Fetch {
        package: record.identifier.to_string(),
        url: record.url.to_string(),
        message: chain(e),
    };
    if record.url.scheme() == "file" {
        let path = record.url.to_file_path().map_err(|()| BuildError::Fetch {
            package: record.identifier.to_string(),
            url: record.url.to_string(),
            message: "not a local path".into(),
        })?;
        cache
            .get_or_fetch_from_path(&path, Some(&record.package_record), None)
            .await
            .map_err(|e| err(&e))
    } else {
        cache
            .get_or_fetch_from_url_with_retry(
                &record.package_record,
                record.url.clone(),
                ctx.client.clone().into(),
                default_retry_policy(),
                ctx.download_progress.clone().map(|p| {
                    std::sync::Arc::new(crate::download_progress::Reporter::new(p))
                        as std::sync::Arc<dyn rattler_cache::package_cache::CacheReporter>
                }),
                None,
            )
            .await
            .map_err(|e| err(&e))
    }
}

/// Binary placeholders can only be replaced by a prefix that is no longer than they are.
/// Checked before linking so the error names the package, the file and the limit.
fn check_placeholders(
    record: &RepoDataRecord,
    package_dir: &Path,
    prefix: &InstallPrefix,
) -> Result<(), BuildError> {
    let paths = PathsJson::from_package_directory_with_deprecated_fallback(package_dir)
        .map_err(|e| BuildError::io(package_dir, e))?;
    let tightest = paths
        .paths
        .iter()
        .filter_map(|entry| {
            let ph = entry.prefix_placeholder.as_ref()?;
            (ph.file_mode == FileMode::Binary)
                .then_some((ph.placeholder.len(), &entry.relative_path))
        })
        .min_by_key(|(len, _)| *len);
    match tightest {
        Some((max_len, file)) if prefix.as_str().len() > max_len => {
            Err(BuildError::PrefixTooLong {
                prefix: prefix.to_string(),
                prefix_len: prefix.as_str().len(),
                package: record.identifier.to_string(),
                file: file.display().to_string(),
                max_len,
            })
        }
        _ => Ok(()),
    }
}
