//! The environment cache's key, built from typed inputs.
//!
//! Every field of [`BuildPlan`] (and of the option structs inside it) is named below, either
//! hashed or set aside with the reason it cannot change the environment's layers or
//! activation; the destructuring has no `..`, so a new option does not compile until someone
//! decides which it is. The test enumerates the options and checks that each hashed one moves
//! the key and each set-aside one does not.

use imgbuild_builder::{Target, TargetPlatform};
use imgbuild_layer::write::LAYER_FORMAT_VERSION;
use imgbuild_layer::PlanOptions;
use sha2::{Digest as _, Sha256};

use crate::plan::{BuildPlan, PipOptions};
use crate::resolve::Resolved;

/// The key of an environment in the environment cache: sha256 of a canonical text of what the
/// environment is made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvironmentKey(String);

impl EnvironmentKey {
    /// The key as a file name (hex).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key of the environment `plan` makes of `resolved`.
pub fn environment_key(plan: &BuildPlan, resolved: &Resolved) -> EnvironmentKey {
    let BuildPlan {
        // What the packages are is `resolved`'s; where they came from does not matter.
        source: _,
        // The environment's layers do not depend on the base (the SBOM layer names it).
        base: _,
        target,
        prefix,
        // The config only.
        runtime: _,
        layers,
        compression,
        mtime,
        pip,
        activation,
        // The SBOM is a layer of its own.
        sbom_format: _,
        // A limit that refuses packages, not one that changes what is installed.
        max_package_size: _,
    } = plan;
    // glibc and CUDA decide the solve, whose outcome is `resolved.records`.
    let Target {
        platform,
        glibc: _,
        cuda: _,
    } = target;
    let PlanOptions {
        big_package_threshold,
        small_groups,
        max_layers,
    } = layers;
    // Which uv is a tool choice: the files it installs are rewritten by imgbuild.
    let PipOptions {
        uv: _,
        compile,
        allow_sdist,
    } = pip;
    let Resolved {
        platform: resolved_platform,
        records,
        requested,
        pip: wheels,
    } = resolved;
    debug_assert_eq!(platform, resolved_platform);
    let platform: &TargetPlatform = platform;

    let mut text = format!(
        "imgbuild {} layer-format {LAYER_FORMAT_VERSION}\nplatform={}\nprefix={}\n\
         compression={compression:?}\nmtime={mtime}\nbig={big_package_threshold}\n\
         groups={small_groups}\nmax_layers={max_layers}\nactivation={}\n",
        env!("CARGO_PKG_VERSION"),
        platform.subdir().as_str(),
        prefix.as_str(),
        activation.as_str(),
    );
    for spec in requested {
        text.push_str(&format!("requested={spec}\n"));
    }
    for p in wheels {
        text.push_str(&format!("pip={} sha256={}\n", p.url, p.sha256));
    }
    if !wheels.is_empty() {
        text.push_str(&format!(
            "pip-compile={compile}\npip-allow-sdist={allow_sdist}\n"
        ));
    }
    for r in records {
        let sha = r.package_record.sha256.map(hex::encode).unwrap_or_default();
        let md5 = r.package_record.md5.map(hex::encode).unwrap_or_default();
        text.push_str(&format!("package={} sha256={sha} md5={md5}\n", r.url));
    }
    EnvironmentKey(hex::encode(Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use imgbuild_builder::activation::ActivationScripts;
    use imgbuild_builder::pip::PipPackage;
    use imgbuild_builder::sbom::SbomFormat;
    use imgbuild_builder::{InstallPrefix, Target, TargetPlatform};
    use imgbuild_layer::PlanOptions;
    use imgbuild_oci::{Compression, RuntimeConfig};

    use super::environment_key;
    use crate::plan::{BaseSource, BuildPlan, PipOptions, Source};
    use crate::resolve::Resolved;

    fn plan() -> BuildPlan {
        BuildPlan {
            source: Source::Lock {
                path: PathBuf::from("env.lock"),
                environment: None,
                spec: None,
            },
            base: BaseSource::Scratch,
            target: Target::new(TargetPlatform::LinuxAmd64, None, None).unwrap(),
            prefix: InstallPrefix::parse("/opt/conda").unwrap(),
            runtime: RuntimeConfig::default(),
            layers: PlanOptions::default(),
            compression: Compression::default(),
            mtime: 0,
            pip: PipOptions::default(),
            activation: ActivationScripts::Evaluate,
            sbom_format: SbomFormat::Spdx,
            max_package_size: 1 << 30,
        }
    }

    fn resolved() -> Resolved {
        Resolved {
            platform: TargetPlatform::LinuxAmd64,
            records: Vec::new(),
            requested: vec!["python 3.11.*".parse().unwrap()],
            pip: vec![PipPackage {
                name: "six".into(),
                version: "1.16.0".into(),
                url: "https://files.example/six-1.16.0-py2.py3-none-any.whl".into(),
                sha256: "0".repeat(64),
                license: None,
            }],
        }
    }

    type Change = (&'static str, fn(&mut BuildPlan, &mut Resolved));

    #[test]
    fn every_option_that_changes_the_environment_changes_the_key() {
        let moves: &[Change] = &[
            ("platform", |p, r| {
                p.target.platform = TargetPlatform::LinuxArm64;
                r.platform = TargetPlatform::LinuxArm64;
            }),
            ("prefix", |p, _| {
                p.prefix = InstallPrefix::parse("/env").unwrap()
            }),
            ("compression", |p, _| p.compression = Compression::Gzip),
            ("compression level", |p, _| {
                p.compression = Compression::Zstd { level: 9 }
            }),
            ("mtime", |p, _| p.mtime = 1),
            ("big package threshold", |p, _| {
                p.layers.big_package_threshold += 1
            }),
            ("small groups", |p, _| p.layers.small_groups += 1),
            ("max layers", |p, _| p.layers.max_layers += 1),
            ("activation scripts", |p, _| {
                p.activation = ActivationScripts::Run
            }),
            ("pip compile", |p, _| p.pip.compile = true),
            ("pip sdists", |p, _| p.pip.allow_sdist = true),
            ("requested specs", |_, r| r.requested.clear()),
            ("wheel", |_, r| r.pip[0].sha256 = "1".repeat(64)),
        ];
        let stays: &[Change] = &[
            ("base", |p, _| p.base = "oci:/x:y".parse().unwrap()),
            ("runtime config", |p, _| {
                p.runtime.cmd = Some(vec!["python".into()])
            }),
            ("SBOM format", |p, _| p.sbom_format = SbomFormat::CycloneDx),
            ("max package size", |p, _| p.max_package_size += 1),
            ("glibc (decides the solve only)", |p, _| {
                p.target =
                    Target::new(TargetPlatform::LinuxAmd64, Some("2.34"), Some("12.0")).unwrap()
            }),
            ("uv program", |p, _| p.pip.uv = Some(PathBuf::from("/x/uv"))),
        ];
        let base = environment_key(&plan(), &resolved());
        for (what, change) in moves {
            let (mut p, mut r) = (plan(), resolved());
            change(&mut p, &mut r);
            assert_ne!(
                environment_key(&p, &r),
                base,
                "{what} does not change the key"
            );
        }
        for (what, change) in stays {
            let (mut p, mut r) = (plan(), resolved());
            change(&mut p, &mut r);
            assert_eq!(environment_key(&p, &r), base, "{what} changes the key");
        }
    }
}
