//! `imgbuild inspect` and `imgbuild compare`: find the image, fetch what the report needs,
//! print the report (imgbuild-layer's `report` module builds it).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use imgbuild_builder::TargetPlatform;
use imgbuild_layer::report::{Comparison, ImageReport};
use imgbuild_oci::inspect::{layer_infos, LayerKind};
use imgbuild_oci::pull_image;
use imgbuild_oci::registry::Reference;
use imgbuild_oci::{archive, BaseImage, BlobStore, ImagePlatform};
use tempfile::TempDir;

use crate::args::{CompareArgs, InspectArgs, ReadImageArgs};
use imgbuild_pipeline::{client_for, human_bytes as human, oci_platform};

/// An image ready to report on: where its layer blobs are, and what must live as long.
struct Loaded {
    image: BaseImage,
    blobs: BlobStore,
    /// The platforms of the index the name pointed at (`None`: a plain image).
    platforms: Option<Vec<ImagePlatform>>,
    /// The platform reported on.
    platform: ImagePlatform,
    _unpacked: Option<TempDir>,
}

async fn load(name: &str, args: &ReadImageArgs) -> Result<Loaded> {
    let platform: TargetPlatform = args.platform.parse()?;
    let platform = oci_platform(platform);
    let split_tag = imgbuild_oci::layout::split_dir_tag;
    let (layout, archive_file, tag) = if let Some(rest) = name.strip_prefix("oci:") {
        let (p, t) = split_tag(rest);
        (Some(p), None, t)
    } else if let Some(rest) = name.strip_prefix("oci-archive:") {
        let (p, t) = split_tag(rest);
        (None, Some(p), t)
    } else if std::path::Path::new(name).is_dir() {
        (Some(PathBuf::from(name)), None, None)
    } else if std::path::Path::new(name).is_file() {
        (None, Some(PathBuf::from(name)), None)
    } else {
        (None, None, None)
    };
    if let Some(dir) = layout {
        let image = BaseImage::from_layout(&dir, tag.as_deref(), &platform)
            .with_context(|| format!("cannot read image {name}"))?;
        let blobs = image.source().clone();
        return Ok(Loaded {
            image,
            blobs,
            platforms: imgbuild_oci::layout::entry_platforms(&dir, tag.as_deref())?,
            platform,
            _unpacked: None,
        });
    }
    if let Some(file) = archive_file {
        let temp = tempfile::Builder::new()
            .prefix("imgbuild-inspect-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        archive::unpack_archive(&file, temp.path())
            .with_context(|| format!("cannot read image {name}"))?;
        let image = BaseImage::from_layout(temp.path(), tag.as_deref(), &platform)
            .with_context(|| format!("cannot read image {name}"))?;
        let blobs = image.source().clone();
        return Ok(Loaded {
            image,
            blobs,
            platforms: imgbuild_oci::layout::entry_platforms(temp.path(), tag.as_deref())?,
            platform,
            _unpacked: Some(temp),
        });
    }
    let reference: Reference = name.parse().with_context(|| {
        format!("'{name}' is not oci:DIR[:TAG], oci-archive:FILE[:TAG], an existing path or a registry reference")
    })?;
    let options = crate::settings::client_options(&args.registry)?;
    let client = client_for(&reference, &options)?;
    let (cache, _cache_run, _) =
        imgbuild_pipeline::open_cache(&crate::resolve_cache_dir(args.cache_dir.as_deref())?)?;
    let cache_dir = cache.root().to_path_buf();
    let store = BlobStore::new(&cache_dir);
    let image = pull_image(&client, &reference, &platform, &store, args.deep)
        .await
        .with_context(|| format!("cannot read image {name}"))?;
    if !args.deep {
        // imgbuild's environment layer carries conda-meta; it is small.
        for info in layer_infos(&image) {
            if info.kind == LayerKind::Environment {
                client
                    .pull_blob(&reference.repository, &info.digest, &store)
                    .await
                    .with_context(|| format!("cannot fetch layer {}", info.digest))?;
            }
        }
    }
    let (top, _) = client
        .get_manifest(&reference.repository, &reference.manifest_reference())
        .await
        .with_context(|| format!("cannot read image {name}"))?;
    let platforms = imgbuild_oci::index::index_platforms(&top);
    Ok(Loaded {
        image,
        blobs: store,
        platforms,
        platform,
        _unpacked: None,
    })
}

fn report(name: &str, loaded: &Loaded) -> Result<ImageReport> {
    ImageReport::new(name, &loaded.image, &loaded.blobs)
        .with_context(|| format!("cannot read the layers of {name}"))
}

pub async fn run_inspect(args: InspectArgs) -> Result<()> {
    let loaded = load(&args.image, &args.read).await?;
    let r = report(&args.image, &loaded)?;
    if args.read.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{}  {}", r.image, r.manifest_digest);
    if let Some(platforms) = &loaded.platforms {
        let listed: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        println!(
            "an index of {} platforms: {}; this report is {} (choose with --platform)",
            platforms.len(),
            listed.join(", "),
            loaded.platform
        );
    }
    println!(
        "{:>3}  {:<19}  {:>5}  {:>10}  {:>12}  holds",
        "#", "layer", "", "compressed", "uncompressed"
    );
    for (i, l) in r.layers.iter().enumerate() {
        let holds = match &l.kind {
            LayerKind::Conda { packages } => packages.join(" "),
            LayerKind::Pip { packages } => format!("pip: {}", packages.join(" ")),
            LayerKind::Environment => "environment (conda-meta, files no package owns)".into(),
            LayerKind::Sbom { .. } => "SBOM".into(),
            LayerKind::Base => format!(
                "base: {}",
                l.created_by
                    .as_deref()
                    .unwrap_or("-")
                    .chars()
                    .take(60)
                    .collect::<String>()
            ),
        };
        println!(
            "{:>3}  {:<19}  {:>5}  {:>10}  {:>12}  {}",
            i + 1,
            &l.digest[..19.min(l.digest.len())],
            l.compression,
            human(l.size),
            l.uncompressed_size.map(human).unwrap_or_else(|| "-".into()),
            holds
        );
    }
    println!(
        "total: {} layers, {} compressed, {} uncompressed; {} conda packages",
        r.totals.layers,
        human(r.totals.size),
        r.totals
            .uncompressed_size
            .map(human)
            .unwrap_or_else(|| "? (--deep)".into()),
        r.packages.count
    );
    if !r.packages.largest.is_empty() {
        println!("largest packages (installed size):");
        for p in &r.packages.largest {
            println!(
                "  {:>10}  {}-{}-{}",
                human(p.installed_size),
                p.name,
                p.version,
                p.build
            );
        }
    }
    println!(
        "estimated pull: {:.1} s at 100 Mb/s, {:.1} s at 1 Gb/s",
        r.pull_seconds.at_100_mbit, r.pull_seconds.at_1_gbit
    );
    Ok(())
}

pub async fn run_compare(args: CompareArgs) -> Result<()> {
    let a = load(&args.image, &args.read).await?;
    let b = load(&args.reference, &args.read).await?;
    let c = Comparison::new(&report(&args.image, &a)?, &report(&args.reference, &b)?);
    if args.read.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let un = |s: Option<u64>| s.map(human).unwrap_or_else(|| "? (--deep)".into());
    println!("{:<14} {:>12} {:>12}", "", "image", "reference");
    println!(
        "{:<14} {:>12} {:>12}",
        "layers", c.image.layers, c.reference.layers
    );
    println!(
        "{:<14} {:>12} {:>12}",
        "compressed",
        human(c.image.size),
        human(c.reference.size)
    );
    println!(
        "{:<14} {:>12} {:>12}",
        "uncompressed",
        un(c.image.uncompressed_size),
        un(c.reference.uncompressed_size)
    );
    println!(
        "{:<14} {:>12} {:>12}",
        "packages", c.image.packages, c.reference.packages
    );
    println!(
        "{:<14} {:>11.1}s {:>11.1}s",
        "pull @100Mb/s", c.image.pull_seconds.at_100_mbit, c.reference.pull_seconds.at_100_mbit
    );
    println!(
        "image is {:.2}x the reference's compressed size; {} shared layers ({}) are stored and pulled once: {} for both",
        c.size_ratio,
        c.shared.layers,
        human(c.shared.size),
        human(c.combined_size)
    );
    println!(
        "a node that holds the reference fetches {} layers ({}) to run the image",
        c.fetch_for_image.layers,
        human(c.fetch_for_image.size)
    );
    if !c.only_in_image.is_empty() || !c.only_in_reference.is_empty() {
        println!("only in image:     {}", c.only_in_image.join(" "));
        println!("only in reference: {}", c.only_in_reference.join(" "));
    }
    Ok(())
}
