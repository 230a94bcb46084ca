//! `imgbuild push LAYOUT[:TAG] REFERENCE`: the image, then the SBOM it carries (imgbuild's
//! SBOM layer) attached to it, as `build --push` does.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use imgbuild_builder::sbom::SbomFormat;
use imgbuild_builder::TargetPlatform;
use imgbuild_layer::readback::read_file;
use imgbuild_oci::inspect::{layer_infos, LayerKind};
use imgbuild_oci::registry::Reference;
use imgbuild_oci::{layout, BaseImage, Built, ImagePlatform, TransferProgress};
use imgbuild_pipeline::{oci_platform, push_all, Attachment, ByteCounter, Observer, Stage};

use crate::args::PushArgs;

pub async fn run(args: PushArgs, draw_progress: bool) -> Result<()> {
    let (dir, tag) = layout::split_dir_tag(&args.layout);
    let cannot = || format!("cannot push {}", args.layout);
    // The whole index, unless one platform is asked for or the entry is a plain image.
    let listed = layout::entry_platforms(&dir, tag.as_deref()).with_context(cannot)?;
    let (platforms, whole_index): (Vec<ImagePlatform>, bool) = match (&args.platform, listed) {
        (Some(p), _) => (vec![oci_platform(p.parse::<TargetPlatform>()?)], false),
        (None, Some(all)) => (all, true),
        (None, None) => (vec![oci_platform(TargetPlatform::LinuxAmd64)], false),
    };
    let mut images = Vec::new();
    let mut sboms = Vec::new();
    for platform in &platforms {
        let image = BaseImage::from_layout(&dir, tag.as_deref(), platform).with_context(cannot)?;
        sboms.push(carried_sbom(&image).with_context(cannot)?);
        images.push(image);
    }
    let built = match whole_index {
        false => images[0].as_built(&platforms[0])?,
        true => {
            let entry = layout::find_entry(&dir, tag.as_deref())?;
            let digest: imgbuild_oci::Digest = entry.digest().to_string().parse()?;
            let mut built = Vec::new();
            for (image, platform) in images.iter().zip(&platforms) {
                match image.as_built(platform)? {
                    Built::Image(b) => built.push(*b),
                    Built::Index(_) => unreachable!("an image is one manifest"),
                }
            }
            Built::Index(imgbuild_oci::BuiltIndex {
                digest,
                size: entry.size(),
                images: built,
            })
        }
    };
    let target: Reference = args.reference.parse()?;
    let options = crate::settings::client_options(&args.registry)?;
    let progress = crate::progress::ProgressObserver::new(draw_progress);
    let uploads = Arc::new(TransferProgress::default());
    progress.stage(
        Stage::Pushing,
        &[ByteCounter::transfer("pushing", &uploads)],
    );
    let attachments: Vec<Attachment> = images
        .iter()
        .zip(&sboms)
        .filter_map(|(image, sbom)| {
            sbom.as_ref().map(|(format, bytes)| Attachment {
                subject: image.manifest_digest,
                artifact_type: format.media_type(),
                bytes,
            })
        })
        .collect();
    let pushed = push_all(
        images[0].source(),
        &built,
        &[target],
        &[],
        &[],
        &options,
        &attachments,
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
