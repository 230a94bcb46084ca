//! Hostile packages: a channel built here with tar entries and `paths.json` written directly
//! (not through a packer that would clean them), each trying to make the install touch a
//! canary file outside the staging root. Every one is refused before anything is linked, the
//! message names the package, the entry and the rule, the canary is unchanged, and the
//! refused package leaves nothing in the package cache.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::common::*;

/// One tar entry of the package payload.
enum Payload {
    File(&'static str, Vec<u8>),
    Symlink(&'static str, String),
    /// Any entry: name, type, link name, data (written raw, see [`raw_entry`]).
    Raw(String, tar::EntryType, String, Vec<u8>),
}

/// A tar entry whose name is written into the header as given: `tar::Header::set_path` would
/// refuse `..` and absolute names, which is exactly what a hostile package would contain.
fn raw_entry(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

fn tar_zst(entries: &[(String, tar::EntryType, String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        raw_entry(&mut tar, name, *kind, link, data);
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
}

/// Writes `name-1.0-0.conda` into `channel/noarch` with `payload` and `paths` as given.
fn hostile_package(channel: &Path, name: &str, payload: &[Payload], paths: Vec<Value>) {
    let index = json!({
        "name": name, "version": "1.0", "build": "0", "build_number": 0, "depends": [],
        "subdir": "noarch", "noarch": "generic", "license": "MIT", "timestamp": 0,
    });
    let info = vec![
        (
            "info/index.json".to_string(),
            tar::EntryType::Regular,
            String::new(),
            serde_json::to_vec(&index).unwrap(),
        ),
        (
            "info/paths.json".to_string(),
            tar::EntryType::Regular,
            String::new(),
            serde_json::to_vec(&json!({"paths": paths, "paths_version": 1})).unwrap(),
        ),
    ];
    let pkg: Vec<_> = payload
        .iter()
        .map(|p| match p {
            Payload::File(path, data) => (
                path.to_string(),
                tar::EntryType::Regular,
                String::new(),
                data.clone(),
            ),
            Payload::Symlink(path, target) => (
                path.to_string(),
                tar::EntryType::Symlink,
                target.clone(),
                Vec::new(),
            ),
            Payload::Raw(name, kind, link, data) => {
                (name.clone(), *kind, link.clone(), data.clone())
            }
        })
        .collect();
    let stem = format!("{name}-1.0-0");
    let dir = channel.join("noarch");
    std::fs::create_dir_all(&dir).unwrap();
    let mut zip =
        zip::ZipWriter::new(std::fs::File::create(dir.join(format!("{stem}.conda"))).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (entry, bytes) in [
        (
            "metadata.json".to_string(),
            br#"{"conda_pkg_format_version": 2}"#.to_vec(),
        ),
        (format!("pkg-{stem}.tar.zst"), tar_zst(&pkg)),
        (format!("info-{stem}.tar.zst"), tar_zst(&info)),
    ] {
        zip.start_file(entry, stored).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn file_entry(path: &str, size: usize) -> Value {
    json!({"_path": path, "path_type": "hardlink", "size_in_bytes": size})
}

/// A directory outside everything imgbuild owns, holding `secret.txt`.
struct Canary {
    dir: PathBuf,
}

impl Canary {
    const TEXT: &'static str = "the host's secret\n";

    fn new(ctx: &TestContext) -> Self {
        let dir = ctx.path("canary");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.txt"), Self::TEXT).unwrap();
        Self { dir }
    }

    /// `../` × 20 then the canary's absolute path without its leading `/`.
    fn via_dotdot(&self) -> String {
        format!(
            "{}{}/secret.txt",
            "../".repeat(20),
            self.dir.display().to_string().trim_start_matches('/')
        )
    }

    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.dir.join("secret.txt")).unwrap(),
            Self::TEXT,
            "the canary outside the staging root was changed or removed"
        );
        let names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "files appeared beside the canary: {names:?}"
        );
    }
}

/// Builds `deps` from `channel`; it must fail naming each of `needles`, leave the canary as
/// it was, write no image, and leave no extracted copy of `refused` in the package cache.
fn assert_refused(
    ctx: &TestContext,
    channel: &Path,
    deps: &[&str],
    refused: &str,
    needles: &[&str],
    canary: &Canary,
) {
    let spec = ctx.spec_with_channel(&format!("file://{}", channel.display()), deps);
    let out = ctx.path(&format!("img-{refused}"));
    let cache = ctx.path(&format!("cache-{refused}"));
    let res = ctx.imgbuild(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let mut all = vec![format!("refusing {refused}-1.0-0")];
    all.extend(needles.iter().map(|n| n.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_fails_with(&res, &all);
    let log = stderr(&res);
    assert!(!log.contains("panicked"), "{log}");
    canary.assert_untouched();
    assert!(!out.join("index.json").exists(), "an image was written");
    let pkgs = cache.join("pkgs");
    if pkgs.is_dir() {
        for e in std::fs::read_dir(&pkgs).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(&format!("{refused}-1.0-0")) || name.ends_with(".conda"),
                "the refused package is still extracted in the cache: {name}"
            );
        }
    }
}

#[test]
fn hostile_paths_are_refused_before_anything_is_linked() {
    let ctx = TestContext::new();
    let canary = Canary::new(&ctx);
    let channel = ctx.path("hostile-channel");
    let text = b"overwrite\n".to_vec();

    // paths.json leaves the prefix with ../ (rattler unlinked the host file, then failed).
    hostile_package(
        &channel,
        "dotdot",
        &[],
        vec![file_entry(&canary.via_dotdot(), text.len())],
    );
    // An absolute path (rattler's path resolver panicked).
    hostile_package(
        &channel,
        "absolute",
        &[],
        vec![file_entry(
            &format!("{}/secret.txt", canary.dir.display()),
            text.len(),
        )],
    );
    // A symlink only the tar holds, and a paths.json entry through it (the host file was
    // copied into the image).
    hostile_package(
        &channel,
        "tarlink",
        &[Payload::Symlink(
            "share/l",
            canary.dir.display().to_string(),
        )],
        vec![file_entry("share/l/secret.txt", Canary::TEXT.len())],
    );
    // One package installs a symlink out of the root, another writes through it.
    hostile_package(
        &channel,
        "planter",
        &[Payload::Symlink(
            "share/m",
            canary.dir.display().to_string(),
        )],
        vec![json!({"_path": "share/m", "path_type": "softlink", "size_in_bytes": 0})],
    );
    hostile_package(
        &channel,
        "writer",
        &[Payload::File("share/m/secret.txt", text.clone())],
        vec![file_entry("share/m/secret.txt", text.len())],
    );
    // A file whose size is not what paths.json declares.
    hostile_package(
        &channel,
        "liar",
        &[Payload::File("share/liar.txt", text.clone())],
        vec![file_entry("share/liar.txt", 4096)],
    );
    crate::common::channel::index(&channel);

    let cases: &[(&[&str], &str, &[&str])] = &[
        (
            &["dotdot"],
            "dotdot",
            &["leaves the prefix with '..'", "secret.txt"],
        ),
        (
            &["absolute"],
            "absolute",
            &["is an absolute path", "secret.txt"],
        ),
        (
            &["tarlink"],
            "tarlink",
            &[
                "'share/l/secret.txt'",
                "goes through share/l, a symlink in the package's files",
            ],
        ),
        (
            &["planter", "writer"],
            "writer",
            &[
                "'share/m/secret.txt'",
                "goes through share/m, a symlink that planter-1.0-0 installs",
            ],
        ),
        (
            &["liar"],
            "liar",
            &[
                "'share/liar.txt'",
                "is 10 bytes, but paths.json declares 4096",
            ],
        ),
    ];
    for (deps, refused, needles) in cases {
        assert_refused(&ctx, &channel, deps, refused, needles, &canary);
    }
}

/// The image config's `Env` as `KEY=VALUE` strings.
fn image_env(layout: &Path) -> Vec<String> {
    config(layout)["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// A package's activate.d script is code by whoever published the package. By default it is
/// read, not run: a script that is more than plain assignments is left out with a warning
/// naming it and its line, and the command in it never runs. With --run-activation-scripts it
/// runs in a sandbox: no network, the environment read-only, a throwaway HOME.
#[test]
fn activation_scripts_are_read_not_run_unless_asked_and_then_sandboxed() {
    let ctx = TestContext::new();
    let canary = Canary::new(&ctx);
    let channel = ctx.path("activation-channel");
    let script = |body: String| {
        let len = body.len();
        (body.into_bytes(), len)
    };
    let (evil, evil_len) = script(format!(
        "export PLAIN=yes\ntouch '{}/ran'\n",
        canary.dir.display()
    ));
    hostile_package(
        &channel,
        "evil",
        &[Payload::File("etc/conda/activate.d/evil.sh", evil)],
        vec![file_entry("etc/conda/activate.d/evil.sh", evil_len)],
    );
    let (probe, probe_len) = script(
        "export RAN_HOME=\"$HOME\"\n\
         if touch \"$CONDA_PREFIX/written\" 2>/dev/null; then export PREFIX_WRITABLE=yes; \
         else export PREFIX_WRITABLE=no; fi\n\
         export NET_DEVICES=\"$(tail -n +3 /proc/net/dev | wc -l)\"\n\
         export PATH=\"$CONDA_PREFIX/probe-bin:$PATH\"\n"
            .to_string(),
    );
    hostile_package(
        &channel,
        "probe",
        &[Payload::File("etc/conda/activate.d/probe.sh", probe)],
        vec![file_entry("etc/conda/activate.d/probe.sh", probe_len)],
    );
    crate::common::channel::index(&channel);
    let spec = ctx.spec_with_channel(&format!("file://{}", channel.display()), &["evil"]);
    let build = |out: &str, extra: &[&str]| {
        let out = ctx.path(out);
        let mut args = vec![
            "build",
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let res = ctx.imgbuild(&args);
        assert_ok(&res);
        (image_env(&out), stderr(&res))
    };

    let (env, log) = build("read", &[]);
    canary.assert_untouched();
    assert!(
        log.contains("activation script etc/conda/activate.d/evil.sh is not used")
            && log.contains("line 2")
            && log.contains("runs a command")
            && log.contains("--run-activation-scripts"),
        "{log}"
    );
    assert!(!env.iter().any(|e| e.starts_with("PLAIN=")), "{env:?}");

    // Asked for: the scripts run, sandboxed.
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("  - evil\n", "  - probe\n"),
    )
    .unwrap();
    let (env, log) = build("run", &["--run-activation-scripts"]);
    assert!(log.contains("ran activation scripts in a sandbox"), "{log}");
    assert!(env.contains(&"PREFIX_WRITABLE=no".to_string()), "{env:?}");
    assert!(
        env.contains(&"NET_DEVICES=1".to_string()),
        "only loopback: {env:?}"
    );
    assert!(
        env[0].starts_with("PATH=/opt/conda/bin:/opt/conda/probe-bin:"),
        "{env:?}"
    );
    let home = env
        .iter()
        .find_map(|e| e.strip_prefix("RAN_HOME="))
        .unwrap_or_else(|| panic!("{env:?}"));
    assert!(
        home.contains("imgbuild-activation-") && !std::path::Path::new(home).exists(),
        "HOME was {home}, not a throwaway directory"
    );
    // The same package without the flag: the script is read, and refused at its first line
    // ($HOME is the build host's, not the container's).
    let (env, log) = build("probe-read", &[]);
    assert!(
        log.contains("probe.sh is not used")
            && log.contains("line 1")
            && log.contains("uses $HOME"),
        "{log}"
    );
    assert!(!env.iter().any(|e| e.starts_with("RAN_HOME=")), "{env:?}");
}

/// A tar entry of `size` zero bytes whose header is written directly (no 4 GiB in memory):
/// for a decompression bomb.
fn zero_file_tar(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.resize(tar.len() + size.div_ceil(512) as usize * 512 + 1024, 0);
    tar
}

/// Archive entries no package needs, each trying to reach the canary or to fill the disk:
/// refused while extracting, before the entry is written, naming the package, the entry and
/// the rule; the canary is unchanged and the package leaves nothing in the cache.
#[test]
fn hostile_archive_entries_are_refused_while_extracting() {
    let ctx = TestContext::new();
    let canary = Canary::new(&ctx);
    let channel = ctx.path("archive-channel");
    let secret = canary.dir.join("secret.txt").display().to_string();
    let raw = |name: &str, kind, link: &str, data: &[u8]| {
        Payload::Raw(name.to_string(), kind, link.to_string(), data.to_vec())
    };
    use tar::EntryType as T;
    let packages: Vec<(&str, Vec<Payload>, Vec<Value>)> = vec![
        ("fifo", vec![raw("share/fifo", T::Fifo, "", b"")], vec![]),
        ("chardev", vec![raw("dev/zero", T::Char, "", b"")], vec![]),
        ("blockdev", vec![raw("dev/sda", T::Block, "", b"")], vec![]),
        (
            "hardout",
            vec![raw("share/h", T::Link, &secret, b"")],
            vec![file_entry("share/h", Canary::TEXT.len())],
        ),
        (
            "hardup",
            vec![raw("share/h", T::Link, &canary.via_dotdot(), b"")],
            vec![],
        ),
        (
            "tardotdot",
            vec![raw(
                &canary.via_dotdot().replace("secret.txt", "new.txt"),
                T::Regular,
                "",
                b"x",
            )],
            vec![],
        ),
        (
            "tarabsolute",
            vec![raw(
                &secret.replace("secret.txt", "new.txt"),
                T::Regular,
                "",
                b"x",
            )],
            vec![],
        ),
        (
            "tarthrough",
            vec![
                raw(
                    "share/l",
                    T::Symlink,
                    &canary.dir.display().to_string(),
                    b"",
                ),
                raw("share/l/new.txt", T::Regular, "", b"x"),
            ],
            vec![],
        ),
        (
            "badhash",
            vec![Payload::File("share/data.txt", b"real bytes\n".to_vec())],
            vec![
                json!({"_path": "share/data.txt", "path_type": "hardlink", "size_in_bytes": 11,
                        "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}),
            ],
        ),
        ("missing", vec![], vec![file_entry("share/missing.txt", 4)]),
    ];
    for (name, payload, paths) in &packages {
        hostile_package(&channel, name, payload, paths.clone());
    }
    // A decompression bomb: a few hundred bytes of .tar.bz2 that expand to 256 MiB of zeros.
    let bomb_dir = ctx.path("bomb");
    std::fs::create_dir_all(bomb_dir.join("info")).unwrap();
    std::fs::write(
        bomb_dir.join("info/index.json"),
        serde_json::to_vec(&json!({"name": "bomb", "version": "1.0", "build": "0",
            "build_number": 0, "depends": [], "subdir": "noarch", "noarch": "generic"}))
        .unwrap(),
    )
    .unwrap();
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let index = std::fs::read(bomb_dir.join("info/index.json")).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("info/index.json").unwrap();
        h.set_size(index.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &index[..]).unwrap();
        b.finish().unwrap();
    }
    tar.truncate(tar.len() - 1024); // drop the end-of-archive marker; the zeros follow
    tar.extend(zero_file_tar("share/zeros.bin", 256 << 20));
    let raw_tar = ctx.path("bomb.tar");
    std::fs::write(&raw_tar, &tar).unwrap();
    drop(tar);
    sh(&format!(
        "bzip2 -9 -c {} > {}/noarch/bomb-1.0-0.tar.bz2",
        raw_tar.display(),
        channel.display()
    ));
    let bomb_size = std::fs::metadata(channel.join("noarch/bomb-1.0-0.tar.bz2"))
        .unwrap()
        .len();
    assert!(bomb_size < 300_000, "the bomb is {bomb_size} bytes");
    crate::common::channel::index(&channel);

    let cases: &[(&str, &[&str])] = &[
        (
            "fifo",
            &[
                "'share/fifo'",
                "is a FIFO: packages hold only files, directories and links",
            ],
        ),
        ("chardev", &["'dev/zero'", "is a character device"]),
        ("blockdev", &["'dev/sda'", "is a block device"]),
        (
            "hardout",
            &[
                "'share/h'",
                "is a hard link to",
                "which is not a file earlier in the package",
            ],
        ),
        (
            "hardup",
            &["'share/h'", "which is not a file earlier in the package"],
        ),
        ("tardotdot", &["leaves the package with '..'"]),
        ("tarabsolute", &["is an absolute path"]),
        (
            "tarthrough",
            &[
                "'share/l/new.txt'",
                "goes through share/l, a symlink earlier in the archive",
            ],
        ),
        (
            "badhash",
            &[
                "'share/data.txt'",
                "has sha256",
                "but paths.json declares 0000000000",
            ],
        ),
        (
            "missing",
            &["'share/missing.txt'", "is not in the package's archive"],
        ),
    ];
    for (refused, needles) in cases {
        assert_refused(&ctx, &channel, &[refused], refused, needles, &canary);
    }

    // The bomb, under a limit of 16 MiB: refused at the entry that crosses it, quickly, and
    // without writing what it promised.
    let spec = ctx.spec_with_channel(&format!("file://{}", channel.display()), &["bomb"]);
    let cache = ctx.path("cache-bomb");
    let started = std::time::Instant::now();
    let res = ctx.imgbuild(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ctx.path("img-bomb").to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--max-package-size",
        "16MiB",
    ]);
    assert_fails_with(
        &res,
        &[
            "refusing bomb-1.0-0",
            "'share/zeros.bin'",
            "takes the package past 16.0 MiB expanded",
            "--max-package-size",
        ],
    );
    let took = started.elapsed();
    let du = sh(&format!("du -sb {} | cut -f1", cache.display()));
    let cache_bytes: u64 = du.trim().parse().unwrap();
    assert!(
        cache_bytes < 1 << 20,
        "the cache holds {cache_bytes} bytes after the refusal"
    );
    eprintln!("bomb: {bomb_size} bytes of .tar.bz2 for 256 MiB, refused in {took:.2?}, cache {cache_bytes} bytes");
}
