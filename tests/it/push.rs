//! Pushing to real registries (docker-registry on 127.0.0.1) and reading back with skopeo and
//! podman: skip-what-is-there, TLS, every source of credentials, base-image mounts.

use crate::common::registry::{Registry, RegistryOptions};
use crate::common::*;

/// Copies `reference` out of a plain-HTTP registry with skopeo and runs validate-image on the
/// copy; returns the copy's layout directory.
fn copy_out_and_validate(ctx: &TestContext, reference: &str) -> std::path::PathBuf {
    let copy = ctx.path("copy");
    sh(&format!(
        "skopeo copy --src-tls-verify=false docker://{reference} oci:{}:x",
        copy.display()
    ));
    validate_image(&format!("{}:x", copy.display()), None);
    copy
}

fn podman_run(image: &str, cmd: &str) -> String {
    sh(&format!(
        "podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {image} {cmd}"
    ))
}

#[test]
fn build_push_read_back_run_and_push_again_uploads_nothing() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let tag1 = format!("{}/ml/env:1", reg.addr);
    let tag2 = format!("{}/ml/env:latest", reg.addr);
    let args = [
        "--spec",
        spec.to_str().unwrap(),
        "--tag",
        &tag1,
        "--tag",
        &tag2,
        "--push",
        "--insecure-registry",
        &reg.addr,
    ];
    let first = ctx.imgbuild(&args);
    assert_ok(&first);
    let digest = pushed_digest(&first, &tag1);
    assert_eq!(pushed_digest(&first, &tag2), digest);
    // Every blob of the manifest (its layers and config) was uploaded once, for the first tag.
    let raw: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{tag1}"
    )))
    .unwrap();
    let blobs = raw["layers"].as_array().unwrap().len() + 1;
    let summary = push_summary(&first, &tag1);
    assert!(
        summary.contains(&format!("uploaded {blobs} blobs")),
        "{summary}"
    );
    assert!(
        push_summary(&first, &tag2).contains("uploaded 0 blobs"),
        "second tag shares every blob"
    );

    // skopeo reads the same digest and copies the image out intact.
    let inspect = sh(&format!(
        "skopeo inspect --tls-verify=false docker://{tag1}"
    ));
    assert!(
        inspect.contains(&format!("\"Digest\": \"{digest}\"")),
        "{inspect}"
    );
    let copy = copy_out_and_validate(&ctx, &tag2);
    assert_eq!(
        read_json(&copy.join("index.json"))["manifests"][0]["digest"],
        digest.as_str()
    );

    // podman pulls it from the registry and runs the relocated script.
    sh(&format!("podman pull -q --tls-verify=false {tag1}"));
    let printed = podman_run(&tag1, "/opt/conda/bin/whereami");
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &tag1, &tag2])
        .output();
    assert_eq!(printed.trim(), "prefix=/opt/conda");

    // Everything is there now: a rebuild and push uploads nothing.
    let uploads_before = reg.count("\"POST /v2/ml/env/blobs/uploads/");
    // The image's blobs, and the SBOM artifact's two (an empty config and the document).
    assert_eq!(uploads_before, blobs + 2, "{}", reg.log());
    let second = ctx.imgbuild(&args);
    assert_ok(&second);
    let summary = push_summary(&second, &tag1);
    assert!(summary.contains("uploaded 0 blobs (0 bytes)"), "{summary}");
    assert!(
        summary.contains(&format!("already present {blobs} ")),
        "{summary}"
    );
    assert_eq!(
        reg.count("\"POST /v2/ml/env/blobs/uploads/"),
        uploads_before
    );
    assert_eq!(reg.count("\"PUT /v2/ml/env/blobs/uploads/"), uploads_before);
}

#[test]
fn tls_registry_with_basic_auth_takes_every_credential_source() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("ci", "s3cret")),
        ..RegistryOptions::default()
    });
    let ca = reg.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let ctx = TestContext::new();
    let spec = ctx.spec(&["busybox"]);
    let push = |tag: &str, extra: &[&str], env: &[(&str, &str)]| {
        let tag = format!("{}/team/app:{tag}", reg.addr);
        let mut args = vec![
            "--spec",
            spec.to_str().unwrap(),
            "--tag",
            tag.as_str(),
            "--push",
        ];
        args.extend_from_slice(extra);
        let out = ctx.imgbuild_env(&args, env);
        (tag, out)
    };

    // Credentials from a Docker config (base64 auth entry), the CA from SSL_CERT_FILE.
    let docker_config = ctx.path("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = sh("printf ci:s3cret | base64").trim().to_string();
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let (tag, out) = push(
        "from-docker-config",
        &[],
        &[
            ("DOCKER_CONFIG", docker_config.to_str().unwrap()),
            ("SSL_CERT_FILE", ca),
        ],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // From --creds.
    let (tag, out) = push(
        "from-flag",
        &["--creds", "ci:s3cret"],
        &[("SSL_CERT_FILE", ca)],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // From the environment.
    let (tag, out) = push(
        "from-env",
        &[],
        &[
            ("IMGBUILD_REGISTRY_USER", "ci"),
            ("IMGBUILD_REGISTRY_PASSWORD", "s3cret"),
            ("SSL_CERT_FILE", ca),
        ],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // From a credential helper named in credHelpers (docker-credential-<name> on PATH).
    let helper_dir = ctx.path("helpers");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = helper_dir.join("docker-credential-imgbuild-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || exit 1\n\
             echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"ci\",\"Secret\":\"s3cret\"}}'\n",
            reg.addr
        ),
    )
    .unwrap();
    sh(&format!("chmod +x {}", helper.display()));
    let helper_config = ctx.path("docker-helper");
    std::fs::create_dir_all(&helper_config).unwrap();
    std::fs::write(
        helper_config.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "imgbuild-test"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let (tag, out) = push(
        "from-helper",
        &[],
        &[
            ("DOCKER_CONFIG", helper_config.to_str().unwrap()),
            ("PATH", &path),
            ("SSL_CERT_FILE", ca),
        ],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // A wrong password: a clear error that names the source, never the secret; no tag.
    let (tag, out) = push(
        "wrong",
        &["--creds", "ci:not-the-password"],
        &[("SSL_CERT_FILE", ca)],
    );
    let err = assert_fails_with(
        &out,
        &[
            &reg.addr,
            "team/app",
            "rejected the credentials for user 'ci' from --creds",
        ],
    );
    assert!(!err.contains("not-the-password"), "{err}");
    let check = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "ci:s3cret",
            &format!("docker://{tag}"),
        ])
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "the tag exists after a failed push"
    );

    // No credentials at all: says how to provide them.
    let (_, out) = push("anonymous", &[], &[("SSL_CERT_FILE", ca)]);
    assert_fails_with(&out, &["no credentials were found", "--creds"]);

    // The certificate is not trusted without the CA, unless the host is marked insecure.
    let (_, out) = push("untrusted", &["--creds", "ci:s3cret"], &[]);
    assert_fails_with(
        &out,
        &[
            "the TLS certificate of registry",
            &reg.addr,
            "is not trusted",
            "hint: trust",
        ],
    );
    let (tag, out) = push(
        "insecure",
        &["--creds", "ci:s3cret", "--insecure-registry", &reg.addr],
        &[],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);
}

#[test]
fn base_from_the_same_registry_is_mounted_not_uploaded() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    // A base image, pushed to the registry by skopeo.
    let base_layout = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--prefix",
        "/usr/local/bb",
        "--output",
        base_layout.to_str().unwrap(),
        "--tag",
        "base",
    ]));
    let base_ref = format!("{}/base/bb:1", reg.addr);
    sh(&format!(
        "skopeo copy --dest-tls-verify=false oci:{}:base docker://{base_ref}",
        base_layout.display()
    ));
    let base_layers = manifest(&base_layout)["layers"].as_array().unwrap().len();

    let app = format!("{}/apps/app:1", reg.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--tag",
        &app,
        "--push",
        "--insecure-registry",
        &reg.addr,
        "--output",
        ctx.path("app").to_str().unwrap(),
    ]);
    assert_ok(&out);
    let summary = push_summary(&out, &app);
    assert!(
        summary.contains(&format!("mounted {base_layers} ")),
        "{summary}"
    );
    assert!(reg.count("mount=sha256") >= base_layers, "{}", reg.log());
    // The app image starts with the base's layers, byte for byte.
    let app_layers = manifest(&ctx.path("app"))["layers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        &app_layers[..base_layers],
        manifest(&base_layout)["layers"]
            .as_array()
            .unwrap()
            .as_slice()
    );
    let inspect = sh(&format!("skopeo inspect --tls-verify=false docker://{app}"));
    assert!(inspect.contains(&pushed_digest(&out, &app)), "{inspect}");

    // Pushed only to the base's registry, with a fresh cache: the base layers are mounted and
    // never downloaded.
    let fresh = ctx.path("fresh-cache");
    let blob_gets_before = reg.count("\"GET /v2/base/bb/blobs/");
    let app2 = format!("{}/apps/other:1", reg.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--tag",
        &app2,
        "--push",
        "--insecure-registry",
        &reg.addr,
        "--cache-dir",
        fresh.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(push_summary(&out, &app2).contains(&format!("mounted {base_layers} ")));
    for layer in manifest(&base_layout)["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        assert!(
            !blob(&fresh, digest).exists(),
            "base layer {digest} was downloaded"
        );
    }
    assert_eq!(
        reg.count("\"GET /v2/base/bb/blobs/"),
        blob_gets_before + 1,
        "only the config is fetched"
    );
}

#[test]
fn default_base_is_debian_from_docker_hub() {
    let ctx = TestContext::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args([
            "--spec",
            ctx.spec(&["busybox"]).to_str().unwrap(),
            "--output",
        ])
        .arg(ctx.path("img"))
        .env_remove("IMGBUILD_BASE")
        .env("IMGBUILD_CACHE_DIR", ctx.path("cache"))
        .output()
        .unwrap();
    // No public registry is reachable here, so the default shows up in the error.
    assert_fails_with(
        &out,
        &[
            "cannot use --base docker.io/library/debian:bookworm-slim",
            "--base scratch",
        ],
    );
    assert!(!ctx.path("img").exists());
}

#[test]
fn push_errors_are_specific() {
    let ctx = TestContext::new();
    let spec = ctx.spec(&["busybox"]);
    // --push without a registry tag.
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--push",
        "--tag",
        "local:1",
    ]);
    assert_fails_with(
        &out,
        &["--push needs a --tag that names a registry", "local:1"],
    );
    // Nothing listening: names the registry.
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--push",
        "--tag",
        "127.0.0.1:9/x/y:1",
        "--insecure-registry",
        "127.0.0.1:9",
    ]);
    let err = assert_fails_with(&out, &["cannot reach registry 127.0.0.1:9"]);
    // A connection that cannot be made is not retried (it cost 11 s of back-off).
    assert!(!err.contains("retrying"), "{err}");
    // Nor for a base image on a registry that is not there.
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--base",
        "127.0.0.1:9/x/base:1",
        "--insecure-registry",
        "127.0.0.1:9",
        "--output",
        ctx.path("no-base").to_str().unwrap(),
    ]);
    let err = assert_fails_with(&out, &["cannot reach registry 127.0.0.1:9"]);
    assert!(!err.contains("retrying"), "{err}");
    // `imgbuild push` of something that is not a layout.
    let out = ctx.imgbuild(&[
        "push",
        ctx.path("nothing").to_str().unwrap(),
        "127.0.0.1:9/x/y:1",
    ]);
    assert_fails_with(&out, &["cannot push", "index.json"]);
}

#[test]
fn push_survives_resets_and_server_errors() {
    let reg = Registry::start(RegistryOptions::default());
    let proxy = crate::common::faults::FaultProxy::start(&reg.addr, 12);
    let ctx = TestContext::new();
    let tag = format!("{}/faulty/app:1", proxy.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami", "bigdata"]).to_str().unwrap(),
        "--big-package-threshold",
        "1MiB",
        "--tag",
        &tag,
        "--push",
        "--insecure-registry",
        &proxy.addr,
    ]);
    assert_ok(&out);
    assert_eq!(
        proxy.injected.load(std::sync::atomic::Ordering::SeqCst),
        12,
        "faults were injected"
    );
    assert!(proxy.requests.load(std::sync::atomic::Ordering::SeqCst) > 12);
    let digest = pushed_digest(&out, &tag);
    // Read back from the registry directly: same digest, every blob intact.
    let direct = format!("{}/faulty/app:1", reg.addr);
    let inspect = sh(&format!(
        "skopeo inspect --tls-verify=false docker://{direct}"
    ));
    assert!(inspect.contains(&digest), "{inspect}");
    copy_out_and_validate(&ctx, &direct);
}

/// Writes a one-layer image layout whose layer is `size` random bytes; returns its digest.
pub fn random_layer_layout(dir: &std::path::Path, size_mib: usize) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let tmp = dir.join("layer.tmp");
    sh(&format!(
        "head -c {size_mib}M /dev/urandom > {}",
        tmp.display()
    ));
    let hex = sh(&format!("sha256sum {}", tmp.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
    let layer = format!("sha256:{hex}");
    let put = |bytes: &[u8]| {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (cfg_digest, cfg_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size_mib << 20}],
    });
    let (m_digest, m_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
                        "annotations": {"org.opencontainers.image.ref.name": "big"}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    m_digest
}

#[test]
fn a_one_gib_layer_pushes_in_chunks_with_bounded_memory() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let layout = ctx.path("big");
    let digest = random_layer_layout(&layout, 1024);
    let target = format!("{}/big/layer:1", reg.addr);
    // Peak RSS of the child, from the kernel's accounting (ru_maxrss, KiB).
    let script = format!(
        "import resource, subprocess, sys\n\
         r = subprocess.run([{bin:?}, 'push', {layout:?}, {target:?}, '--insecure-registry', {addr:?}], capture_output=True, text=True)\n\
         sys.stdout.write(r.stdout)\n\
         sys.stderr.write(r.stderr)\n\
         print('maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
         sys.exit(r.returncode)\n",
        bin = env!("CARGO_BIN_EXE_imgbuild"),
        layout = format!("{}:big", layout.display()),
        addr = reg.addr,
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("pushed {target} {digest}: uploaded 2 blobs")),
        "{stdout}"
    );
    let rss_kib: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("peak RSS pushing a 1 GiB layer: {} MiB", rss_kib / 1024);
    assert!(
        rss_kib < 200 * 1024,
        "peak RSS {rss_kib} KiB is over 200 MB"
    );
    // 1 GiB in 16 MiB chunks: 64 PATCH requests, then one PUT to finish.
    assert_eq!(
        reg.count("\"PATCH /v2/big/layer/blobs/uploads/"),
        64,
        "{}",
        reg.log()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let inspect = sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{target}"
    ));
    assert!(inspect.contains("\"size\":1073741824"), "{inspect}");
}

#[test]
fn bearer_token_registry_push_and_pull() {
    let reg = Registry::start(RegistryOptions {
        token_auth: Some(("robot", "t0ken-pass")),
        ..RegistryOptions::default()
    });
    let tokens = reg.tokens.as_ref().unwrap();
    let ctx = TestContext::new();
    let spec = ctx.spec(&["busybox"]);
    let base = format!("{}/ml/base:1", reg.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--tag",
        &base,
        "--push",
        "--insecure-registry",
        &reg.addr,
        "--creds",
        "robot:t0ken-pass",
    ]);
    assert_ok(&out);
    pushed_digest(&out, &base);
    let issued = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued >= 1, "a token was issued");
    assert!(
        issued <= 3,
        "tokens are cached per scope, not fetched per request ({issued})"
    );

    // Pull as a base (token for pull scope), push to another repository (mount needs a token
    // for two scopes).
    let app = format!("{}/ml/app:1", reg.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base,
        "--tag",
        &app,
        "--push",
        "--insecure-registry",
        &reg.addr,
        "--creds",
        "robot:t0ken-pass",
    ]);
    assert_ok(&out);
    let raw: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw --tls-verify=false --creds robot:t0ken-pass docker://{base}"
    )))
    .unwrap();
    let base_layers = raw["layers"].as_array().unwrap().len();
    let summary = push_summary(&out, &app);
    assert!(
        summary.contains(&format!("mounted {base_layers} ")),
        "{summary}"
    );

    // The token server refuses a wrong password: a clear error, nothing pushed.
    let out = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--tag",
        &format!("{}/ml/denied:1", reg.addr),
        "--push",
        "--insecure-registry",
        &reg.addr,
        "--creds",
        "robot:wrong",
    ]);
    let err = assert_fails_with(&out, &["rejected the credentials for user 'robot'"]);
    assert!(!err.contains("wrong"), "{err}");
}

/// On a terminal, a push draws a bar of bytes sent against the image's total; off one (the
/// other push tests) only the summary lines are printed.
#[test]
fn a_push_on_a_terminal_shows_bytes_sent() {
    let reg = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let layout = ctx.path("tty-push");
    random_layer_layout(&layout, 192);
    let target = format!("{}/tty/layer:1", reg.addr);
    let cmd = format!(
        "{} push {}:big {target} --insecure-registry {}",
        env!("CARGO_BIN_EXE_imgbuild"),
        layout.display(),
        reg.addr
    );
    let res = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("util-linux script is installed");
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{text}");
    assert!(text.contains(&format!("pushed {target} ")), "{text}");
    // indicatif's `{bytes}/{total_bytes}`: the total is the layer plus the config.
    assert!(
        text.contains("pushing ") && text.contains("/192.00 MiB"),
        "no byte bar:\n{text}"
    );
}

/// Issue 18 (first part): credentials from the auth files podman and skopeo write.
#[test]
fn podman_and_skopeo_logins_are_read_from_their_auth_files() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("ci", "s3cret-pass")),
        ..RegistryOptions::default()
    });
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let push = |name: &str, env: &[(&str, &str)]| {
        let tag = format!("{}/ml/env:{name}", reg.addr);
        let out = ctx.imgbuild_env(
            &[
                "--spec",
                spec.to_str().unwrap(),
                "--tag",
                &tag,
                "--push",
                "--insecure-registry",
                &reg.addr,
            ],
            env,
        );
        (out, tag)
    };
    // Nobody logged in: refused, with what to do and where it looked.
    let (out, _) = push("anon", &[]);
    assert_fails_with(
        &out,
        &[
            "no credentials were found",
            "imgbuild login",
            "looked in:",
            "xdg-runtime/containers/auth.json",
            "no-docker-config/config.json",
        ],
    );

    // `podman login --authfile FILE`, then REGISTRY_AUTH_FILE=FILE.
    let authfile = ctx.path("auth.json");
    sh(&format!(
        "podman login --authfile {} --tls-verify=false -u ci -p s3cret-pass {}",
        authfile.display(),
        reg.addr
    ));
    let (out, tag) = push(
        "podman",
        &[("REGISTRY_AUTH_FILE", authfile.to_str().unwrap())],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // `skopeo login` writes $XDG_RUNTIME_DIR/containers/auth.json, read with no flag at all.
    let runtime = ctx.path("xdg-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    sh(&format!(
        "XDG_RUNTIME_DIR={} skopeo login --tls-verify=false -u ci -p s3cret-pass {}",
        runtime.display(),
        reg.addr
    ));
    assert!(runtime.join("containers/auth.json").is_file());
    let (out, tag) = push("skopeo", &[]);
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // A wrong password in an auth file: the error names the file; a missing one is named too.
    let bad = ctx.path("bad-auth.json");
    let auth = base64_encode("ci:wrong");
    std::fs::write(
        &bad,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let (out, _) = push("bad", &[("REGISTRY_AUTH_FILE", bad.to_str().unwrap())]);
    assert_fails_with(
        &out,
        &[
            "rejected the credentials for user 'ci'",
            bad.to_str().unwrap(),
        ],
    );
    let (out, _) = push(
        "missing",
        &[("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")],
    );
    assert_fails_with(&out, &["cannot read the auth file /nonexistent/auth.json"]);
}

/// Runs `imgbuild ARGS` with `input` (and a newline) on its standard input, as `echo "$TOKEN" |
/// imgbuild login … --password-stdin` does.
fn imgbuild_with_stdin(ctx: &TestContext, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = ctx
        .command(args, &[])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
    child.wait_with_output().unwrap()
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Issue 18 (first part): a private registry's CA trusted the containers way, through a
/// certs.d directory (here the per-user one, under the test's XDG_CONFIG_HOME) or `--cert-dir`.
#[test]
fn a_registry_ca_in_certs_d_or_cert_dir_is_trusted() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        ..RegistryOptions::default()
    });
    let ca = reg.ca.clone().expect("a TLS registry has a CA");
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let push = |name: &str, extra: &[&str]| {
        let tag = format!("{}/ml/env:{name}", reg.addr);
        let mut args = vec!["--spec", spec.to_str().unwrap(), "--tag", &tag, "--push"];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        let out = ctx.imgbuild(&args);
        (out, tag, started.elapsed())
    };
    // Not trusted: refused at once (a certificate does not verify by asking again).
    let (out, _, took) = push("untrusted", &[]);
    assert_fails_with(&out, &["certificate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        took < std::time::Duration::from_secs(20),
        "retried for {took:?}"
    );

    // The CA in the per-user certs.d directory for HOST:PORT, as podman reads it.
    let certs_d = ctx.path(&format!("xdg-config/containers/certs.d/{}", reg.addr));
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&ca, certs_d.join("ca.crt")).unwrap();
    let (out, tag, _) = push("certs-d", &[]);
    assert_ok(&out);
    pushed_digest(&out, &tag);
    std::fs::remove_dir_all(&certs_d).unwrap();

    // --cert-dir, skopeo's flag: the CA directory for this registry.
    let dir = ctx.path("my-certs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&ca, dir.join("registry-ca.crt")).unwrap();
    let (out, tag, _) = push("cert-dir", &["--cert-dir", dir.to_str().unwrap()]);
    assert_ok(&out);
    pushed_digest(&out, &tag);

    // SSL_CERT_DIR, OpenSSL's directory of CAs (any file names).
    let ssl_dir = ctx.path("ssl-dir");
    std::fs::create_dir_all(&ssl_dir).unwrap();
    std::fs::copy(&ca, ssl_dir.join("private-ca.pem")).unwrap();
    let tag = format!("{}/ml/env:ssl-cert-dir", reg.addr);
    let out = ctx.imgbuild_env(
        &["--spec", spec.to_str().unwrap(), "--tag", &tag, "--push"],
        &[("SSL_CERT_DIR", ssl_dir.to_str().unwrap())],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);
}

/// Issue 18: `imgbuild login` checks the credentials and keeps them where podman and skopeo
/// look (mode 0600); builds then push with no flag; `logout` removes them.
#[test]
fn login_keeps_checked_credentials_and_logout_removes_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("ci", "s3cret-pass")),
        ..RegistryOptions::default()
    });
    let ctx = TestContext::new();
    let login = |password: &str| {
        imgbuild_with_stdin(
            &ctx,
            &[
                "login",
                &reg.addr,
                "-u",
                "ci",
                "--password-stdin",
                "--insecure-registry",
                &reg.addr,
            ],
            password,
        )
    };
    let file = ctx.path("xdg-runtime/containers/auth.json");
    // A wrong password is refused and nothing is written.
    let out = login("wrong");
    assert_fails_with(
        &out,
        &["cannot log in to", "rejected the credentials for user 'ci'"],
    );
    assert!(!file.exists());
    assert!(
        !stderr(&out).contains("wrong"),
        "the password is never echoed"
    );
    // The right one is kept, readable only by its owner, in podman's format.
    assert_ok(&login("s3cret-pass"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let auths = read_json(&file)["auths"].clone();
    assert!(auths[reg.addr.as_str()]["auth"].is_string(), "{auths}");
    // podman reads it (its own login check), and a build pushes with no credential flag.
    sh(&format!(
        "podman login --get-login --authfile {} {}",
        file.display(),
        reg.addr
    ));
    let spec = ctx.spec(&["whereami"]);
    let tag = format!("{}/ml/env:1", reg.addr);
    let push = || {
        ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--tag",
            &tag,
            "--push",
            "--insecure-registry",
            &reg.addr,
        ])
    };
    assert_ok(&push());
    // logout removes the entry; the next push finds no credentials; a second logout says so.
    assert_ok(&ctx.imgbuild(&["logout", &reg.addr]));
    assert_fails_with(&push(), &["no credentials were found"]);
    assert_fails_with(&ctx.imgbuild(&["logout", &reg.addr]), &["not logged in to"]);
}

/// Issue 18: Docker's one-command self-signed certificate (CA:TRUE, serving as its own leaf),
/// once trusted, is accepted for the host it names — as docker, podman and skopeo accept it —
/// and refused at once while it is not trusted.
#[test]
fn a_trusted_self_signed_registry_certificate_is_accepted() {
    let reg = Registry::start(RegistryOptions {
        self_signed: true,
        ..RegistryOptions::default()
    });
    let cert = reg.ca.clone().unwrap();
    let text = sh(&format!("openssl x509 -in {} -noout -text", cert.display()));
    assert!(
        text.contains("CA:TRUE"),
        "the fixture is the CA:TRUE kind:\n{text}"
    );
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let push = |name: &str, extra: &[&str], env: &[(&str, &str)]| {
        let tag = format!("{}/ml/env:{name}", reg.addr);
        let mut args = vec!["--spec", spec.to_str().unwrap(), "--tag", &tag, "--push"];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        (ctx.imgbuild_env(&args, env), tag, started.elapsed())
    };
    let (out, _, took) = push("untrusted", &[], &[]);
    assert_fails_with(&out, &["certificate"]);
    assert!(
        took < std::time::Duration::from_secs(20),
        "retried for {took:?}"
    );
    // skopeo accepts it once trusted (the peer's behaviour this matches).
    let dir = ctx.path("certs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&cert, dir.join("domain.crt")).unwrap();
    let (out, tag, _) = push("cert-dir", &["--cert-dir", dir.to_str().unwrap()], &[]);
    assert_ok(&out);
    pushed_digest(&out, &tag);
    assert!(!stderr(&out).contains("ERROR"), "{}", stderr(&out));
    sh(&format!(
        "skopeo inspect --cert-dir {} docker://{tag} >/dev/null",
        dir.display()
    ));
    let (out, tag, _) = push(
        "ssl-cert-file",
        &[],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    assert_ok(&out);
    pushed_digest(&out, &tag);
    // Trust is for the name it covers: the same registry reached as "localhost" is refused.
    let port = reg.addr.rsplit(':').next().unwrap();
    let other = format!("localhost:{port}/ml/env:other");
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--tag",
        &other,
        "--push",
        "--cert-dir",
        dir.to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["certificate"]);
}

/// Issue 18: a registry that requires client certificates (distribution's
/// `http.tls.clientcas`). The certificate and key are read from the registry's certs.d
/// directory (here `--cert-dir`, skopeo's meaning) as `NAME.cert` / `NAME.key`; without them
/// the push fails at once saying what is missing, and a CA that does not match is named.
#[test]
fn mutual_tls_takes_the_client_certificate_from_the_cert_dir() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        client_certs: true,
        ..RegistryOptions::default()
    });
    let ca = reg.ca.clone().unwrap();
    let (client_cert, client_key) = reg.client_cert.clone().unwrap();
    let ctx = TestContext::new();
    let spec = ctx.spec(&["whereami"]);
    let dir = ctx.path("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let push = |name: &str| {
        let tag = format!("{}/ml/env:{name}", reg.addr);
        let started = std::time::Instant::now();
        let out = ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--tag",
            &tag,
            "--push",
            "--cert-dir",
            dir.to_str().unwrap(),
        ]);
        (out, tag, started.elapsed())
    };

    // A CA that did not sign the registry's certificate: refused, and the message names the
    // CA file that was trusted.
    sh(&format!(
        "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -out other-ca.crt -days 2 -subj /CN=other 2>/dev/null",
        dir.display()
    ));
    let (out, _, took) = push("wrong-ca");
    let err = assert_fails_with(&out, &["is not trusted", "other-ca.crt", "hint: trust"]);
    assert!(!err.contains("retrying"), "{err}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    std::fs::remove_file(dir.join("other-ca.crt")).unwrap();

    // The right CA but no client certificate: the registry refuses the connection, at once.
    std::fs::copy(&ca, dir.join("ca.crt")).unwrap();
    let (out, _, took) = push("no-client-cert");
    let err = assert_fails_with(
        &out,
        &[
            "wants a client certificate",
            "none was found",
            "client.cert",
        ],
    );
    assert!(!err.contains("retrying"), "{err}");
    assert_eq!(out.status.code(), Some(1));
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");

    // A certificate without its key is refused by name before anything is sent.
    std::fs::copy(&client_cert, dir.join("client.cert")).unwrap();
    let (out, _, _) = push("no-key");
    assert_fails_with(&out, &["client.cert", "without its key", "client.key"]);

    // With both, the push works, and skopeo (the peer) reads the image with the same dir.
    std::fs::copy(&client_key, dir.join("client.key")).unwrap();
    let (out, tag, _) = push("mtls");
    assert_ok(&out);
    let digest = pushed_digest(&out, &tag);
    let inspect = sh(&format!(
        "skopeo inspect --cert-dir {} docker://{tag}",
        dir.display()
    ));
    assert!(inspect.contains(&digest), "{inspect}");

    // The same files in the per-user certs.d directory for HOST:PORT, as podman reads them.
    let certs_d = ctx.path(&format!("xdg-config/containers/certs.d/{}", reg.addr));
    std::fs::create_dir_all(certs_d.parent().unwrap()).unwrap();
    std::fs::rename(&dir, &certs_d).unwrap();
    let tag = format!("{}/ml/env:certs-d", reg.addr);
    let out = ctx.imgbuild(&["--spec", spec.to_str().unwrap(), "--tag", &tag, "--push"]);
    assert_ok(&out);
    pushed_digest(&out, &tag);
}

/// Issue 18: containers-auth.json keys for a namespace (`host/ml`) are used for repositories
/// under it, the most specific first; `imgbuild login HOST/NAMESPACE` writes one, as `podman
/// login` does, and podman reads it back.
#[test]
fn namespaced_auth_file_entries_win_for_their_repositories() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("ci", "s3cret-pass")),
        ..RegistryOptions::default()
    });
    let ctx = TestContext::new();
    let file = ctx.path("auth.json");
    // The registry-wide entry holds credentials the registry rejects.
    std::fs::write(
        &file,
        serde_json::json!({"auths": {reg.addr.as_str(): {"auth": base64_encode("nobody:wrong")}}})
            .to_string(),
    )
    .unwrap();
    let namespaced = format!("{}/ml", reg.addr);
    assert_ok(&imgbuild_with_stdin(
        &ctx,
        &[
            "login",
            &namespaced,
            "-u",
            "ci",
            "--password-stdin",
            "--authfile",
            file.to_str().unwrap(),
            "--insecure-registry",
            &reg.addr,
        ],
        "s3cret-pass",
    ));
    let auths = read_json(&file)["auths"].clone();
    assert!(auths[namespaced.as_str()]["auth"].is_string(), "{auths}");
    assert!(auths[reg.addr.as_str()]["auth"].is_string(), "{auths}");
    let login = sh(&format!(
        "podman login --get-login --authfile {} {namespaced}",
        file.display()
    ));
    assert_eq!(login.trim(), "ci");

    let spec = ctx.spec(&["whereami"]);
    let push = |tag: &str| {
        ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--tag",
            tag,
            "--push",
            "--authfile",
            file.to_str().unwrap(),
            "--insecure-registry",
            &reg.addr,
        ])
    };
    let tag = format!("{namespaced}/env:1");
    let out = push(&tag);
    assert_ok(&out);
    pushed_digest(&out, &tag);
    // Outside the namespace the registry-wide entry applies, and is rejected by name.
    let out = push(&format!("{}/other/env:1", reg.addr));
    assert_fails_with(
        &out,
        &["rejected the credentials for user 'nobody'", "auth.json"],
    );
    // logout HOST/NAMESPACE removes that entry only.
    assert_ok(&ctx.imgbuild(&["logout", &namespaced, "--authfile", file.to_str().unwrap()]));
    let auths = read_json(&file)["auths"].clone();
    assert!(auths.get(namespaced.as_str()).is_none(), "{auths}");
    assert!(auths[reg.addr.as_str()]["auth"].is_string(), "{auths}");
}

/// Issue 18: an air-gapped cluster mirrors the base image's registry and says so in
/// registries.conf (`--registries-conf` or `CONTAINERS_REGISTRIES_CONF`): the base is pulled
/// from the first mirror that has it (a dead one is skipped with a warning) while its own name
/// resolves nowhere; the SBOM still names the image by that name; when no source has it, the
/// error lists each one.
#[test]
fn a_base_image_is_pulled_from_its_registries_conf_mirror() {
    let mirror = Registry::start(RegistryOptions::default());
    let ctx = TestContext::new();
    let base_layout = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--prefix",
        "/usr/local/bb",
        "--output",
        base_layout.to_str().unwrap(),
        "--tag",
        "base",
    ]));
    sh(&format!(
        "skopeo copy --dest-tls-verify=false oci:{}:base docker://{}/hub/library/bb:1",
        base_layout.display(),
        mirror.addr
    ));
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let write_conf = |name: &str, mirrors: &[&str]| {
        let mut text =
            "[[registry]]\nprefix = \"upstream.invalid\"\nlocation = \"upstream.invalid\"\n"
                .to_string();
        for m in mirrors {
            text.push_str(&format!(
                "[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n"
            ));
        }
        let path = ctx.path(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let dead = format!("127.0.0.1:{dead_port}/hub");
    let live = format!("{}/hub", mirror.addr);
    let conf = write_conf("registries.conf", &[&dead, &live]);
    let base_ref = "upstream.invalid/library/bb:1";
    let spec = ctx.spec(&["whereami"]);
    let build = |out: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "--spec",
            spec.to_str().unwrap(),
            "--base",
            base_ref,
            "--output",
            out,
            "--tag",
            "app:1",
        ];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        (ctx.imgbuild_env(&args, env), started.elapsed())
    };
    let app = ctx.path("app");
    let sbom = ctx.path("sbom.json");
    let (out, _) = build(
        app.to_str().unwrap(),
        &[
            "--registries-conf",
            conf.to_str().unwrap(),
            "--sbom",
            sbom.to_str().unwrap(),
        ],
        &[],
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot pull {base_ref} from 127.0.0.1:{dead_port}/hub/library/bb:1"
        )),
        "{err}"
    );
    assert!(mirror.count("\"GET /v2/hub/library/bb/manifests/1") >= 1);
    let base_layers = manifest(&base_layout)["layers"].as_array().unwrap().clone();
    let app_layers = manifest(&app)["layers"].as_array().unwrap().clone();
    assert_eq!(&app_layers[..base_layers.len()], base_layers.as_slice());
    // The image is named by what the user asked for, not by where its bytes came from.
    let sbom_text = std::fs::read_to_string(&sbom).unwrap();
    assert!(sbom_text.contains(base_ref), "{sbom_text}");
    assert!(!sbom_text.contains(&mirror.addr), "{sbom_text}");

    // The variable podman and skopeo read works the same.
    let (out, _) = build(
        ctx.path("app-env").to_str().unwrap(),
        &[],
        &[("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())],
    );
    assert_ok(&out);
    assert_eq!(manifest(&ctx.path("app-env")), manifest(&app));

    // Without the mirror the name resolves nowhere: a quick failure that names it.
    let (out, took) = build(ctx.path("none").to_str().unwrap(), &[], &[]);
    assert_fails_with(&out, &["upstream.invalid"]);
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert!(!ctx.path("none").join("index.json").exists());

    // No source has it: every one is named with what went wrong there.
    let empty = write_conf("empty.conf", &[&format!("{}/empty", mirror.addr)]);
    let (out, took) = build(
        ctx.path("missing").to_str().unwrap(),
        &["--registries-conf", empty.to_str().unwrap()],
        &[],
    );
    assert_fails_with(
        &out,
        &[
            &format!("cannot pull {base_ref} from any of its sources"),
            &format!("{}/empty/library/bb:1", mirror.addr),
            "upstream.invalid/library/bb:1: cannot reach registry upstream.invalid",
        ],
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");

    // A blocked registry is refused by name, and a broken file is named.
    let blocked = ctx.path("blocked.conf");
    std::fs::write(
        &blocked,
        "[[registry]]\nlocation = \"upstream.invalid\"\nblocked = true\n",
    )
    .unwrap();
    let (out, _) = build(
        ctx.path("blocked").to_str().unwrap(),
        &["--registries-conf", blocked.to_str().unwrap()],
        &[],
    );
    assert_fails_with(&out, &["blocked", "blocked.conf"]);
    std::fs::write(&blocked, "[[registry]\n").unwrap();
    let (out, _) = build(
        ctx.path("broken").to_str().unwrap(),
        &["--registries-conf", blocked.to_str().unwrap()],
        &[],
    );
    assert_fails_with(&out, &["blocked.conf", "not a valid registries.conf"]);
}
