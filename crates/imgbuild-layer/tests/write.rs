//! The layer writer on awkward staging roots: non-UTF-8 names, long paths, hard-link dedupe,
//! refused sockets, and bytes that do not depend on the run.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use imgbuild_layer::{
    collect_owners, plan_layers, write_layers, LayerError, PlanOptions, WriteOptions,
};
use imgbuild_oci::{BlobStore, Compression};

fn options(cache: Option<PathBuf>) -> WriteOptions {
    WriteOptions {
        prefix: imgbuild_fs::InstallPrefix::parse("/opt/conda").unwrap(),
        compression: Compression::Gzip,
        mtime: 0,
        layer_cache: cache,
        progress: None,
        remote: None,
    }
}

fn entries(
    store: &BlobStore,
    digest: &imgbuild_oci::Digest,
) -> Vec<(Vec<u8>, tar::EntryType, Option<Vec<u8>>)> {
    let file = std::fs::File::open(store.path(digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            (path, e.header().entry_type(), link)
        })
        .collect()
}

fn write_all(
    root: &Path,
    store: &BlobStore,
) -> Result<Vec<imgbuild_layer::WrittenLayer>, LayerError> {
    let owners = collect_owners(root)?;
    let plan = plan_layers(&owners, &PlanOptions::default())?;
    write_layers(root, &plan, &options(None), store)
}

#[test]
fn odd_names_long_paths_and_duplicates_survive_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let odd = std::ffi::OsStr::from_bytes(b"share/caf\xe9-latin1.txt");
    let long = format!("share/{}/file.txt", "d".repeat(150));
    std::fs::create_dir_all(root.join("share")).unwrap();
    std::fs::create_dir_all(root.join(Path::new(&long).parent().unwrap())).unwrap();
    std::fs::write(root.join(odd), b"bytes").unwrap();
    std::fs::write(root.join(&long), b"same content").unwrap();
    std::fs::write(root.join("share/copy.txt"), b"same content").unwrap();
    std::os::unix::fs::symlink(
        format!("{}/file.txt", "d".repeat(150)),
        root.join("share/link"),
    )
    .unwrap();

    let store = BlobStore::new(tmp.path().join("store"));
    let layers = write_all(&root, &store).unwrap();
    assert_eq!(layers.len(), 1, "all unowned files: the environment layer");
    let got = entries(&store, &layers[0].blob.digest);
    let find = |p: &[u8]| {
        got.iter()
            .find(|e| e.0 == p)
            .unwrap_or_else(|| panic!("{:?} missing", String::from_utf8_lossy(p)))
    };
    find(b"opt/conda/share/caf\xe9-latin1.txt");
    find(format!("opt/conda/{long}").as_bytes());
    assert_eq!(
        find(b"opt/conda/share/link").2.as_deref(),
        Some(format!("{}/file.txt", "d".repeat(150)).as_bytes())
    );
    // The two identical files: the first in path order is stored, the other is a hard link.
    let copy = find(b"opt/conda/share/copy.txt");
    let original = find(format!("opt/conda/{long}").as_bytes());
    assert_eq!(copy.1, tar::EntryType::Regular);
    assert_eq!(original.1, tar::EntryType::Link);
    assert_eq!(layers[0].dedup_saved, 12);
    // Entries are sorted by path bytes, parents before children.
    let paths: Vec<_> = got.iter().map(|e| e.0.clone()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);

    // A second run over a copy made elsewhere (other inode numbers, other times) gives the
    // same bytes.
    let again = tmp.path().join("again");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&again)
        .status()
        .unwrap();
    std::fs::write(again.join("share/copy.txt"), b"same content").unwrap();
    let store2 = BlobStore::new(tmp.path().join("store2"));
    let layers2 = write_all(&again, &store2).unwrap();
    assert_eq!(layers[0].blob.digest, layers2[0].blob.digest);
    assert_eq!(layers[0].blob.diff_id, layers2[0].blob.diff_id);

    // POSIX, not GNU: long values travel in PAX headers, never in ././@LongLink entries.
    let kinds = raw_entry_types(&store, &layers[0].blob.digest);
    assert!(kinds.contains(&tar::EntryType::XHeader), "{kinds:?}");
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, tar::EntryType::GNULongName | tar::EntryType::GNULongLink)),
        "{kinds:?}"
    );
    // And GNU tar, an independent reader, sees the same long name and link target.
    let listing = gnu_tar_list(&store.path(&layers[0].blob.digest));
    assert!(listing.contains(&format!("opt/conda/{long}")), "{listing}");
    assert!(
        listing.contains(&format!(
            "opt/conda/share/link -> {}/file.txt",
            "d".repeat(150)
        )),
        "{listing}"
    );
}

fn raw_entry_types(store: &BlobStore, digest: &imgbuild_oci::Digest) -> Vec<tar::EntryType> {
    let file = std::fs::File::open(store.path(digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .raw(true)
        .map(|e| e.unwrap().header().entry_type())
        .collect()
}

/// `tar -tv` by GNU tar (which must be installed) of a gzip or (`zstd`) zstd blob.
fn gnu_tar_list(blob: &Path) -> String {
    gnu_tar_list_with(blob, "--gzip")
}

fn gnu_tar_list_with(blob: &Path, decompress: &str) -> String {
    let out = std::process::Command::new("tar")
        .arg("--list")
        .arg("--verbose")
        .arg(decompress)
        .arg("--file")
        .arg(blob)
        .output()
        .expect("GNU tar is installed");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file over 8 GiB (ustar's size limit) goes in with a PAX `size` record; GNU tar reads it
/// back with its exact size. The file is sparse, so this costs CPU (hashing and compressing
/// 8 GiB of zeros), not disk; zstd keeps that to seconds.
#[test]
fn a_file_over_eight_gib_keeps_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    let size: u64 = (8 << 30) + 4097;
    let file = std::fs::File::create(root.join("lib/huge.bin")).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    let store = BlobStore::new(tmp.path().join("store"));
    let layers = write_all(&root, &store).unwrap();
    assert_eq!(layers.len(), 1);
    assert!(
        layers[0].tar_size > size,
        "tar of {} bytes",
        layers[0].tar_size
    );
    let listing = gnu_tar_list(&store.path(&layers[0].blob.digest));
    let line = listing
        .lines()
        .find(|l| l.ends_with("opt/conda/lib/huge.bin"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.contains(&format!(" {size} ")), "{line}");
}

#[test]
fn sockets_and_fifos_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("run")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("run/app.sock")).unwrap();
    let store = BlobStore::new(tmp.path().join("store"));
    let err = write_all(&root, &store).unwrap_err().to_string();
    assert!(
        err.contains("run/app.sock") && err.contains("socket"),
        "{err}"
    );
    // Nothing half-written is left in the store.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("store/blobs/sha256"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// A registry cache as the writers see it: entries by recipe key, counting the questions.
#[derive(Debug, Default)]
struct FakeRemote {
    entries:
        std::sync::Mutex<std::collections::HashMap<String, imgbuild_layer::write::RemoteLayer>>,
    asked: std::sync::atomic::AtomicUsize,
}

impl imgbuild_layer::write::RemoteLayers for FakeRemote {
    fn get(&self, key: &str) -> Option<imgbuild_layer::write::RemoteLayer> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entries.lock().unwrap().get(key).cloned()
    }
}

#[test]
fn a_layer_the_local_cache_lacks_is_taken_from_the_remote_layers_by_recipe_key() {
    use imgbuild_layer::write::{recipe_key, write_layer, LayerEntry, RemoteLayer};
    use imgbuild_layer::{LayerOrigin, PlannedLayer};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join("lib/libbig.so"), vec![7u8; 100_000]).unwrap();
    let layer = PlannedLayer {
        owners: vec![],
        paths: vec!["lib".into(), "lib/libbig.so".into()],
        size: 100_000,
        recipe: Some("python=;big-1-0@abc".into()),
    };
    // Runner A writes it.
    let store_a = BlobStore::new(tmp.path().join("a"));
    let written = write_layer(&root, &layer, &options(None), &store_a).unwrap();
    assert_eq!(written.origin, LayerOrigin::Written);
    let key = recipe_key(&layer, &options(None)).unwrap();
    assert_eq!(written.recipe_key.as_deref(), Some(key.as_str()));

    // Runner B, empty store and layer cache: a remote entry that stays in the registry.
    let remote = std::sync::Arc::new(FakeRemote::default());
    remote.entries.lock().unwrap().insert(
        key.clone(),
        RemoteLayer {
            entry: LayerEntry::of(&written),
            in_store: false,
        },
    );
    let store_b = BlobStore::new(tmp.path().join("b"));
    let mut b = options(Some(tmp.path().join("b-layers")));
    b.remote = Some(remote.clone());
    let taken = write_layer(&root, &layer, &b, &store_b).unwrap();
    assert_eq!(taken.origin, LayerOrigin::RegistryCache);
    assert_eq!(taken.blob.digest, written.blob.digest);
    assert_eq!(taken.blob.diff_id, written.blob.diff_id);
    assert!(!store_b.contains(&taken.blob.digest), "nothing was written");
    assert!(!tmp.path().join("b-layers").exists(), "not kept locally");

    // Downloaded into the store: kept in the local layer cache too, so the next build asks
    // nobody.
    std::fs::create_dir_all(store_b.path(&written.blob.digest).parent().unwrap()).unwrap();
    std::fs::copy(
        store_a.path(&written.blob.digest),
        store_b.path(&written.blob.digest),
    )
    .unwrap();
    remote
        .entries
        .lock()
        .unwrap()
        .get_mut(&key)
        .unwrap()
        .in_store = true;
    write_layer(&root, &layer, &b, &store_b).unwrap();
    let asked = remote.asked.load(std::sync::atomic::Ordering::SeqCst);
    let again = write_layer(&root, &layer, &b, &store_b).unwrap();
    assert_eq!(again.origin, LayerOrigin::Reused);
    assert_eq!(
        remote.asked.load(std::sync::atomic::Ordering::SeqCst),
        asked
    );

    // Another prefix is another key: the remote has nothing, and the layer is written.
    let mut c = b.clone();
    c.prefix = imgbuild_fs::InstallPrefix::parse("/opt/env").unwrap();
    let other = write_layer(&root, &layer, &c, &store_b).unwrap();
    assert_eq!(other.origin, LayerOrigin::Written);
}
