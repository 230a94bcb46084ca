//! What the CLI prints, as a person or a script reads it: snapshots (insta) of stdout and of
//! the stderr lines that are not log lines, with what changes from run to run (digests,
//! times, sizes, the test's temporary directory, the fixture server's port) filtered out, as
//! uv's CLI tests do. `cargo insta review` (or `INSTA_UPDATE=always`) updates them.

use std::process::Output;

use crate::common::*;

/// stdout, then the stderr lines a person reads (errors, hints, the layer table and summary;
/// not the timestamped log lines).
fn printed(ctx: &TestContext, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An error's message may go on over several lines (the solver's explanation).
    let mut in_error = false;
    let kept: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            in_error |= l.starts_with("error:");
            in_error
                || [
                    "hint:",
                    "  layer",
                    "built ",
                    "time:",
                    "solved ",
                    "resolved ",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}\n",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        kept.join("\n")
    )
    .replace(&ctx.tmp.path().display().to_string(), "[TMP]")
    .replace(&fixture().server.url, "[CHANNEL]")
}

macro_rules! assert_printed {
    ($name:expr, $text:expr) => {
        insta::with_settings!({
            filters => vec![
                (r"sha256:[0-9a-f]{64}", "[DIGEST]"),
                (r"sha256:[0-9a-f]{12}", "[DIGEST]"),
                (r"\b\d+(\.\d+)?(ns|µs|ms|s)\b", "[TIME]"),
                (r"\b\d+(\.\d+)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
                // Sizes are right-aligned in a column.
                (r" +\[SIZE\]", " [SIZE]"),
                // The fixture's busybox is the build machine's (Debian's busybox-static).
                (r"busybox-\d+(\.\d+)*-", "busybox-[VERSION]-"),
            ],
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

#[test]
fn a_build_prints_its_digest_layers_and_summary() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami", "bigdata"]).to_str().unwrap(),
        "--base",
        "scratch",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "snap:1",
        "--big-package-threshold",
        "1MiB",
    ]);
    assert_printed!("build", printed(&ctx, &res));
}

#[test]
fn lock_prints_what_it_solved_and_wrote() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let res = ctx.imgbuild(&[
        "lock",
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        "linux/amd64",
    ]);
    assert_printed!("lock", printed(&ctx, &res));
}

#[test]
fn errors_say_what_where_and_what_to_do() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["binlib"]);
    let spec = spec.to_str().unwrap();
    let out = ctx.path("img");
    let out = out.to_str().unwrap();
    let file = ctx.path("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "cache-dir-is-a-file",
            &["--spec", spec, "--output", out, "--cache-dir", file],
        ),
        ("nothing-to-write", &["--spec", spec]),
        (
            "bad-tag",
            &["--spec", spec, "--output", out, "--tag", "my repo:tag"],
        ),
        (
            "push-without-registry-tag",
            &["--spec", spec, "--push", "--tag", "local:1"],
        ),
        (
            "prefix-too-long",
            &[
                "--spec",
                spec,
                "--base",
                "scratch",
                "--output",
                out,
                "--prefix",
                "/opt/this-prefix-is-much-longer-than-32-characters",
            ],
        ),
        (
            "unsolvable-for-arm64",
            &["--spec", spec, "--output", out, "--platform", "linux/arm64"],
        ),
        (
            "bad-size",
            &[
                "--spec",
                spec,
                "--output",
                out,
                "--max-package-size",
                "lots",
            ],
        ),
    ];
    for (name, args) in cases {
        let res = ctx.imgbuild(args);
        assert_printed!(*name, printed(&ctx, &res));
    }
}
