//! The flag to try, for errors whose cause a flag can change. Library errors describe the
//! problem in their own terms (a library user has no flags); the CLI knows which of its flags
//! leads out of it and says so on a `hint:` line after the error.

use imgbuild_builder::pip::PipError;
use imgbuild_builder::{BuildError, LockError};
use imgbuild_layer::LayerError;
use imgbuild_oci::registry::{RegistryError, TlsFailure};
use imgbuild_oci::OciError;
use imgbuild_pipeline::PipelineError;

/// The hint for `err`, if one of its causes has one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    // Through the pipeline its errors are transparent wrappers, so the chain shows the
    // wrapper, not the library error inside it.
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
            return pipeline_hint(e);
        }
        (cause.downcast_ref::<BuildError>().and_then(build_hint))
            .or_else(|| cause.downcast_ref::<LockError>().and_then(lock_hint))
            .or_else(|| cause.downcast_ref::<LayerError>().and_then(layer_hint))
            .or_else(|| cause.downcast_ref::<PipError>().and_then(pip_hint))
            .or_else(|| cause.downcast_ref::<OciError>().and_then(oci_hint))
            .or_else(|| {
                cause
                    .downcast_ref::<RegistryError>()
                    .and_then(registry_hint)
            })
    })
}

fn pipeline_hint(e: &PipelineError) -> Option<String> {
    match e {
        PipelineError::Build(e) => build_hint(e),
        PipelineError::Lock(e) => lock_hint(e),
        PipelineError::Layer(e) => layer_hint(e),
        PipelineError::Pip(e) => pip_hint(e),
        PipelineError::Oci(e) => oci_hint(e),
        PipelineError::Registry(e) => registry_hint(e),
        PipelineError::CacheDir(_) => Some(
            "pass --cache-dir (or set IMGBUILD_CACHE_DIR) to a directory you can write".to_string(),
        ),
        _ => None,
    }
}

fn build_hint(e: &BuildError) -> Option<String> {
    match e {
        BuildError::PrefixTooLong { max_len, .. } => {
            Some(format!("choose a --prefix of at most {max_len} characters"))
        }
        BuildError::Unsolvable {
            needs_cuda: true, ..
        } => Some("build for a GPU with --cuda VERSION (e.g. --cuda 11.8)".to_string()),
        BuildError::UnsafeArchive(refused) => refused.size_limit.map(|limit| {
            format!(
                "if the package really is this large, raise --max-package-size (now {})",
                imgbuild_pipeline::human_bytes(limit)
            )
        }),
        BuildError::Lock(e) => lock_hint(e),
        _ => None,
    }
}

fn lock_hint(e: &LockError) -> Option<String> {
    match e {
        LockError::NoEnvironment { .. } => Some("choose one with --environment NAME".to_string()),
        LockError::NoPlatform { platform, .. } => Some(format!(
            "run `imgbuild lock --platform {platform}` to add it to the lock"
        )),
        _ => None,
    }
}

fn pip_hint(e: &PipError) -> Option<String> {
    match e {
        PipError::UvMissing => Some("or point to it with --uv PATH (or IMGBUILD_UV)".to_string()),
        PipError::UvUnusable { path, .. } => Some(format!(
            "check --uv {} (or IMGBUILD_UV): it must be uv's program",
            path.display()
        )),
        PipError::SdistNotAllowed { .. } => Some(
            "pass --allow-sdist to build it on this machine (for this machine's platform only)"
                .to_string(),
        ),
        PipError::SdistCrossPlatform { target, .. } => Some(format!(
            "--allow-sdist builds source distributions on this machine, for its own platform \
             only: drop --allow-sdist and use packages that publish {target} wheels"
        )),
        PipError::CompileCrossPlatform { .. } => Some(
            "--compile runs the environment's Python on this machine: build without --compile"
                .to_string(),
        ),
        _ => None,
    }
}

fn layer_hint(e: &LayerError) -> Option<String> {
    match e {
        LayerError::Budget { needed, .. } => Some(format!("pass --max-layers {needed} or more")),
        _ => None,
    }
}

fn oci_hint(e: &OciError) -> Option<String> {
    match e {
        OciError::TooManyLayers { budget, fit, .. } => Some(format!(
            "the environment may use up to {budget} (--max-layers): pass --max-layers {fit} or \
             fewer, or use a base with fewer layers"
        )),
        _ => None,
    }
}

fn registry_hint(e: &RegistryError) -> Option<String> {
    match e {
        RegistryError::Unauthorized { rejected: None, .. } => {
            let files: Vec<String> = imgbuild_oci::registry::credential_files(None)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            Some(format!(
                "pass --creds USER:PASSWORD, set IMGBUILD_REGISTRY_USER and \
                 IMGBUILD_REGISTRY_PASSWORD, or log in with `imgbuild login`, `podman login` or \
                 `docker login` (looked in: {})",
                files.join(", ")
            ))
        }
        RegistryError::Tls {
            registry,
            failure: TlsFailure::ServerCertificate,
            ..
        } => Some(format!(
            "trust the registry's CA: put it in /etc/containers/certs.d/{registry}/ca.crt (or \
             ~/.config/containers/certs.d/{registry}/), pass --cert-dir DIR, or set \
             SSL_CERT_FILE; for a throwaway test registry, --insecure-registry {registry}"
        )),
        RegistryError::Tls {
            registry,
            failure: TlsFailure::ClientCertificate,
            ..
        } => Some(format!(
            "put the client certificate and its key as client.cert and client.key in \
             /etc/containers/certs.d/{registry}/ (or ~/.config/containers/certs.d/{registry}/), \
             or in the directory given with --cert-dir"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_flag_for_the_library_error_however_deep() {
        let err = anyhow::Error::new(PipelineError::Layer(LayerError::Budget {
            max_layers: 2,
            needed: 5,
        }))
        .context("building");
        assert_eq!(hint(&err).as_deref(), Some("pass --max-layers 5 or more"));
        assert!(!err.root_cause().to_string().contains("--"));
        assert_eq!(hint(&anyhow::anyhow!("other")), None);
    }

    #[test]
    fn a_lock_error_inside_a_build_error_gets_its_hint() {
        let err = anyhow::Error::new(PipelineError::Build(BuildError::Lock(
            LockError::NoPlatform {
                path: "pixi.lock".into(),
                subdir: "linux-aarch64".into(),
                platform: "linux/arm64".into(),
            },
        )));
        assert_eq!(
            hint(&err).as_deref(),
            Some("run `imgbuild lock --platform linux/arm64` to add it to the lock")
        );
        assert!(!err.to_string().contains("--"));
    }
}
