//! [`Builder`]: the build from a [`BuildPlan`] to an image in its [`Outputs`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbuild_builder::cache_dir::{CacheDir, CacheDirError, CacheRun, Sweep};
use imgbuild_builder::download_progress::DownloadProgress;
use imgbuild_builder::pip::PipTarget;
use imgbuild_builder::{solve, Context, EnvSpec, Target};
use imgbuild_layer::{BuiltEnvironment, EnvironmentCache, WriteOptions, WrittenLayer};
use imgbuild_oci::pull_image_from_sources;
use imgbuild_oci::registry::{ClientOptions, Reference};
use imgbuild_oci::{
    archive, assemble_index, image, layout, BaseImage, BlobStore, Built, BuiltImage, ImagePlatform,
    TransferProgress,
};

use crate::environment::{build_environment, PipStep};
use crate::error::{BaseError, PipelineError};
use crate::observer::{ByteCounter, Observer, Silent, Stage};
use crate::plan::{BaseSource, BuildPlan, Outputs, PipOptions, Source};
use crate::push::{push_all, Attachment};
use crate::registry_cache::{self, RegistryCache, RegistryLayers};
use crate::report::{BuildReport, Downloads, EnvironmentOrigin, IndexReport, LayerReport, Stages};
use crate::resolve::{self, Resolved, UvFinder};
use crate::sbom_layer;

/// Builds images into one cache directory. Cheap to keep around; every build shares the
/// cache's package, layer and environment caches with the others (and with other processes).
pub struct Builder {
    cache: CacheDir,
    _run: CacheRun,
    sweep: Sweep,
    registry: ClientOptions,
    registry_cache: RegistryCache,
    observer: Arc<dyn Observer>,
}

impl Builder {
    /// A builder on the cache at `cache_dir` (created if missing). It registers as a user of
    /// the cache for as long as it lives; if no other process is using the cache, what
    /// interrupted builds left in it is removed first.
    pub fn new(cache_dir: &Path) -> Result<Self, PipelineError> {
        let (cache, run, sweep) = open_cache(cache_dir)?;
        Ok(Self {
            cache,
            _run: run,
            sweep,
            registry: ClientOptions::default(),
            registry_cache: RegistryCache::default(),
            observer: Arc::new(Silent),
        })
    }

    /// How registries (the base's, the pushes') are reached.
    pub fn with_registry(mut self, options: ClientOptions) -> Self {
        self.registry = options;
        self
    }

    /// Registry repositories to take environments from and keep them in (see
    /// [`RegistryCache`]).
    pub fn with_registry_cache(mut self, cache: RegistryCache) -> Self {
        self.registry_cache = cache;
        self
    }

    /// Who hears of stages and bytes as the build goes.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The cache directory (absolute).
    pub fn cache(&self) -> &CacheDir {
        &self.cache
    }

    /// What opening the cache did about the leftovers of interrupted builds.
    pub fn sweep(&self) -> &Sweep {
        &self.sweep
    }

    fn context(&self, max_package_size: u64) -> Result<Context, PipelineError> {
        let mut ctx = Context::new(self.cache.root().to_path_buf())?;
        ctx.max_package_size = max_package_size;
        Ok(ctx)
    }

    /// Solves `spec` for each target (with its pip section) and writes the lock file at
    /// `path`. Returns what was solved, per target.
    pub async fn lock(
        &self,
        spec: &EnvSpec,
        targets: &[Target],
        pip: &PipOptions,
        path: &Path,
    ) -> Result<Vec<Resolved>, PipelineError> {
        let ctx = self.context(imgbuild_builder::DEFAULT_MAX_PACKAGE_SIZE)?;
        let mut uv = UvFinder::new(pip, self.cache.root());
        let mut solved = Vec::new();
        for target in targets {
            solved.push(resolve::solve_spec(&ctx, spec, target, pip, &mut uv).await?);
        }
        resolve::write_lock_for(path, spec, solved.iter().zip(targets))?;
        Ok(solved)
    }

    /// Builds the image `plan` describes and writes it to `outputs`.
    pub async fn build(
        &self,
        plan: &BuildPlan,
        outputs: &Outputs,
    ) -> Result<BuildReport, PipelineError> {
        let report = self
            .build_platforms(std::slice::from_ref(plan), outputs, VersionSkew::Refuse)
            .await?;
        let IndexReport {
            mut images, pushes, ..
        } = report;
        let mut image = images.pop().expect("one plan, one image");
        image.pushes = pushes;
        Ok(image)
    }

    /// Builds one image per plan (plans that differ only in their target, one per platform)
    /// and writes them to `outputs`: a single plan as a plain image, several as an image
    /// index listing each platform's manifest. Every platform is resolved before anything is
    /// installed, so that packages whose versions differ between platforms are refused (or,
    /// with [`VersionSkew::Allow`], warned about) before any work.
    pub async fn build_platforms(
        &self,
        plans: &[BuildPlan],
        outputs: &Outputs,
        skew: VersionSkew,
    ) -> Result<IndexReport, PipelineError> {
        let result = self.build_all(plans, outputs, skew).await;
        self.observer.finished();
        result
    }

    async fn build_all(
        &self,
        plans: &[BuildPlan],
        outputs: &Outputs,
        skew: VersionSkew,
    ) -> Result<IndexReport, PipelineError> {
        let started = Instant::now();
        check_outputs(outputs)?;
        check_platforms(plans)?;
        // One platform after the other: uv's resolution runs as a blocking subprocess and the
        // installs and compression use every core already (tried: preparing the platforms
        // concurrently saved nothing measurable).
        let mut prepared = Vec::with_capacity(plans.len());
        for plan in plans {
            prepared.push(self.prepare(plan, outputs).await?);
        }
        let mut skew_warnings = Vec::new();
        if prepared.len() > 1 {
            let differences = version_skew(&prepared);
            if !differences.is_empty() {
                match skew {
                    VersionSkew::Refuse => return Err(PipelineError::VersionSkew { differences }),
                    VersionSkew::Allow => {
                        let warning = format!(
                            "package versions differ between platforms: {}",
                            differences.join("; ")
                        );
                        tracing::warn!("{warning}");
                        skew_warnings.push(warning);
                    }
                }
            }
        }
        let mut images = Vec::with_capacity(prepared.len());
        for (plan, prep) in plans.iter().zip(prepared) {
            images.push(self.platform_image(plan, outputs, prep).await?);
        }
        let store = BlobStore::new(self.cache.root());
        let built = match images.as_slice() {
            [one] => Built::Image(Box::new(one.built.clone())),
            _ => Built::Index(
                assemble_index(&store, images.iter().map(|i| i.built.clone()).collect())
                    .map_err(PipelineError::Index)?,
            ),
        };
        let write_started = Instant::now();
        write_outputs(&store, &built, outputs)?;
        let written = write_started.elapsed();

        let mut pushes = Vec::new();
        let mut pushed = Duration::ZERO;
        if !outputs.push.is_empty() {
            let push_started = Instant::now();
            let uploads = Arc::new(TransferProgress::default());
            self.observer.stage(
                Stage::Pushing,
                &[ByteCounter::transfer("pushing", &uploads)],
            );
            let bases: Vec<&BaseImage> = images.iter().filter_map(|i| i.base.as_ref()).collect();
            let attachments: Vec<Attachment> = plans
                .iter()
                .zip(&images)
                .map(|(plan, i)| Attachment {
                    subject: i.built.manifest_digest,
                    artifact_type: plan.sbom_format.media_type(),
                    bytes: &i.sbom,
                })
                .collect();
            let elsewhere = cached_layers(&images);
            pushes = push_all(
                &store,
                &built,
                &outputs.push,
                &bases,
                &elsewhere,
                &self.registry,
                &attachments,
                Some(&uploads),
            )
            .await?;
            pushed = push_started.elapsed();
        }
        if let Some(to) = &self.registry_cache.to {
            let created = imgbuild_oci::rfc3339_utc(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            );
            for image in &images {
                // Blobs this build does not hold come from where they are on that registry:
                // the repository the environment came from, or one it was just pushed to.
                let mut mount_from = HashMap::new();
                for (digest, repo) in cached_layers(std::slice::from_ref(image)) {
                    if repo.registry == to.registry {
                        mount_from.insert(digest, repo.repository);
                    }
                }
                for target in outputs.push.iter().filter(|t| t.registry == to.registry) {
                    for l in &image.environment.layers {
                        mount_from
                            .entry(l.blob.digest)
                            .or_insert_with(|| target.repository.clone());
                    }
                }
                registry_cache::remember(
                    &self.registry_cache,
                    &self.registry,
                    image.env_key.as_str(),
                    &image.environment,
                    &store,
                    &mount_from,
                    &created,
                )
                .await;
                registry_cache::remember_layers(
                    &self.registry_cache,
                    &self.registry,
                    &image.environment,
                    &store,
                    &mount_from,
                    &created,
                )
                .await;
            }
        }
        let single = images.len() == 1;
        let reports = images
            .into_iter()
            .map(|mut i| {
                i.report.stages.push(("write", written));
                if single && !pushed.is_zero() {
                    i.report.stages.push(("push", pushed));
                }
                i.report.warnings.extend(skew_warnings.iter().cloned());
                if single {
                    i.report.elapsed = started.elapsed();
                }
                i.report
            })
            .collect();
        Ok(IndexReport {
            digest: built.digest(),
            images: reports,
            pushes,
            elapsed: started.elapsed(),
        })
    }

    /// One platform's first stages: its base image and its resolved packages.
    async fn prepare(
        &self,
        plan: &BuildPlan,
        outputs: &Outputs,
    ) -> Result<Prepared, PipelineError> {
        let started = Instant::now();
        let run = Run::new(self, plan)?;
        let mut stages = Stages::new(started);

        self.observer.stage(Stage::Base, &[]);
        let base = self.base(plan, outputs, &run.platform, &run.store).await?;
        image::check_layer_budget(
            base.as_ref().map_or(0, |b| b.layers.len()),
            plan.layers.max_layers,
        )?;
        stages.mark("base");

        self.observer.stage(
            match plan.source {
                Source::Lock { .. } => Stage::ReadingLock,
                Source::Spec { .. } => Stage::Solving,
            },
            &[],
        );
        let mut uv = UvFinder::new(&plan.pip, self.cache.root());
        let resolved =
            resolve::resolve(&run.ctx, &plan.source, &plan.target, &plan.pip, &mut uv).await?;
        let warnings = base
            .is_none()
            .then(|| scratch_warning(&resolved))
            .flatten()
            .into_iter()
            .collect();
        stages.mark("resolve");
        Ok(Prepared {
            run,
            base,
            resolved,
            warnings,
            stages,
        })
    }

    /// One platform's image, assembled in the cache's blob store (not yet written out).
    async fn platform_image(
        &self,
        plan: &BuildPlan,
        outputs: &Outputs,
        prep: Prepared,
    ) -> Result<PlatformImage, PipelineError> {
        let Prepared {
            run,
            base,
            resolved,
            warnings,
            mut stages,
        } = prep;
        stages.resume();
        let mut uv = UvFinder::new(&plan.pip, self.cache.root());
        let (environment, origin, pip_time, layers_from_cache) = self
            .environment(&run, plan, outputs, &resolved, &mut uv)
            .await?;
        let env_key = crate::env_key::environment_key(plan, &resolved);
        let kept = environment.clone();
        let downloads = run.downloads();
        log_downloads(&downloads);
        stages.mark_excluding("environment", &[("pip", pip_time)]);

        self.observer.stage(Stage::WritingImage, &[]);
        let (built, layers, sbom) =
            self.image(&run, plan, outputs, &resolved, environment, base.as_ref())?;
        stages.mark("sbom+config");
        let elapsed = stages.total();
        let report = BuildReport {
            platform: plan.target.platform,
            manifest_digest: built.manifest_digest,
            conda_packages: resolved.records.len(),
            pip_packages: resolved.pip.len(),
            layers: layers
                .into_iter()
                .map(|l| LayerReport {
                    digest: l.blob.digest,
                    size: l.blob.size,
                    owners: l.owners,
                    origin: l.origin,
                    dedup_saved: l.dedup_saved,
                })
                .collect(),
            environment: origin,
            downloads,
            pushes: Vec::new(),
            warnings,
            stages: stages.into_vec(),
            elapsed,
        };
        Ok(PlatformImage {
            built,
            base,
            sbom,
            report,
            env_key,
            environment: kept,
            layers_from_cache,
        })
    }

    /// The environment's layers and activation: from the environment cache, or installed and
    /// written. Returns them, where they came from, and the time the pip step added.
    async fn environment(
        &self,
        run: &Run,
        plan: &BuildPlan,
        outputs: &Outputs,
        resolved: &Resolved,
        uv: &mut UvFinder<'_>,
    ) -> Result<
        (
            BuiltEnvironment,
            EnvironmentOrigin,
            Duration,
            Vec<(imgbuild_oci::Digest, Reference)>,
        ),
        PipelineError,
    > {
        let env_key = crate::env_key::environment_key(plan, resolved);
        let env_cache = EnvironmentCache::new(self.cache.environments());
        if let Some(hit) = env_cache.get(env_key.as_str(), &run.write, &run.store) {
            tracing::info!(
                "environment unchanged since an earlier build: its {} layers reused, nothing installed or written",
                hit.layers.len()
            );
            return Ok((hit, EnvironmentOrigin::Cached, Duration::ZERO, Vec::new()));
        }
        // Layers are needed here for a layout or an archive, or to push to a registry the
        // cache is not on (a push to the cache's registry mounts them instead).
        let local = outputs.layout.is_some()
            || outputs.archive.is_some()
            || outputs.push.iter().any(|t| {
                self.registry_cache
                    .from
                    .iter()
                    .all(|c| c.registry != t.registry)
            });
        if !self.registry_cache.from.is_empty() {
            if let Some(remote) = registry_cache::lookup(
                &self.registry_cache,
                &self.registry,
                env_key.as_str(),
                &run.write,
                &run.store,
                local,
            )
            .await
            {
                tracing::info!(
                    "environment taken from the registry cache {}: its {} layers reused, nothing downloaded, installed or written",
                    remote.repository,
                    remote.environment.layers.len()
                );
                if local {
                    env_cache.put(env_key.as_str(), &remote.environment);
                }
                return Ok((
                    remote.environment,
                    EnvironmentOrigin::RegistryCache {
                        repository: remote.repository,
                    },
                    Duration::ZERO,
                    Vec::new(),
                ));
            }
        }
        // The environment changed: its layers may still be in the registry cache one by one.
        let remote_layers = if self.registry_cache.from.is_empty() {
            None
        } else {
            RegistryLayers::open(
                &self.registry_cache,
                &self.registry,
                &run.write,
                &run.store,
                local,
            )
            .await
        };
        let mut write = run.write.clone();
        write.remote = remote_layers
            .clone()
            .map(|r| r as Arc<dyn imgbuild_layer::write::RemoteLayers>);
        let pip_step = if resolved.pip.is_empty() {
            None
        } else {
            Some(PipStep {
                uv: uv.get()?,
                target: PipTarget::new(&resolved.records, &plan.target)?
                    .allowing_sdist(plan.pip.allow_sdist)?,
            })
        };
        let layer_bytes = run.write.progress.clone().expect("set in Run::new");
        self.observer.stage(
            Stage::Installing,
            &[
                ByteCounter::downloads("downloading", &run.package_downloads),
                ByteCounter::downloads("downloading wheels", &run.wheel_downloads),
                ByteCounter::transfer("writing layers", &layer_bytes),
            ],
        );
        let installed = build_environment(
            &run.ctx,
            plan,
            resolved,
            pip_step.as_ref(),
            &run.wheel_downloads,
            &write,
            &run.store,
        )
        .await?;
        env_cache.put(env_key.as_str(), &installed.environment);
        let taken = remote_layers.map(|r| r.taken()).unwrap_or_default();
        if !taken.is_empty() {
            tracing::info!(
                "{} layers taken from the registry cache, not compressed here",
                taken.len()
            );
        }
        Ok((
            installed.environment,
            EnvironmentOrigin::Installed {
                staging: installed.update,
            },
            installed.pip_time,
            taken,
        ))
    }

    /// The image: the environment's layers, the SBOM layer, the base's, config and manifest.
    /// Returns it, its own layers, and the SBOM document.
    fn image(
        &self,
        run: &Run,
        plan: &BuildPlan,
        outputs: &Outputs,
        resolved: &Resolved,
        environment: BuiltEnvironment,
        base: Option<&BaseImage>,
    ) -> Result<(BuiltImage, Vec<WrittenLayer>, Vec<u8>), PipelineError> {
        let sbom = sbom_layer::render(plan, resolved, &environment, base);
        let mut layers = environment.layers;
        layers.push(sbom_layer::write_sbom_layer(
            &self.cache.staging(),
            &sbom,
            plan.sbom_format,
            &run.write,
            &run.store,
        )?);
        if let Some(path) = &outputs.sbom_file {
            layout::write_atomically(path, &sbom).map_err(|source| PipelineError::WriteSbom {
                path: path.clone(),
                source,
            })?;
        }
        if let Some(base) = base.filter(|b| b.origin.is_none()) {
            base.import_into(&run.store)?;
        }
        let mut runtime = plan.runtime.clone();
        runtime.path_prepend = environment.path_prepend;
        // LANG first: the environment's activation and then the user's settings win over it.
        let mut env: Vec<(String, String)> = vec![("LANG".into(), "C.UTF-8".into())];
        env.extend(environment.env);
        env.extend(std::mem::take(&mut runtime.env));
        runtime.env = env;
        let blobs: Vec<_> = layers.iter().map(|l| l.blob.clone()).collect();
        let built = image::assemble(
            &run.store,
            base,
            &blobs,
            &runtime,
            &run.platform,
            plan.mtime as i64,
        )?;
        Ok((built, layers, sbom))
    }

    /// The base image, read from its layout or pulled (its layers only when they are needed
    /// locally: to write them out, or to push them to another registry).
    async fn base(
        &self,
        plan: &BuildPlan,
        outputs: &Outputs,
        platform: &ImagePlatform,
        store: &BlobStore,
    ) -> Result<Option<BaseImage>, PipelineError> {
        let failed = |source: BaseError| PipelineError::Base {
            base: plan.base.to_string(),
            source,
        };
        match &plan.base {
            BaseSource::Scratch => Ok(None),
            BaseSource::Layout { dir, tag } => {
                BaseImage::from_layout(dir, tag.as_deref(), platform)
                    .map(Some)
                    .map_err(|e| failed(e.into()))
            }
            BaseSource::Registry(reference) => {
                // Layers are needed here unless the image is only pushed to the registry the
                // base comes from (a mirror's, when it comes from one), which mounts them.
                let fetch_layers = |source: &Reference| {
                    outputs.layout.is_some()
                        || outputs.archive.is_some()
                        || outputs.push.iter().any(|t| t.registry != source.registry)
                };
                pull_image_from_sources(reference, &self.registry, platform, store, fetch_layers)
                    .await
                    .map(Some)
                    .map_err(|e| failed(e.into()))
            }
        }
    }
}

/// Opens the cache at `dir` (created if missing, made absolute) and registers this process as
/// a user of it for as long as the returned [`CacheRun`] lives; if no other process is using
/// the cache, what interrupted builds left in it is removed first.
pub fn open_cache(dir: &Path) -> Result<(CacheDir, CacheRun, Sweep), PipelineError> {
    let io = |source| CacheDirError {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let root = std::fs::canonicalize(dir).map_err(io)?;
    let (run, sweep) = CacheRun::start(&root)?;
    if let Sweep::Swept { entries, bytes } = &sweep {
        if *entries > 0 {
            tracing::info!(
                "removed {entries} leftovers of interrupted builds ({:.1} MiB) from {}",
                *bytes as f64 / (1024.0 * 1024.0),
                root.display()
            );
        }
    }
    Ok((CacheDir::new(root), run, sweep))
}

/// One platform after [`Builder::prepare`].
struct Prepared {
    run: Run,
    base: Option<BaseImage>,
    resolved: Resolved,
    warnings: Vec<String>,
    stages: Stages,
}

/// One platform's image, with what its outputs and report need.
struct PlatformImage {
    built: BuiltImage,
    base: Option<BaseImage>,
    sbom: Vec<u8>,
    report: BuildReport,
    env_key: crate::env_key::EnvironmentKey,
    environment: BuiltEnvironment,
    /// Layers taken one by one from a registry cache, and the repository each is in.
    layers_from_cache: Vec<(imgbuild_oci::Digest, Reference)>,
}

/// What to do when the platforms of one build resolve to different versions of a package.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionSkew {
    /// Refuse the build, naming each difference (as apko does).
    #[default]
    Refuse,
    /// Build anyway and warn, listing the differences.
    Allow,
}

/// The layers of environments taken from a registry cache, and the repository they are in.
fn cached_layers(
    images: &[PlatformImage],
) -> Vec<(imgbuild_oci::Digest, imgbuild_oci::registry::Reference)> {
    images
        .iter()
        .filter_map(|i| match &i.report.environment {
            EnvironmentOrigin::RegistryCache { repository } => Some((i, repository)),
            _ => None,
        })
        .flat_map(|(i, repo)| {
            i.environment
                .layers
                .iter()
                .map(move |l| (l.blob.digest, repo.clone()))
        })
        .chain(
            images
                .iter()
                .flat_map(|i| i.layers_from_cache.iter().cloned()),
        )
        .collect()
}

/// Each platform at most once.
fn check_platforms(plans: &[BuildPlan]) -> Result<(), PipelineError> {
    assert!(!plans.is_empty(), "a build has at least one plan");
    let mut seen = std::collections::HashSet::new();
    for plan in plans {
        if !seen.insert(plan.target.platform) {
            return Err(PipelineError::PlatformTwice {
                platform: plan.target.platform.to_string(),
            });
        }
    }
    Ok(())
}

/// The packages (conda and pip) that more than one platform has, in different versions:
/// `numpy: 1.26.4 on linux/amd64, 1.26.3 on linux/arm64`, sorted by name.
fn version_skew(prepared: &[Prepared]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut versions: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for prep in prepared {
        let platform = prep.run.platform.to_string();
        for r in &prep.resolved.records {
            versions
                .entry(r.package_record.name.as_normalized().to_string())
                .or_default()
                .push((r.package_record.version.to_string(), platform.clone()));
        }
        for p in &prep.resolved.pip {
            versions
                .entry(format!("pip:{}", p.name))
                .or_default()
                .push((p.version.clone(), platform.clone()));
        }
    }
    versions
        .into_iter()
        .filter(|(_, v)| v.iter().any(|(version, _)| *version != v[0].0))
        .map(|(name, v)| {
            let list: Vec<String> = v.iter().map(|(ver, p)| format!("{ver} on {p}")).collect();
            format!("{name}: {}", list.join(", "))
        })
        .collect()
}

/// What one build shares between its stages.
struct Run {
    ctx: Context,
    package_downloads: Arc<DownloadProgress>,
    wheel_downloads: Arc<DownloadProgress>,
    store: BlobStore,
    platform: ImagePlatform,
    write: WriteOptions,
}

impl Run {
    fn new(builder: &Builder, plan: &BuildPlan) -> Result<Self, PipelineError> {
        let mut ctx = builder.context(plan.max_package_size)?;
        let package_downloads = Arc::new(DownloadProgress::default());
        ctx.download_progress = Some(package_downloads.clone());
        Ok(Self {
            ctx,
            package_downloads,
            wheel_downloads: Arc::new(DownloadProgress::default()),
            store: BlobStore::new(builder.cache.root()),
            platform: oci_platform(plan.target.platform),
            write: WriteOptions {
                prefix: plan.prefix.clone(),
                compression: plan.compression,
                mtime: plan.mtime,
                layer_cache: Some(builder.cache.layers()),
                progress: Some(Default::default()),
                remote: None,
            },
        })
    }

    fn downloads(&self) -> Downloads {
        let (p, w) = (&self.package_downloads, &self.wheel_downloads);
        Downloads {
            packages: p.packages.load(Ordering::Relaxed),
            package_bytes: p.done.load(Ordering::Relaxed),
            wheels: w.packages.load(Ordering::Relaxed),
            wheel_bytes: w.done.load(Ordering::Relaxed),
        }
    }
}

/// A base of `scratch` under packages that need glibc: the image will not run.
fn scratch_warning(resolved: &Resolved) -> Option<String> {
    let needy = solve::packages_needing_glibc(&resolved.records);
    if needy.is_empty() {
        return None;
    }
    let warning = format!(
        "base is 'scratch' but {} glibc ({}); the image will not run without a glibc base",
        if needy.len() == 1 {
            "this package needs"
        } else {
            "these packages need"
        },
        needy.join(", ")
    );
    tracing::warn!("{warning} (--base oci:DIR[:TAG])");
    Some(warning)
}

/// Writes the image (or index) to the layout and archive `outputs` name.
fn write_outputs(store: &BlobStore, built: &Built, outputs: &Outputs) -> Result<(), PipelineError> {
    if let Some(out) = &outputs.layout {
        layout::write_layout(out, store, built, &outputs.tags).map_err(|source| {
            PipelineError::WriteLayout {
                path: out.clone(),
                source,
            }
        })?;
    }
    if let Some(path) = &outputs.archive {
        archive::write_archive(path, store, built, &outputs.tags).map_err(|source| {
            PipelineError::WriteArchive {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Refuses outputs that cannot be written, before any work.
fn check_outputs(outputs: &Outputs) -> Result<(), PipelineError> {
    if outputs.is_empty() {
        return Err(PipelineError::NothingToWrite);
    }
    for tag in &outputs.tags {
        layout::check_tag(tag)?;
    }
    if let Some(out) = &outputs.layout {
        layout::check_output_dir(out)?;
    }
    Ok(())
}

/// The OCI platform (`os`, `architecture`, `variant`) of a conda target platform.
pub fn oci_platform(platform: imgbuild_builder::TargetPlatform) -> ImagePlatform {
    ImagePlatform {
        os: platform.oci_os().to_string(),
        architecture: platform.oci_architecture().to_string(),
        variant: platform.oci_variant().map(str::to_string),
    }
}

fn log_downloads(d: &Downloads) {
    if d.packages > 0 {
        tracing::info!(
            "downloaded {} packages ({}, {} bytes)",
            d.packages,
            human_bytes(d.package_bytes),
            d.package_bytes
        );
    }
    if d.wheels > 0 {
        tracing::info!(
            "downloaded {} wheels ({}, {} bytes)",
            d.wheels,
            human_bytes(d.wheel_bytes),
            d.wheel_bytes
        );
    }
}

/// `1.5 MiB`: bytes for people.
pub fn human_bytes(bytes: u64) -> String {
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
