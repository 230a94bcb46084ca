//! Reading a layer blob back: its uncompressed size and the conda package records it carries.
//!
//! `imgbuild inspect` and `compare` use this on any image — imgbuild's own or one built from
//! a Dockerfile on miniconda — so nothing here assumes imgbuild's layout: every
//! `…/conda-meta/<name>.json` entry in the tar is read as a conda prefix record.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use crate::LayerError;

/// A conda package as its `conda-meta` record describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub build: String,
    /// Bytes of its installed files (from `paths_data`), 0 if the record has none.
    pub installed_size: u64,
    pub channel: Option<String>,
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub license: Option<String>,
    pub subdir: Option<String>,
    /// Where the record sits in the image, e.g. `opt/conda/conda-meta/zlib-1.3-h0_0.json`.
    pub record_path: String,
}

impl PackageRecord {
    /// `name-version-build`, conda's usual label.
    pub fn label(&self) -> String {
        format!("{}-{}-{}", self.name, self.version, self.build)
    }
}

/// What reading a layer found.
#[derive(Debug, Clone, Default)]
pub struct LayerContents {
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    pub records: Vec<PackageRecord>,
}

/// Reads the layer blob at `path`, compressed as its OCI `media_type` says (`+gzip`, `+zstd`,
/// or a plain tar).
pub fn read_layer(path: &Path, media_type: &str) -> Result<LayerContents, LayerError> {
    let mut counting = CountingReader {
        inner: open_tar(path, media_type)?,
        count: 0,
    };
    let mut contents = LayerContents::default();
    {
        let mut archive = tar::Archive::new(&mut counting);
        for entry in archive.entries().map_err(|e| LayerError::io(path, e))? {
            let mut entry = entry.map_err(|e| LayerError::io(path, e))?;
            let entry_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let is_record = entry.header().entry_type().is_file()
                && entry_path.ends_with(".json")
                && Path::new(&entry_path)
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|d| d == "conda-meta");
            if !is_record {
                continue;
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| LayerError::io(path, e))?;
            if let Some(record) = parse_record(&bytes, entry_path) {
                contents.records.push(record);
            }
        }
    }
    // Whatever follows the tar's end marker still counts towards the uncompressed size.
    io::copy(&mut counting, &mut io::sink()).map_err(|e| LayerError::io(path, e))?;
    contents.tar_size = counting.count;
    contents.records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(contents)
}

/// The first regular file in the layer blob at `path` whose tar path `wanted` accepts:
/// its path and bytes (e.g. the SBOM out of imgbuild's SBOM layer).
pub fn read_file(
    path: &Path,
    media_type: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Option<(String, Vec<u8>)>, LayerError> {
    Ok(read_files(path, media_type, wanted, true)?
        .into_iter()
        .next())
}

/// Every regular file (or just the first, with `first_only`) in the layer blob at `path`
/// whose tar path `wanted` accepts, in tar order.
pub fn read_files(
    path: &Path,
    media_type: &str,
    wanted: impl Fn(&str) -> bool,
    first_only: bool,
) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let mut found = Vec::new();
    let mut archive = tar::Archive::new(open_tar(path, media_type)?);
    for entry in archive.entries().map_err(|e| LayerError::io(path, e))? {
        let mut entry = entry.map_err(|e| LayerError::io(path, e))?;
        let entry_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry.header().entry_type().is_file() && wanted(&entry_path) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| LayerError::io(path, e))?;
            found.push((entry_path, bytes));
            if first_only {
                break;
            }
        }
    }
    Ok(found)
}

/// The diff_id of the layer blob at `path`: the sha256 of its tar stream, decompressed as its
/// OCI `media_type` says. For checking a layer someone else wrote (a registry cache entry).
pub fn diff_id(path: &Path, media_type: &str) -> Result<imgbuild_oci::Digest, LayerError> {
    use sha2::Digest as _;
    let mut tar = open_tar(path, media_type)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut tar, &mut hasher).map_err(|e| LayerError::io(path, e))?;
    Ok(imgbuild_oci::Digest::from_hasher(hasher))
}

/// The tar stream inside a layer blob compressed as its OCI `media_type` says.
fn open_tar(path: &Path, media_type: &str) -> Result<Box<dyn Read>, LayerError> {
    let file = BufReader::new(File::open(path).map_err(|e| LayerError::io(path, e))?);
    Ok(if media_type.ends_with("gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| LayerError::io(path, e))?)
    } else {
        Box::new(file)
    })
}

/// A `conda-meta` record, or `None` for JSON that is not one (conda-meta holds other files).
fn parse_record(bytes: &[u8], record_path: String) -> Option<PackageRecord> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let installed_size = v["paths_data"]["paths"]
        .as_array()
        .map(|paths| {
            paths
                .iter()
                .filter_map(|p| p["size_in_bytes"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    Some(PackageRecord {
        name: s("name")?,
        version: s("version")?,
        build: s("build")?,
        installed_size,
        channel: s("channel"),
        url: s("url"),
        sha256: s("sha256"),
        md5: s("md5"),
        license: s("license"),
        subdir: s("subdir"),
        record_path,
    })
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
