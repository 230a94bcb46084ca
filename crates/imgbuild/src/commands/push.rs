//! `imgbuild push LAYOUT[:TAG] REFERENCE`: the image, then the SBOM it carries (imgbuild's
//! SBOM layer) attached to it, as `build --push` does.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::TargetPlatform;
use imgbuild_layer::readback::read_file;
use imgbuild_oci::inspect::{layer_infos, LayerKind};
use imgbuild_oci::registry::Reference;
use imgbuild_oci::{layout, BaseImage, TransferProgress};
use imgbuild_pipeline::{oci_platform, push_all, Attachment, ByteCounter, Observer, Stage};

use crate::args::PushArgs;

pub async fn run(args: PushArgs, draw_progress: bool) -> Result<()> {
    let (dir, tag) = layout::split_dir_tag(&args.layout);
    let platform: TargetPlatform = args.platform.parse()?;
    let image = BaseImage::from_layout(&dir, tag.as_deref(), &oci_platform(platform))
        .with_context(|| format!("cannot push {}", args.layout))?;
    let sbom = carried_sbom(&image).with_context(|| format!("cannot push {}", args.layout))?;
    let target: Reference = args.reference.parse()?;
    let options = crate::settings::client_options(&args.registry)?;
    let progress = crate::progress::ProgressObserver::new(draw_progress);
    let uploads = Arc::new(TransferProgress::default());
    progress.stage(
        Stage::Pushing,
        &[ByteCounter::transfer("pushing", &uploads)],
    );
    let pushed = push_all(
        image.source(),
        &image.manifest_digest,
        &[target],
        None,
        &options,
        sbom.as_ref().map(|(format, bytes)| Attachment {
            artifact_type: format.media_type(),
            bytes,
        }),
        Some(&uploads),
    )
    .await;
    progress.finished();
    crate::printer::print_pushes(&pushed?);
    Ok(())
}

/// The SBOM inside imgbuild's SBOM layer of `image`, if it has one.
fn carried_sbom(image: &BaseImage) -> Result<Option<(SbomFormat, Vec<u8>)>> {
    let Some(layer) = layer_infos(image)
        .into_iter()
        .find(|l| matches!(l.kind, LayerKind::Sbom { .. }))
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
