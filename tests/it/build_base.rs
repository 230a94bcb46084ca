//! Builds on a base image: its layers kept, runtime options applied.

use crate::common::*;

#[test]
fn base_image_layers_are_reused_and_runtime_options_applied() {
    let ctx = TestContext::new();
    let base = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--output",
        base.to_str().unwrap(),
        "--tag",
        "base:1",
        "--prefix",
        "/usr/local/bb",
        "--env",
        "FROM_BASE=yes",
        "--workdir",
        "/srv",
        "--cmd",
        "/usr/local/bb/bin/busybox sh",
    ]));
    let out = ctx.path("img");
    let base_ref = format!("oci:{}:base:1", base.display());
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "app:1",
        "--tag",
        "app:latest",
        "--label",
        "org.example.team=ml",
        "--entrypoint",
        r#"["/opt/conda/bin/whereami"]"#,
        "--user",
        "1000:1000",
    ]));
    let base_layers = manifest(&base)["layers"].as_array().unwrap().clone();
    let layers = manifest(&out)["layers"].as_array().unwrap().clone();
    assert_eq!(
        &layers[..base_layers.len()],
        &base_layers[..],
        "base layers reused byte for byte"
    );
    let cfg = config(&out);
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FROM_BASE=yes"), "{env:?}");
    assert!(
        env[0].starts_with("PATH=/opt/conda/bin:/usr/local/bb/bin:"),
        "{env:?}"
    );
    assert_eq!(cfg["config"]["WorkingDir"], "/srv");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(cfg["config"]["Labels"]["org.example.team"], "ml");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/opt/conda/bin/whereami");
    assert!(
        cfg["config"]["Cmd"].is_null(),
        "a new entrypoint drops the base's cmd"
    );
    // Both tags point at the same manifest, recorded verbatim.
    let index = read_json(&out.join("index.json"));
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, vec!["app:1", "app:latest"]);
    let inspect = sh(&format!("skopeo inspect oci:{}:app:latest", out.display()));
    assert!(inspect.contains("\"Architecture\": \"amd64\""), "{inspect}");
    // Runs through the entrypoint as the non-root user (so modes were normalized to readable).
    let report = validate_image(&format!("{}:app:1", out.display()), Some("ignored-arg"));
    assert!(report.contains("-> prefix=/opt/conda"), "{report}");

    // Building again into the same layout replaces the tag instead of adding a duplicate.
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--base",
        &base_ref,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "app:1",
    ]));
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
}
