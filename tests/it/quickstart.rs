//! The README's first command: build `examples/quickstart` offline from the channel shipped
//! beside it. The channel is made by `regenerate_quickstart_channel` below.

use std::path::{Path, PathBuf};

use crate::common::channel::{index, Content, Package, PLACEHOLDER};
use crate::common::*;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart")
}

/// The quickstart packages; `hello` is the compiled `examples/quickstart/src/quickstart-hello.c`.
fn quickstart_packages(hello: Vec<u8>) -> Vec<Package> {
    let text = |s: String, placeholder: bool, executable: bool| Content::File {
        bytes: s.into_bytes(),
        executable,
        placeholder: placeholder.then_some(PLACEHOLDER),
    };
    vec![
        Package {
            name: "quickstart-hello",
            version: "1.0",
            build: "1",
            subdir: "linux-64",
            noarch: None,
            depends: vec!["quickstart-data >=1.0"],
            // A static program without libc whose greeting path carries the placeholder, so
            // the binary is relocated and runs on `--base scratch`.
            files: vec![(
                "bin/quickstart-hello",
                Content::File {
                    bytes: hello,
                    executable: true,
                    placeholder: Some(PLACEHOLDER),
                },
            )],
            entry_points: vec![],
            conda_format: true,
        },
        Package {
            name: "quickstart-data",
            version: "1.0",
            build: "0",
            subdir: "noarch",
            noarch: Some("generic"),
            depends: vec![],
            files: vec![(
                "share/quickstart/greeting.txt",
                text("hello from an imgbuild image\n".into(), false, false),
            )],
            entry_points: vec![],
            conda_format: false,
        },
    ]
}

/// Rewrites `examples/quickstart/channel`. Run by hand when the fixture format changes:
/// `cargo test -p imgbuild --test it -- --ignored regenerate_quickstart_channel`.
#[test]
#[ignore = "regenerates a committed example; run by hand"]
fn regenerate_quickstart_channel() {
    let channel = example_dir().join("channel");
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("quickstart-hello");
    sh(&format!(
        "cc -static -nostdlib -O2 -fno-stack-protector -fno-pie -no-pie \
         -fno-asynchronous-unwind-tables -Wl,--build-id=none -o {} {}",
        hello.display(),
        example_dir().join("src/quickstart-hello.c").display()
    ));
    assert!(
        std::fs::read(&hello)
            .unwrap()
            .windows(PLACEHOLDER.len())
            .any(|w| w == PLACEHOLDER.as_bytes()),
        "the program must carry the placeholder"
    );
    let _ = std::fs::remove_dir_all(&channel);
    for pkg in quickstart_packages(std::fs::read(&hello).unwrap()) {
        pkg.write(&channel);
    }
    index(&channel);
    let _ = std::fs::remove_dir_all(channel.join(".tmp"));
}

#[test]
fn quickstart_example_builds_offline_and_validates() {
    let ctx = TestContext::new();
    let out = ctx.path("quickstart");
    let spec = example_dir().join("environment.yml");
    // Exactly the README's command (with the output in the test's directory).
    let res = ctx.imgbuild(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "scratch",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "quickstart:latest",
    ]);
    assert_ok(&res);
    // Not a terminal: plain lines, no colour codes or carriage returns.
    let ctl: Vec<u8> = res
        .stderr
        .iter()
        .copied()
        .filter(|b| b.is_ascii_control() && *b != b'\n')
        .collect();
    assert!(
        ctl.is_empty(),
        "control bytes {ctl:?} in:\n{}",
        stderr(&res)
    );
    // The closing summary: digest, size and layer count, then the time of every stage.
    let log = stderr(&res);
    assert!(String::from_utf8_lossy(&res.stdout).starts_with("digest: sha256:"));
    assert!(log.contains("into 4 layers ("), "{log}");
    let time = log
        .lines()
        .find(|l| l.starts_with("time: "))
        .unwrap_or_else(|| panic!("no time line:\n{log}"));
    for stage in [
        "base ",
        "resolve ",
        "environment ",
        "sbom+config ",
        "write ",
    ] {
        assert!(time.contains(stage), "{stage} missing: {time}");
    }
    // zstd layers by default: every third-party reader here but Debian's umoci reads them.
    let m = manifest(&out);
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
    validate_image(&format!("{}:quickstart:latest", out.display()), None);
    // With --compression gzip (for older runtimes), umoci reads it too: every check passes.
    let gz = ctx.path("quickstart-gzip");
    assert_ok(&ctx.imgbuild(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "scratch",
        "--output",
        gz.to_str().unwrap(),
        "--tag",
        "quickstart:gzip",
        "--compression",
        "gzip",
    ]));
    let report = validate_image(&format!("{}:quickstart:gzip", gz.display()), None);
    assert!(report.contains("3 passed, 0 failed"), "{report}");
    // The program's compiled-in path was relocated (NUL-padded, same length)...
    let program = layer_entries(&out)
        .into_iter()
        .find(|e| e.path == "opt/conda/bin/quickstart-hello")
        .expect("program in image");
    let needle = b"/opt/conda/share/quickstart/greeting.txt\0";
    assert!(
        program.data.windows(needle.len()).any(|w| w == needle),
        "the greeting path was not relocated"
    );
    assert!(!program
        .data
        .windows(PLACEHOLDER.len())
        .any(|w| w == PLACEHOLDER.as_bytes()));
    // ...and a newcomer's first image does something when run: its Cmd prints the greeting.
    let printed = podman_run(&out, "quickstart:latest", &[]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        "hello from an imgbuild image\n",
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`), a progress line names each
/// stage and log lines are printed above it; the plain-log case is checked above.
#[test]
fn a_terminal_gets_a_progress_line() {
    let ctx = TestContext::new();
    let out = ctx.path("tty");
    let spec = example_dir().join("environment.yml");
    let cmd = format!(
        "{} build --spec {} --base scratch --output {} --cache-dir {}",
        env!("CARGO_BIN_EXE_imgbuild"),
        spec.display(),
        out.display(),
        ctx.path("cache").display()
    );
    let res = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env("IMGBUILD_BASE", "scratch")
        .output()
        .expect("util-linux script is installed");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stdout)
    );
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(text.contains("\u{1b}[2K"), "no redrawn line:\n{text}");
    for stage in [
        "solving",
        "downloading and installing packages",
        "writing the image",
    ] {
        assert!(text.contains(stage), "{stage} missing:\n{text}");
    }
    assert!(!text.contains("pushing"), "{text}");
    assert!(text.contains("digest: sha256:"), "{text}");
}

/// `--log-format json`: log lines are JSON objects with a timestamp and level, even on a
/// terminal, where no progress line is drawn then.
#[test]
fn json_logs_are_one_object_per_line() {
    let ctx = TestContext::new();
    let spec = example_dir().join("environment.yml");
    let res = ctx.imgbuild(&[
        "build",
        "--log-format",
        "json",
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "scratch",
        "--output",
        ctx.path("json").to_str().unwrap(),
    ]);
    assert_ok(&res);
    let log = stderr(&res);
    // Every line, the closing summary included, is a JSON object.
    let objects: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(objects.len() >= 4, "{log}");
    for o in &objects {
        assert!(o["timestamp"].as_str().unwrap().ends_with('Z'), "{o}");
        assert!(
            o["level"].is_string() && o["fields"]["message"].is_string(),
            "{o}"
        );
    }
    assert!(objects.iter().any(|o| o["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("solved ")));
    let summary = objects
        .iter()
        .find(|o| o["fields"]["message"] == "build finished")
        .unwrap_or_else(|| panic!("no summary event:\n{log}"));
    let digest = String::from_utf8_lossy(&res.stdout)
        .trim()
        .strip_prefix("digest: ")
        .unwrap()
        .to_string();
    assert_eq!(summary["fields"]["digest"], digest.as_str());
    let layers = objects
        .iter()
        .filter(|o| o["fields"]["message"] == "layer")
        .collect::<Vec<_>>();
    assert_eq!(summary["fields"]["layers"], layers.len());
    let sizes: u64 = layers
        .iter()
        .map(|l| l["fields"]["size"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["fields"]["compressed_bytes"], sizes);
    assert!(summary["fields"]["stages"]
        .as_str()
        .unwrap()
        .contains("write "));

    let cmd = format!(
        "{} build --log-format json --spec {} --base scratch --output {} --cache-dir {}",
        env!("CARGO_BIN_EXE_imgbuild"),
        spec.display(),
        ctx.path("json-tty").display(),
        ctx.path("cache2").display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("util-linux script is installed");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{text}");
    assert!(
        !text.contains("\u{1b}["),
        "no progress line or colour with JSON logs:\n{text}"
    );
}
