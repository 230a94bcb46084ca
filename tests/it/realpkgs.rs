//! Real conda packages made by others (../shared/data/packages, see PROVENANCE.md there),
//! indexed into a channel by rattler_index and installed through the CLI. conda's own
//! malformed zlib test packages must be refused with a message naming the file and the problem.

use std::path::Path;

use crate::common::*;

/// Subdirs as PROVENANCE.md lists them. The re-zipped ca-certificates is not here: rattler_index
/// cannot read it (it panics), so it is installed from an @EXPLICIT file instead.
const SUBDIRS: &[(&str, &str)] = &[
    ("zlib-1.2.11-h7b6447c_3.conda", "linux-64"),
    ("zlib-1.2.11-h7b6447c_3.tar.bz2", "linux-64"),
    ("ripgrep-completions-14.1.1-hb0f4dca_1.conda", "linux-64"),
    ("moto-1.3.7-py_0.tar.bz2", "noarch"),
    ("conda-forge-repodata-patches-20180828-0.tar.bz2", "noarch"),
    ("_r-mutex-1.0.1-anacondar_1.tar.bz2", "noarch"),
    ("flask-0.11.1-py_0.tar.bz2", "noarch"),
    ("cph_test_data-0.0.1-0.tar.bz2", "noarch"),
];

/// A channel of the real linux-64 and noarch packages (the osx-64 ones are left out), indexed.
fn real_channel(dir: &Path) {
    let packages = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/packages");
    for (file, subdir) in SUBDIRS {
        std::fs::create_dir_all(dir.join(subdir)).unwrap();
        std::fs::copy(packages.join(file), dir.join(subdir).join(file)).unwrap();
    }
    // zlib's one dependency lives in another channel: a stand-in made here.
    crate::common::channel::Package {
        name: "libgcc-ng",
        version: "9.1.0",
        build: "standin_0",
        subdir: "linux-64",
        noarch: None,
        depends: vec![],
        files: vec![(
            "share/libgcc-ng-standin",
            crate::common::channel::Content::File {
                bytes: b"stand-in\n".to_vec(),
                executable: false,
                placeholder: None,
            },
        )],
        entry_points: vec![],
        conda_format: true,
    }
    .write(dir);
    crate::common::channel::index(dir);
}

#[test]
fn real_packages_install_and_malformed_ones_are_refused() {
    let ctx = TestContext::new();
    let channel = ctx.path("real");
    real_channel(&channel);
    let url = format!("file://{}", channel.display());

    // Each installs and lands its files under the prefix.
    for (name, file) in [
        (
            "ripgrep-completions",
            "opt/conda/share/fish/vendor_completions.d/rg.fish",
        ),
        ("cph_test_data", "opt/conda/conda-meta"),
        ("conda-forge-repodata-patches", "opt/conda/conda-meta"),
        ("_r-mutex", "opt/conda/conda-meta"),
    ] {
        let out = ctx.path(&format!("img-{name}"));
        let spec = ctx.spec_with_channel(&url, &[name]);
        let res = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_ok(&res);
        let entries = layer_entries(&out);
        assert!(
            entries.iter().any(|e| e.path.trim_end_matches('/') == file),
            "{name}: {file} not in the image"
        );
        assert!(
            entries
                .iter()
                .any(|e| e.path.starts_with(&format!("opt/conda/conda-meta/{name}-"))),
            "{name}: no conda-meta record"
        );
    }

    // The hand-re-zipped ca-certificates, from an explicit lock with its sha256.
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/packages/ca-certificates-2024.7.4-hbcca054_0.conda")
        .canonicalize()
        .unwrap();
    let explicit = ctx.path("ca.txt");
    std::fs::write(
        &explicit,
        format!(
            "@EXPLICIT\nfile://{}#6a5d6d8a1a7552dbf8c617312ef951a77d2dac09f2aeaba661deebce603a7a97\n",
            pkg.display()
        ),
    )
    .unwrap();
    let out = ctx.path("img-ca");
    let res = ctx.imgbuild(&[
        "build",
        "--lock",
        explicit.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    // Its local zip headers sit under another path and use data descriptors, but the central
    // directory and the inner archives are intact (rattler's buffered fallback reads it the
    // same way): imgbuild reads it by its central directory, and every file matches the sha256
    // paths.json gives it, so it installs.
    assert_ok(&res);
    let entries = layer_entries(&out);
    assert!(
        entries
            .iter()
            .any(|e| e.path == "opt/conda/ssl/cacert.pem" && e.data.len() > 100_000),
        "no cacert.pem in the image"
    );

    // zlib 1.2.11 from conda's test data lists lib/libz.so* as softlinks but stores them with
    // empty targets: refused, naming the package and the file; nothing half-extracted cached.
    let out = ctx.path("img-zlib");
    let spec = ctx.spec_with_channel(&url, &["zlib"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = assert_fails_with(&res, &["zlib-1.2.11-h7b6447c_3", "libz.so"]);
    assert!(!out.exists(), "{err}");
    let pkgs = ctx.path("cache/pkgs");
    let leftovers: Vec<_> = std::fs::read_dir(&pkgs)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("zlib") && !n.ends_with(".lock"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-extracted zlib left in the cache: {leftovers:?}"
    );
    assert!(
        !err.contains('\0') && !err.contains("          "),
        "raw bytes in the message:\n{err:?}"
    );
}
