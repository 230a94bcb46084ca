//! `imgbuild lock`: solve once per platform, write the lock file.

use anyhow::Result;
use imgbuild_builder::{EnvSpec, Target, TargetPlatform};
use imgbuild_pipeline::{Builder, PipOptions};

use crate::args::LockArgs;

pub async fn run(args: LockArgs) -> Result<()> {
    let spec = EnvSpec::from_path(&args.spec)?;
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
    let targets: Vec<Target> = platforms
        .into_iter()
        .map(|p| Target::new(p, glibc, cuda))
        .collect::<Result<_, _>>()?;
    let pip = PipOptions {
        uv: args.uv.clone(),
        compile: false,
        allow_sdist: args.allow_sdist,
    };
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| crate::settings::default_lock_path(&args.spec));
    let builder = Builder::new(&crate::resolve_cache_dir(args.cache_dir.as_deref())?)?;
    let solved = builder.lock(&spec, &targets, &pip, &path).await?;
    for r in &solved {
        eprintln!("solved {} packages for {}", r.records.len(), r.platform);
        if !r.pip.is_empty() {
            eprintln!("resolved {} pip packages for {}", r.pip.len(), r.platform);
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}
