//! Layers written while the environment is still being installed (`EarlyLayers`) are used only
//! when they are exactly what the plan asks for, made from files that did not change since.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use imgbuild_layer::{
    collect_owners, plan_layers, write_layers, write_layers_with, EarlyLayers, LayerOrigin,
    PlanOptions, WriteOptions, WrittenLayer,
};
use imgbuild_oci::{BlobStore, Compression};

const THRESHOLD: u64 = 1 << 20;

fn options() -> WriteOptions {
    WriteOptions {
        prefix: imgbuild_fs::InstallPrefix::parse("/opt/conda").unwrap(),
        compression: Compression::Gzip,
        mtime: 0,
        layer_cache: None,
        progress: None,
        remote: None,
    }
}

fn plan_options() -> PlanOptions {
    PlanOptions {
        big_package_threshold: THRESHOLD,
        ..PlanOptions::default()
    }
}

/// Installs a package the way rattler leaves it: its files, then its conda-meta record.
fn install(root: &Path, name: &str, files: &[(&str, Vec<u8>)]) {
    for (path, bytes) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let listed: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    let record = serde_json::json!({
        "name": name, "version": "1.0", "build": "0", "build_number": 0, "depends": [],
        "subdir": "linux-64", "sha256": format!("{:064x}", name.len()),
        "fn": format!("{name}-1.0-0.conda"),
        "url": format!("https://conda.example/linux-64/{name}-1.0-0.conda"),
        "channel": "https://conda.example/",
        "files": listed,
        "paths_data": {"paths_version": 1, "paths": []},
    });
    let meta = root.join("conda-meta");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join(format!("{name}-1.0-0.json")),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A temporary directory with a staging root and a blob store in it, and early layers for them.
fn setup() -> (tempfile::TempDir, PathBuf, BlobStore, EarlyLayers) {
    setup_for(&plan_options())
}

/// [`setup`] for a plan with other options.
fn setup_for(plan: &PlanOptions) -> (tempfile::TempDir, PathBuf, BlobStore, EarlyLayers) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let store = BlobStore::new(tmp.path().join("store"));
    let early = EarlyLayers::new(
        String::new(),
        plan.big_package_threshold,
        plan.max_big_layers(),
        options(),
        store.clone(),
    );
    (tmp, root, store, early)
}

/// Installed sizes by label, as the builder reports them.
fn sizes(packages: &[(&str, u64)]) -> HashMap<String, u64> {
    packages
        .iter()
        .map(|(name, size)| (format!("{name}-1.0-0"), *size))
        .collect()
}

/// Plans and writes `root` as a build does, with what `early` wrote meanwhile.
fn write(root: &Path, store: &BlobStore, early: &EarlyLayers) -> Vec<WrittenLayer> {
    let prewritten = early.finish();
    let owners = collect_owners(root).unwrap();
    let plan = plan_layers(&owners, &plan_options()).unwrap();
    write_layers_with(root, &plan, &options(), store, &prewritten).unwrap()
}

/// The same root written with no early layers at all, into a store of its own.
fn reference(root: &Path, store_dir: &Path) -> Vec<WrittenLayer> {
    let owners = collect_owners(root).unwrap();
    let plan = plan_layers(&owners, &plan_options()).unwrap();
    write_layers(root, &plan, &options(), &BlobStore::new(store_dir)).unwrap()
}

fn digests(layers: &[WrittenLayer]) -> Vec<String> {
    layers.iter().map(|l| l.blob.digest.to_string()).collect()
}

#[test]
fn a_big_package_linked_early_is_written_once_and_equals_a_late_write() {
    let (tmp, root, store, early) = setup();

    install(&root, "big", &[("lib/big/weights.bin", bytes(1, 3 << 20))]);
    let all = sizes(&[("big", 3 << 20), ("small", 5)]);
    early.linked(&root, "big-1.0-0", &all);
    // Small packages are left to the plan.
    install(&root, "small", &[("lib/small.txt", b"small".to_vec())]);
    early.linked(&root, "small-1.0-0", &all);

    let layers = write(&root, &store, &early);
    let big = layers.iter().find(|l| l.owners == ["big-1.0-0"]).unwrap();
    assert!(
        (big.origin == LayerOrigin::WrittenWhileInstalling),
        "the early layer was used"
    );
    let small = layers.iter().find(|l| l.owners == ["small-1.0-0"]).unwrap();
    assert!(!(small.origin == LayerOrigin::WrittenWhileInstalling));
    assert_eq!(
        digests(&layers),
        digests(&reference(&root, &tmp.path().join("ref"))),
        "same bytes as a build that wrote every layer after the install"
    );
}

/// Once linking is over, the builder rewrites conda-meta records in place; an early write must
/// not read its record after that, even when it waits for a writer slot.
#[test]
fn the_record_is_read_when_the_package_is_reported_linked() {
    let (_tmp, root, store, early) = setup();
    let early = early.with_max_writers(1);
    install(
        &root,
        "big1",
        &[("lib/big1/weights.bin", bytes(3, 24 << 20))],
    );
    install(
        &root,
        "big2",
        &[("lib/big2/weights.bin", bytes(4, 3 << 20))],
    );
    let plan = plan_layers(&collect_owners(&root).unwrap(), &plan_options()).unwrap();
    let all = sizes(&[("big1", 24 << 20), ("big2", 3 << 20)]);
    early.linked(&root, "big1-1.0-0", &all);
    // big2's layer waits for big1's to finish while its record is being rewritten.
    early.linked(&root, "big2-1.0-0", &all);
    for name in ["big1", "big2"] {
        std::fs::write(root.join(format!("conda-meta/{name}-1.0-0.json")), b"").unwrap();
    }
    let prewritten = early.finish();
    let layers = write_layers_with(&root, &plan, &options(), &store, &prewritten).unwrap();
    for name in ["big1-1.0-0", "big2-1.0-0"] {
        let layer = layers.iter().find(|l| l.owners == [name]).unwrap();
        assert!(
            layer.origin == LayerOrigin::WrittenWhileInstalling,
            "{name}"
        );
    }
}

/// Under a tight --max-layers only the largest big packages keep layers of their own; the
/// others are not written early only to be written again in a group.
#[test]
fn only_packages_that_keep_a_layer_of_their_own_are_written_early() {
    // 4 layers: 1 group, the environment, and room for 2 big packages.
    let tight = PlanOptions {
        max_layers: 4,
        ..plan_options()
    };
    assert_eq!(tight.max_big_layers(), 2);
    let (_tmp, root, store, early) = setup_for(&tight);
    let all = sizes(&[
        ("huge", 5 << 20),
        ("large", 4 << 20),
        ("big", 3 << 20),
        ("tiny", 10),
    ]);
    for (name, size) in [
        ("big", 3 << 20),
        ("tiny", 10),
        ("large", 4 << 20),
        ("huge", 5 << 20),
    ] {
        install(&root, name, &[(&format!("lib/{name}.bin"), bytes(5, size))]);
        early.linked(&root, &format!("{name}-1.0-0"), &all);
    }
    let prewritten = early.finish();
    let plan = plan_layers(&collect_owners(&root).unwrap(), &tight).unwrap();
    let layers = write_layers_with(&root, &plan, &options(), &store, &prewritten).unwrap();
    let how: Vec<(String, bool)> = layers
        .iter()
        .map(|l| {
            (
                l.owners
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                l.origin == LayerOrigin::WrittenWhileInstalling,
            )
        })
        .collect();
    assert_eq!(
        how,
        [
            ("huge-1.0-0".to_string(), true),
            ("large-1.0-0".to_string(), true),
            ("big-1.0-0 tiny-1.0-0".to_string(), false),
            ("environment".to_string(), false),
        ]
    );
    // No blob was written that the image does not use (once every early write is over).
    drop(prewritten);
    let blobs = std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, layers.len());
}

#[test]
fn a_file_replaced_after_the_early_write_gets_the_layer_written_again() {
    let (tmp, root, store, early) = setup();

    install(
        &root,
        "big",
        &[
            ("lib/big/weights.bin", bytes(1, 3 << 20)),
            ("lib/shared.so", b"from big".to_vec()),
        ],
    );
    early.linked(
        &root,
        "big-1.0-0",
        &sizes(&[("big", 3 << 20), ("zlate", 10)]),
    );
    let prewritten = early.finish();
    // A package linked later clobbers a path of the big one (rattler replaces the file; "big"
    // sorts first, so it still owns the path in the plan, with the new bytes).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let replacement = root.join("lib/shared.so.new");
    std::fs::write(&replacement, b"from zlate").unwrap();
    std::fs::rename(&replacement, root.join("lib/shared.so")).unwrap();
    install(&root, "zlate", &[("lib/shared.so", b"from zlate".to_vec())]);

    let owners = collect_owners(&root).unwrap();
    let plan = plan_layers(&owners, &plan_options()).unwrap();
    let layers = write_layers_with(&root, &plan, &options(), &store, &prewritten).unwrap();
    let big = layers.iter().find(|l| l.owners == ["big-1.0-0"]).unwrap();
    assert!(
        !(big.origin == LayerOrigin::WrittenWhileInstalling),
        "the stale early layer was not used"
    );
    assert_eq!(
        digests(&layers),
        digests(&reference(&root, &tmp.path().join("ref")))
    );
}

#[test]
fn a_path_another_package_claims_first_gets_the_layer_written_again() {
    let (tmp, root, store, early) = setup();

    install(
        &root,
        "zbig",
        &[
            ("lib/zbig/weights.bin", bytes(2, 3 << 20)),
            ("lib/common.h", b"both".to_vec()),
        ],
    );
    early.linked(
        &root,
        "zbig-1.0-0",
        &sizes(&[("zbig", 3 << 20), ("aearly", 4)]),
    );
    // "aearly" sorts before "zbig": the plan gives it the shared path, so zbig's planned layer
    // has one path fewer than the one written early.
    install(&root, "aearly", &[("lib/common.h", b"both".to_vec())]);

    let layers = write(&root, &store, &early);
    let big = layers.iter().find(|l| l.owners == ["zbig-1.0-0"]).unwrap();
    assert!(!(big.origin == LayerOrigin::WrittenWhileInstalling));
    assert_eq!(
        digests(&layers),
        digests(&reference(&root, &tmp.path().join("ref")))
    );
}
