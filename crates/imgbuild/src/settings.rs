//! Flags, the spec's `x-imgbuild` block and environment variables → one [`BuildPlan`] and its
//! [`Outputs`], in one place. Precedence: a flag (or its environment variable, such as
//! `IMGBUILD_BASE`) wins over `x-imgbuild`, which wins over the defaults.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use imgbuild_builder::activation::ActivationScripts;
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::spec::ImageOptions;
use imgbuild_builder::{EnvSpec, InstallPrefix, Target, TargetPlatform};
use imgbuild_layer::PlanOptions;
use imgbuild_oci::registry::{ClientOptions, Credentials, Reference};
use imgbuild_oci::RuntimeConfig;
use imgbuild_pipeline::{
    BaseSource, BuildPlan, Outputs, PipOptions, RegistryCache, Source, VersionSkew, DEFAULT_BASE,
    DEFAULT_PREFIX,
};

use crate::args::{BuildArgs, RegistryArgs, SbomFormatArg};

/// Everything `build` was asked for, checked.
#[derive(Debug)]
pub struct BuildSettings {
    /// One per platform, in the order asked for; they differ only in their target.
    pub plans: Vec<BuildPlan>,
    pub skew: VersionSkew,
    pub registry_cache: RegistryCache,
    pub outputs: Outputs,
    pub registry: ClientOptions,
    /// The base as the user wrote it (for messages).
    pub base_text: String,
}

/// Reads `args` (and the spec they name) into settings. Reads files, never the network.
pub fn build_settings(args: &BuildArgs, source_date_epoch: Option<&str>) -> Result<BuildSettings> {
    let outputs = outputs(args)?;
    let registry = client_options(&args.registry)?;
    let spec = args.spec.as_deref().map(EnvSpec::from_path).transpose()?;
    let image = spec.as_ref().map(|s| s.image.clone()).unwrap_or_default();
    let base_text = args
        .base
        .clone()
        .or(image.base.clone())
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    let base: BaseSource = base_text.parse().context("invalid --base")?;
    let targets = targets(args, &image)?;
    let prefix = match (&args.prefix, &image.prefix) {
        (Some(flag), _) => InstallPrefix::parse(flag)
            .map_err(|e| anyhow::anyhow!("invalid --prefix '{}': {}", e.prefix, e.why))?,
        (None, Some(spec)) => InstallPrefix::parse(spec)
            .map_err(|e| anyhow::anyhow!("invalid x-imgbuild prefix '{}': {}", e.prefix, e.why))?,
        (None, None) => InstallPrefix::parse(DEFAULT_PREFIX).expect("the default prefix is valid"),
    };
    let runtime = runtime_config(args, &image)?;
    let source = match (spec, &args.lock) {
        (spec, Some(path)) => Source::Lock {
            path: path.clone(),
            environment: args.environment.clone(),
            spec: spec.map(Box::new),
        },
        (Some(spec), None) => Source::Spec {
            write_lock: args.write_lock.then(|| default_lock_path(&spec.path)),
            spec: Box::new(spec),
        },
        (None, None) => bail!("give --spec FILE or --lock FILE"),
    };
    let plan = BuildPlan {
        source,
        base,
        target: targets[0].clone(),
        prefix,
        runtime,
        layers: PlanOptions {
            big_package_threshold: parse_size(&args.big_package_threshold)
                .context("invalid --big-package-threshold")?,
            max_layers: args.max_layers,
            ..PlanOptions::default()
        },
        compression: args.compression,
        mtime: source_date_epoch_value(source_date_epoch)?,
        pip: PipOptions {
            uv: args.uv.clone(),
            compile: args.compile,
            allow_sdist: args.allow_sdist,
        },
        activation: match args.run_activation_scripts {
            true => ActivationScripts::Run,
            false => ActivationScripts::Evaluate,
        },
        sbom_format: match args.sbom_format {
            SbomFormatArg::Spdx => SbomFormat::Spdx,
            SbomFormatArg::Cyclonedx => SbomFormat::CycloneDx,
        },
        max_package_size: parse_size(&args.max_package_size)
            .context("invalid --max-package-size")?,
    };
    let plans = targets
        .into_iter()
        .map(|target| BuildPlan {
            target,
            ..plan.clone()
        })
        .collect();
    let repo = |text: &str, what: &str| -> Result<Reference> {
        text.parse()
            .with_context(|| format!("invalid {what} '{text}': expected REGISTRY/REPOSITORY"))
    };
    let registry_cache = RegistryCache {
        to: match (&args.cache_to, &image.cache_to) {
            (Some(t), _) => Some(repo(t, "--cache-to")?),
            (None, Some(t)) => Some(repo(t, "x-imgbuild cache-to")?),
            (None, None) => None,
        },
        from: if args.cache_from.is_empty() {
            image
                .cache_from
                .iter()
                .map(|t| repo(t, "x-imgbuild cache-from"))
                .collect::<Result<_>>()?
        } else {
            args.cache_from
                .iter()
                .map(|t| repo(t, "--cache-from"))
                .collect::<Result<_>>()?
        },
    };
    Ok(BuildSettings {
        registry_cache,
        plans,
        skew: match args.allow_version_skew {
            true => VersionSkew::Allow,
            false => VersionSkew::Refuse,
        },
        outputs,
        registry,
        base_text,
    })
}

/// The platforms to build, each with its `cuda` and `glibc`: `--platform` (repeated or a comma
/// list), else `x-imgbuild: platforms`, else every platform of `--lock`, else linux/amd64.
/// `--cuda`/`--glibc` apply to every platform; else `x-imgbuild: platform-options` for the
/// platform, else the spec's `cuda`/`glibc`.
fn targets(args: &BuildArgs, image: &ImageOptions) -> Result<Vec<Target>> {
    let named = |names: &[String]| -> Result<Vec<(TargetPlatform, String)>> {
        names
            .iter()
            .map(|n| Ok((n.trim().parse::<TargetPlatform>()?, n.trim().to_string())))
            .collect()
    };
    let platforms = if !args.platforms.is_empty() {
        named(&args.platforms)?
    } else if !image.platforms.is_empty() {
        named(&image.platforms)?
    } else if let Some(lock) = &args.lock {
        let found = imgbuild_builder::lock::lock_platforms(lock, args.environment.as_deref())?;
        found.into_iter().map(|p| (p, p.to_string())).collect()
    } else {
        vec![(TargetPlatform::LinuxAmd64, "linux/amd64".to_string())]
    };
    if platforms.is_empty() {
        bail!("the lock file has packages for no platform imgbuild builds");
    }
    for name in image.platform_options.keys() {
        let p: TargetPlatform = name
            .parse()
            .with_context(|| format!("x-imgbuild platform-options: '{name}'"))?;
        if !platforms.iter().any(|(q, _)| *q == p) {
            tracing::warn!("x-imgbuild platform-options names {name}, which is not built");
        }
    }
    platforms
        .into_iter()
        .map(|(platform, _)| {
            let own = image
                .platform_options
                .iter()
                .find(|(k, _)| k.parse::<TargetPlatform>().ok() == Some(platform))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Ok(Target::new(
                platform,
                args.glibc
                    .as_deref()
                    .or(own.glibc.as_deref())
                    .or(image.glibc.as_deref()),
                args.cuda
                    .as_deref()
                    .or(own.cuda.as_deref())
                    .or(image.cuda.as_deref()),
            )?)
        })
        .collect()
}

/// Where the image goes, checked before any work: something to write, tags a layout can
/// hold, an output directory that can take an image.
fn outputs(args: &BuildArgs) -> Result<Outputs> {
    if args.output.is_none() && args.archive.is_none() && !args.push {
        bail!("nothing to write: give --output DIR (an OCI image layout), --archive FILE (an OCI archive) and/or --push");
    }
    let push = if args.push {
        push_targets(&args.tags)?
    } else {
        Vec::new()
    };
    for tag in &args.tags {
        imgbuild_oci::layout::check_tag(tag).map_err(|e| anyhow::anyhow!("--tag {e}"))?;
    }
    if let Some(out) = &args.output {
        imgbuild_oci::layout::check_output_dir(out)?;
    }
    Ok(Outputs {
        layout: args.output.clone(),
        archive: args.archive.clone(),
        tags: args.tags.clone(),
        push,
        sbom_file: args.sbom.clone(),
    })
}

/// `environment.yml` → `environment.lock`, beside it.
pub fn default_lock_path(spec: &std::path::Path) -> std::path::PathBuf {
    spec.with_extension("lock")
}

pub fn client_options(args: &RegistryArgs) -> Result<ClientOptions> {
    Ok(ClientOptions {
        credentials: args.creds.as_deref().map(Credentials::parse).transpose()?,
        auth_file: args.authfile.clone(),
        cert_dir: args.cert_dir.clone(),
        insecure_hosts: args.insecure_registries.clone(),
        registries_conf: args.registries_conf.clone(),
        max_attempts: None,
    })
}

/// The tags among `tags` that name a registry, parsed; an error when `--push` has none.
fn push_targets(tags: &[String]) -> Result<Vec<Reference>> {
    let refs: Vec<Reference> = tags
        .iter()
        .filter(|t| Reference::names_registry(t))
        .map(|t| t.parse().with_context(|| format!("--tag {t}")))
        .collect::<Result<_>>()?;
    if refs.is_empty() {
        bail!(
            "--push needs a --tag that names a registry, e.g. --tag registry.example.com/team/app:1.0 \
             (tags given: {})",
            if tags.is_empty() { "none".to_string() } else { tags.join(", ") }
        );
    }
    Ok(refs)
}

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

/// `32MiB`, `500KiB`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64> {
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
    n.checked_mul(mult)
        .with_context(|| format!("invalid size '{s}': too large"))
}

/// `SOURCE_DATE_EPOCH`'s value, or 0 when unset or empty.
fn source_date_epoch_value(value: Option<&str>) -> Result<u64> {
    match value {
        Some(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;

    fn settings(spec_text: &str, flags: &[&str]) -> Result<BuildSettings> {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("environment.yml");
        std::fs::write(&spec, spec_text).unwrap();
        let out = dir.path().join("out");
        let mut argv = vec![
            "imgbuild".to_string(),
            "--spec".into(),
            spec.display().to_string(),
            "--output".into(),
            out.display().to_string(),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(argv).unwrap();
        build_settings(&cli.build, Some("1700000000"))
    }

    const SPEC: &str = "channels: [https://example.invalid/c]\ndependencies: [python]\n\
        x-imgbuild:\n  base: oci:/bases/glibc:v1\n  prefix: /env\n  platforms: [linux/arm64]\n  \
        cuda: '11.8'\n  cmd: [python]\n  env: {A: spec}\n  labels: {team: ml}\n";

    #[test]
    fn x_imgbuild_wins_over_defaults() {
        let s = settings(SPEC, &[]).unwrap();
        let p = &s.plans[0];
        assert_eq!(
            p.base,
            BaseSource::Layout {
                dir: "/bases/glibc".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(p.prefix.as_str(), "/env");
        assert_eq!(p.target.platform, TargetPlatform::LinuxArm64);
        assert_eq!(
            p.target.cuda.as_ref().map(|v| v.to_string()).as_deref(),
            Some("11.8")
        );
        assert_eq!(p.runtime.cmd, Some(vec!["python".to_string()]));
        assert_eq!(p.runtime.env, vec![("A".to_string(), "spec".to_string())]);
        assert_eq!(p.runtime.labels["team"], "ml");
        assert_eq!(p.mtime, 1_700_000_000);
    }

    #[test]
    fn flags_win_over_x_imgbuild() {
        let s = settings(
            SPEC,
            &[
                "--base",
                "scratch",
                "--prefix",
                "/opt/x",
                "--platform",
                "linux/amd64",
                "--cuda",
                "12.0",
                "--cmd",
                "bash -l",
                "--env",
                "A=flag",
                "--label",
                "team=infra",
            ],
        )
        .unwrap();
        let p = &s.plans[0];
        assert_eq!(p.base, BaseSource::Scratch);
        assert_eq!(p.prefix.as_str(), "/opt/x");
        assert_eq!(p.target.platform, TargetPlatform::LinuxAmd64);
        assert_eq!(
            p.target.cuda.as_ref().map(|v| v.to_string()).as_deref(),
            Some("12.0")
        );
        assert_eq!(
            p.runtime.cmd,
            Some(vec!["bash".to_string(), "-l".to_string()])
        );
        // Both are set; the flag's comes later, so it wins in the image.
        assert_eq!(
            p.runtime.env.last().unwrap(),
            &("A".to_string(), "flag".to_string())
        );
        assert_eq!(p.runtime.labels["team"], "infra");
    }

    #[test]
    fn defaults_without_x_imgbuild() {
        let s = settings(
            "channels: [https://example.invalid/c]\ndependencies: [python]\n",
            &[],
        )
        .unwrap();
        let p = &s.plans[0];
        assert_eq!(p.base, DEFAULT_BASE.parse().unwrap());
        assert_eq!(p.prefix.as_str(), DEFAULT_PREFIX);
        assert_eq!(p.target.platform, TargetPlatform::LinuxAmd64);
        assert_eq!(p.target.cuda, None);
        assert_eq!(p.layers, PlanOptions::default());
        assert_eq!(p.compression, imgbuild_oci::Compression::default());
        assert_eq!(p.activation, ActivationScripts::Evaluate);
        assert_eq!(
            p.max_package_size,
            imgbuild_builder::DEFAULT_MAX_PACKAGE_SIZE
        );
        assert!(matches!(
            p.source,
            Source::Spec {
                write_lock: None,
                ..
            }
        ));
    }

    #[test]
    fn every_platform_gets_a_plan_with_its_own_cuda_and_glibc() {
        const MULTI: &str = "channels: [https://example.invalid/c]\ndependencies: [python]\n\
            x-imgbuild:\n  platforms: [linux/amd64, linux/arm64]\n  cuda: '11.8'\n  \
            platform-options:\n    linux/arm64: {cuda: '12.2', glibc: '2.34'}\n";
        let s = settings(MULTI, &[]).unwrap();
        let targets: Vec<_> = s
            .plans
            .iter()
            .map(|p| {
                (
                    p.target.platform,
                    p.target.cuda.as_ref().map(|v| v.to_string()),
                    p.target.glibc.to_string(),
                )
            })
            .collect();
        assert_eq!(
            targets,
            [
                (
                    TargetPlatform::LinuxAmd64,
                    Some("11.8".to_string()),
                    imgbuild_builder::target::DEFAULT_GLIBC.to_string()
                ),
                (
                    TargetPlatform::LinuxArm64,
                    Some("12.2".to_string()),
                    "2.34".to_string()
                ),
            ]
        );
        // Flags win over both, for every platform; a comma list and repeats both work.
        let s = settings(
            MULTI,
            &["--platform", "linux/arm64,linux/ppc64le", "--cuda", "12.0"],
        )
        .unwrap();
        let got: Vec<_> = s
            .plans
            .iter()
            .map(|p| {
                (
                    p.target.platform,
                    p.target.cuda.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (TargetPlatform::LinuxArm64, Some("12.0".to_string())),
                (TargetPlatform::LinuxPpc64le, Some("12.0".to_string())),
            ]
        );
        let s = settings(
            SPEC,
            &["--platform", "linux/amd64", "--platform", "linux/arm64"],
        )
        .unwrap();
        assert_eq!(s.plans.len(), 2);
        assert_eq!(s.skew, VersionSkew::Refuse);
        let s = settings(SPEC, &["--allow-version-skew"]).unwrap();
        assert_eq!(s.skew, VersionSkew::Allow);
        // Everything but the target is the same in every plan.
        assert!(settings(MULTI, &["--platform", "linux/s390x"]).is_err());
    }

    #[test]
    fn sizes_and_bad_values_are_refused_with_the_flag() {
        let s = settings(SPEC, &["--big-package-threshold", "1MiB"]).unwrap();
        assert_eq!(s.plans[0].layers.big_package_threshold, 1 << 20);
        let err = settings(SPEC, &["--max-package-size", "lots"]).unwrap_err();
        assert!(format!("{err:#}").contains("--max-package-size"), "{err:#}");
        let err = settings(SPEC, &["--env", "=x"]).unwrap_err();
        assert!(format!("{err:#}").contains("--env '=x'"), "{err:#}");
        let err = settings(SPEC, &["--max-package-size", "99999999999GiB"]).unwrap_err();
        assert!(format!("{err:#}").contains("too large"), "{err:#}");
    }
}
