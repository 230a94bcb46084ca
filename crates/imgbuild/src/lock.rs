//! `imgbuild lock`: solve once per platform, write the lock file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use imgbuild_builder::lock::{write_lock, SolvedPlatform};
use imgbuild_builder::{solve, Context, EnvSpec, Target, TargetPlatform};

use crate::args::LockArgs;

/// `environment.yml` → `environment.lock`, beside it.
pub fn default_lock_path(spec: &Path) -> PathBuf {
    spec.with_extension("lock")
}

pub async fn run(args: LockArgs) -> Result<()> {
    let spec = EnvSpec::from_path(&args.spec)?;
    spec.ensure_no_pip()?;
    let platforms: Vec<TargetPlatform> = if args.platforms.is_empty() {
        vec![TargetPlatform::LinuxAmd64]
    } else {
        args.platforms
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?
    };
    let cache_dir = crate::resolve_cache_dir(args.cache_dir.as_deref())?;
    let ctx = Context::new(cache_dir)?;
    let mut solved = Vec::new();
    for platform in platforms {
        let target = Target::new(platform, args.glibc.as_deref(), args.cuda.as_deref())?;
        let records = solve::solve(&ctx, &spec, &target).await?;
        eprintln!("solved {} packages for {platform}", records.len());
        solved.push(SolvedPlatform {
            platform,
            virtual_packages: target.virtual_packages(),
            records,
        });
    }
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| default_lock_path(&args.spec));
    write_lock(&path, &spec.resolved_channels()?, &solved)?;
    println!("wrote {}", path.display());
    Ok(())
}
