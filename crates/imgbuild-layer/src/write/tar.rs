//! One layer's bytes: walk → tar → sha256 (diff_id) → compress → sha256 (digest) → blob.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use imgbuild_oci::{BlobStore, LayerBlob};
use sha2::{Digest as _, Sha256};

use super::encoder::Encoder;
use super::{LayerOrigin, WriteOptions, WrittenLayer};
use crate::hashing::HashingWriter;
use crate::pax;
use crate::plan::PlannedLayer;
use crate::LayerError;

enum Source {
    Dir,
    File(PathBuf),
}

pub(super) fn write_layer_uncached(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    let prefix = options.prefix.image_relative();
    let mut entries: BTreeMap<Vec<u8>, Source> = BTreeMap::new();
    for ancestor in prefix.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        entries.insert(bytes(ancestor).to_vec(), Source::Dir);
    }
    for rel in &layer.paths {
        let in_image = prefix.join(rel);
        for ancestor in in_image
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            entries
                .entry(bytes(ancestor).to_vec())
                .or_insert(Source::Dir);
        }
        entries.insert(bytes(&in_image).to_vec(), Source::File(root.join(rel)));
    }

    let links = find_duplicates(&entries)?;
    let out = store.writer(Some(layer.size))?;
    let blob_path = out.path().to_path_buf();
    let io_err = |e: io::Error| LayerError::io(&blob_path, e);
    let sink = HashingWriter::new(out);
    let encoder = Encoder::new(sink, options.compression).map_err(io_err)?;
    let mut tar = tar::Builder::new(HashingWriter::new(encoder));
    let mut dedup_saved = 0u64;
    for (path_bytes, source) in &entries {
        let dir = pax::Entry {
            kind: tar::EntryType::Directory,
            path: path_bytes,
            link: None,
            mode: 0o755,
            size: 0,
            mtime: options.mtime,
        };
        match source {
            Source::Dir => pax::append(&mut tar, &dir, io::empty()).map_err(io_err)?,
            Source::File(src) => {
                let meta = src.symlink_metadata().map_err(|e| LayerError::io(src, e))?;
                let ft = meta.file_type();
                if ft.is_symlink() {
                    let target = fs::read_link(src).map_err(|e| LayerError::io(src, e))?;
                    let entry = pax::Entry {
                        kind: tar::EntryType::Symlink,
                        link: Some(bytes(&target)),
                        mode: 0o777,
                        ..dir
                    };
                    pax::append(&mut tar, &entry, io::empty()).map_err(io_err)?;
                } else if ft.is_file() {
                    if let Some(first) = links.get(path_bytes) {
                        let entry = pax::Entry {
                            kind: tar::EntryType::Link,
                            link: Some(first),
                            mode: file_mode(&meta),
                            ..dir
                        };
                        pax::append(&mut tar, &entry, io::empty()).map_err(io_err)?;
                        dedup_saved += meta.len();
                        options.advance(meta.len());
                        continue;
                    }
                    let entry = pax::Entry {
                        kind: tar::EntryType::Regular,
                        mode: file_mode(&meta),
                        size: meta.len(),
                        ..dir
                    };
                    let file = File::open(src).map_err(|e| LayerError::io(src, e))?;
                    // pax::append copies exactly the size in the header: a file that grows is
                    // cut there, one that shrank fails instead of producing a corrupt tar.
                    pax::append(&mut tar, &entry, file).map_err(|e| LayerError::io(src, e))?;
                    options.advance(meta.len());
                } else if ft.is_dir() {
                    pax::append(&mut tar, &dir, io::empty()).map_err(io_err)?;
                } else {
                    let kind = if ft.is_socket() {
                        "socket"
                    } else if ft.is_fifo() {
                        "named pipe"
                    } else {
                        "device"
                    };
                    return Err(LayerError::Unsupported {
                        path: src.clone(),
                        kind,
                    });
                }
            }
        }
    }
    let hashed_tar = tar.into_inner().map_err(io_err)?;
    let (encoder, diff_id, tar_size) = hashed_tar.finish();
    let sink = encoder.finish().map_err(io_err)?;
    let (out, digest, size) = sink.finish();
    let temp = out.finish().map_err(io_err)?;
    store.commit(temp, &digest)?;
    Ok(WrittenLayer {
        blob: LayerBlob {
            digest,
            diff_id,
            size,
            compression: options.compression,
            created_by: layer.description(),
        },
        tar_size,
        owners: layer.owners.clone(),
        dedup_saved,
        origin: LayerOrigin::Written,
        recipe_key: super::recipe_key(layer, options),
    })
}

/// Regular files whose content equals an earlier (in path order) file's: path → first path.
/// Only files that share a size with another are read, so unique files cost nothing.
fn find_duplicates(
    entries: &BTreeMap<Vec<u8>, Source>,
) -> Result<HashMap<Vec<u8>, Vec<u8>>, LayerError> {
    let mut by_size: HashMap<u64, Vec<&Vec<u8>>> = HashMap::new();
    for (path, source) in entries {
        if let Source::File(src) = source {
            let meta = src.symlink_metadata().map_err(|e| LayerError::io(src, e))?;
            if meta.file_type().is_file() && meta.len() > 0 {
                by_size.entry(meta.len()).or_default().push(path);
            }
        }
    }
    let mut links = HashMap::new();
    for candidates in by_size.into_values().filter(|c| c.len() > 1) {
        // Files of equal size are first told apart by their first 64 KiB, so big files that
        // merely share a size (common in generated data, rare otherwise) are not read whole.
        type Candidates<'a> = Vec<(&'a Vec<u8>, &'a PathBuf)>;
        let mut by_head: HashMap<([u8; 32], u32), Candidates> = HashMap::new();
        for path in candidates {
            let Some(Source::File(src)) = entries.get(path) else {
                continue;
            };
            let meta = src.symlink_metadata().map_err(|e| LayerError::io(src, e))?;
            let key = (hash_file(src, Some(64 * 1024))?, file_mode(&meta));
            by_head.entry(key).or_default().push((path, src));
        }
        for (_, group) in by_head.into_iter().filter(|(_, g)| g.len() > 1) {
            let mut first_by_content: HashMap<[u8; 32], &Vec<u8>> = HashMap::new();
            // `group` is in path order (candidates were), so the first path is kept.
            for (path, src) in group {
                match first_by_content.entry(hash_file(src, None)?) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        links.insert(path.clone(), (*first.get()).clone());
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(path);
                    }
                }
            }
        }
    }
    Ok(links)
}

/// sha256 of a file, or of its first `limit` bytes.
fn hash_file(path: &Path, limit: Option<u64>) -> Result<[u8; 32], LayerError> {
    let file = File::open(path).map_err(|e| LayerError::io(path, e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file.take(limit.unwrap_or(u64::MAX)), &mut hasher)
        .map_err(|e| LayerError::io(path, e))?;
    Ok(hasher.finalize().into())
}

/// Executable files become 0755, everything else 0644: the host's umask never shows.
fn file_mode(meta: &fs::Metadata) -> u32 {
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

pub(super) fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
