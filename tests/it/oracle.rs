//! py-rattler (from PyPI) as a reference installer: the same solve installed by py-rattler into
//! a real directory at the prefix path must equal imgbuild's image contents at that prefix:
//! same paths, same bytes, same symlink targets, same executable bits. Every accepted
//! difference is listed here with its reason.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// The Python with py-rattler: `IMGBUILD_ORACLE_PYTHON`, else the venv `.ci/run` prepares.
fn oracle_python() -> String {
    if let Ok(python) = std::env::var("IMGBUILD_ORACLE_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/oracle-venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    panic!(
        "no Python with py-rattler: run the tests through `bash .ci/run` (it creates target/oracle-venv), \
         or set IMGBUILD_ORACLE_PYTHON to one (python3 -m venv v && v/bin/pip install py-rattler==0.28.0)"
    )
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir,
    File { bytes: Vec<u8>, executable: bool },
    Link(String),
}

/// Host fields imgbuild strips from conda-meta records (see builder/normalize.rs).
const STRIPPED: &[&str] = &["extracted_package_dir", "package_tarball_full_path", "link"];

fn normalize_record(bytes: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    for k in STRIPPED {
        v.as_object_mut().unwrap().remove(*k);
    }
    // py-rattler 0.28 records `sha256_in_prefix` on softlink entries; rattler 0.55 linking into
    // a staging root with an alternative target prefix leaves it out. It is informational (the
    // link itself is compared above and identical), so it is not compared.
    if let Some(paths) = v["paths_data"]["paths"].as_array_mut() {
        for entry in paths.iter_mut().filter(|e| e["path_type"] == "softlink") {
            entry.as_object_mut().unwrap().remove("sha256_in_prefix");
        }
    }
    // Key order differs between rattler versions (py-rattler 0.28 writes `requested_specs`
    // after `paths_data`); JSON readers do not care, so keys are compared sorted.
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sorted(v)).unwrap()
}

fn tree_from_dir(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = p.symlink_metadata().unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Node::Link(
                        std::fs::read_link(&p)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    ),
                );
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &p, out);
            } else {
                use std::os::unix::fs::PermissionsExt;
                out.insert(
                    rel,
                    Node::File {
                        bytes: std::fs::read(&p).unwrap(),
                        executable: meta.permissions().mode() & 0o111 != 0,
                    },
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}

#[test]
fn py_rattler_installs_the_same_tree_as_imgbuild() {
    let python = oracle_python();
    let ctx = TestContext::new();
    let prefix = format!("/opt/imgbuild-oracle-{}", std::process::id());
    let deps = ["whereami", "binlib", "hello-py", "actpkg", "bigdata"];
    let channel = format!("file://{}", fixture().dir.display());
    let script = format!(
        r#"
import asyncio, rattler
async def main():
    vps = [rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString(b))
           for n, v, b in [("__unix", "0", "0"), ("__linux", "5.10", "0"), ("__glibc", "2.28", "0"), ("__archspec", "1", "x86_64")]]
    records = await rattler.solve([rattler.Channel({channel:?})], {deps:?}, platforms=["linux-64", "noarch"], virtual_packages=vps)
    await rattler.install(records, {prefix:?}, cache_dir={cache:?}, platform=rattler.Platform("linux-64"), execute_link_scripts=False, show_progress=False,
                          # py-rattler 0.28 forwards the wrapper, not the native spec.
                          requested_specs=[rattler.MatchSpec(d)._match_spec for d in {deps:?}])
    print(len(records))
asyncio.run(main())
"#,
        cache = ctx.path("py-cache").display().to_string(),
    );
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let cleanup = scopeguard(&prefix);
    // The status says how it ended: a signal leaves stderr empty (seen once in a full run,
    // not reproduced alone).
    assert!(
        out.status.success(),
        "py-rattler failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = tree_from_dir(Path::new(&prefix));

    let layout = ctx.path("img");
    let spec = ctx.spec_with_channel(&channel, &deps);
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--prefix",
        &prefix,
        "--output",
        layout.to_str().unwrap(),
    ]));
    let in_image = prefix.trim_start_matches('/').to_string() + "/";
    let mut ours = BTreeMap::new();
    for e in layer_entries(&layout) {
        let Some(rel) = e
            .path
            .trim_end_matches('/')
            .strip_prefix(&in_image)
            .map(str::to_string)
        else {
            continue;
        };
        let node = match e.kind {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => Node::Link(e.link.clone().unwrap()),
            tar::EntryType::Link => {
                // A hard link to an identical file earlier in the layer: same bytes as its target.
                let target = e.link.clone().unwrap();
                let rel_target = target.strip_prefix(&in_image).unwrap().to_string();
                match ours.get(&rel_target) {
                    Some(Node::File { bytes, .. }) => Node::File {
                        bytes: bytes.clone(),
                        executable: e.mode & 0o111 != 0,
                    },
                    other => panic!("hard link {rel} -> {rel_target} ({other:?})"),
                }
            }
            _ => Node::File {
                bytes: e.data.clone(),
                executable: e.mode & 0o111 != 0,
            },
        };
        ours.insert(rel, node);
    }

    // Accepted differences, each with its reason:
    // - CACHEDIR.TAG: rattler marks every prefix as a cache dir; imgbuild removes it (not image content).
    let mut reference = reference;
    reference.remove("CACHEDIR.TAG");
    // - conda-meta/imgbuild.spdx.json: imgbuild's SBOM (its own layer), not part of the env.
    assert!(ours.remove("conda-meta/imgbuild.spdx.json").is_some());
    // - conda-meta/history: rattler leaves it empty; imgbuild writes the revision conda would
    //   (checked here on its own, the way conda's history.py parses it).
    let history = match (
        reference.remove("conda-meta/history"),
        ours.remove("conda-meta/history"),
    ) {
        (Some(Node::File { bytes: empty, .. }), Some(Node::File { bytes, .. })) => {
            assert!(empty.is_empty());
            String::from_utf8(bytes).unwrap()
        }
        other => panic!("conda-meta/history: {other:?}"),
    };
    check_history_like_conda(&python, &history, &deps);
    // - conda-meta/*.json: imgbuild strips host cache paths (STRIPPED).
    for map in [&mut reference, &mut ours] {
        for (path, node) in map.iter_mut() {
            if path.starts_with("conda-meta/") && path.ends_with(".json") {
                if let Node::File { bytes, .. } = node {
                    *bytes = normalize_record(bytes);
                }
            }
        }
    }
    let only_ref: Vec<_> = reference
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .collect();
    let only_ours: Vec<_> = ours
        .keys()
        .filter(|k| !reference.contains_key(*k))
        .collect();
    assert!(
        only_ref.is_empty() && only_ours.is_empty(),
        "only in py-rattler: {only_ref:?}\nonly in imgbuild: {only_ours:?}"
    );
    let differing: Vec<_> = reference
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    let show = |k: &String| match (reference.get(k), ours.get(k)) {
        (Some(Node::File { bytes: a, .. }), Some(Node::File { bytes: b, .. })) => {
            format!(
                "{k}:\n  py-rattler: {}\n  imgbuild:   {}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            )
        }
        (a, b) => format!("{k}: {a:?} vs {b:?}"),
    };
    assert!(
        differing.is_empty(),
        "differ: {}",
        differing
            .iter()
            .map(|k| show(k))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(reference.len() > 20, "compared {} paths", reference.len());
    drop(cleanup);
}

/// Parses `history` with the regular expressions of conda's `history.py` and checks that the
/// requested specs are exactly `deps` (each a valid MatchSpec for py-rattler) and that one
/// `+channel/subdir::name-version-build` line names every package of the environment.
fn check_history_like_conda(python: &str, history: &str, deps: &[&str]) {
    let script = r##"
import ast, re, sys, rattler
text = sys.stdin.read()
heads = [l for l in text.splitlines() if re.match(r"==>\s*(.+?)\s*<==", l)]
assert len(heads) == 1, heads
dists = [l[1:] for l in text.splitlines() if l.startswith("+")]
specs = None
for line in text.splitlines():
    m = re.match(r"#\s*(\w+)\s*specs:\s*(.+)?", line)
    if m:
        action, specs_string = m.groups()
        assert action == "update", action
        specs = ast.literal_eval(specs_string)
for s in specs:
    rattler.MatchSpec(s)
for d in dists:
    channel, dist = d.split("::")
    assert channel.endswith("/linux-64") or channel.endswith("/noarch"), d
print(" ".join(specs))
print(" ".join(sorted(d.split("::")[1].rsplit("-", 2)[0] for d in dists)))
"##;
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(history.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "history not readable like conda reads it:\n{history}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next().unwrap(), deps.join(" "), "{history}");
    let names: Vec<&str> = lines.next().unwrap().split(' ').collect();
    for dep in deps {
        assert!(names.contains(dep), "{dep} not in {names:?}:\n{history}");
    }
    assert!(
        names.contains(&"busybox"),
        "dependencies listed too: {names:?}"
    );
}

/// Removes the oracle prefix when the test ends, pass or fail.
fn scopeguard(prefix: &str) -> impl Drop + '_ {
    struct Guard<'a>(&'a str);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    Guard(prefix)
}
