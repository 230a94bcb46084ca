//! The SBOM every build writes: SPDX 2.3 valid against the SPDX project's JSON schema (shipped
//! in tests/data), every package of the environment and nothing else, purls that parse and
//! agree with the records, the base image by digest; the same document inside the image;
//! CycloneDX on request.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use packageurl::PackageUrl;
use serde_json::Value;

use crate::common::*;

/// `(name, version, build)` of every conda-meta record in the layout's image.
fn records(layout: &Path) -> BTreeSet<(String, String, String)> {
    conda_meta_records(layout)
        .into_iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("name"), s("version"), s("build"))
        })
        .collect()
}

fn validate_spdx(doc: &Value) -> Result<(), String> {
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/spdx-2.3.schema.json");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let index = compiler
        .compile(schema.to_str().unwrap(), &mut schemas)
        .unwrap_or_else(|e| panic!("schema does not compile: {e:#}"));
    schemas
        .validate(doc, index)
        .map_err(|e| format!("not valid SPDX 2.3: {e:#}"))
}

/// Validates against CycloneDX 1.5; the schema's `$ref`s to its two sibling schemas resolve
/// against its `$id`, so those are registered under the URLs they resolve to.
fn validate_cyclonedx(doc: &Value) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/cyclonedx");
    let load = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    for name in ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"] {
        compiler
            .add_resource(&format!("http://cyclonedx.org/schema/{name}"), load(name))
            .unwrap();
    }
    let url = "http://cyclonedx.org/schema/bom-1.5.schema.json";
    compiler
        .add_resource(url, load("bom-1.5.SNAPSHOT.schema.json"))
        .unwrap();
    let index = compiler
        .compile(url, &mut schemas)
        .unwrap_or_else(|e| panic!("schema does not compile: {e:#}"));
    schemas
        .validate(doc, index)
        .map_err(|e| format!("not valid CycloneDX 1.5: {e:#}"))
}

#[test]
fn spdx_sbom_is_valid_complete_and_in_the_image() {
    let ctx = TestContext::new();
    let base = ctx.path("base");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["busybox"]).to_str().unwrap(),
        "--prefix",
        "/usr/local/bb",
        "--output",
        base.to_str().unwrap(),
    ]));
    let base_digest = read_json(&base.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ctx.path("img");
    let file = ctx.path("sbom.spdx.json");
    assert_ok(
        &ctx.imgbuild(&[
            "--spec",
            ctx.spec(&["whereami", "binlib", "hello-py"])
                .to_str()
                .unwrap(),
            "--base",
            &format!("oci:{}", base.display()),
            "--output",
            out.to_str().unwrap(),
            "--sbom",
            file.to_str().unwrap(),
        ]),
    );
    let bytes = std::fs::read(&file).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    validate_spdx(&doc).unwrap();
    // The base is named by its digest, not by where it sits on this machine: the same base
    // at another path makes the same image.
    assert!(
        !String::from_utf8_lossy(&bytes).contains(ctx.tmp.path().to_str().unwrap()),
        "a host path in the SBOM"
    );
    let moved = ctx.path("elsewhere/base-copy");
    sh(&format!(
        "mkdir -p {0} && cp -a {1}/. {0}/",
        moved.display(),
        base.display()
    ));
    let again = ctx.path("img-again");
    assert_ok(
        &ctx.imgbuild(&[
            "--spec",
            ctx.spec(&["whereami", "binlib", "hello-py"])
                .to_str()
                .unwrap(),
            "--base",
            &format!("oci:{}", moved.display()),
            "--output",
            again.to_str().unwrap(),
            "--sbom",
            ctx.path("sbom-again.spdx.json").to_str().unwrap(),
        ]),
    );
    assert_eq!(
        manifest(&out),
        manifest(&again),
        "the base's path changed the image"
    );
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    // The check can fail: a document without creation info, or with a bad checksum
    // algorithm, is refused.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("creationInfo");
    assert!(validate_spdx(&broken).is_err());
    let mut broken = doc.clone();
    broken["packages"][1]["checksums"][0]["algorithm"] = "SHA-256".into();
    assert!(validate_spdx(&broken).is_err());

    // The same bytes are in the image, in the last layer, under conda-meta.
    let inside = layer_entries(&out)
        .into_iter()
        .find(|e| e.path == "opt/conda/conda-meta/imgbuild.spdx.json")
        .expect("SBOM in the image");
    assert_eq!(inside.data, bytes);

    // Every conda package of the environment, and nothing else, each with its purl.
    let expected = records(&out);
    assert!(expected.len() >= 4, "{expected:?}");
    let packages = doc["packages"].as_array().unwrap();
    let mut listed = BTreeSet::new();
    let mut base_entries = 0;
    for p in packages {
        let id = p["SPDXID"].as_str().unwrap();
        if id == "SPDXRef-Image" {
            continue;
        }
        let purl_text = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        let purl = PackageUrl::from_str(purl_text)
            .unwrap_or_else(|e| panic!("purl {purl_text} does not parse: {e}"));
        if id == "SPDXRef-BaseImage" {
            base_entries += 1;
            assert_eq!(purl.ty(), "oci");
            assert_eq!(p["versionInfo"], base_digest.as_str());
            assert_eq!(purl.version(), Some(base_digest.as_str()));
            continue;
        }
        assert_eq!(purl.ty(), "conda", "{purl_text}");
        let name = p["name"].as_str().unwrap().to_string();
        let version = p["versionInfo"].as_str().unwrap().to_string();
        assert_eq!(purl.name(), name);
        assert_eq!(purl.version(), Some(version.as_str()));
        let q = purl.qualifiers();
        let build = q.get("build").unwrap().to_string();
        assert!(
            q.get("channel").unwrap().starts_with("http://127.0.0.1:"),
            "{purl_text}"
        );
        assert!(["linux-64", "noarch"].contains(&q.get("subdir").unwrap().as_ref()));
        let sha = p["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .unwrap()["checksumValue"]
            .as_str()
            .unwrap();
        assert_eq!(sha.len(), 64);
        assert_eq!(p["licenseDeclared"], "MIT");
        assert!(p["downloadLocation"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"));
        listed.insert((name, version, build));
    }
    assert_eq!(listed, expected, "every package of the env, nothing else");
    assert_eq!(base_entries, 1, "the base image, by digest");

    // CycloneDX on request, with the same packages.
    let out2 = ctx.path("img2");
    let cdx_file = ctx.path("sbom.cdx.json");
    assert_ok(
        &ctx.imgbuild(&[
            "--spec",
            ctx.spec(&["whereami", "binlib", "hello-py"])
                .to_str()
                .unwrap(),
            "--output",
            out2.to_str().unwrap(),
            "--sbom",
            cdx_file.to_str().unwrap(),
            "--sbom-format",
            "cyclonedx",
        ]),
    );
    let cdx: Value = serde_json::from_slice(&std::fs::read(&cdx_file).unwrap()).unwrap();
    validate_cyclonedx(&cdx).unwrap();
    assert_eq!(cdx["bomFormat"], "CycloneDX");
    assert_eq!(cdx["specVersion"], "1.5");
    assert!(cdx["serialNumber"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));
    let names: BTreeSet<(String, String)> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            PackageUrl::from_str(c["purl"].as_str().unwrap()).unwrap();
            (
                c["name"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected2: BTreeSet<(String, String)> =
        records(&out2).into_iter().map(|(n, v, _)| (n, v)).collect();
    assert_eq!(names, expected2);
    assert!(layer_entries(&out2)
        .iter()
        .any(|e| e.path == "opt/conda/conda-meta/imgbuild.cdx.json"));
}

#[test]
fn pushed_images_carry_their_sbom_as_a_referrer() {
    let reg = crate::common::registry::Registry::start(Default::default());
    let ctx = TestContext::new();
    let tag = format!("{}/ml/env:1", reg.addr);
    let out = ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--tag",
        &tag,
        "--push",
        "--insecure-registry",
        &reg.addr,
    ]);
    assert_ok(&out);
    let image = pushed_digest(&out, &tag);
    let http = |path: &str| registry_get(&reg.addr, "ml/env", path);
    let (index, _) = referrers(&reg.addr, "ml/env", &image);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");
    let artifact = entries[0]["digest"].as_str().unwrap();
    let manifest = http(&format!("manifests/{artifact}"));
    let (body, code) = manifest.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{body}");
    let manifest: Value = serde_json::from_str(body).unwrap();
    assert_eq!(manifest["subject"]["digest"], image.as_str());
    assert_eq!(manifest["artifactType"], "application/spdx+json");
    let sbom_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let sbom = sh(&format!(
        "curl -sf http://{}/v2/ml/env/blobs/{sbom_digest}",
        reg.addr
    ));
    let doc: Value = serde_json::from_str(&sbom).unwrap();
    validate_spdx(&doc).unwrap();
    assert!(doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "whereami"));

    // Pushing again keeps one referrer, not two.
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--tag",
        &tag,
        "--push",
        "--insecure-registry",
        &reg.addr,
    ]));
    let (again, _) = referrers(&reg.addr, "ml/env", &image);
    assert_eq!(again["manifests"].as_array().unwrap().len(), 1, "{again}");

    // `imgbuild push LAYOUT REF` attaches the SBOM the image carries, as `build --push` does.
    let layout = ctx.path("cdx-layout");
    assert_ok(&ctx.imgbuild(&[
        "--spec",
        ctx.spec(&["whereami"]).to_str().unwrap(),
        "--output",
        layout.to_str().unwrap(),
        "--sbom-format",
        "cyclonedx",
    ]));
    let other = format!("{}/ml/other:1", reg.addr);
    let out = ctx.imgbuild(&[
        "push",
        layout.to_str().unwrap(),
        &other,
        "--insecure-registry",
        &reg.addr,
    ]);
    assert_ok(&out);
    let image = pushed_digest(&out, &other);
    let (index, _) = referrers(&reg.addr, "ml/other", &image);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["artifactType"], "application/vnd.cyclonedx+json");
}

/// `GET /v2/<repo>/<path>` on a plain-HTTP registry: the body and the status code.
fn registry_get(addr: &str, repo: &str, path: &str) -> String {
    sh(&format!(
        "curl -s -w '\\n%{{http_code}}' -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' http://{addr}/v2/{repo}/{path}"
    ))
}

/// The referrers index of `image` in `repo`: from the referrers API where the registry has it,
/// else from the referrers tag schema; and whether the API answered.
fn referrers(addr: &str, repo: &str, image: &str) -> (Value, bool) {
    let api = registry_get(addr, repo, &format!("referrers/{image}"));
    let (body, code) = api.trim_end().rsplit_once('\n').unwrap();
    if code == "200" {
        return (serde_json::from_str(body).unwrap(), true);
    }
    let fallback = registry_get(
        addr,
        repo,
        &format!("manifests/{}", image.replace(':', "-")),
    );
    let (body, code) = fallback.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(
        code, "200",
        "no referrers API ({api}) and no referrers tag: {body}"
    );
    (serde_json::from_str(body).unwrap(), false)
}
