//! One resolved PyPI package, and PEP 503 names.

/// One resolved PyPI package: exactly the wheel to install.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PipPackage {
    /// Normalized name (PEP 503).
    pub name: String,
    pub version: String,
    pub url: String,
    /// Hex sha256 of the wheel.
    pub sha256: String,
    /// The license its metadata declares (`License-Expression`, else `License`), once known
    /// from the installed files; for the SBOM.
    pub license: Option<String>,
}

impl PipPackage {
    /// Whether this is a source distribution (to build) rather than a wheel.
    pub fn is_sdist(&self) -> bool {
        !self
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .ends_with(".whl")
    }

    /// Where the file can be had by others: its URL, unless it is a local file (a `file://`
    /// URL names a path on the build host, which an image or SBOM must not depend on).
    pub fn published_url(&self) -> Option<&str> {
        (!self.url.starts_with("file:")).then_some(self.url.as_str())
    }

    /// `name==version`.
    pub fn label(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// PEP 503 normalized name.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}
