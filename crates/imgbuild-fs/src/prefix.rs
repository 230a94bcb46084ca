//! Where the environment lives inside the image: checked once, where it is parsed, so
//! that the installer, the layer writer and the SBOM all take a path they need not check.

use std::fmt;
use std::path::{Component, Path};

/// A path that cannot be an install prefix, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{prefix}' cannot be the install prefix: {why}")]
pub struct PrefixError {
    pub prefix: String,
    pub why: &'static str,
}

/// An absolute, normalized path such as `/opt/conda`: not `/`, no `..`, `.`, `//`, trailing
/// slash or whitespace (conda packages break on prefixes with spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPrefix(String);

impl InstallPrefix {
    pub fn parse(s: &str) -> Result<Self, PrefixError> {
        let bad = |why: &'static str| PrefixError {
            prefix: s.to_string(),
            why,
        };
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(bad("it must be an absolute path such as /opt/conda"));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(bad("it must not contain whitespace"));
        }
        let normal: Vec<_> = p.components().skip(1).collect();
        if normal.is_empty() {
            return Err(bad("the environment cannot be installed at /"));
        }
        if normal.iter().any(|c| !matches!(c, Component::Normal(_)))
            || s.ends_with('/')
            || s.contains("//")
        {
            return Err(bad(
                "it must be a normalized path without '.', '..', '//' or a trailing '/'",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix as a path inside the image's root file system: `/opt/conda` → `opt/conda`,
    /// as tar entries name it.
    pub fn image_relative(&self) -> std::path::PathBuf {
        Path::new(&self.0).components().skip(1).collect()
    }
}

impl fmt::Display for InstallPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::InstallPrefix;

    #[test]
    fn accepts_normal_and_refuses_odd_prefixes() {
        assert!(InstallPrefix::parse("/opt/conda").is_ok());
        for bad in [
            "opt/conda",
            "/",
            "/opt/../etc",
            "/opt/conda/",
            "/opt//conda",
            "/opt/my env",
        ] {
            assert!(InstallPrefix::parse(bad).is_err(), "{bad}");
        }
    }
}
