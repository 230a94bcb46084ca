//! Writing one planned layer: walk → tar → sha256 (diff_id) → compress → sha256 (digest) →
//! temporary blob file → rename. One pass; the uncompressed tar never touches the disk.
//!
//! Entries are in byte order of their path, every header is built from scratch (mode
//! normalized to 0755/0644, uid/gid 0, mtime from `SOURCE_DATE_EPOCH`, no user names, no
//! xattrs), and every ancestor directory is present, so the bytes depend only on the files'
//! contents, names and link targets.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use imgbuild_oci::{BlobStore, Compression, LayerBlob};
use sha2::{Digest as _, Sha256};

use crate::hashing::HashingWriter;
use crate::pargz::ParallelGzEncoder;
use crate::pax;
use crate::plan::PlannedLayer;
use crate::LayerError;

/// How layers are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Where the staging root lives inside the image, e.g. `/opt/conda`.
    pub prefix: String,
    pub compression: Compression,
    /// mtime of every entry (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// Where finished layers are remembered by recipe (see [`PlannedLayer::recipe`]); a layer
    /// whose recipe is there and whose blob is still in the store is not written again.
    pub layer_cache: Option<PathBuf>,
    /// Bytes to write and written so far, for a progress display.
    pub progress: Option<std::sync::Arc<WriteProgress>>,
}

/// Counters a progress display can poll while layers are written: installed bytes of all
/// planned layers, and of those done (a layer from the cache counts as done at once).
pub type WriteProgress = imgbuild_oci::TransferProgress;

impl WriteOptions {
    fn advance(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            p.advance(bytes);
        }
    }
}

/// Bumped whenever the tar layout or the compressed bytes change, so layers cached by an older
/// imgbuild are not reused (7: binary-looking gzip blocks at libdeflate level 1).
pub const LAYER_FORMAT_VERSION: u32 = 7;

/// A layer that is now in the blob store.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub blob: LayerBlob,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Owners in this layer.
    pub owners: Vec<String>,
    /// Bytes not stored again because an identical file was already in the layer.
    pub dedup_saved: u64,
    pub origin: LayerOrigin,
}

/// How a layer came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOrigin {
    /// Written after the install, from the staging root.
    Written,
    /// Written while the environment was still being installed (see `early.rs`).
    WrittenWhileInstalling,
    /// Taken from the layer or environment cache: no file was read, nothing was compressed.
    Reused,
}

impl LayerOrigin {
    /// For logs: `written`, `written while installing` or `reused`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerOrigin::Written => "written",
            LayerOrigin::WrittenWhileInstalling => "written while installing",
            LayerOrigin::Reused => "reused",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedLayer {
    digest: String,
    diff_id: String,
    size: u64,
    tar_size: u64,
    dedup_saved: u64,
}

fn recipe_key(layer: &PlannedLayer, options: &WriteOptions) -> Option<String> {
    let recipe = layer.recipe.as_ref()?;
    // The paths too: a package whose file another package in the same environment claimed
    // first (a clobber) leaves that file to the other's layer, so its own layer differs.
    let mut paths = Sha256::new();
    for path in &layer.paths {
        paths.update(bytes(path));
        paths.update([0]);
    }
    let text = format!(
        "v{LAYER_FORMAT_VERSION}\nprefix={}\ncompression={:?}\nmtime={}\npaths={}\n{recipe}",
        options.prefix,
        options.compression,
        options.mtime,
        hex::encode(paths.finalize())
    );
    Some(hex::encode(Sha256::digest(text.as_bytes())))
}

fn cached(layer: &PlannedLayer, options: &WriteOptions, store: &BlobStore) -> Option<WrittenLayer> {
    let path = options
        .layer_cache
        .as_ref()?
        .join(format!("{}.json", recipe_key(layer, options)?));
    let entry: CachedLayer = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let digest = entry.digest.parse().ok()?;
    if !store.contains(&digest) {
        return None;
    }
    Some(WrittenLayer {
        blob: LayerBlob {
            digest,
            diff_id: entry.diff_id.parse().ok()?,
            size: entry.size,
            compression: options.compression,
            created_by: layer.description(),
        },
        tar_size: entry.tar_size,
        owners: layer.owners.clone(),
        dedup_saved: entry.dedup_saved,
        origin: LayerOrigin::Reused,
    })
}

/// Remembers a written layer under its recipe (temp file + rename; a failure only costs reuse).
fn remember(layer: &PlannedLayer, options: &WriteOptions, written: &WrittenLayer) {
    let (Some(dir), Some(key)) = (options.layer_cache.as_ref(), recipe_key(layer, options)) else {
        return;
    };
    let entry = CachedLayer {
        digest: written.blob.digest.to_string(),
        diff_id: written.blob.diff_id.to_string(),
        size: written.blob.size,
        tar_size: written.tar_size,
        dedup_saved: written.dedup_saved,
    };
    remember_entry(&dir.join(format!("{key}.json")), &entry, "layer");
}

/// Writes a cache entry as JSON (temp file + rename, via the OCI crate). A failure only costs
/// reuse later, so it is logged, not returned.
pub(crate) fn remember_entry(path: &Path, entry: &impl serde::Serialize, what: &str) {
    let bytes = serde_json::to_vec(entry).expect("serializable");
    let dir = path.parent().unwrap_or(Path::new("."));
    let result = fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            imgbuild_oci::layout::write_atomically(path, &bytes).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(
            "could not record the {what} in the cache {}: {e}",
            dir.display()
        );
    }
}

/// Writes every planned layer into `store`, concurrently; results are in plan order.
///
/// One writer thread per core, plus one, takes layers largest first, so the biggest layer is
/// not left to run alone at the end, and a writer waiting on its blob's fsync does not leave
/// the compression pool without work. The writers are plain threads, not rayon tasks: gzip compression
/// runs on the rayon pool (see `pargz.rs`), and a rayon worker waiting for its compression
/// could steal and run a whole other layer in the meantime, serializing the build.
pub fn write_layers(
    root: &Path,
    layers: &[PlannedLayer],
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<Vec<WrittenLayer>, LayerError> {
    write_layers_with(root, layers, options, store, &NothingPrewritten)
}

/// Layers whose writing started before the plan was made (imgbuild-layer's `early.rs` starts
/// big packages' layers while the rest is still being linked). The writer asks, per planned
/// layer, whether one was started and takes it if it still matches.
pub trait Prewritten: Sync {
    /// Whether a write was started for this planned layer.
    fn has(&self, layer: &PlannedLayer) -> bool;
    /// The started layer for `layer` if it is exactly what writing `layer` from `root` now
    /// would give; waits for it to finish. `None`: write it again.
    fn take(&self, root: &Path, layer: &PlannedLayer) -> Option<WrittenLayer>;
}

/// Nothing was written early.
pub struct NothingPrewritten;

impl Prewritten for NothingPrewritten {
    fn has(&self, _: &PlannedLayer) -> bool {
        false
    }

    fn take(&self, _: &Path, _: &PlannedLayer) -> Option<WrittenLayer> {
        None
    }
}

/// [`write_layers`], taking what `prewritten` holds for a layer where it matches (see
/// `early.rs`). Layers written early are taken last, so the writers first do the ones nobody
/// has started.
pub fn write_layers_with(
    root: &Path,
    layers: &[PlannedLayer],
    options: &WriteOptions,
    store: &BlobStore,
    prewritten: &dyn Prewritten,
) -> Result<Vec<WrittenLayer>, LayerError> {
    let early: Vec<bool> = layers.iter().map(|l| prewritten.has(l)).collect();
    if let Some(p) = &options.progress {
        // Early writes count their own bytes.
        p.add_total(
            layers
                .iter()
                .zip(&early)
                .filter(|(_, &e)| !e)
                .map(|(l, _)| l.size)
                .sum(),
        );
    }
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| (early[i], std::cmp::Reverse(layers[i].size)));
    let write_one = |i: usize| -> Result<WrittenLayer, LayerError> {
        let layer = &layers[i];
        if early[i] {
            if let Some(mut written) = prewritten.take(root, layer) {
                if written.origin == LayerOrigin::Written {
                    remember(layer, options, &written);
                    written.origin = LayerOrigin::WrittenWhileInstalling;
                }
                return Ok(written);
            }
            if let Some(p) = &options.progress {
                p.add_total(layer.size);
            }
        }
        write_layer(root, layer, options, store)
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<WrittenLayer, LayerError>>>> =
        std::sync::Mutex::new((0..layers.len()).map(|_| None).collect());
    let workers =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) + 1).min(layers.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let result = write_one(i);
                let failed = result.is_err();
                results.lock().expect("no writer panicked")[i] = Some(result);
                if failed {
                    // Let the other writers run out of work quickly.
                    next.store(order.len(), std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let results = results.into_inner().expect("no writer panicked");
    let mut written = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results {
        match result {
            Some(Ok(w)) => written.push(w),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

enum Source {
    Dir,
    File(PathBuf),
}

/// Writes one layer into `store`, or takes it from the layer cache.
pub fn write_layer(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    let written = write_layer_unremembered(root, layer, options, store)?;
    if written.origin == LayerOrigin::Written {
        remember(layer, options, &written);
    }
    Ok(written)
}

/// [`write_layer`] without remembering the result in the layer cache (early layers are
/// remembered once they are known to match the plan).
pub(crate) fn write_layer_unremembered(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    if let Some(hit) = cached(layer, options, store) {
        options.advance(layer.size);
        return Ok(hit);
    }
    let written = write_layer_uncached(root, layer, options, store)?;
    tracing::debug!("wrote layer {}", layer.description());
    Ok(written)
}

fn write_layer_uncached(
    root: &Path,
    layer: &PlannedLayer,
    options: &WriteOptions,
    store: &BlobStore,
) -> Result<WrittenLayer, LayerError> {
    let prefix = image_relative(&options.prefix)?;
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

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// `/opt/conda` → `opt/conda`; refuses relative prefixes and `..`.
fn image_relative(prefix: &str) -> Result<PathBuf, LayerError> {
    use std::path::Component;
    let p = Path::new(prefix);
    let ok = p.is_absolute()
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && p.components().count() > 1;
    if !ok {
        return Err(LayerError::UnsafePath {
            path: p.to_path_buf(),
            context: "the prefix must be an absolute path below / without '..'".into(),
        });
    }
    Ok(p.components().skip(1).collect())
}

enum Encoder<W: Write> {
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            // Block-parallel, with bytes independent of the core count (see pargz.rs).
            Compression::Gzip => Encoder::Gzip(ParallelGzEncoder::new(inner)?),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, 3)?;
                // zstd's output is the same for any worker count >= 1, so this uses every
                // core without making the bytes depend on the machine.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                enc.multithread(workers.max(1))?;
                Encoder::Zstd(enc)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
