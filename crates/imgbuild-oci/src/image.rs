//! Assembling an image: config and manifest from base image parts plus new layers.

use std::collections::BTreeMap;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::base::BaseImage;
use crate::canonical::to_canonical_json;
use crate::time::rfc3339_utc;
use crate::{BlobStore, Digest, OciError};

/// How a layer's tar stream is compressed.
///
/// zstd is the default: on the real llm-env (torch + CUDA wheels) its layers are smaller and
/// unpack several times faster than gzip's, and every runtime a GPU fleet runs reads them
/// (containerd ≥ 1.5, CRI-O and podman with containers/storage ≥ 1.24, Docker ≥ 23). gzip is
/// for older runtimes. The default level comes from the measurements in docs/benchmarks.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    /// zstd at `level` (1 to 19).
    Zstd {
        level: u8,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// The zstd level layers are written at unless another is asked for.
pub const DEFAULT_ZSTD_LEVEL: u8 = 3;

/// The zstd levels a layer may be written at: 20–22 ("ultra") need a decompression window
/// larger than runtimes are obliged to accept.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<u8> = 1..=19;

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd { .. } => MediaType::ImageLayerZstd,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Gzip => write!(f, "gzip"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

/// Why a compression name is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compression '{0}': use gzip, zstd or zstd:LEVEL (LEVEL {min} to {max})",
    min = ZSTD_LEVELS.start(),
    max = ZSTD_LEVELS.end()
)]
pub struct ParseCompressionError(pub String);

impl std::str::FromStr for Compression {
    type Err = ParseCompressionError;

    /// `gzip`, `zstd` (the default level) or `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseCompressionError(s.to_string());
        match s.split_once(':') {
            None if s == "gzip" => Ok(Compression::Gzip),
            None if s == "zstd" => Ok(Compression::default()),
            Some(("zstd", level)) => {
                let level: u8 = level.parse().map_err(|_| bad())?;
                if ZSTD_LEVELS.contains(&level) {
                    Ok(Compression::Zstd { level })
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

/// The most layers an image may have: Docker and containerd refuse to run images with more
/// (overlayfs mounts are limited by the page-sized mount options).
pub const MAX_IMAGE_LAYERS: usize = 125;

/// Refuses, before any work is done, a build whose base layers plus the environment's layer
/// budget (and the SBOM layer) could exceed [`MAX_IMAGE_LAYERS`].
pub fn check_layer_budget(base_layers: usize, env_budget: usize) -> Result<(), OciError> {
    let total = base_layers + env_budget + 1;
    if total > MAX_IMAGE_LAYERS {
        return Err(OciError::TooManyLayers {
            base: base_layers,
            budget: env_budget,
            total,
            max: MAX_IMAGE_LAYERS,
            fit: MAX_IMAGE_LAYERS.saturating_sub(base_layers + 1),
        });
    }
    Ok(())
}

/// A layer blob that is already in a [`BlobStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Compressed size in bytes.
    pub size: u64,
    pub compression: Compression,
    /// One line for the image history: what this layer holds.
    pub created_by: String,
}

/// Target platform of the image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePlatform {
    /// `linux`
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8` for arm64, …
    pub variant: Option<String>,
}

/// The runtime configuration a user asks for. Values left `None` keep the base image's.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Directories to put in front of the base image's `PATH`.
    pub path_prepend: Vec<String>,
    /// Variables set in order; later ones win over earlier ones and over the base's.
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// `PATH` of an image that does not set one (the value Docker and podman assume).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image whose config and manifest blobs are in the store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// Every blob the manifest references (config first, then layers in order).
    pub blobs: Vec<Digest>,
    pub platform: ImagePlatform,
}

/// Writes the config and manifest for `base` + `layers` into `store`.
///
/// Base layers are referenced as they are (never recompressed); their blobs must already be
/// in `store` (see [`BaseImage::import_into`]).
pub fn assemble(
    store: &BlobStore,
    base: Option<&BaseImage>,
    layers: &[LayerBlob],
    runtime: &RuntimeConfig,
    platform: &ImagePlatform,
    created_epoch: i64,
) -> Result<BuiltImage, OciError> {
    let created = rfc3339_utc(created_epoch);
    let base_cfg = base.map(|b| &b.config);
    let base_runtime = base_cfg.and_then(|c| c.config().clone());

    let env = merge_env(
        base_runtime
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default(),
        &runtime.path_prepend,
        &runtime.env,
    );
    let mut cfg = ConfigBuilder::default().env(env);
    let pick = |ours: &Option<Vec<String>>, theirs: Option<Vec<String>>| ours.clone().or(theirs);
    if let Some(ep) = pick(
        &runtime.entrypoint,
        base_runtime.as_ref().and_then(|c| c.entrypoint().clone()),
    ) {
        cfg = cfg.entrypoint(ep);
    }
    // A new entrypoint without a new cmd drops the base's cmd, as Docker does.
    let base_cmd = if runtime.entrypoint.is_some() {
        None
    } else {
        base_runtime.as_ref().and_then(|c| c.cmd().clone())
    };
    if let Some(cmd) = pick(&runtime.cmd, base_cmd) {
        cfg = cfg.cmd(cmd);
    }
    if let Some(wd) = runtime
        .working_dir
        .clone()
        .or_else(|| base_runtime.as_ref().and_then(|c| c.working_dir().clone()))
    {
        cfg = cfg.working_dir(wd);
    }
    if let Some(user) = runtime
        .user
        .clone()
        .or_else(|| base_runtime.as_ref().and_then(|c| c.user().clone()))
    {
        cfg = cfg.user(user);
    }
    let mut labels: BTreeMap<String, String> = base_runtime
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(runtime.labels.clone());
    if !labels.is_empty() {
        cfg = cfg.labels(
            labels
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let cfg = cfg.build().map_err(invalid("image config"))?;

    let mut diff_ids: Vec<String> = base
        .map(|b| b.config.rootfs().diff_ids().clone())
        .unwrap_or_default();
    let mut history = base_cfg
        .and_then(|c| c.history().clone())
        .unwrap_or_default();
    for layer in layers {
        diff_ids.push(layer.diff_id.to_string());
        history.push(
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(layer.created_by.clone())
                .comment("imgbuild".to_string())
                .build()
                .map_err(invalid("history entry"))?,
        );
    }

    let mut image_cfg = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::from(platform.os.as_str()))
        .config(cfg)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(invalid("rootfs"))?,
        )
        .history(history);
    if let Some(v) = &platform.variant {
        image_cfg = image_cfg.variant(v.clone());
    }
    let image_cfg: ImageConfiguration = image_cfg.build().map_err(invalid("image config"))?;
    let config_bytes = to_canonical_json(&image_cfg).map_err(OciError::json("image config"))?;
    let config_digest = store.put_bytes(&config_bytes)?;

    let mut layer_descs: Vec<Descriptor> = base.map(|b| b.layers.clone()).unwrap_or_default();
    for layer in layers {
        layer_descs.push(
            DescriptorBuilder::default()
                .media_type(layer.compression.media_type())
                .digest(layer.digest.to_oci())
                .size(layer.size)
                .build()
                .map_err(invalid("layer descriptor"))?,
        );
    }
    let mut blobs = vec![config_digest];
    for d in &layer_descs {
        blobs.push(Digest::try_from(d.digest()).map_err(invalid("layer descriptor"))?);
    }

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(config_digest.to_oci())
                .size(config_bytes.len() as u64)
                .build()
                .map_err(invalid("config descriptor"))?,
        )
        .layers(layer_descs)
        .build()
        .map_err(invalid("manifest"))?;
    let manifest_bytes = to_canonical_json(&manifest).map_err(OciError::json("manifest"))?;
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    let manifest_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest_digest.to_oci())
        .size(manifest_bytes.len() as u64)
        .build()
        .map_err(invalid("manifest descriptor"))?;

    Ok(BuiltImage {
        manifest: manifest_desc,
        manifest_digest,
        config_digest,
        blobs,
        platform: platform.clone(),
    })
}

/// Base `Env` with `PATH` extended and `overrides` applied; keys keep their first position.
fn merge_env(
    base: Vec<String>,
    path_prepend: &[String],
    overrides: &[(String, String)],
) -> Vec<String> {
    let mut entries: Vec<(String, String)> = base
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    fn set(entries: &mut Vec<(String, String)>, k: &str, v: String) {
        match entries.iter_mut().find(|(ek, _)| ek == k) {
            Some(entry) => entry.1 = v,
            None => entries.push((k.to_string(), v)),
        }
    }
    if !path_prepend.is_empty() {
        let current = entries
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        let mut parts: Vec<&str> = path_prepend.iter().map(String::as_str).collect();
        parts.extend(
            current
                .split(':')
                .filter(|p| !p.is_empty() && !path_prepend.iter().any(|q| q == p)),
        );
        set(&mut entries, "PATH", parts.join(":"));
    }
    for (k, v) in overrides {
        set(&mut entries, k, v.clone());
    }
    entries
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn invalid<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> OciError {
    move |e| OciError::Invalid {
        path: std::path::PathBuf::new(),
        what,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_prepends_path_once_and_overrides_in_place() {
        let env = merge_env(
            vec!["PATH=/usr/bin:/opt/conda/bin".into(), "LANG=C".into()],
            &["/opt/conda/bin".into()],
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("CONDA_PREFIX".into(), "/opt/conda".into()),
            ],
        );
        assert_eq!(
            env,
            vec![
                "PATH=/opt/conda/bin:/usr/bin",
                "LANG=C.UTF-8",
                "CONDA_PREFIX=/opt/conda"
            ]
        );
        let env = merge_env(vec![], &["/p/bin".into()], &[]);
        assert_eq!(env, vec![format!("PATH=/p/bin:{DEFAULT_PATH}")]);
    }
}

#[cfg(test)]
mod compression_tests {
    use super::*;

    #[test]
    fn compression_names_round_trip_and_bad_ones_are_refused() {
        for (text, c) in [
            ("gzip", Compression::Gzip),
            ("zstd", Compression::default()),
            ("zstd:1", Compression::Zstd { level: 1 }),
            ("zstd:19", Compression::Zstd { level: 19 }),
        ] {
            assert_eq!(text.parse::<Compression>().unwrap(), c);
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        for bad in [
            "zstd:0", "zstd:20", "zstd:x", "zstd:", "gzip:6", "brotli", "",
        ] {
            let err = bad.parse::<Compression>().unwrap_err().to_string();
            assert!(err.contains("gzip, zstd or zstd:LEVEL"), "{bad}: {err}");
        }
        assert_eq!(
            Compression::default().to_string(),
            format!("zstd:{DEFAULT_ZSTD_LEVEL}")
        );
    }
}
