//! Builds real conda packages (`.conda` and `.tar.bz2`) and indexes them with rattler_index.

use std::fs;
use std::path::{Path, PathBuf};

use rattler_conda_types::compression_level::CompressionLevel;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The 32-character placeholder of conda-build's classic packages; a binary file carrying it
/// limits the install prefix to 32 characters.
pub const PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";

pub enum Content {
    /// A regular file; `placeholder` marks it for prefix replacement (text or binary mode).
    File {
        bytes: Vec<u8>,
        executable: bool,
        placeholder: Option<&'static str>,
    },
    Symlink(&'static str),
}

pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    pub build: &'static str,
    /// `linux-64` or `noarch`.
    pub subdir: &'static str,
    /// `python` or `generic` for noarch packages.
    pub noarch: Option<&'static str>,
    pub depends: Vec<&'static str>,
    pub files: Vec<(&'static str, Content)>,
    pub entry_points: Vec<&'static str>,
    pub conda_format: bool,
}

impl Package {
    pub fn file_name(&self) -> String {
        let ext = if self.conda_format {
            "conda"
        } else {
            "tar.bz2"
        };
        format!("{}-{}-{}.{ext}", self.name, self.version, self.build)
    }

    /// Writes the package archive into `channel/<subdir>/` and returns its path.
    pub fn write(&self, channel: &Path) -> PathBuf {
        let work = tempfile::tempdir().unwrap();
        let root = work.path();
        let mut paths_json = Vec::new();
        let mut all = Vec::new();
        for (rel, content) in &self.files {
            let dest = root.join(rel);
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            match content {
                Content::File {
                    bytes,
                    executable,
                    placeholder,
                } => {
                    fs::write(&dest, bytes).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if *executable { 0o755 } else { 0o644 };
                    fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
                    let mut entry = json!({
                        "_path": rel,
                        "path_type": "hardlink",
                        "sha256": hex::encode(Sha256::digest(bytes)),
                        "size_in_bytes": bytes.len(),
                    });
                    if let Some(ph) = placeholder {
                        let binary = bytes.contains(&0);
                        entry["prefix_placeholder"] = json!(ph);
                        entry["file_mode"] = json!(if binary { "binary" } else { "text" });
                    }
                    paths_json.push(entry);
                }
                Content::Symlink(target) => {
                    std::os::unix::fs::symlink(target, &dest).unwrap();
                    paths_json
                        .push(json!({"_path": rel, "path_type": "softlink", "size_in_bytes": 0}));
                }
            }
            all.push(root.join(rel));
        }
        let mut index = json!({
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": 0,
            "depends": self.depends,
            "license": "MIT",
            "subdir": self.subdir,
            "timestamp": 1_700_000_000_000u64,
        });
        // Like pytorch's CPU variants: a track feature makes the solver prefer other builds
        // when both are possible.
        if self.build.starts_with("cpu") {
            index["track_features"] = json!("cpuonly");
        }
        if let Some(kind) = self.noarch {
            index["noarch"] = json!(kind);
        } else {
            index["arch"] = json!("x86_64");
            index["platform"] = json!("linux");
        }
        fs::create_dir_all(root.join("info")).unwrap();
        write_json(&root.join("info/index.json"), &index);
        write_json(
            &root.join("info/paths.json"),
            &json!({"paths": paths_json, "paths_version": 1}),
        );
        all.push(root.join("info/index.json"));
        all.push(root.join("info/paths.json"));
        if self.noarch == Some("python") {
            write_json(
                &root.join("info/link.json"),
                &json!({"noarch": {"type": "python", "entry_points": self.entry_points}, "package_metadata_version": 1}),
            );
            all.push(root.join("info/link.json"));
        }
        let dir = channel.join(self.subdir);
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join(self.file_name());
        let file = fs::File::create(&out).unwrap();
        if self.conda_format {
            let stem = self.file_name().trim_end_matches(".conda").to_string();
            rattler_package_streaming::write::write_conda_package(
                file,
                root,
                &all,
                CompressionLevel::Default,
                Some(1),
                &stem,
                None,
                None,
            )
            .unwrap();
        } else {
            rattler_package_streaming::write::write_tar_bz2_package(
                file,
                root,
                &all,
                CompressionLevel::Default,
                None,
                None,
            )
            .unwrap();
        }
        out
    }
}

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// Runs rattler_index over `channel` (every subdir present; noarch is created if missing). On
/// a thread of its own, so that it also works when called from inside a tokio runtime (the
/// library tests are async, and the fixture channel is made by whichever test needs it first).
pub fn index(channel: &Path) {
    let channel = channel.to_path_buf();
    std::thread::spawn(move || index_here(&channel))
        .join()
        .expect("indexing the channel panicked");
}

fn index_here(channel: &Path) {
    fs::create_dir_all(channel.join("noarch")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rattler_index::index_fs(rattler_index::IndexFsConfig {
        channel: channel.to_path_buf(),
        target_platform: None,
        repodata_patch: None,
        write_zst: false,
        write_shards: false,
        repodata_revisions: Vec::new(),
        package_revision_assignment: Default::default(),
        force: true,
        max_parallel: 2,
        multi_progress: None,
    }))
    .unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), incompressible like real binaries.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn text(s: String, placeholder: bool, executable: bool) -> Content {
    Content::File {
        bytes: s.into_bytes(),
        executable,
        placeholder: placeholder.then_some(PLACEHOLDER),
    }
}

/// The standard fixture set: a static busybox, a prefix-replaced script, a binary placeholder,
/// a stand-in python with a noarch-python package and entry point, and a big package.
pub fn fixture_packages(busybox: &[u8]) -> Vec<Package> {
    vec![
        Package {
            name: "busybox",
            version: "1.36.1",
            build: "h0_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec![],
            files: vec![(
                "bin/busybox",
                Content::File {
                    bytes: busybox.to_vec(),
                    executable: true,
                    placeholder: None,
                },
            )],
            entry_points: vec![],
            conda_format: true,
        },
        Package {
            name: "whereami",
            version: "1.0",
            build: "h0_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["busybox"],
            files: vec![
                (
                    "bin/whereami",
                    text(
                        format!("#!{PLACEHOLDER}/bin/busybox sh\necho \"prefix=$(echo {PLACEHOLDER})\"\n"),
                        true,
                        true,
                    ),
                ),
                ("bin/wai", Content::Symlink("whereami")),
                ("share/whereami/README", text("whereami prints its install prefix\n".into(), false, false)),
            ],
            entry_points: vec![],
            conda_format: false,
        },
        Package {
            name: "binlib",
            version: "2.1",
            build: "h0_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["__glibc >=2.17"],
            files: vec![
                (
                    "lib/libbinlib.so.2",
                    Content::File {
                        bytes: [b"\x7fELF\0\0fake\0".as_slice(), PLACEHOLDER.as_bytes(), b"/share/binlib\0tail\0"].concat(),
                        executable: true,
                        placeholder: Some(PLACEHOLDER),
                    },
                ),
                ("lib/libbinlib.so", Content::Symlink("libbinlib.so.2")),
            ],
            entry_points: vec![],
            conda_format: true,
        },
        Package {
            name: "python",
            version: "3.10.0",
            build: "h0_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["busybox"],
            files: vec![
                (
                    "bin/python3.10",
                    text(format!("#!{PLACEHOLDER}/bin/busybox sh\necho stand-in python \"$@\"\n"), true, true),
                ),
                ("bin/python", Content::Symlink("python3.10")),
                ("lib/python3.10/os.py", text("# stand-in standard library\n".into(), false, false)),
            ],
            entry_points: vec![],
            conda_format: false,
        },
        Package {
            name: "hello-py",
            version: "1.0",
            build: "pyh0_0",
            subdir: "noarch",
            noarch: Some("python"),
            depends: vec!["python"],
            files: vec![
                (
                    "site-packages/hello_py/__init__.py",
                    text("def main():\n    print('hello')\n".into(), false, false),
                ),
                ("site-packages/hello_py-1.0.dist-info/METADATA", text("Name: hello-py\nVersion: 1.0\n".into(), false, false)),
            ],
            entry_points: vec!["hello-py = hello_py:main"],
            conda_format: true,
        },
        // An activation script, as many real packages ship (gdal, openjdk, cuda-nvcc, …).
        Package {
            name: "actpkg",
            version: "1.0",
            build: "0",
            subdir: "noarch",
            noarch: Some("generic"),
            depends: vec![],
            files: vec![
                (
                    "etc/conda/activate.d/actpkg.sh",
                    text(
                        "export ACTPKG_HOME=\"$CONDA_PREFIX/share/actpkg\"\nexport ACTPKG_MODE=fast\n\
                         export PATH=\"$CONDA_PREFIX/libexec/actpkg:$PATH\"\n"
                            .into(),
                        false,
                        false,
                    ),
                ),
                ("share/actpkg/data.txt", text("data\n".into(), false, false)),
            ],
            entry_points: vec![],
            conda_format: true,
        },
        // A CPU build and a CUDA build of the same package, like pytorch.
        Package {
            name: "torchlike",
            version: "2.0",
            build: "cpu_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec![],
            files: vec![("lib/torchlike.txt", text("cpu\n".into(), false, false))],
            entry_points: vec![],
            conda_format: true,
        },
        Package {
            name: "torchlike",
            version: "2.0",
            build: "cuda118_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["__cuda >=11.8"],
            files: vec![("lib/torchlike.txt", text("cuda\n".into(), false, false))],
            entry_points: vec![],
            conda_format: true,
        },
        // Only a CUDA build exists: it must resolve with --cuda and fail without it.
        Package {
            name: "cudalib",
            version: "1.0",
            build: "cuda118_0",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["__cuda >=11.8"],
            files: vec![("lib/libcudalib.txt", text("built for CUDA 11.8\n".into(), false, false))],
            entry_points: vec![],
            conda_format: true,
        },
        Package {
            name: "bigdata",
            version: "1.0",
            build: "0",
            subdir: "noarch",
            noarch: Some("generic"),
            depends: vec![],
            files: vec![
                (
                    "share/bigdata/weights.bin",
                    Content::File {
                        bytes: noise(3 << 20, 42),
                        executable: false,
                        placeholder: None,
                    },
                ),
                (
                    "share/bigdata/weights-copy.bin",
                    Content::File {
                        bytes: noise(3 << 20, 42),
                        executable: false,
                        placeholder: None,
                    },
                ),
            ],
            entry_points: vec![],
            conda_format: false,
        },
    ]
}
