//! Registry plumbing for the CLI: client options from flags, pushing tags, the `push` command.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::TargetPlatform;
use imgbuild_layer::readback::read_file;
use imgbuild_oci::inspect::{layer_infos, LayerKind};
use imgbuild_oci::registry::{
    attach_artifact, push_image, ClientOptions, Credentials, PushSummary, Reference, ReferrersMode,
    RegistryClient,
};
use imgbuild_oci::{BaseImage, BlobStore, Digest, ImagePlatform, TransferProgress};

use crate::args::{PushArgs, RegistryArgs};

pub fn client_options(args: &RegistryArgs) -> Result<ClientOptions> {
    Ok(ClientOptions {
        credentials: args.creds.as_deref().map(Credentials::parse).transpose()?,
        insecure_hosts: args.insecure_registries.clone(),
        max_attempts: None,
    })
}

pub fn client_for(reference: &Reference, options: &ClientOptions) -> Result<RegistryClient> {
    Ok(RegistryClient::new(
        &reference.registry,
        reference.api_host(),
        options,
    )?)
}

pub fn image_platform(platform: TargetPlatform) -> ImagePlatform {
    ImagePlatform {
        os: platform.oci_os().to_string(),
        architecture: platform.oci_architecture().to_string(),
        variant: platform.oci_variant().map(str::to_string),
    }
}

/// The tags among `tags` that name a registry, parsed; an error when `--push` has none.
pub fn push_targets(tags: &[String]) -> Result<Vec<Reference>> {
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

/// An artifact to attach to the pushed image (the SBOM): its media type and bytes.
pub struct Attachment<'a> {
    pub artifact_type: &'a str,
    pub bytes: &'a [u8],
}

/// Pushes `manifest` from `store` to every reference, sharing one client per registry, and
/// attaches `attachment` to it in each repository.
pub async fn push_all(
    store: &BlobStore,
    manifest: &Digest,
    targets: &[Reference],
    base: Option<&BaseImage>,
    options: &ClientOptions,
    attachment: Option<&Attachment<'_>>,
    progress: Option<&TransferProgress>,
) -> Result<Vec<PushSummary>> {
    let mut clients: HashMap<String, RegistryClient> = HashMap::new();
    let mut summaries = Vec::new();
    for target in targets {
        if !clients.contains_key(&target.registry) {
            clients.insert(target.registry.clone(), client_for(target, options)?);
        }
        let client = &clients[&target.registry];
        // Base layers can be mounted when the base lives on the same registry.
        let mount_from: HashMap<Digest, String> = base
            .and_then(|b| b.origin.as_ref().map(|o| (b, o)))
            .filter(|(_, origin)| origin.registry == target.registry)
            .map(|(b, origin)| {
                b.layer_digests()
                    .into_iter()
                    .map(|d| (d, origin.repository.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let summary = push_image(client, store, manifest, target, &mount_from, progress)
            .await
            .with_context(|| format!("push to {target} failed"))?;
        print_summary(&summary);
        if let Some(a) = attachment {
            let (digest, mode) = attach_artifact(
                client,
                store,
                &target.repository,
                manifest,
                a.artifact_type,
                a.bytes,
            )
            .await
            .with_context(|| format!("attaching the SBOM to {target} failed"))?;
            println!(
                "attached {} {digest} to {target} ({})",
                a.artifact_type,
                match mode {
                    ReferrersMode::Api => "referrers API".to_string(),
                    ReferrersMode::TagSchema =>
                        format!("referrers tag {}", manifest.to_string().replace(':', "-")),
                }
            );
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

fn print_summary(s: &PushSummary) {
    println!(
        "pushed {} {}: uploaded {} blobs ({} bytes), mounted {} ({} bytes), already present {} ({} bytes)",
        s.reference,
        s.manifest_digest,
        s.uploaded.blobs,
        s.uploaded.bytes,
        s.mounted.blobs,
        s.mounted.bytes,
        s.present.blobs,
        s.present.bytes
    );
}

/// `imgbuild push LAYOUT[:TAG] REFERENCE`: the image, then the SBOM it carries (imgbuild's
/// SBOM layer) attached to it, as `build --push` does.
pub async fn run_push(args: PushArgs, draw_progress: bool) -> Result<()> {
    let (dir, tag) = match args.layout.split_once(':') {
        Some((d, t)) if !t.is_empty() => (PathBuf::from(d), Some(t.to_string())),
        _ => (PathBuf::from(args.layout.trim_end_matches(':')), None),
    };
    let platform: TargetPlatform = args.platform.parse()?;
    let image = BaseImage::from_layout(&dir, tag.as_deref(), &image_platform(platform))
        .with_context(|| format!("cannot push {}", args.layout))?;
    let sbom = carried_sbom(&image).with_context(|| format!("cannot push {}", args.layout))?;
    let target: Reference = args.reference.parse()?;
    let options = client_options(&args.registry)?;
    let progress = crate::progress::Progress::new(draw_progress);
    progress.stage("pushing");
    let uploads = std::sync::Arc::new(TransferProgress::default());
    let _bar = progress.bytes(vec![("pushing", crate::progress::transfer(&uploads))]);
    push_all(
        image.source(),
        &image.manifest_digest,
        &[target],
        None,
        &options,
        sbom.as_ref()
            .map(|(format, bytes)| Attachment {
                artifact_type: format.media_type(),
                bytes,
            })
            .as_ref(),
        Some(&uploads),
    )
    .await?;
    Ok(())
}

/// The SBOM inside imgbuild's SBOM layer of `image`, if it has one.
fn carried_sbom(image: &BaseImage) -> Result<Option<(SbomFormat, Vec<u8>)>> {
    let Some(layer) = layer_infos(image)
        .into_iter()
        .find(|l| l.kind == LayerKind::Sbom)
    else {
        return Ok(None);
    };
    let path = image.source().path(&layer.digest);
    let found = read_file(&path, &layer.media_type, |p| {
        SbomFormat::from_path(p).is_some()
    })
    .with_context(|| format!("cannot read the SBOM layer {}", layer.digest))?;
    Ok(found.map(|(p, bytes)| (SbomFormat::from_path(&p).expect("matched above"), bytes)))
}
