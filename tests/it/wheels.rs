//! Which wheel a pip package gets, with real PyPI releases that ship several wheels for one
//! target (charset-normalizer: cpXY, abi3 and py3-none-any; regex: two manylinux levels;
//! frozenlist; multiprocess: one pyXY-none-any per Python), a build-tagged one
//! (nvidia-cuda-nvrtc-cu11 11.7.99 with and without `-2`), a direct URL, a local wheel file, and
//! a package with no wheel for the target.
//!
//! Needs uv (`IMGBUILD_UV`) and PyPI.

use std::path::Path;

use crate::common::cpython::{glibc_base, host_python};
use crate::common::*;

/// The `pypi:` URLs of a pixi.lock, by their file names.
fn locked_wheels(lock: &Path) -> Vec<String> {
    std::fs::read_to_string(lock)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- pypi: "))
        .map(|u| u.rsplit('/').next().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn spec(ctx: &TestContext, name: &str, pip: &[&str]) -> std::path::PathBuf {
    crate::pip::pip_spec(ctx, name, pip)
}

fn lock(ctx: &TestContext, spec: &Path, platform: &str, name: &str) -> Vec<String> {
    let out = ctx.path(name);
    assert_ok(&ctx.imgbuild(&[
        "lock",
        "--spec",
        spec.to_str().unwrap(),
        "--platform",
        platform,
        "-o",
        out.to_str().unwrap(),
    ]));
    locked_wheels(&out)
}

/// The one wheel of `dist` in `wheels`.
fn wheel<'a>(wheels: &'a [String], dist: &str) -> &'a str {
    let found: Vec<&String> = wheels
        .iter()
        .filter(|w| w.starts_with(&format!("{dist}-")))
        .collect();
    assert_eq!(found.len(), 1, "{dist}: {wheels:?}");
    found[0]
}

const SEVERAL: &[&str] = &[
    "charset-normalizer==3.5.3",
    "frozenlist==1.8.0",
    "regex==2026.11.19",
    "multiprocess==0.70.15",
];

/// A wheel with one module, made here: what `pip wheel .` of a project would leave in dist/.
fn local_wheel(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("hello_local-1.0-py3-none-any.whl");
    sh(&format!(
        "python3 - <<'PY'\n\
import zipfile\n\
z = zipfile.ZipFile('{}', 'w')\n\
z.writestr('hello_local.py', 'GREETING = \"hello from a local wheel\"\\n')\n\
z.writestr('hello_local-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: hello-local\\nVersion: 1.0\\nLicense: MIT\\n')\n\
z.writestr('hello_local-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
z.writestr('hello_local-1.0.dist-info/RECORD', 'hello_local.py,,\\nhello_local-1.0.dist-info/METADATA,,\\nhello_local-1.0.dist-info/WHEEL,,\\nhello_local-1.0.dist-info/RECORD,,\\n')\n\
z.close()\n\
PY",
        path.display()
    ));
    path
}

#[test]
fn releases_with_several_wheels_get_the_installers_wheel_and_run() {
    let ctx = TestContext::new();
    let py = host_python();
    let cp = format!("cp{}", py.short.replace('.', ""));
    local_wheel(&ctx.path("dist"));
    let mut pip: Vec<&str> = SEVERAL.to_vec();
    // A direct URL (with its hash) and a local wheel file, relative to the spec.
    pip.push(
        "tqdm @ https://files.pythonhosted.org/packages/d0/30/dc54f88dd4a2b5dc8a0279bdd7270e735851848b762aeb1c1184ed1f6b14/tqdm-4.67.1-py3-none-any.whl#sha256=26445eca388f82e72884e0d580d5464cd801a3ea01e63e5601bdff9ba6a48de2",
    );
    pip.push("./dist/hello_local-1.0-py3-none-any.whl");
    let spec = spec(&ctx, "environment.yml", &pip);

    // linux/amd64: the most specific tag, the newest manylinux.
    let amd64 = lock(&ctx, &spec, "linux/amd64", "amd64.lock");
    let charset = wheel(&amd64, "charset_normalizer");
    assert!(
        charset.starts_with(&format!("charset_normalizer-3.5.3-{cp}-{cp}-"))
            && charset.contains("x86_64"),
        "{charset}"
    );
    let regex = wheel(&amd64, "regex");
    assert!(regex.contains("manylinux_2_28_x86_64"), "{regex}");
    let frozen = wheel(&amd64, "frozenlist");
    assert!(
        frozen.starts_with(&format!("frozenlist-1.8.0-{cp}-{cp}-")),
        "{frozen}"
    );
    assert_eq!(
        wheel(&amd64, "multiprocess"),
        format!("multiprocess-0.70.15-py{}-none-any.whl", &cp[2..])
    );
    assert_eq!(wheel(&amd64, "tqdm"), "tqdm-4.67.1-py3-none-any.whl");
    assert_eq!(
        wheel(&amd64, "hello_local"),
        "hello_local-1.0-py3-none-any.whl"
    );
    // linux/arm64: aarch64 wheels of the same releases.
    let arm64 = lock(&ctx, &spec, "linux/arm64", "arm64.lock");
    for dist in ["charset_normalizer", "regex", "frozenlist"] {
        let w = wheel(&arm64, dist);
        assert!(w.contains("aarch64") && w.contains(&cp), "{w}");
    }

    // The image holds the compiled variant (not the pure-Python fallback), and it all imports.
    let base = glibc_base(&ctx.path("glibc"));
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "wheels:1",
    ]);
    assert_ok(&res);
    let log = stderr(&res);
    let counted = format!(
        "built 1 conda package and {} pip packages into",
        amd64.len()
    );
    assert!(log.contains(&counted), "{counted}: {log}");
    let entries = layer_entries(&out);
    let site = format!("opt/conda/lib/python{}/site-packages", py.short);
    let md = format!(
        "{site}/charset_normalizer/md.cpython-{}-x86_64-linux-gnu.so",
        &cp[2..]
    );
    assert!(entries.iter().any(|e| e.path == md), "{md} missing");
    assert!(
        !entries
            .iter()
            .any(|e| e.path.ends_with(".dist-info/direct_url.json")
                || e.path.ends_with(".dist-info/uv_cache.json")),
        "install bookkeeping with host paths in the image"
    );
    // The local wheel is in the SBOM with the license its METADATA declares, and no file of
    // the image names the host path it was installed from.
    let sbom = entries
        .iter()
        .find(|e| e.path == "opt/conda/conda-meta/imgbuild.spdx.json")
        .expect("the SBOM");
    let doc: serde_json::Value = serde_json::from_slice(&sbom.data).unwrap();
    let local = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello-local")
        .expect("hello-local in the SBOM");
    assert_eq!(local["downloadLocation"], "NOASSERTION", "{local}");
    assert_eq!(local["licenseDeclared"], "MIT", "{local}");
    let host_dir = ctx.path("dist");
    for e in &entries {
        assert!(
            !e.data
                .windows(host_dir.as_os_str().len())
                .any(|w| w == host_dir.as_os_str().as_encoded_bytes()),
            "{} names the host path {}",
            e.path,
            host_dir.display()
        );
    }
    // Built again from the same cache: the environment comes from the environment cache (no
    // layer is read back), the SBOM still carries the licenses, and the JSON summary counts
    // conda and pip packages apart.
    let again = ctx.path("img-again");
    let res = ctx.imgbuild(&[
        "--log-format",
        "json",
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        again.to_str().unwrap(),
    ]);
    assert_ok(&res);
    let summary: serde_json::Value = stderr(&res)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|o| o["fields"]["message"] == "build finished")
        .unwrap_or_else(|| panic!("no summary: {}", stderr(&res)));
    assert_eq!(summary["fields"]["conda_packages"], 1, "{summary}");
    assert_eq!(summary["fields"]["pip_packages"], amd64.len(), "{summary}");
    assert!(
        stderr(&res).contains("environment unchanged since an earlier build"),
        "{}",
        stderr(&res)
    );
    assert_eq!(manifest(&again), manifest(&out));
    let printed = podman_run(
        &out,
        "wheels:1",
        &[
            "/opt/conda/bin/python",
            "-c",
            "import charset_normalizer, frozenlist, regex, multiprocess, tqdm, hello_local; \
             print(charset_normalizer.md.__file__.endswith('.so'), regex.sub('o', '0', 'foo'), \
             tqdm.__version__, hello_local.GREETING)",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        "True f00 4.67.1 hello from a local wheel\n",
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
}

#[test]
fn the_highest_build_tag_wins() {
    let ctx = TestContext::new();
    let spec = spec(
        &ctx,
        "environment.yml",
        &["nvidia-cuda-nvrtc-cu11==11.7.99"],
    );
    // Resolving reads metadata only: the 21 MB wheel is not downloaded.
    let wheels = lock(&ctx, &spec, "linux/amd64", "pixi.lock");
    assert_eq!(
        wheel(&wheels, "nvidia_cuda_nvrtc_cu11"),
        "nvidia_cuda_nvrtc_cu11-11.7.99-2-py3-none-manylinux1_x86_64.whl"
    );
}

#[test]
fn no_wheel_for_the_target_names_the_package_the_tag_and_the_wheels() {
    let ctx = TestContext::new();
    let py = host_python();
    let cp = format!("cp{}", py.short.replace('.', ""));
    let spec = spec(&ctx, "environment.yml", &["pywin32==306"]);
    let out = ctx.path("img");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &[
            &format!("pywin32 306 has no wheel for the target ({cp}-{cp}-manylinux_2_28_x86_64)"),
            "the index has: ",
            &format!("pywin32-306-{cp}-{cp}-win_amd64.whl"),
        ],
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    // A missing local wheel names the line and the file.
    let spec = spec_missing_local(&ctx);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &[
            "pip: entry 1",
            "cannot read the wheel",
            "gone-1.0-py3-none-any.whl",
        ],
    );
}

fn spec_missing_local(ctx: &TestContext) -> std::path::PathBuf {
    spec(ctx, "missing.yml", &["./dist/gone-1.0-py3-none-any.whl"])
}

/// The sha256 a direct reference promises is checked on the downloaded bytes before the file
/// gets its name in the wheel cache; a mismatch fails at once (no retry) and keeps nothing.
#[test]
fn a_wheel_whose_bytes_differ_from_its_hash_is_not_used() {
    let ctx = TestContext::new();
    let wrong = "00445eca388f82e72884e0d580d5464cd801a3ea01e63e5601bdff9ba6a48de2";
    let line = format!(
        "tqdm @ https://files.pythonhosted.org/packages/d0/30/dc54f88dd4a2b5dc8a0279bdd7270e735851848b762aeb1c1184ed1f6b14/tqdm-4.67.1-py3-none-any.whl#sha256={wrong}"
    );
    let spec = spec(&ctx, "environment.yml", &[&line]);
    let out = ctx.path("img");
    let cache = ctx.path("cache");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_fails_with(
        &res,
        &[
            "tqdm: https://files.pythonhosted.org/",
            "has sha256 26445eca388f82e72884e0d580d5464cd801a3ea01e63e5601bdff9ba6a48de2",
            &format!("but the lock promises {wrong}"),
        ],
    );
    assert!(!stderr(&res).contains("trying again"), "{}", stderr(&res));
    assert!(!out.join("index.json").exists());
    let kept: Vec<_> = walkdir::WalkDir::new(cache.join("wheels"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(kept.is_empty(), "left in the wheel cache: {kept:?}");
}
