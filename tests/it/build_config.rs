//! The image's configuration from the spec: x-imgbuild keys, activation scripts.

use crate::common::*;

#[test]
fn x_imgbuild_keys_in_the_spec_apply_and_flags_win() {
    let ctx = TestContext::new();
    let spec = ctx.path("environment.yml");
    std::fs::write(
        &spec,
        format!(
            "name: x\nchannels: [{}/]\ndependencies: [whereami, cudalib]\n\
             x-imgbuild:\n  prefix: /srv/env\n  cuda: \"11.8\"\n  platforms: [linux/amd64]\n\
             \x20 entrypoint: [/srv/env/bin/whereami]\n  env: {{FROM_SPEC: \"1\", SHARED: spec}}\n\
             \x20 labels: {{team: ml}}\n",
            fixture().server.url
        ),
    )
    .unwrap();
    let out = ctx.path("img");
    // cudalib only solves with __cuda, which comes from x-imgbuild's cuda.
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--env",
        "SHARED=flag",
        "--label",
        "team=platform",
    ]));
    let cfg = config(&out);
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM_SPEC=1") && env.contains(&"SHARED=flag"),
        "{env:?}"
    );
    assert!(env.contains(&"CONDA_PREFIX=/srv/env"), "{env:?}");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/srv/env/bin/whereami");
    assert_eq!(cfg["config"]["Labels"]["team"], "platform", "flags win");
    let script = layer_entries(&out)
        .into_iter()
        .find(|e| e.path == "srv/env/bin/whereami")
        .expect("prefix from spec");
    assert!(String::from_utf8(script.data)
        .unwrap()
        .starts_with("#!/srv/env/bin/busybox"));
    // A flag wins over the spec's prefix.
    let out2 = ctx.path("img2");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
        "--prefix",
        "/opt/other",
    ]));
    assert!(layer_entries(&out2)
        .iter()
        .any(|e| e.path == "opt/other/bin/whereami"));
    // A typo in the block is an error, not silently ignored.
    std::fs::write(
        &spec,
        format!(
            "channels: [{}/]\ndependencies: [busybox]\nx-imgbuild:\n  prefx: /x\n",
            fixture().server.url
        ),
    )
    .unwrap();
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        ctx.path("img3").to_str().unwrap(),
    ]);
    assert_fails_with(&res, &["x-imgbuild", "prefx", "prefix"]);
}

#[test]
fn activation_scripts_are_baked_into_the_image_env() {
    let ctx = TestContext::new();
    let out = ctx.path("img");
    let spec = ctx.spec(&["actpkg", "busybox"]);
    let res = ctx.imgbuild(&[
        "--spec",
        spec.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "act:1",
    ]);
    assert_ok(&res);
    let cfg = config(&out);
    let env: Vec<String> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        env.contains(&"ACTPKG_HOME=/opt/conda/share/actpkg".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"ACTPKG_MODE=fast".to_string()), "{env:?}");
    assert!(
        env[0].starts_with("PATH=/opt/conda/bin:/opt/conda/libexec/actpkg:/usr/local/sbin"),
        "{env:?}"
    );
    let cache = ctx.path("cache").to_string_lossy().into_owned();
    assert!(
        env.iter()
            .all(|e| !e.contains(&cache) && !e.contains("staging")),
        "host paths leaked: {env:?}"
    );
    // A container sees the activated environment with no wrapper.
    let report = validate_image(
        &format!("{}:act:1", out.display()),
        Some("/opt/conda/bin/busybox sh -c 'echo $ACTPKG_HOME'"),
    );
    assert!(report.contains("-> /opt/conda/share/actpkg"), "{report}");

    // Read, not run, so another platform's image gets them too.
    let arm = ctx.path("arm");
    let res = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["actpkg"]).to_str().unwrap(),
        "--output",
        arm.to_str().unwrap(),
        "--platform",
        "linux/arm64",
    ]);
    assert_ok(&res);
    assert!(
        stderr(&res).contains("baked activation scripts into the image (read, not run): etc/conda/activate.d/actpkg.sh"),
        "{}",
        stderr(&res)
    );
    let arm_env = config(&arm)["config"]["Env"].clone();
    assert!(
        arm_env
            .as_array()
            .unwrap()
            .contains(&"ACTPKG_HOME=/opt/conda/share/actpkg".into()),
        "{arm_env}"
    );
}
