//! `imgbuild index REFERENCE --add REF@DIGEST…`: per-platform images merged into one index.

use anyhow::{Context as _, Result};
use imgbuild_oci::registry::{merge_index, Reference};
use imgbuild_oci::BlobStore;
use imgbuild_pipeline::client_for;

use crate::args::IndexArgs;

pub async fn run(args: IndexArgs) -> Result<()> {
    let target: Reference = args.reference.parse()?;
    let sources: Vec<Reference> = args
        .add
        .iter()
        .map(|s| s.parse().with_context(|| format!("invalid --add {s}")))
        .collect::<Result<_>>()?;
    let options = crate::settings::client_options(&args.registry)?;
    let client = client_for(&target, &options)?;
    let scratch = tempfile::Builder::new()
        .prefix("imgbuild-index-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let merged = merge_index(&client, &target, &sources, &BlobStore::new(scratch.path()))
        .await
        .with_context(|| format!("cannot write the index {target}"))?;
    for e in &merged.entries {
        println!("platform {}: {}", e.platform, e.digest);
    }
    println!("pushed {} {}", merged.reference, merged.digest);
    println!("digest: {}", merged.digest);
    Ok(())
}
