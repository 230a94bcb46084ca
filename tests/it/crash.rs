//! Builds killed with SIGKILL at many points: the next build makes the same image and removes
//! what the killed one left (temporary blobs, package extractions, staging roots, layouts).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::*;

const ENV: &[&str] = &["whereami", "binlib", "hello-py", "bigdata", "torchlike"];

fn build_args<'a>(spec: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--spec",
        spec,
        "--output",
        out,
        "--tag",
        "crash:1",
        "--big-package-threshold",
        "1MiB",
    ]
}

fn digest(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest line:\n{stdout}\n{}", stderr(out)))
        .to_string()
}

/// Every temporary a killed build can leave: in the cache, beside the output and inside it.
fn leftovers(cache: &Path, out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut scan = |dir: PathBuf, is_temp: &dyn Fn(&str) -> bool| {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if is_temp(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
    };
    let tmp = |n: &str| n.starts_with(".tmp-");
    scan(cache.join("blobs/sha256"), &tmp);
    scan(cache.join("layers"), &tmp);
    scan(cache.join("environments"), &tmp);
    scan(cache.join("pkgs"), &|n| {
        n.starts_with('.') && n != ".cache.lock"
    });
    scan(cache.join("staging"), &|n| {
        n.starts_with("env-") || n.ends_with(".incomplete") || n.starts_with(".imgbuild")
    });
    scan(out.parent().unwrap().to_path_buf(), &|n| {
        n.starts_with(".imgbuild-layout-")
    });
    scan(out.to_path_buf(), &tmp);
    scan(out.join("blobs/sha256"), &tmp);
    found
}

/// Builds killed at points spread over a whole build: seven in a fresh cache (the kills land
/// while packages are fetched and extracted), sixteen in a cache that already holds the packages
/// (they land while linking, writing layers and writing the layout). After each kill, a build
/// in the same cache makes the image a build that was never interrupted makes, and leaves no
/// temporary behind.
#[test]
fn a_build_after_a_kill_makes_the_same_image_and_removes_the_leftovers() {
    let ctx = TestContext::new();
    let spec = ctx.spec(ENV);
    let spec = spec.to_str().unwrap();
    let with_cache =
        |cache: &Path| vec![("IMGBUILD_CACHE_DIR", cache.to_str().unwrap().to_string())];
    let timed_build = |cache: &Path, out: &str| {
        let env = with_cache(cache);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let res = ctx.imgbuild_env(&build_args(spec, ctx.path(out).to_str().unwrap()), &env);
        assert_ok(&res);
        (digest(&res), started.elapsed())
    };
    let packages = ctx.path("lone-cache");
    let (want, fresh_time) = timed_build(&packages, "lone");
    let warm_cache = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        sh(&format!(
            "cp -a {}/pkgs {}/",
            packages.display(),
            to.display()
        ));
    };
    warm_cache(&ctx.path("warm"));
    let (warm_digest, warm_time) = timed_build(&ctx.path("warm"), "warm-out");
    assert_eq!(warm_digest, want);

    let rounds: Vec<(bool, f64)> = (0..7)
        .map(|i| (false, (i as f64 + 0.5) / 7.0))
        .chain((0..16).map(|i| (true, (i as f64 + 0.5) / 16.0)))
        .collect();
    let (mut killed, mut left_behind) = (0, 0);
    for (round, &(warm, at)) in rounds.iter().enumerate() {
        let cache = ctx.path(&format!("cache{round}"));
        if warm {
            warm_cache(&cache);
        }
        let out = ctx.path(&format!("out{round}"));
        let env = with_cache(&cache);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut child = ctx
            .command(&build_args(spec, out.to_str().unwrap()), &env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(if warm { warm_time } else { fresh_time }.mul_f64(at));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        let found = leftovers(&cache, &out);
        eprintln!("round {round}: killed at {at:.2} of a build: {found:?}");
        left_behind += found.len();

        let res = ctx.imgbuild_env(&build_args(spec, out.to_str().unwrap()), &env);
        assert_ok(&res);
        assert_eq!(digest(&res), want, "round {round}:\n{}", stderr(&res));
        let left = leftovers(&cache, &out);
        assert!(left.is_empty(), "round {round} left {left:?}");
    }
    // The kills did land mid-build and did leave things to clean up.
    assert!(
        killed >= rounds.len() / 2,
        "only {killed} of {} builds were killed",
        rounds.len()
    );
    assert!(left_behind > 0, "no kill left anything behind");
    eprintln!(
        "{killed} of {} builds killed, {left_behind} leftovers removed",
        rounds.len()
    );
}

/// `imgbuild push` killed with SIGKILL at points spread over a push (each round to a new
/// repository, so each starts with nothing there): the next push to it succeeds, and the
/// registry serves the layout's manifest digest, readable by skopeo.
#[test]
fn a_push_after_a_killed_push_completes_with_the_same_digest() {
    use crate::common::registry::{Registry, RegistryOptions};
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let spec = ctx.spec(ENV);
    let layout = ctx.path("layout");
    let res = ctx.imgbuild(&build_args(
        spec.to_str().unwrap(),
        layout.to_str().unwrap(),
    ));
    assert_ok(&res);
    let want = digest(&res);
    let push = |repo: &str| {
        ctx.command(
            &[
                "push",
                &format!("{}:crash:1", layout.display()),
                &format!("{}/{repo}:1", reg.addr),
                "--insecure-registry",
                &reg.addr,
            ],
            &[],
        )
    };
    let started = Instant::now();
    assert_ok(&push("timing").output().unwrap());
    let whole = started.elapsed();
    let rounds = 10;
    let mut killed = 0;
    for round in 0..rounds {
        let repo = format!("crash/r{round}");
        let mut child = push(&repo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole.mul_f64((round as f64 + 0.5) / rounds as f64));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let res = push(&repo).output().unwrap();
        assert_ok(&res);
        let raw = sh(&format!(
            "skopeo inspect --raw --tls-verify=false docker://{}/{repo}:1 | sha256sum",
            reg.addr
        ));
        assert_eq!(
            format!("sha256:{}", raw.split_whitespace().next().unwrap()),
            want,
            "round {round}"
        );
    }
    assert!(
        killed >= rounds / 2,
        "only {killed} of {rounds} pushes were killed"
    );
    eprintln!("{killed} of {rounds} pushes killed mid-push (a push took {whole:.2?}); every re-push served {want}");
}
