//! A real Python for pip tests: a conda `python` package made from this machine's own CPython
//! tree (`sys.base_prefix`), with that prefix recorded as the placeholder the way conda-build
//! records `has_prefix` (text files in text mode, binaries in binary mode; libpython not at all,
//! see `write_package`), so the installer relocates it to the image prefix. And a base image holding the glibc that Python links to,
//! taken from this machine, so the image runs under podman without a registry.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rattler_conda_types::compression_level::CompressionLevel;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::sh;

/// What the machine's Python is.
pub struct HostPython {
    pub prefix: String,
    /// `3.11`.
    pub short: String,
    /// The file conda-style channel holding the package, as a `file://` URL.
    pub channel: String,
}

/// The machine's CPython (python3 on PATH), packaged once per test binary.
pub fn host_python() -> &'static HostPython {
    static PY: OnceLock<HostPython> = OnceLock::new();
    PY.get_or_init(|| {
        let info = sh(
            "python3 -c \"import sys,sysconfig; print(sys.base_prefix); print('%d.%d.%d' % sys.version_info[:3]); \
             print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LDLIBRARY') or '')\"",
        );
        let mut lines = info.lines().map(str::to_string);
        let (prefix, version, short, ldlibrary) = (
            lines.next().unwrap(),
            lines.next().unwrap(),
            lines.next().unwrap(),
            lines.next().unwrap_or_default(),
        );
        assert_ne!(
            prefix, "/usr",
            "the pip tests package python3's own prefix; /usr (Debian's python) would relocate \
             every /usr path. Put a self-contained CPython (pyenv, python.org build) first on PATH"
        );
        let dir = std::env::temp_dir().join(format!("imgbuild-it-python-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_package(&dir, &prefix, &version, &short, &ldlibrary);
        conda_six().write(&dir);
        super::channel::index(&dir);
        HostPython {
            prefix,
            short,
            channel: format!("file://{}", dir.display()),
        }
    })
}

/// six as conda packages it (noarch: python, its own dist-info): a Python package conda
/// installs that a pip: section may also name. Its version, 1.16.99, does not exist on PyPI
/// (as a conda-only build's would not).
fn conda_six() -> super::channel::Package {
    use super::channel::{Content, Package};
    let file = |s: &str| Content::File {
        bytes: s.as_bytes().to_vec(),
        executable: false,
        placeholder: None,
    };
    Package {
        name: "six",
        version: "1.16.99",
        build: "pyh0_0",
        subdir: "noarch",
        noarch: Some("python"),
        depends: vec!["python"],
        files: vec![
            ("site-packages/six.py", file("__version__ = '1.16.99'\n")),
            (
                "site-packages/six-1.16.99.dist-info/METADATA",
                file("Metadata-Version: 2.1\nName: six\nVersion: 1.16.99\n"),
            ),
            (
                "site-packages/six-1.16.99.dist-info/INSTALLER",
                file("conda\n"),
            ),
        ],
        entry_points: vec![],
        conda_format: true,
    }
}

/// Skipped parts of the stdlib: tests, GUI and build leftovers, and site-packages (the host's
/// own packages are not part of Python).
fn skipped(rel: &Path) -> bool {
    rel.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        matches!(
            c.as_ref(),
            "__pycache__"
                | "test"
                | "tests"
                | "idlelib"
                | "tkinter"
                | "turtledemo"
                | "ensurepip"
                | "site-packages"
        ) || c.starts_with("config-")
    })
}

fn write_package(channel: &Path, prefix: &str, version: &str, short: &str, ldlibrary: &str) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let src = Path::new(prefix);
    let exe = format!("bin/python{short}");
    let mut rels: Vec<PathBuf> = vec![PathBuf::from(&exe)];
    if !ldlibrary.is_empty() && src.join("lib").join(ldlibrary).exists() {
        // The shared libpython and the name the binary links to.
        for entry in fs::read_dir(src.join("lib")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("libpython{short}")) {
                rels.push(PathBuf::from("lib").join(name));
            }
        }
    }
    let stdlib = PathBuf::from(format!("lib/python{short}"));
    for entry in walkdir::WalkDir::new(src.join(&stdlib)).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(src).unwrap().to_path_buf();
        if skipped(&rel) || entry.file_type().is_dir() {
            continue;
        }
        rels.push(rel);
    }
    let mut paths_json = Vec::new();
    let mut files = Vec::new();
    let mut copy = |rel: &Path, paths_json: &mut Vec<Value>| {
        let from = src.join(rel);
        let to = root.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let meta = fs::symlink_metadata(&from).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
            paths_json.push(json!({"_path": rel, "path_type": "softlink", "size_in_bytes": 0}));
        } else {
            let bytes = fs::read(&from).unwrap();
            fs::write(&to, &bytes).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                &to,
                fs::Permissions::from_mode(meta.permissions().mode() & 0o755 | 0o644),
            )
            .unwrap();
            let mut e = json!({
                "_path": rel,
                "path_type": "hardlink",
                "sha256": hex::encode(Sha256::digest(&bytes)),
                "size_in_bytes": bytes.len(),
            });
            // Files holding the prefix get it replaced, text and binary (the executable's
            // RUNPATH), except libpython: CPython finds its prefix at run time from where the
            // executable is (the compiled-in one is a fallback), and the linker tail-merges
            // string constants, so `PY_VERSION` ("3.11.7") is the end of libpython's
            // "/root/.pyenv/versions/3.11.7": a binary replacement would cut sys.version to
            // " (main, …)" and break `platform`. (conda-build's placeholder is a long path
            // that no version string ends with.)
            let libpython = rel
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libpython"));
            if memchr(prefix.as_bytes(), &bytes) && !libpython {
                e["prefix_placeholder"] = json!(prefix);
                e["file_mode"] = json!(if bytes.contains(&0) { "binary" } else { "text" });
            }
            paths_json.push(e);
        }
        files.push(to);
    };
    for rel in &rels {
        copy(rel, &mut paths_json);
    }
    // The names people call Python by, and site-packages (empty, as in conda's python).
    for (link, target) in [
        ("bin/python", format!("python{short}")),
        ("bin/python3", format!("python{short}")),
    ] {
        std::os::unix::fs::symlink(&target, root.join(link)).unwrap();
        paths_json.push(json!({"_path": link, "path_type": "softlink", "size_in_bytes": 0}));
        files.push(root.join(link));
    }
    let readme = format!("lib/python{short}/site-packages/README.txt");
    fs::create_dir_all(root.join(&readme).parent().unwrap()).unwrap();
    fs::write(root.join(&readme), "site-packages\n").unwrap();
    paths_json.push(json!({"_path": readme, "path_type": "hardlink",
        "sha256": hex::encode(Sha256::digest(b"site-packages\n")), "size_in_bytes": 14}));
    files.push(root.join(&readme));

    fs::create_dir_all(root.join("info")).unwrap();
    fs::write(
        root.join("info/paths.json"),
        serde_json::to_vec_pretty(&json!({"paths": paths_json, "paths_version": 1})).unwrap(),
    )
    .unwrap();
    files.push(root.join("info/index.json"));
    files.push(root.join("info/paths.json"));
    // The same tree for linux-aarch64 too: its binaries are x86_64 and never run there, but it
    // lets an arm64 image be resolved and assembled (the pip test checks its wheels).
    for (subdir, arch) in [("linux-64", "x86_64"), ("linux-aarch64", "aarch64")] {
        let index = json!({
            "name": "python", "version": version, "build": "host_0", "build_number": 0,
            "depends": [], "license": "Python-2.0", "subdir": subdir,
            "arch": arch, "platform": "linux", "timestamp": 1_700_000_000_000u64,
        });
        fs::write(
            root.join("info/index.json"),
            serde_json::to_vec_pretty(&index).unwrap(),
        )
        .unwrap();
        let dir = channel.join(subdir);
        fs::create_dir_all(&dir).unwrap();
        let stem = format!("python-{version}-host_0");
        let out = fs::File::create(dir.join(format!("{stem}.conda"))).unwrap();
        rattler_package_streaming::write::write_conda_package(
            out,
            root,
            &files,
            CompressionLevel::Numeric(3),
            Some(2),
            &stem,
            None,
            None,
        )
        .unwrap();
    }
}

fn memchr(needle: &[u8], hay: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An OCI layout (tag `glibc`) whose one uncompressed layer holds this machine's glibc (its
/// libc6 package's libraries) and the other shared libraries the machine's Python and its
/// extension modules load (what `ldd` resolves outside the Python prefix), at the same paths.
/// Returns `oci:DIR:glibc`.
pub fn glibc_base(dir: &Path) -> String {
    glibc_base_with(dir, &[])
}

/// Like [`glibc_base`], with more of this machine's libraries (absolute paths), such as the
/// libstdc++ and libgomp that torch's wheels link against.
pub fn glibc_base_with(dir: &Path, extra: &[&str]) -> String {
    let py = host_python();
    let mut objects = vec![PathBuf::from(format!(
        "{}/bin/python{}",
        py.prefix, py.short
    ))];
    let dynload = PathBuf::from(format!("{}/lib/python{}/lib-dynload", py.prefix, py.short));
    for entry in fs::read_dir(&dynload).unwrap() {
        objects.push(entry.unwrap().path());
    }
    let mut libs: BTreeSet<String> = extra.iter().map(|l| l.to_string()).collect();
    for object in &objects {
        let out = std::process::Command::new("ldd")
            .arg(object)
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/') && !p.starts_with(&py.prefix)) {
                libs.insert(p.to_string());
            }
        }
    }
    // All of glibc's libraries, as any glibc base has them (wheels link libpthread & co.).
    let listed = sh("dpkg -L libc6");
    libs.extend(
        listed
            .lines()
            .filter(|l| l.starts_with("/lib") && l.contains(".so") && Path::new(l).is_file())
            .map(str::to_string),
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for lib in &libs {
        let rel = PathBuf::from(lib.trim_start_matches('/'));
        for ancestor in rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            dirs.insert(ancestor.to_path_buf());
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    for lib in &libs {
        let bytes = fs::read(lib).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, lib.trim_start_matches('/'), bytes.as_slice())
            .unwrap();
    }
    let layer = tar.into_inner().unwrap();
    super::single_layer_layout(dir, &layer, "glibc");
    format!("oci:{}:glibc", dir.display())
}
