//! `imgbuild lock`: solve once per platform, write the lock file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use imgbuild_builder::lock::{write_lock, SolvedPlatform};
use imgbuild_builder::pip::{self, PipRequirements, Uv};
use imgbuild_builder::{solve, Context, EnvSpec, Target, TargetPlatform};

use crate::args::LockArgs;

/// `environment.yml` → `environment.lock`, beside it.
pub fn default_lock_path(spec: &Path) -> PathBuf {
    spec.with_extension("lock")
}

pub async fn run(args: LockArgs) -> Result<()> {
    let spec = EnvSpec::from_path(&args.spec)?;
    let pip_reqs = PipRequirements::parse(&spec.pip, &spec.path)?;
    // Flags win over the spec's x-imgbuild block.
    let names = if args.platforms.is_empty() {
        &spec.image.platforms
    } else {
        &args.platforms
    };
    let platforms: Vec<TargetPlatform> = if names.is_empty() {
        vec![TargetPlatform::LinuxAmd64]
    } else {
        names.iter().map(|p| p.parse()).collect::<Result<_, _>>()?
    };
    let cuda = args.cuda.as_deref().or(spec.image.cuda.as_deref());
    let glibc = args.glibc.as_deref().or(spec.image.glibc.as_deref());
    let (cache_dir, _cache_run) = crate::open_cache(args.cache_dir.as_deref())?;
    let uv = (!pip_reqs.is_empty())
        .then(|| Uv::find(args.uv.as_deref(), &cache_dir))
        .transpose()?;
    let ctx = Context::new(cache_dir)?;
    let mut solved = Vec::new();
    for platform in platforms {
        let target = Target::new(platform, glibc, cuda)?;
        let records = solve::solve(&ctx, &spec, &target).await?;
        eprintln!("solved {} packages for {platform}", records.len());
        let pip = match &uv {
            Some(uv) => {
                let pip = pip::resolve_for(uv, &pip_reqs, &records, &target, args.allow_sdist)?;
                eprintln!("resolved {} pip packages for {platform}", pip.len());
                pip
            }
            None => Vec::new(),
        };
        solved.push(SolvedPlatform {
            platform,
            virtual_packages: target.virtual_packages(),
            records,
            pip,
        });
    }
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| default_lock_path(&args.spec));
    write_lock(
        &path,
        &spec.resolved_channels()?,
        &spec.dependencies,
        &solved,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
