//! Software bill of materials for a built environment: SPDX 2.3 JSON, or CycloneDX 1.5 JSON.
//!
//! Every conda package is listed with name, version, build, channel, download URL, sha256 and
//! md5, license and a package URL (`pkg:conda/…`), plus the base image by digest. The document
//! is deterministic — its time is `SOURCE_DATE_EPOCH` and its namespace (SPDX) or serial number
//! (CycloneDX) is derived from its content — so it can ship inside the image without breaking
//! reproducibility. The image's own digest cannot be in it (it would depend on itself);
//! `imgbuild inspect` or the registry's referrers link the two.

use rattler_conda_types::RepoDataRecord;

use crate::pip::PipPackage;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Which SBOM format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    /// The media type of the document (the `artifactType` when attached to an image).
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }

    /// File name of the SBOM inside the image, under `<prefix>/conda-meta/`.
    pub fn file_name(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "imgbuild.spdx.json",
            SbomFormat::CycloneDx => "imgbuild.cdx.json",
        }
    }

    /// The format whose [`file_name`](Self::file_name) `path` ends with, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        [SbomFormat::Spdx, SbomFormat::CycloneDx]
            .into_iter()
            .find(|f| path.ends_with(&format!("/conda-meta/{}", f.file_name())))
    }
}

/// The base image the environment was built on.
#[derive(Debug, Clone)]
pub struct BaseImageRef {
    /// As the user named it, e.g. `docker.io/library/debian:bookworm-slim` or `oci:base`.
    pub name: String,
    /// Manifest digest, `sha256:…`.
    pub digest: String,
}

/// What an SBOM describes.
pub struct SbomInput<'a> {
    /// The image or environment name.
    pub name: &'a str,
    pub records: &'a [RepoDataRecord],
    /// Wheels the `pip:` section installed.
    pub pip: &'a [PipPackage],
    pub base: Option<&'a BaseImageRef>,
    /// RFC 3339 UTC creation time (`SOURCE_DATE_EPOCH`).
    pub created: &'a str,
}

/// Renders the SBOM as pretty-printed JSON.
pub fn render(input: &SbomInput<'_>, format: SbomFormat) -> Vec<u8> {
    let doc = match format {
        SbomFormat::Spdx => spdx(input),
        SbomFormat::CycloneDx => cyclonedx(input),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// `pkg:conda/<name>@<version>?build=…&channel=…&subdir=…&type=…` (purl-spec's conda type).
pub fn conda_purl(record: &RepoDataRecord) -> String {
    let p = &record.package_record;
    let kind = if record.identifier.to_string().ends_with(".tar.bz2") {
        "tar.bz2"
    } else {
        "conda"
    };
    let channel = crate::history::channel_name(record).unwrap_or_default();
    format!(
        "pkg:conda/{}@{}?build={}&channel={}&subdir={}&type={kind}",
        encode(&p.name.as_normalized().to_lowercase()),
        encode(&p.version.to_string()),
        encode(p.build.as_str()),
        encode(channel),
        encode(&p.subdir),
    )
}

/// `pkg:pypi/<name>@<version>` (purl-spec's pypi type: lowercase, `_` as `-`).
fn pip_purl(p: &PipPackage) -> String {
    format!("pkg:pypi/{}@{}", encode(&p.name), encode(&p.version))
}

/// `pkg:oci/<name>@sha256%3A…?repository_url=…` for a base image.
fn oci_purl(base: &BaseImageRef) -> String {
    let repo = base.name.split(['@']).next().unwrap_or_default();
    let repo = match repo.rsplit_once(':') {
        // A tag (not a port: ports are followed by a path).
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        encode(&last.to_lowercase()),
        encode(&base.digest),
        encode(repo)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as purl-spec asks for
/// names, versions and qualifier values.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A conda `license` field if it reads as an SPDX license expression (identifiers joined by
/// AND/OR/WITH, with parentheses); `None` for free text like "BSD 3-clause".
fn spdx_expression(license: Option<&str>) -> Option<String> {
    let license = license?.trim();
    if license.is_empty() {
        return None;
    }
    let spaced = license.replace('(', " ( ").replace(')', " ) ");
    let mut expect_id = true;
    let mut depth = 0i32;
    for token in spaced.split_whitespace() {
        match token {
            "(" if expect_id => depth += 1,
            ")" if !expect_id && depth > 0 => depth -= 1,
            "AND" | "OR" | "WITH" if !expect_id => expect_id = true,
            id if expect_id
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')) =>
            {
                expect_id = false
            }
            _ => return None,
        }
    }
    (!expect_id && depth == 0).then(|| license.to_string())
}

/// For an SPDX comment: the license as the package states it, when that is not an SPDX
/// expression (and so cannot be `licenseDeclared`).
fn stated_license_note(license: Option<&str>) -> String {
    match license {
        Some(raw) if spdx_expression(Some(raw)).is_none() => {
            format!("; license as the package states it: {raw}")
        }
        _ => String::new(),
    }
}

/// CycloneDX `licenses`: an SPDX expression, else the license by name, else none.
fn cyclonedx_licenses(license: Option<&str>) -> Value {
    match (spdx_expression(license), license) {
        (Some(expr), _) => json!([{"expression": expr}]),
        (None, Some(raw)) => json!([{"license": {"name": raw}}]),
        (None, None) => json!([]),
    }
}

/// A stable hex hash of everything the document lists.
fn content_hash(input: &SbomInput<'_>) -> String {
    let mut h = Sha256::new();
    h.update(input.name.as_bytes());
    for r in input.records {
        h.update(b"\n");
        h.update(r.url.as_str().as_bytes());
        if let Some(sha) = r.package_record.sha256 {
            h.update(hex::encode(sha));
        }
    }
    for p in input.pip {
        h.update(b"\npip ");
        h.update(p.published_url().unwrap_or(&p.name).as_bytes());
        h.update(p.sha256.as_bytes());
    }
    if let Some(base) = input.base {
        h.update(b"\nbase ");
        h.update(base.name.as_bytes());
        h.update(base.digest.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// SPDX IDs allow letters, digits, `.` and `-`.
fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn spdx(input: &SbomInput<'_>) -> Value {
    let root = "SPDXRef-Image";
    let mut packages = vec![json!({
        "SPDXID": root,
        "name": input.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "copyrightText": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root,
    })];
    let mut records: Vec<&RepoDataRecord> = input.records.iter().collect();
    records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
    for r in records {
        let p = &r.package_record;
        let id = spdx_id("conda", p.name.as_normalized());
        let mut checksums = Vec::new();
        if let Some(sha) = p.sha256 {
            checksums.push(json!({"algorithm": "SHA256", "checksumValue": hex::encode(sha)}));
        }
        if let Some(md5) = p.md5 {
            checksums.push(json!({"algorithm": "MD5", "checksumValue": hex::encode(md5)}));
        }
        let license = spdx_expression(p.license.as_deref());
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name.as_normalized(),
            "versionInfo": p.version.to_string(),
            "downloadLocation": r.url.as_str(),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license.unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": conda_purl(r),
            }],
            "comment": format!(
                "conda package {}-{}-{} from {}{}",
                p.name.as_normalized(),
                p.version,
                p.build,
                r.channel.as_deref().unwrap_or("an unknown channel"),
                stated_license_note(p.license.as_deref())
            ),
        });
        if !checksums.is_empty() {
            pkg["checksums"] = Value::Array(checksums);
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": root,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for p in input.pip {
        let id = spdx_id("pypi", &p.name);
        let license = spdx_expression(p.license.as_deref());
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": p.published_url().unwrap_or("NOASSERTION"),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license.unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": pip_purl(p),
            }],
            "comment": format!(
                "PyPI wheel {}{}",
                p.url.rsplit('/').next().unwrap_or_default(),
                stated_license_note(p.license.as_deref())
            ),
        }));
        relationships.push(json!({
            "spdxElementId": root,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    if let Some(base) = input.base {
        let id = "SPDXRef-BaseImage";
        let mut pkg = json!({
            "SPDXID": id,
            "name": base.name,
            "versionInfo": base.digest,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": oci_purl(base),
            }],
        });
        if let Some(hex) = base.digest.strip_prefix("sha256:") {
            pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex}]);
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": root,
            "relationshipType": "DESCENDANT_OF",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": input.name,
        "documentNamespace": format!(
            "https://imgbuild.invalid/spdx/{}-{}",
            encode(input.name),
            content_hash(input)
        ),
        "creationInfo": {
            "created": input.created,
            "creators": [format!("Tool: imgbuild-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn cyclonedx(input: &SbomInput<'_>) -> Value {
    let hash = content_hash(input);
    let serial = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hash[0..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    );
    let mut records: Vec<&RepoDataRecord> = input.records.iter().collect();
    records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
    let mut components: Vec<Value> = records
        .iter()
        .map(|r| {
            let p = &r.package_record;
            let purl = conda_purl(r);
            let mut hashes = Vec::new();
            if let Some(sha) = p.sha256 {
                hashes.push(json!({"alg": "SHA-256", "content": hex::encode(sha)}));
            }
            if let Some(md5) = p.md5 {
                hashes.push(json!({"alg": "MD5", "content": hex::encode(md5)}));
            }
            let licenses = cyclonedx_licenses(p.license.as_deref());
            json!({
                "type": "library",
                "bom-ref": purl,
                "name": p.name.as_normalized(),
                "version": p.version.to_string(),
                "purl": purl,
                "hashes": hashes,
                "licenses": licenses,
                "externalReferences": [{"type": "distribution", "url": r.url.as_str()}],
                "properties": [
                    {"name": "conda:build", "value": p.build.as_str()},
                    {"name": "conda:channel", "value": r.channel.as_deref().unwrap_or_default()},
                    {"name": "conda:subdir", "value": p.subdir},
                ],
            })
        })
        .collect();
    for p in input.pip {
        let purl = pip_purl(p);
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "hashes": [{"alg": "SHA-256", "content": p.sha256}],
            "licenses": cyclonedx_licenses(p.license.as_deref()),
        }));
        if let Some(url) = p.published_url() {
            components.last_mut().expect("just pushed")["externalReferences"] =
                json!([{"type": "distribution", "url": url}]);
        }
    }
    if let Some(base) = input.base {
        let purl = oci_purl(base);
        components.push(json!({
            "type": "container",
            "bom-ref": purl,
            "name": base.name,
            "version": base.digest,
            "purl": purl,
        }));
    }
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": input.created,
            "tools": {"components": [{
                "type": "application",
                "name": "imgbuild",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {"type": "container", "bom-ref": "image", "name": input.name},
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_expressions() {
        assert_eq!(spdx_expression(Some("MIT")).as_deref(), Some("MIT"));
        assert_eq!(
            spdx_expression(Some("(MIT OR Apache-2.0) AND BSD-3-Clause")).as_deref(),
            Some("(MIT OR Apache-2.0) AND BSD-3-Clause")
        );
        assert_eq!(
            spdx_expression(Some("GPL-2.0-or-later WITH Classpath-exception-2.0")).as_deref(),
            Some("GPL-2.0-or-later WITH Classpath-exception-2.0")
        );
        assert_eq!(spdx_expression(Some("BSD 3-clause")), None);
        assert_eq!(spdx_expression(Some("MIT AND")), None);
        assert_eq!(spdx_expression(Some("(MIT")), None);
        assert_eq!(spdx_expression(None), None);
    }

    #[test]
    fn oci_purls() {
        let base = BaseImageRef {
            name: "docker.io/library/debian:bookworm-slim".into(),
            digest: "sha256:abc".into(),
        };
        assert_eq!(
            oci_purl(&base),
            "pkg:oci/debian@sha256%3Aabc?repository_url=docker.io%2Flibrary%2Fdebian"
        );
        let local = BaseImageRef {
            name: "127.0.0.1:5000/ml/base@sha256:abc".into(),
            digest: "sha256:abc".into(),
        };
        assert!(oci_purl(&local)
            .starts_with("pkg:oci/base@sha256%3Aabc?repository_url=127.0.0.1%3A5000%2Fml%2Fbase"));
    }
}
