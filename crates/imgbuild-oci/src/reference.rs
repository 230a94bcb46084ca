//! Image references with Docker's normalization: `debian:bookworm-slim` is
//! `docker.io/library/debian:bookworm-slim`, `localhost:5000/ml/env@sha256:…` keeps its host.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// Docker Hub's name in references, and the host its API really lives on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// `registry/repository[:tag][@digest]`, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, …
    pub registry: String,
    /// `library/debian`, `acme/llm-env`, …
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The host:port the distribution API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What `/v2/<repo>/manifests/<this>` takes: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// Whether `name` looks like a registry reference rather than a bare local name: it has
    /// a registry part (a first component with a `.` or `:`, or `localhost`).
    pub fn names_registry(name: &str) -> bool {
        name.split_once('/').is_some_and(|(first, _)| {
            first.contains('.') || first.contains(':') || first == "localhost"
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference '{input}': {reason}")]
pub struct ParseReferenceError {
    pub input: String,
    pub reason: String,
}

impl FromStr for Reference {
    type Err = ParseReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ParseReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err(err("no repository name"));
        }
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "repository names are lower-case letters, digits and . _ - separated by /",
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(err("tags are up to 128 letters, digits, '.', '_' or '-'"));
            }
        }
        Ok(Self {
            registry,
            repository,
            tag: if tag.is_none() && digest.is_none() {
                Some("latest".into())
            } else {
                tag
            },
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn docker_normalization() {
        assert_eq!(
            r("debian:bookworm-slim").to_string(),
            "docker.io/library/debian:bookworm-slim"
        );
        assert_eq!(r("debian").to_string(), "docker.io/library/debian:latest");
        assert_eq!(r("acme/app:1").to_string(), "docker.io/acme/app:1");
        assert_eq!(r("ghcr.io/acme/llm-env:cu118").repository, "acme/llm-env");
        let local = r("127.0.0.1:5000/ml/env");
        assert_eq!(
            (local.registry.as_str(), local.tag.as_deref()),
            ("127.0.0.1:5000", Some("latest"))
        );
        assert_eq!(local.api_host(), "127.0.0.1:5000");
        assert_eq!(r("debian").api_host(), "registry-1.docker.io");
        let pinned = r(
            "localhost/x@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        );
        assert!(pinned.tag.is_none());
        assert!(pinned.manifest_reference().starts_with("sha256:"));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "UPPER/case", "a/b:bad tag", "x@sha256:12", "host:5000/"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
        assert!(Reference::names_registry("localhost:5000/a"));
        assert!(!Reference::names_registry("llm-env:cu118"));
    }
}
