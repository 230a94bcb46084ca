//! `conda-meta/history`: the file conda reads to learn which specs the user asked for.
//!
//! `conda list` and `micromamba list` need only the `conda-meta/*.json` records, but
//! `conda env export --from-history`, and `conda install`/`update` deciding what it may change,
//! read the specs from this file. rattler creates it empty; imgbuild writes one revision in
//! conda's own format (`conda/history.py`):
//!
//! ```text
//! ==> 1970-01-01 00:00:00 <==
//! # cmd: imgbuild build
//! +conda-forge/linux-64::python-3.10.12-hd12c33a_0_cpython
//! # update specs: ['python 3.10.*', 'pytorch']
//! ```
//!
//! The timestamp is the image's fixed time (`SOURCE_DATE_EPOCH`) and the command line is not
//! recorded, so building from the spec and from its lock gives the same bytes.

use std::fmt::Write as _;
use std::path::Path;

use rattler_conda_types::{MatchSpec, RepoDataRecord};

use crate::error::BuildError;

/// Renders the history file for `records`, installed because the user asked for `requested`.
pub fn render(records: &[RepoDataRecord], requested: &[MatchSpec], timestamp: u64) -> String {
    let when = i64::try_from(timestamp)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S");
    let mut out = format!("==> {when} <==\n# cmd: imgbuild build\n");
    let mut dists: Vec<String> = records.iter().map(dist_str).collect();
    dists.sort();
    for dist in dists {
        let _ = writeln!(out, "+{dist}");
    }
    let specs: Vec<String> = requested
        .iter()
        .map(|s| python_str(&s.to_string()))
        .collect();
    let _ = writeln!(out, "# update specs: [{}]", specs.join(", "));
    out
}

/// Writes `<root>/conda-meta/history` (mode 0644, replacing rattler's empty file).
pub(crate) fn write(
    root: &Path,
    records: &[RepoDataRecord],
    requested: &[MatchSpec],
    timestamp: u64,
) -> Result<(), BuildError> {
    let path = root.join("conda-meta").join("history");
    crate::normalize::replace_file(&path, render(records, requested, timestamp).as_bytes())
}

/// conda's `PackageRecord.dist_str()`: `<channel>/<subdir>::<name>-<version>-<build>`, where a
/// channel on conda.anaconda.org is named by its short name and any other by its URL.
fn dist_str(record: &RepoDataRecord) -> String {
    let p = &record.package_record;
    let channel = channel_name(record).unwrap_or("<unknown>");
    format!(
        "{channel}/{}::{}-{}-{}",
        p.subdir,
        p.name.as_normalized(),
        p.version,
        p.build
    )
}

/// The channel as conda names it: the short name for channels on conda.anaconda.org, the
/// URL (without trailing slash) for any other.
pub fn channel_name(record: &RepoDataRecord) -> Option<&str> {
    let c = record.channel.as_deref()?.trim_end_matches('/');
    Some(c.strip_prefix("https://conda.anaconda.org/").unwrap_or(c))
}

/// A Python string literal, as conda writes (and `ast.literal_eval` reads) the spec list.
fn python_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rattler_conda_types::{PackageName, PackageRecord, ParseStrictness, Version};
    use std::str::FromStr;

    fn record(channel: &str, name: &str) -> RepoDataRecord {
        let mut p = PackageRecord::new(
            PackageName::new_unchecked(name),
            Version::from_str("1.2").unwrap(),
            "h0_0".parse().unwrap(),
        );
        p.subdir = "linux-64".into();
        RepoDataRecord {
            package_record: p,
            identifier: format!("{name}-1.2-h0_0.conda").parse().unwrap(),
            url: format!("{channel}linux-64/{name}-1.2-h0_0.conda")
                .parse()
                .unwrap(),
            channel: Some(channel.to_string()),
        }
    }

    #[test]
    fn renders_conda_format() {
        let records = [
            record("https://conda.anaconda.org/conda-forge/", "zlib"),
            record("http://127.0.0.1:8000/chan/", "abc"),
        ];
        let specs = [
            MatchSpec::from_str("python=3.10", ParseStrictness::Lenient).unwrap(),
            MatchSpec::from_str("abc", ParseStrictness::Lenient).unwrap(),
        ];
        let text = render(&records, &specs, 1_700_000_000);
        assert_eq!(
            text,
            "==> 2023-11-14 22:13:20 <==\n# cmd: imgbuild build\n\
             +conda-forge/linux-64::zlib-1.2-h0_0\n\
             +http://127.0.0.1:8000/chan/linux-64::abc-1.2-h0_0\n\
             # update specs: ['python 3.10.*', 'abc']\n"
        );
    }
}
