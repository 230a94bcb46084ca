//! What a rebuild reuses, asserted on the images (digests); what each build reused or wrote,
//! asserted on its report, is in pipeline.rs.

use crate::common::*;

fn layer_digests(layout: &std::path::Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn adding_one_small_package_changes_one_package_layer_and_the_environment_layer() {
    let ctx = TestContext::new();
    let build = |dir: &str, deps: &[&str]| {
        let out = ctx.path(dir);
        let spec = ctx.spec(deps);
        assert_ok(&ctx.imgbuild(&[
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]));
        layer_digests(&out)
    };
    let before = build("before", &["whereami", "binlib", "hello-py"]);
    let after = build("after", &["whereami", "binlib", "hello-py", "torchlike"]);
    let new: Vec<_> = after.iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(
        new.len(),
        3,
        "one package group, the environment layer and the SBOM: {new:?}"
    );
    assert_eq!(
        new[1..],
        [&after[after.len() - 2], &after[after.len() - 1]],
        "the environment layer and the SBOM are last"
    );
}
