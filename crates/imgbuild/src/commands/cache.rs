//! `imgbuild cache prune REPOSITORY --older-than AGE`: old registry cache entries deleted.

use anyhow::{bail, Context as _, Result};
use imgbuild_oci::registry::{cache, Reference};
use imgbuild_pipeline::client_for;

use crate::args::PruneArgs;

pub async fn prune(args: PruneArgs) -> Result<()> {
    let repo: Reference = args
        .repository
        .parse()
        .with_context(|| format!("invalid repository '{}'", args.repository))?;
    let older_than = parse_age(&args.older_than)?;
    let options = crate::settings::client_options(&args.registry)?;
    let client = client_for(&repo, &options)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let pruned = cache::prune(&client, &repo.repository, older_than, now)
        .await
        .with_context(|| format!("cannot prune the cache {repo}"))?;
    for tag in &pruned.deleted {
        println!("deleted {}/{}:{tag}", repo.registry, repo.repository);
    }
    println!(
        "pruned {}: {} entries deleted, {} kept",
        repo,
        pruned.deleted.len(),
        pruned.kept
    );
    Ok(())
}

/// `30d`, `12h`, `45m`, `90s` → seconds.
fn parse_age(text: &str) -> Result<u64> {
    let t = text.trim();
    let Some((num, mult)) = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)]
        .iter()
        .find_map(|(unit, mult)| t.strip_suffix(unit).map(|n| (n, *mult)))
    else {
        bail!("--older-than '{text}': use a number with d, h, m or s (e.g. 30d)");
    };
    let n: u64 = num.parse().with_context(|| {
        format!("--older-than '{text}': use a number with d, h, m or s (e.g. 30d)")
    })?;
    n.checked_mul(mult)
        .with_context(|| format!("--older-than '{text}': too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::parse_age("30d").unwrap(), 30 * 86_400);
        assert_eq!(super::parse_age("90s").unwrap(), 90);
        assert!(super::parse_age("30").is_err());
        assert!(super::parse_age("xd").is_err());
        assert!(super::parse_age("30日").is_err());
    }
}
