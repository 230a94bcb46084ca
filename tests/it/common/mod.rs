//! Shared test setup: one fixture channel per test binary, served over HTTP; helpers to run
//! the real `imgbuild` binary and read what it wrote.

pub mod channel;
pub mod cpython;
pub mod faults;
pub mod registry;
pub mod server;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub use server::FileServer;

/// The fixture channel on disk plus its HTTP server.
pub struct Fixture {
    pub dir: PathBuf,
    pub server: FileServer,
}

/// Built once per test binary: packages are written and indexed, then served.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("imgbuild-it-channel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let busybox = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install Debian's busybox-static (apt-get install busybox-static)");
        for pkg in channel::fixture_packages(&busybox) {
            pkg.write(&dir);
        }
        channel::index(&dir);
        let server = FileServer::start(&dir);
        Fixture { dir, server }
    })
}

/// A scratch directory for one test, with a spec writer and a CLI runner.
pub struct TestContext {
    pub tmp: tempfile::TempDir,
}

impl TestContext {
    pub fn new() -> Self {
        Self {
            tmp: tempfile::Builder::new()
                .prefix("imgbuild-it-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes an environment.yml using the fixture channel over HTTP.
    pub fn spec(&self, deps: &[&str]) -> PathBuf {
        let channel = format!("{}/", fixture().server.url);
        self.spec_with_channel(&channel, deps)
    }

    pub fn spec_with_channel(&self, channel: &str, deps: &[&str]) -> PathBuf {
        let mut text = format!("name: test\nchannels:\n  - {channel}\ndependencies:\n");
        for d in deps {
            text.push_str(&format!("  - {d}\n"));
        }
        let path = self.path("environment.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `imgbuild ARGS` with a cache dir inside this test's scratch dir (unless given).
    pub fn imgbuild(&self, args: &[&str]) -> Output {
        self.imgbuild_env(args, &[])
    }

    /// Like [`TestContext::imgbuild`], with extra environment variables (an empty value unsets
    /// one). Registry credentials
    /// and Docker's config are cleared so only what the test sets is seen.
    pub fn imgbuild_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// The command [`TestContext::imgbuild_env`] runs, to start it in the background.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
        cmd.args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("IMGBUILD_REGISTRY_USER")
            .env_remove("IMGBUILD_REGISTRY_PASSWORD")
            .env_remove("SSL_CERT_FILE")
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("DOCKER_CONFIG", self.path("no-docker-config"))
            // podman's and skopeo's auth files: this test's own, empty unless it logs in.
            .env("XDG_RUNTIME_DIR", self.path("xdg-runtime"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            // No public registry is reachable from tests; they name their base when they want one.
            .env("IMGBUILD_BASE", "scratch")
            .env("IMGBUILD_CACHE_DIR", self.path("cache"));
        for (k, v) in env {
            // An empty value unsets the variable.
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd
    }
}

/// The digest from a `pushed REF sha256:…: …` summary line for `reference`.
pub fn pushed_digest(out: &Output, reference: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed {reference} ")))
        .and_then(|rest| rest.split(':').take(2).collect::<Vec<_>>().join(":").into())
        .unwrap_or_else(|| {
            panic!(
                "no push summary for {reference} in:\n{stdout}\n{}",
                stderr(out)
            )
        })
}

/// The `pushed REF …` summary line for `reference`.
pub fn push_summary(out: &Output, reference: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("pushed {reference} ")))
        .unwrap_or_else(|| {
            panic!(
                "no push summary for {reference} in:\n{stdout}\n{}",
                stderr(out)
            )
        })
        .to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success, printing stderr on failure.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "imgbuild failed ({}):\n{}",
        out.status,
        stderr(out)
    );
}

/// Asserts failure with a message containing every one of `needles`; returns stderr.
pub fn assert_fails_with(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The blob file for `sha256:…` in a layout.
pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Manifest of the first image in a layout.
pub fn manifest(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    read_json(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
}

pub fn config(layout: &Path) -> Value {
    let m = manifest(layout);
    read_json(&blob(layout, m["config"]["digest"].as_str().unwrap()))
}

/// One tar entry of a layer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub link: Option<String>,
}

/// Every entry of every layer, in order, for assertions on the image's file system.
pub fn layer_entries(layout: &Path) -> Vec<Entry> {
    manifest_entries(layout, &manifest(layout))
}

/// The image manifest for `architecture` of the index the layout's first entry names.
pub fn platform_manifest(layout: &Path, architecture: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let nested = read_json(&blob(layout, entry["digest"].as_str().unwrap()));
    let found = nested["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == architecture)
        .unwrap_or_else(|| panic!("no {architecture} manifest in {nested}"));
    read_json(&blob(layout, found["digest"].as_str().unwrap()))
}

/// ELF `e_machine` of an executable or shared object (62 x86_64, 183 aarch64).
pub fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The digest of the first layer of `m` (blobs in `layout`) whose entries satisfy `holds`.
pub fn layer_holding(layout: &Path, m: &Value, holds: impl Fn(&[Entry]) -> bool) -> Option<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            holds(&manifest_entries(
                layout,
                &serde_json::json!({ "layers": [l] }),
            ))
        })
        .map(|l| l["digest"].as_str().unwrap().to_string())
}

/// Every entry of every layer of `manifest` (whose blobs are in `layout`), in order.
pub fn manifest_entries(layout: &Path, m: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for layer in m["layers"].as_array().unwrap() {
        let path = blob(layout, layer["digest"].as_str().unwrap());
        let file = std::fs::File::open(path).unwrap();
        let reader: Box<dyn std::io::Read> =
            if layer["mediaType"].as_str().unwrap().ends_with("zstd") {
                Box::new(zstd::Decoder::new(file).unwrap())
            } else if layer["mediaType"].as_str().unwrap().ends_with(".tar") {
                Box::new(file)
            } else {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap();
            let mtime = entry.header().mtime().unwrap();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.push(Entry {
                path,
                kind,
                mode,
                mtime,
                data,
                link,
            });
        }
    }
    out
}

/// Runs a shell command, asserting success; returns stdout.
/// Runs `args` (none: the image's own Cmd) in the image `layout:tag` under podman with runc, no
/// network and the ulimits this machine needs. The image goes through containers-storage
/// under a lower-case name (podman names `oci:` images after their path, which must be
/// lower-case, and temp dirs are not) and is removed afterwards.
pub fn podman_run(layout: &Path, tag: &str, args: &[&str]) -> Output {
    podman_run_platform(layout, tag, None, args)
}

/// [`podman_run`] of the image for `arch` (`arm64`) of an index: copied for that architecture
/// and run with `--platform linux/ARCH` (under qemu, through binfmt_misc, for a foreign one).
pub fn podman_run_platform(layout: &Path, tag: &str, arch: Option<&str>, args: &[&str]) -> Output {
    let name = format!(
        "localhost/imgbuild-it-{}-{}-{}:latest",
        tag.replace(':', "-"),
        arch.unwrap_or("host"),
        std::process::id()
    );
    let pick = arch.map_or(String::new(), |a| format!("--override-arch {a} "));
    sh(&format!(
        "skopeo copy {pick}oci:{}:{tag} containers-storage:{name}",
        layout.display()
    ));
    let platform: Vec<String> = arch
        .map(|a| vec!["--platform".to_string(), format!("linux/{a}")])
        .unwrap_or_default();
    let out = Command::new("podman")
        .args(["--runtime", "runc", "run", "--rm", "--network", "none"])
        .args(&platform)
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &name,
        ])
        .args(args)
        .output()
        .unwrap();
    let _ = Command::new("podman").args(["rmi", "-f", &name]).output();
    out
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The conda-meta package records in the image at `layout` (prefix `/opt/conda`), read straight
/// from its layers; imgbuild's SBOM files beside them are not records.
pub fn conda_meta_records(layout: &Path) -> Vec<Value> {
    layer_entries(layout)
        .into_iter()
        .filter(|e| {
            e.path.starts_with("opt/conda/conda-meta/")
                && e.path.ends_with(".json")
                && !e.path.starts_with("opt/conda/conda-meta/imgbuild.")
        })
        .map(|e| serde_json::from_slice(&e.data).unwrap())
        .collect()
}

/// Writes an OCI layout at `dir` with one image (tag `tag`, linux/amd64) whose one layer is
/// the uncompressed tar `layer`; returns the manifest digest.
pub fn single_layer_layout(dir: &Path, layer: &[u8], tag: &str) -> String {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let h = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "test: host glibc"}],
    });
    let (cfg_digest, cfg_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (m_digest, m_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
                        "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    m_digest
}

/// Runs ../shared/tools/validate-image.sh on `layout_ref` (`DIR:TAG`), with `command` to run
/// under podman when given; returns its report. Every check must pass, except one: Debian's
/// umoci (0.4.7) refuses zstd layers ("blob is not correct mediatype: …tar+zstd"), so for an
/// image whose layers are all zstd that one failure is the only one allowed — blobs, diff_ids,
/// skopeo and podman still read it. A gzip image must pass umoci too.
pub fn validate_image(layout_ref: &str, command: Option<&str>) -> String {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/validate-image.sh");
    assert!(
        script.exists(),
        "{} not found: shared/ must sit beside the repository",
        script.display()
    );
    let report = sh(&format!(
        "{} {layout_ref}{} 2>&1 || true",
        script.display(),
        command.map(|c| format!(" -- {c}")).unwrap_or_default()
    ));
    let failures: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    let umoci_without_zstd = |l: &&str| {
        l.starts_with("FAIL  umoci unpack")
            && l.contains(
                "blob is not correct mediatype: application/vnd.oci.image.layer.v1.tar+zstd",
            )
    };
    assert!(
        failures.iter().all(umoci_without_zstd),
        "validate-image.sh failed:\n{report}"
    );
    assert!(report.contains("ok    blobs and diff_ids"), "{report}");
    report
}
