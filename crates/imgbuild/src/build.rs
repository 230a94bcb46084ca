//! `imgbuild build`: calls the stages in order. Every decision lives in the library crates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use imgbuild_builder::activation::ActivationScripts;
use imgbuild_builder::download_progress::DownloadProgress;
use imgbuild_builder::pip::{self, PipPackage, PipRequirements, PipTarget, Uv};
use imgbuild_builder::sbom::{self, BaseImageRef, SbomFormat, SbomInput};
use imgbuild_builder::spec::ImageOptions;
use imgbuild_builder::wheel_fetch::WheelCache;
use imgbuild_builder::{
    install, lock, solve, Context, EnvSpec, InstallPrefix, Target, TargetPlatform,
};
use imgbuild_layer::write::write_layer;
use imgbuild_layer::{
    collect_owners, plan_layers, write_layers_with, BuiltEnvironment, EarlyLayers,
    EnvironmentCache, EnvironmentRecipe, LayerOrigin, PlanOptions, PlannedLayer, WriteOptions,
};
use imgbuild_oci::{archive, image, layout, BaseImage, BlobStore, Compression, RuntimeConfig};
use rattler_conda_types::{MatchSpec, RepoDataRecord};

use imgbuild_oci::registry::{pull_image, Reference};

use crate::args::{BuildArgs, CompressionArg, SbomFormatArg};
use crate::registry;

/// The base image a build starts from.
enum Base {
    Scratch,
    Layout { dir: PathBuf, tag: Option<String> },
    Registry(Reference),
}

fn parse_base(s: &str) -> Result<Base> {
    if s == "scratch" {
        return Ok(Base::Scratch);
    }
    if let Some(rest) = s.strip_prefix("oci:") {
        // Like skopeo: the path ends at the first ':' (a layout path cannot contain one), so
        // tags such as `llm-env:cu118` survive whole.
        let (dir, tag) = match rest.split_once(':') {
            Some((d, t)) if !t.is_empty() => (d, Some(t.to_string())),
            _ => (rest.trim_end_matches(':'), None),
        };
        return Ok(Base::Layout {
            dir: PathBuf::from(dir),
            tag,
        });
    }
    let reference: Reference = s.parse().with_context(|| {
        format!("--base '{s}' is not 'scratch', 'oci:DIR[:TAG]' or a registry reference")
    })?;
    Ok(Base::Registry(reference))
}

pub async fn run(args: BuildArgs, output: Output) -> Result<()> {
    let Output {
        quiet,
        draw_progress,
        json_logs,
    } = output;
    let started = Instant::now();
    if args.output.is_none() && args.archive.is_none() && !args.push {
        bail!("nothing to write: give --output DIR (an OCI image layout), --archive FILE (an OCI archive) and/or --push");
    }
    let push_targets = if args.push {
        registry::push_targets(&args.tags)?
    } else {
        Vec::new()
    };
    for tag in &args.tags {
        layout::check_tag(tag)?;
    }
    let registry_options = registry::client_options(&args.registry)?;
    if let Some(out) = &args.output {
        layout::check_output_dir(out)?;
    }
    let spec = match &args.spec {
        Some(path) => {
            let spec = EnvSpec::from_path(path)?;
            Some(spec)
        }
        None => None,
    };
    // Flags (and IMGBUILD_BASE) win over the spec's x-imgbuild block, which wins over defaults.
    let image = spec.as_ref().map(|s| s.image.clone()).unwrap_or_default();
    let base_str = args
        .base
        .clone()
        .or(image.base.clone())
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    let platform: TargetPlatform = args
        .platform
        .clone()
        .or(image.platforms.first().cloned())
        .unwrap_or_else(|| "linux/amd64".to_string())
        .parse()?;
    let target = Target::new(
        platform,
        args.glibc.as_deref().or(image.glibc.as_deref()),
        args.cuda.as_deref().or(image.cuda.as_deref()),
    )?;
    let prefix = InstallPrefix::parse(
        args.prefix
            .as_deref()
            .or(image.prefix.as_deref())
            .unwrap_or("/opt/conda"),
    )?;
    let image_platform = registry::image_platform(platform);
    let base_ref = parse_base(&base_str)?;
    // How the SBOM names the base (beside its digest): the reference the user gave for a
    // registry base; for a layout on disk only its tag, because the path is the build host's
    // and would make the same base at two paths two images.
    let base_sbom_name = match &base_ref {
        Base::Layout { tag, .. } => tag.clone().unwrap_or_else(|| "oci-layout".to_string()),
        _ => base_str.clone(),
    };
    let runtime = runtime_config(&args, &image)?;
    let plan_options = PlanOptions {
        big_package_threshold: parse_size(&args.big_package_threshold)?,
        max_layers: args.max_layers,
        ..PlanOptions::default()
    };
    let mtime = source_date_epoch()?;
    let (cache_dir, _cache_run) = crate::open_cache(args.cache_dir.as_deref())?;
    let mut ctx = Context::new(cache_dir.clone())?;
    ctx.max_package_size =
        parse_size(&args.max_package_size).context("invalid --max-package-size")?;
    let downloads = std::sync::Arc::new(DownloadProgress::default());
    ctx.download_progress = Some(downloads.clone());
    let wheel_downloads = std::sync::Arc::new(DownloadProgress::default());
    let store = BlobStore::new(&cache_dir);
    let base = match base_ref {
        Base::Scratch => None,
        Base::Layout { dir, tag } => Some(
            BaseImage::from_layout(&dir, tag.as_deref(), &image_platform)
                .with_context(|| format!("cannot use --base {base_str}"))?,
        ),
        Base::Registry(reference) => {
            let client = registry::client_for(&reference, &registry_options)?;
            // Layers are needed locally only to write them out or to push them elsewhere.
            let only_pushed_to_base_registry = args.output.is_none()
                && args.archive.is_none()
                && push_targets
                    .iter()
                    .all(|t| t.registry == reference.registry);
            Some(
                pull_image(
                    &client,
                    &reference,
                    &image_platform,
                    &store,
                    !only_pushed_to_base_registry,
                )
                .await
                .with_context(|| {
                    format!(
                        "cannot use --base {} (for a build without a registry, use --base scratch \
                             or --base oci:DIR[:TAG])",
                        base_str
                    )
                })?,
            )
        }
    };

    image::check_layer_budget(
        base.as_ref().map_or(0, |b| b.layers.len()),
        plan_options.max_layers,
    )?;

    let mut stages = Stages::new(started);
    stages.mark("base");
    let progress = crate::progress::Progress::new(draw_progress);
    progress.stage(if args.lock.is_some() {
        "reading the lock file"
    } else {
        "solving"
    });
    let t = Instant::now();
    let pip_reqs = match &spec {
        Some(spec) if args.lock.is_none() => PipRequirements::parse(&spec.pip, &spec.path)?,
        _ => PipRequirements::default(),
    };
    // uv is needed to resolve a pip: section or to install locked wheels; look for it before
    // any work, so a missing uv fails fast.
    let mut uv = None;
    let mut find_uv = || -> Result<Uv> {
        if uv.is_none() {
            uv = Some(Uv::find(args.uv.as_deref(), &cache_dir)?);
        }
        Ok(uv.clone().expect("set above"))
    };
    if !pip_reqs.is_empty() {
        find_uv()?;
    }
    let (records, requested, pip_packages) = match (&spec, &args.lock) {
        (_, Some(lock_path)) => {
            let locked = lock::read_lock(lock_path, args.environment.as_deref(), platform)?;
            tracing::info!(
                "{} packages from {} ({} with a hash to check)",
                locked.records.len(),
                lock_path.display(),
                locked.hashed
            );
            // The spec, when given beside the lock, says what was asked for; else the lock's
            // own record of it (imgbuild's locks carry one).
            let requested = match (&spec, locked.requested) {
                (Some(spec), _) => spec.dependencies.clone(),
                (None, Some(requested)) => requested,
                (None, None) => {
                    tracing::info!(
                        "{} does not record the requested specs; conda-meta/history will list none (give --spec too to record them)",
                        lock_path.display()
                    );
                    Vec::new()
                }
            };
            if !locked.pip.is_empty() {
                find_uv()?;
                tracing::info!(
                    "{} pip packages from {}",
                    locked.pip.len(),
                    lock_path.display()
                );
            }
            (locked.records, requested, locked.pip)
        }
        (Some(spec), None) => {
            let records = solve::solve(&ctx, spec, &target).await?;
            tracing::info!("solved {} packages in {:.1?}", records.len(), t.elapsed());
            let pip_packages = if pip_reqs.is_empty() {
                Vec::new()
            } else {
                let t = Instant::now();
                let uv = find_uv()?;
                let pip = tokio::task::block_in_place(|| {
                    pip::resolve_for(&uv, &pip_reqs, &records, &target, args.allow_sdist)
                })?;
                tracing::info!("resolved {} pip packages in {:.1?}", pip.len(), t.elapsed());
                pip
            };
            if args.write_lock {
                let path = crate::lock::default_lock_path(&spec.path);
                lock::write_lock(
                    &path,
                    &spec.resolved_channels()?,
                    &spec.dependencies,
                    &[lock::SolvedPlatform {
                        platform,
                        virtual_packages: target.virtual_packages(),
                        records: records.clone(),
                        pip: pip_packages.clone(),
                    }],
                )?;
                tracing::info!("wrote {}", path.display());
            }
            (records, spec.dependencies.clone(), pip_packages)
        }
        (None, None) => bail!("give --spec FILE or --lock FILE"),
    };
    if base.is_none() {
        let needy = solve::packages_needing_glibc(&records);
        if !needy.is_empty() {
            tracing::warn!(
                "base is 'scratch' but {} glibc ({}); the image will not run without a glibc base (--base oci:DIR[:TAG])",
                if needy.len() == 1 { "this package needs" } else { "these packages need" },
                needy.join(", ")
            );
        }
    }

    stages.mark("resolve");
    let write_options = WriteOptions {
        prefix: prefix.to_string(),
        compression: match args.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
        },
        mtime,
        layer_cache: Some(cache_dir.join("layers")),
        progress: Some(Default::default()),
    };
    let requested_text: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
    let pip_step = if pip_packages.is_empty() {
        None
    } else {
        Some(PipStep {
            uv: find_uv()?,
            packages: &pip_packages,
            target: PipTarget::new(&records, &target)?.allowing_sdist(args.allow_sdist)?,
            compile: args.compile,
        })
    };
    let mut pip_text: Vec<String> = pip_packages
        .iter()
        .map(|p| format!("{} sha256={}", p.url, p.sha256))
        .collect();
    if args.compile && !pip_text.is_empty() {
        pip_text.push("compile".to_string());
    }
    if args.allow_sdist && !pip_text.is_empty() {
        pip_text.push("allow-sdist".to_string());
    }
    let activation_scripts = if args.run_activation_scripts {
        ActivationScripts::Run
    } else {
        ActivationScripts::Evaluate
    };
    let env_key = EnvironmentRecipe {
        records: &records,
        requested: &requested_text,
        pip: &pip_text,
        platform: platform.subdir().as_str(),
        plan: &plan_options,
        write: &write_options,
        activation: activation_scripts.as_str(),
    }
    .key();
    let env_cache = EnvironmentCache::new(cache_dir.join("environments"));
    let mut pip_time = std::time::Duration::ZERO;
    let environment = match env_cache.get(&env_key, &write_options, &store) {
        Some(hit) => {
            tracing::info!(
                "environment unchanged since an earlier build: its {} layers reused, nothing installed or written",
                hit.layers.len()
            );
            hit
        }
        None => {
            progress.stage("downloading and installing packages");
            let _bar = write_options
                .progress
                .clone()
                .map(|layers| {
                    vec![
                        ("downloading", crate::progress::downloads(&downloads)),
                        (
                            "downloading wheels",
                            crate::progress::downloads(&wheel_downloads),
                        ),
                        ("writing layers", crate::progress::transfer(&layers)),
                    ]
                })
                .and_then(|sources| progress.bytes(sources));
            let (built, pip) = build_environment(
                &ctx,
                &records,
                &requested,
                pip_step.as_ref(),
                &wheel_downloads,
                &prefix,
                platform,
                &plan_options,
                &write_options,
                &store,
                activation_scripts,
            )
            .await?;
            pip_time = pip;
            env_cache.put(&env_key, &built);
            built
        }
    };
    let downloaded = downloads
        .packages
        .load(std::sync::atomic::Ordering::Relaxed);
    if downloaded > 0 {
        let bytes = downloads.done.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            "downloaded {downloaded} packages ({}, {bytes} bytes)",
            human(bytes)
        );
    }
    let wheels = wheel_downloads
        .packages
        .load(std::sync::atomic::Ordering::Relaxed);
    if wheels > 0 {
        let bytes = wheel_downloads
            .done
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            "downloaded {wheels} wheels ({}, {bytes} bytes)",
            human(bytes)
        );
    }
    stages.mark_excluding("environment", &[("pip", pip_time)]);
    progress.stage("writing the image");
    let mut layers = environment.layers;

    // The SBOM: its own small layer (it names the base, which the environment's layers must
    // not depend on), and --sbom FILE.
    let sbom_format = match args.sbom_format {
        SbomFormatArg::Spdx => SbomFormat::Spdx,
        SbomFormatArg::Cyclonedx => SbomFormat::CycloneDx,
    };
    let base_ref = base.as_ref().map(|b| BaseImageRef {
        name: base_sbom_name.clone(),
        digest: b.manifest_digest.to_string(),
    });
    // Licenses as the wheels' METADATA declared them at install time (kept with the
    // environment cache entry, so a cached environment reads no layer back).
    let pip_packages: Vec<PipPackage> = pip_packages
        .into_iter()
        .map(|p| PipPackage {
            license: environment.pip_licenses.get(&p.name).cloned(),
            ..p
        })
        .collect();
    let sbom = sbom::render(
        &SbomInput {
            name: &format!("conda environment at {prefix}"),
            records: &records,
            pip: &pip_packages,
            base: base_ref.as_ref(),
            created: &imgbuild_oci::rfc3339_utc(mtime as i64),
        },
        sbom_format,
    );
    layers.push(write_sbom_layer(
        &cache_dir,
        &sbom,
        sbom_format,
        &write_options,
        &store,
    )?);
    if let Some(path) = &args.sbom {
        layout::write_atomically(path, &sbom)
            .with_context(|| format!("cannot write --sbom {}", path.display()))?;
    }

    if let Some(base) = base.as_ref().filter(|b| b.origin.is_none()) {
        base.import_into(&store)?;
    }
    let mut runtime = runtime;
    runtime.path_prepend = environment.path_prepend;
    let mut env: Vec<(String, String)> = vec![("LANG".into(), "C.UTF-8".into())];
    env.extend(environment.env);
    env.extend(std::mem::take(&mut runtime.env));
    runtime.env = env;
    let blobs: Vec<_> = layers.iter().map(|l| l.blob.clone()).collect();
    let built = image::assemble(
        &store,
        base.as_ref(),
        &blobs,
        &runtime,
        &image_platform,
        mtime as i64,
    )?;

    stages.mark("sbom+config");
    if let Some(out) = &args.output {
        layout::write_layout(out, &store, &built, &args.tags)
            .with_context(|| format!("cannot write the image layout {}", out.display()))?;
    }
    if let Some(path) = &args.archive {
        archive::write_archive(path, &store, &built, &args.tags)
            .with_context(|| format!("cannot write the image archive {}", path.display()))?;
    }
    stages.mark("write");
    if !push_targets.is_empty() {
        progress.stage("pushing");
        let uploads = std::sync::Arc::new(imgbuild_oci::TransferProgress::default());
        let _bar = progress.bytes(vec![("pushing", crate::progress::transfer(&uploads))]);
        registry::push_all(
            &store,
            &built.manifest_digest,
            &push_targets,
            base.as_ref(),
            &registry_options,
            Some(&registry::Attachment {
                artifact_type: sbom_format.media_type(),
                bytes: &sbom,
            }),
            Some(&uploads),
        )
        .await?;
    }

    if !push_targets.is_empty() {
        stages.mark("push");
    }
    drop(progress);
    let compressed: u64 = layers.iter().map(|l| l.blob.size).sum();
    let saved: u64 = layers.iter().map(|l| l.dedup_saved).sum();
    println!("digest: {}", built.manifest_digest);
    if json_logs {
        // CI reads these: one object per layer, then the summary, with numbers as numbers.
        for (i, l) in layers.iter().enumerate() {
            tracing::info!(
                layer = i + 1,
                digest = %l.blob.digest,
                size = l.blob.size,
                holds = %l.owners.join(" "),
                how = l.origin.as_str(),
                "layer"
            );
        }
        tracing::info!(
            digest = %built.manifest_digest,
            packages = records.len() + pip_packages.len(),
            conda_packages = records.len(),
            pip_packages = pip_packages.len(),
            layers = layers.len(),
            compressed_bytes = compressed,
            deduplicated_bytes = saved,
            seconds = started.elapsed().as_secs_f64(),
            stages = %stages,
            "build finished"
        );
        return Ok(());
    }
    if !quiet {
        for (i, l) in layers.iter().enumerate() {
            eprintln!(
                "  layer {:>2}  {}  {:>10}  {}",
                i + 1,
                &l.blob.digest.to_string()[..19],
                human(l.blob.size),
                l.owners.join(" ")
            );
        }
    }
    eprintln!(
        "built {} into {} layers ({} compressed{}) in {:.1?}{}{}",
        package_counts(records.len(), pip_packages.len()),
        layers.len(),
        human(compressed),
        if saved > 0 {
            format!(", {} deduplicated", human(saved))
        } else {
            String::new()
        },
        started.elapsed(),
        args.output
            .as_ref()
            .map(|o| format!("; layout {}", o.display()))
            .unwrap_or_default(),
        args.archive
            .as_ref()
            .map(|a| format!("; archive {}", a.display()))
            .unwrap_or_default(),
    );
    eprintln!("time: {stages}");
    Ok(())
}

/// The pip step of an environment: which wheels, for what, with which uv.
struct PipStep<'a> {
    uv: Uv,
    packages: &'a [PipPackage],
    target: PipTarget,
    compile: bool,
}

/// How the build talks to its user.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--quiet`: errors only.
    pub quiet: bool,
    /// A progress line on the terminal.
    pub draw_progress: bool,
    /// `--log-format json`: the summary is log events too.
    pub json_logs: bool,
}

/// Wall time per stage of a build, for the closing summary.
struct Stages {
    last: Instant,
    done: Vec<(&'static str, std::time::Duration)>,
}

impl Stages {
    fn new(started: Instant) -> Self {
        Self {
            last: started,
            done: Vec::new(),
        }
    }

    /// Ends the stage called `name` now.
    fn mark(&mut self, name: &'static str) {
        self.mark_excluding(name, &[]);
    }

    /// Ends the stage called `name` now, reporting the parts of it in `parts` (that took
    /// any time) as stages of their own after it.
    fn mark_excluding(
        &mut self,
        name: &'static str,
        parts: &[(&'static str, std::time::Duration)],
    ) {
        let now = Instant::now();
        let inner: std::time::Duration = parts.iter().map(|(_, d)| *d).sum();
        self.done
            .push((name, (now - self.last).saturating_sub(inner)));
        self.done
            .extend(parts.iter().filter(|(_, d)| !d.is_zero()).copied());
        self.last = now;
    }
}

/// `3 conda packages and 12 pip packages`, or `3 packages` without pip.
fn package_counts(conda: usize, pip: usize) -> String {
    let n =
        |count: usize, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    if pip == 0 {
        n(conda, "package")
    } else {
        format!(
            "{} and {}",
            n(conda, "conda package"),
            n(pip, "pip package")
        )
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The base a build starts from when neither a flag nor the spec names one.
pub const DEFAULT_BASE: &str = "docker.io/library/debian:bookworm-slim";

fn runtime_config(args: &BuildArgs, image: &ImageOptions) -> Result<RuntimeConfig> {
    let mut labels: BTreeMap<String, String> = image.labels.clone();
    for kv in &args.labels {
        let (k, v) = key_value(kv, "--label")?;
        labels.insert(k, v);
    }
    let mut env: Vec<(String, String)> = image.env.clone().into_iter().collect();
    for kv in &args.env {
        env.push(key_value(kv, "--env")?);
    }
    Ok(RuntimeConfig {
        path_prepend: Vec::new(),
        env,
        entrypoint: args
            .entrypoint
            .as_deref()
            .map(|s| command(s, "--entrypoint", false))
            .transpose()?
            .or(image.entrypoint.clone()),
        cmd: args
            .cmd
            .as_deref()
            .map(|s| command(s, "--cmd", true))
            .transpose()?
            .or(image.cmd.clone()),
        working_dir: args.workdir.clone().or(image.workdir.clone()),
        user: args.user.clone().or(image.user.clone()),
        labels,
    })
}

fn key_value(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} '{s}': expected KEY=VALUE"),
    }
}

fn command(s: &str, flag: &str, split: bool) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("{flag} '{s}': not a JSON array of strings"));
    }
    Ok(if split {
        s.split_whitespace().map(str::to_string).collect()
    } else {
        vec![s.to_string()]
    })
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let n: u64 = num.trim().parse().with_context(|| {
        format!("invalid size '{s}': use bytes or a number with KiB, MiB or GiB")
    })?;
    Ok(n * mult)
}

/// Writes the SBOM as a layer of its own: `<prefix>/conda-meta/<file>`.
fn write_sbom_layer(
    cache_dir: &std::path::Path,
    sbom: &[u8],
    format: SbomFormat,
    write_options: &WriteOptions,
    store: &BlobStore,
) -> Result<imgbuild_layer::WrittenLayer> {
    let staging = cache_dir.join("staging");
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let root = tempfile::Builder::new()
        .prefix("sbom-")
        .tempdir_in(&staging)
        .with_context(|| format!("cannot create a directory in {}", staging.display()))?;
    let rel = PathBuf::from("conda-meta").join(format.file_name());
    std::fs::create_dir_all(root.path().join("conda-meta"))?;
    std::fs::write(root.path().join(&rel), sbom)?;
    let layer = PlannedLayer {
        owners: vec!["sbom".into()],
        paths: vec![rel],
        size: sbom.len() as u64,
        // The layer's bytes depend only on the document (and the write options the layer cache
        // adds), so an unchanged SBOM is taken from the layer cache, not written again.
        recipe: Some(format!("sbom\n{}", String::from_utf8_lossy(sbom))),
    };
    let written = write_layer(root.path(), &layer, write_options, store)?;
    tracing::info!(
        "SBOM layer {}",
        if written.origin == LayerOrigin::Reused {
            "reused from the layer cache"
        } else {
            "written"
        }
    );
    Ok(written)
}

/// Installs the environment into a staging root, cuts it into layers and bakes its activation.
/// Wheels download while conda packages install. Returns the environment and the time the pip
/// step took.
#[allow(clippy::too_many_arguments)]
async fn build_environment(
    ctx: &Context,
    records: &[RepoDataRecord],
    requested: &[MatchSpec],
    pip_step: Option<&PipStep<'_>>,
    wheel_downloads: &Arc<DownloadProgress>,
    prefix: &InstallPrefix,
    platform: TargetPlatform,
    plan_options: &PlanOptions,
    write_options: &WriteOptions,
    store: &BlobStore,
    activation_scripts: ActivationScripts,
) -> Result<(BuiltEnvironment, std::time::Duration)> {
    let t = Instant::now();
    // Big packages' layers start as soon as rattler has linked them (see imgbuild-layer's
    // early.rs); the plan below decides whether they are used.
    let python = records
        .iter()
        .map(|r| &r.package_record)
        .find(|p| p.name.as_normalized() == "python")
        .map(|p| format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build))
        .unwrap_or_default();
    let early = Arc::new(EarlyLayers::new(
        python,
        plan_options.big_package_threshold,
        plan_options.max_big_layers(),
        write_options.clone(),
        store.clone(),
    ));
    let on_linked: install::OnLinked = {
        let early = Arc::clone(&early);
        Arc::new(move |root, label, sizes| early.linked(root, label, sizes))
    };
    let conda = install::install(
        ctx,
        records,
        requested,
        prefix,
        platform,
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
            Some(step) => {
                let t = Instant::now();
                let files = wheel_cache
                    .fetch(&ctx.client, step.packages, Some(wheel_downloads.clone()))
                    .await?;
                Ok::<_, anyhow::Error>((files, t.elapsed()))
            }
            None => Ok((Vec::new(), std::time::Duration::ZERO)),
        }
    };
    let ((staging, conda_time), (wheel_files, fetch_time)) = tokio::try_join!(
        async {
            let staging = conda.await?;
            Ok::<_, anyhow::Error>((staging, t.elapsed()))
        },
        wheels
    )?;
    let prewritten = early.finish();
    tracing::info!("installed into staging root in {:.1?}", t.elapsed());
    let mut pip_time = std::time::Duration::ZERO;
    let mut pip_licenses = BTreeMap::new();
    if let Some(step) = pip_step {
        let t = Instant::now();
        let installed = tokio::task::block_in_place(|| {
            pip::install(
                &step.uv,
                step.packages,
                &wheel_files,
                &step.target,
                staging.path(),
                &prefix.to_string(),
                step.compile,
            )
        })?;
        pip_licenses = installed
            .into_iter()
            .filter_map(|p| Some((p.name, p.license?)))
            .collect();
        // The wheels downloaded beside the conda install; only the wait for them counts.
        pip_time = t.elapsed() + fetch_time.saturating_sub(conda_time);
        tracing::info!(
            "installed {} pip packages in {:.1?}",
            step.packages.len(),
            t.elapsed()
        );
    }

    let t = Instant::now();
    let owners = collect_owners(staging.path())?;
    let plan = plan_layers(&owners, plan_options)?;
    let root = staging.path().to_path_buf();
    let (store, write_options) = (store.clone(), write_options.clone());
    let layers = tokio::task::spawn_blocking(move || {
        write_layers_with(&root, &plan, &write_options, &store, &prewritten)
    })
    .await??;
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
    let activation = staging.activation(platform, activation_scripts)?;
    Ok((
        BuiltEnvironment {
            layers,
            path_prepend: activation.path_prepend,
            env: activation.env,
            pip_licenses,
        },
        pip_time,
    ))
}

fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        _ => Ok(0),
    }
}

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
