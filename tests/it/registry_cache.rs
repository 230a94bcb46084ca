//! The registry as a shared environment cache (issue 17, first part): one runner builds and
//! keeps its environment in a registry repository (`--cache-to`); runners that start with an
//! empty cache directory take it from there (`--cache-from`) — nothing downloaded, installed
//! or written — and a poisoned entry (a layer whose diff_id it misstates) is detected when the
//! layers are downloaded, and ignored. A runner whose environment changed takes the layers it
//! shares with a cached one from the cache's layer entries (issue 17, item 3).

use crate::common::registry::{Registry, RegistryOptions};
use crate::common::*;

fn build(ctx: &TestContext, cache: &str, extra: &[&str]) -> std::process::Output {
    let spec = ctx.spec(&["whereami", "hello-py", "bigdata"]);
    let mut args = vec![
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "scratch",
        "--big-package-threshold",
        "1MiB",
        "--cache-dir",
    ];
    let cache = ctx.path(cache);
    args.push(cache.to_str().unwrap());
    args.extend_from_slice(extra);
    ctx.imgbuild(&args)
}

/// Rewrites the entry in `from` so that a layer's diff_id is wrong (the first of an
/// environment entry's, or a layer entry's own), and puts it (with its blobs mounted) under
/// the same tag in `to`: what someone with push rights could do.
fn poison(reg: &Registry, from: &str, to: &str, tag: &str) {
    let script = format!(
        r#"
import hashlib, json, urllib.request as u
base = "http://{addr}/v2"
def req(method, url, data=None, headers={{}}):
    r = u.Request(url, data=data, method=method, headers=headers)
    return u.urlopen(r)
accept = {{"Accept": "application/vnd.oci.image.manifest.v1+json"}}
m = json.load(req("GET", f"{{base}}/{from}/manifests/{tag}", headers=accept))
entry = json.load(req("GET", f"{{base}}/{from}/blobs/{{m['config']['digest']}}"))
target = entry["layers"][0] if "layers" in entry else entry
target["diff_id"] = "sha256:" + "0" * 64
blob = json.dumps(entry).encode()
digest = "sha256:" + hashlib.sha256(blob).hexdigest()
loc = req("POST", f"{{base}}/{to}/blobs/uploads/").headers["Location"]
sep = "&" if "?" in loc else "?"
loc = loc if loc.startswith("http") else f"http://{addr}{{loc}}"
req("PUT", f"{{loc}}{{sep}}digest={{digest}}", data=blob, headers={{"Content-Type": "application/octet-stream"}})
for l in m["layers"]:
    req("POST", f"{{base}}/{to}/blobs/uploads/?mount={{l['digest']}}&from={from}")
m["config"]["digest"] = digest
m["config"]["size"] = len(blob)
req("PUT", f"{{base}}/{to}/manifests/{tag}", data=json.dumps(m).encode(),
    headers={{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}})
"#,
        addr = reg.addr
    );
    // A file of its own: tests that poison run in parallel in one process.
    let file = tempfile::Builder::new()
        .prefix("imgbuild-poison-")
        .suffix(".py")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), script).unwrap();
    sh(&format!("python3 {}", file.path().display()));
}

#[test]
fn a_runner_with_an_empty_cache_takes_the_environment_from_the_registry() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let cache_repo = format!("{}/ml/cache", reg.addr);
    let insecure = ["--insecure-registry", reg.addr.as_str()];

    // Runner A builds, pushes and keeps its environment in the cache repository.
    let tag_a = format!("{}/ml/env:a", reg.addr);
    let a = build(
        &ctx,
        "cache-a",
        &[
            &["--tag", &tag_a, "--push", "--cache-to", &cache_repo][..],
            &insecure,
        ]
        .concat(),
    );
    assert_ok(&a);
    let digest = pushed_digest(&a, &tag_a);
    let tags = sh(&format!(
        "skopeo list-tags --tls-verify=false docker://{cache_repo}"
    ));
    let entry_tag = serde_json::from_str::<serde_json::Value>(&tags).unwrap()["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .find(|t| t.starts_with("env-"))
        .unwrap_or_else(|| panic!("no entry in {tags}"))
        .to_string();

    // Runner B: an empty cache directory, the same spec: the environment comes from the
    // registry; no package is downloaded, nothing installed; the push finds every blob there.
    let tag_b = format!("{}/ml/env:b", reg.addr);
    let b = build(
        &ctx,
        "cache-b",
        &[
            &["--tag", &tag_b, "--push", "--cache-from", &cache_repo][..],
            &insecure,
        ]
        .concat(),
    );
    assert_ok(&b);
    assert_eq!(pushed_digest(&b, &tag_b), digest, "the same image");
    let log = stderr(&b);
    assert!(
        log.contains("environment taken from the registry cache"),
        "{log}"
    );
    assert!(
        !log.contains("downloaded ") && !log.contains("installed into"),
        "{log}"
    );
    assert!(
        push_summary(&b, &tag_b).contains("uploaded 0 blobs"),
        "{}",
        push_summary(&b, &tag_b)
    );
    let pkgs = ctx.path("cache-b/pkgs");
    assert!(
        !pkgs.exists()
            || std::fs::read_dir(&pkgs).unwrap().all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
        "packages were fetched into {}",
        pkgs.display()
    );

    // Runner C writes a layout: the layers are downloaded from the cache (digest- and
    // diff_id-checked), and the image is the same.
    let out = ctx.path("layout");
    let c = build(
        &ctx,
        "cache-c",
        &[
            &[
                "--output",
                out.to_str().unwrap(),
                "--cache-from",
                &cache_repo,
            ][..],
            &insecure,
        ]
        .concat(),
    );
    assert_ok(&c);
    assert!(
        stderr(&c).contains("environment taken from the registry cache"),
        "{}",
        stderr(&c)
    );
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // A poisoned entry: detected when its layers are checked, ignored with a warning, and the
    // build makes the environment itself — the same image again.
    poison(&reg, "ml/cache", "ml/poisoned", &entry_tag);
    let out = ctx.path("layout-d");
    let poisoned = format!("{}/ml/poisoned", reg.addr);
    let d = build(
        &ctx,
        "cache-d",
        &[
            &["--output", out.to_str().unwrap(), "--cache-from", &poisoned][..],
            &insecure,
        ]
        .concat(),
    );
    assert_ok(&d);
    let log = stderr(&d);
    assert!(
        log.contains("but the entry says") && log.contains("not used"),
        "{log}"
    );
    assert!(
        !log.contains("environment taken from the registry cache"),
        "{log}"
    );
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
}

#[test]
fn prune_deletes_old_entries_and_keeps_what_others_use() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let cache_repo = format!("{}/ml/cache", reg.addr);
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let build_env = |deps: &[&str], name: &str, extra: &[&str]| {
        let spec = ctx.spec_with_channel(&format!("{}/", fixture().server.url), deps);
        let tag = format!("{}/ml/env:{name}", reg.addr);
        let cache = ctx.path(&format!("cache-{name}"));
        let mut args = vec![
            "--spec",
            spec.to_str().unwrap(),
            "--base",
            "scratch",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--tag",
            &tag,
            "--push",
        ];
        args.extend_from_slice(&insecure);
        args.extend_from_slice(extra);
        let out = ctx.imgbuild(&args);
        assert_ok(&out);
        out
    };
    // Two environments that share layers (busybox's, whereami's), written a few seconds apart.
    build_env(&["whereami"], "old", &["--cache-to", &cache_repo]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    build_env(
        &["whereami", "hello-py"],
        "new",
        &["--cache-to", &cache_repo],
    );
    let prune = |age: &str| {
        let out = ctx.imgbuild(&[
            "cache",
            "prune",
            &cache_repo,
            "--older-than",
            age,
            "--insecure-registry",
            &reg.addr,
        ]);
        assert_ok(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Two environment entries, and a layer entry per package layer of each.
    assert!(prune("1h").contains("0 entries deleted"));
    let pruned = prune("2s");
    assert!(pruned.contains("1 entries deleted"), "{pruned}");
    // The old environment is no longer in the cache (a fresh runner builds it itself); the
    // new one still is, with every blob it shares with the old one.
    let again_old = build_env(&["whereami"], "old2", &["--cache-from", &cache_repo]);
    assert!(
        !stderr(&again_old).contains("environment taken from the registry cache"),
        "{}",
        stderr(&again_old)
    );
    let again_new = build_env(
        &["whereami", "hello-py"],
        "new2",
        &["--cache-from", &cache_repo],
    );
    assert!(
        stderr(&again_new).contains("taken from the registry cache"),
        "{}",
        stderr(&again_new)
    );
    // Images are untouched: skopeo copies both.
    for name in ["old", "new"] {
        sh(&format!(
            "skopeo copy --src-tls-verify=false docker://{}/ml/env:{name} oci:{}:x",
            reg.addr,
            ctx.path(&format!("copy-{name}")).display()
        ));
    }
    // A bad age is refused with what to write.
    let bad = ctx.imgbuild(&["cache", "prune", &cache_repo, "--older-than", "soon"]);
    assert_fails_with(&bad, &["--older-than 'soon'", "30d"]);
}

#[test]
fn runners_writing_the_cache_at_once_all_succeed_and_leave_it_readable() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let cache_repo = format!("{}/ml/cache", reg.addr);
    let spec_same = ctx.spec(&["whereami", "hello-py"]);
    let same = ctx.path("same.yml");
    std::fs::rename(&spec_same, &same).unwrap();
    let other = ctx.spec(&["whereami", "binlib"]);
    // Three runners at once: two with the same environment, one with another.
    let runs: Vec<(std::process::Child, String)> = [(&same, "x"), (&same, "y"), (&other, "z")]
        .iter()
        .map(|(spec, name)| {
            let tag = format!("{}/ml/env:{name}", reg.addr);
            let cache = ctx.path(&format!("cache-{name}"));
            let child = ctx
                .command(
                    &[
                        "--spec",
                        spec.to_str().unwrap(),
                        "--cache-dir",
                        cache.to_str().unwrap(),
                        "--tag",
                        &tag,
                        "--push",
                        "--cache-to",
                        &cache_repo,
                        "--insecure-registry",
                        &reg.addr,
                    ],
                    &[],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, tag)
        })
        .collect();
    let mut digests = Vec::new();
    for (child, tag) in runs {
        let out = child.wait_with_output().unwrap();
        assert_ok(&out);
        assert!(
            !stderr(&out).contains("could not write the registry cache"),
            "{}",
            stderr(&out)
        );
        digests.push(pushed_digest(&out, &tag));
    }
    assert_eq!(digests[0], digests[1]);
    // Both environments are readable by a fresh runner, and give the images the writers made.
    for (spec, digest, name) in [(&same, &digests[0], "r1"), (&other, &digests[2], "r2")] {
        let out_dir = ctx.path(name);
        let out = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--cache-dir",
            ctx.path(&format!("cache-{name}")).to_str().unwrap(),
            "--output",
            out_dir.to_str().unwrap(),
            "--cache-from",
            &cache_repo,
            "--insecure-registry",
            &reg.addr,
        ]);
        assert_ok(&out);
        assert!(
            stderr(&out).contains("environment taken from the registry cache"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            read_json(&out_dir.join("index.json"))["manifests"][0]["digest"],
            digest.as_str()
        );
    }
}

/// Each package layer of a `--log-format json` build (not the environment's or the SBOM's,
/// which have no recipe and are always written): (digest, how it came to be).
fn layer_origins(out: &std::process::Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "layer")
        .filter(|v| !["environment", "sbom"].contains(&v["fields"]["holds"].as_str().unwrap()))
        .map(|v| {
            (
                v["fields"]["digest"].as_str().unwrap().to_string(),
                v["fields"]["how"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every layer digest of a `--log-format json` build.
fn all_layers(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "layer")
        .map(|v| v["fields"]["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 17, item 3 (first step): a runner whose environment differs from the cached one (a
/// package added) takes every layer it shares with it from the cache's layer entries instead
/// of compressing it again, and uploads exactly the layers that changed; to a layout it
/// downloads those layers (digest- and diff_id-checked) and gets, byte for byte, the image a
/// build with no cache at all makes.
#[test]
fn a_changed_environment_writes_only_its_new_layers_and_takes_the_rest_from_the_registry() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let cache_repo = format!("{}/ml/cache", reg.addr);
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let build_deps = |deps: &[&str], cache: &str, extra: &[&str]| {
        let spec = ctx.spec(deps);
        let cache = ctx.path(cache);
        let mut args = vec![
            "--log-format",
            "json",
            "--spec",
            spec.to_str().unwrap(),
            "--base",
            "scratch",
            "--big-package-threshold",
            "1MiB",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(&insecure);
        args.extend_from_slice(extra);
        let out = ctx.imgbuild(&args);
        assert_ok(&out);
        out
    };
    let before = ["whereami", "hello-py", "bigdata"];
    let after = ["whereami", "hello-py", "bigdata", "binlib"];

    // Runner A keeps its environment, and each layer with a recipe, in the cache.
    let tag_a = format!("{}/ml/env:a", reg.addr);
    let a = build_deps(
        &before,
        "cache-a",
        &["--tag", &tag_a, "--push", "--cache-to", &cache_repo],
    );
    let a_layers: std::collections::HashSet<String> = all_layers(&a).into_iter().collect();
    // The package layers a build shares with A came from the registry cache, the others were
    // written; returns the shared ones.
    let shared_from_the_cache = |out: &std::process::Output| -> Vec<String> {
        let origins = layer_origins(out);
        let (shared, new): (Vec<_>, Vec<_>) =
            origins.iter().partition(|(d, _)| a_layers.contains(d));
        assert!(shared.len() >= 2 && !new.is_empty(), "{origins:?}");
        for (digest, how) in &shared {
            assert_eq!(how, "from the registry cache", "{digest}: {origins:?}");
        }
        for (digest, how) in &new {
            assert!(how.starts_with("written"), "{digest}: {origins:?}");
        }
        shared.into_iter().map(|(d, _)| d.clone()).collect()
    };
    let tags = sh(&format!(
        "skopeo list-tags --tls-verify=false docker://{cache_repo}"
    ));
    assert!(tags.contains("\"layer-"), "{tags}");

    // Runner D, an empty cache, one package more, writes a layout: the layers it shares with
    // A are downloaded from the registry cache and checked; the image is the one a build
    // without any cache makes.
    let layout_d = ctx.path("layout-d");
    let d = build_deps(
        &after,
        "cache-d",
        &[
            "--output",
            layout_d.to_str().unwrap(),
            "--cache-from",
            &cache_repo,
        ],
    );
    let d_shared = shared_from_the_cache(&d);
    let layout_e = ctx.path("layout-e");
    build_deps(&after, "cache-e", &["--output", layout_e.to_str().unwrap()]);
    let digest_of = |layout: &std::path::Path| {
        read_json(&layout.join("index.json"))["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest_of(&layout_d), digest_of(&layout_e));
    for digest in &d_shared {
        assert!(blob(&ctx.path("cache-d"), digest).exists(), "{digest}");
    }

    // Runner C, an empty cache, the same change, pushes to the cache's registry: the layers it
    // shares with A come from the registry cache (never downloaded), the others are written,
    // and only those are uploaded; the image is D's.
    let tag_c = format!("{}/ml/env:c", reg.addr);
    let c = build_deps(
        &after,
        "cache-c",
        &[
            "--tag",
            &tag_c,
            "--push",
            "--cache-from",
            &cache_repo,
            "--cache-to",
            &cache_repo,
        ],
    );
    let shared = shared_from_the_cache(&c);
    // The layers A did not have and the config go up; nothing else.
    let not_in_a = all_layers(&c)
        .iter()
        .filter(|d| !a_layers.contains(*d))
        .count();
    let summary = push_summary(&c, &tag_c);
    assert!(
        summary.contains(&format!("uploaded {} blobs", not_in_a + 1)),
        "{summary}"
    );
    // The cached layers were never in this runner's blob store.
    for digest in &shared {
        assert!(!blob(&ctx.path("cache-c"), digest).exists(), "{digest}");
    }

    let c_digest = sh(&format!(
        "skopeo inspect --tls-verify=false --format '{{{{.Digest}}}}' docker://{tag_c}"
    ));
    assert_eq!(c_digest.trim(), digest_of(&layout_d));

    // A layer entry that misstates its layer's diff_id: caught when the layer is downloaded,
    // warned about, and the layer written here instead; the image is still the right one.
    let tags: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo list-tags --tls-verify=false docker://{cache_repo}"
    )))
    .unwrap();
    let victim = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .filter(|t| t.starts_with("layer-"))
        .find(|t| {
            let raw = sh(&format!(
                "skopeo inspect --raw --tls-verify=false docker://{cache_repo}:{t}"
            ));
            let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
            m["layers"][0]["digest"] == d_shared[0].as_str()
        })
        .expect("a layer entry for a shared layer")
        .to_string();
    poison(&reg, "ml/cache", "ml/poisoned", &victim);
    let layout_f = ctx.path("layout-f");
    let poisoned = format!("{}/ml/poisoned", reg.addr);
    let f = build_deps(
        &after,
        "cache-f",
        &[
            "--output",
            layout_f.to_str().unwrap(),
            "--cache-from",
            &poisoned,
        ],
    );
    let log = stderr(&f);
    assert!(
        log.contains("but the entry says") && log.contains("the layer is written here"),
        "poisoned {victim} (layer {}); {poisoned} lists {}\n{log}",
        d_shared[0],
        sh(&format!(
            "skopeo list-tags --tls-verify=false docker://{poisoned}"
        ))
    );
    assert!(layer_origins(&f)
        .iter()
        .all(|(_, how)| how.starts_with("written")));
    assert_eq!(digest_of(&layout_f), digest_of(&layout_e));
}
