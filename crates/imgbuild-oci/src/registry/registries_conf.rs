//! Where an image is pulled from: containers-registries.conf(5), version 2, as podman, skopeo,
//! buildah and CRI-O read it. An air-gapped cluster mirrors docker.io and says so there once;
//! a base image named `docker.io/library/debian:bookworm-slim` is then pulled from the mirror.
//!
//! ```toml
//! [[registry]]
//! prefix = "docker.io"                 # defaults to `location`
//! location = "docker.io"               # where the prefix's images really live
//! insecure = false                     # plain HTTP or an unverified certificate allowed
//! blocked = false                      # pulls refused
//! mirror-by-digest-only = false        # mirrors only for references with a digest
//!
//! [[registry.mirror]]
//! location = "mirror.internal:5000/dockerhub"
//! insecure = false
//! pull-from-mirror = "all"             # or "digest-only", "tag-only"
//! ```
//!
//! For an image, the `[[registry]]` whose prefix is the longest match is chosen (a prefix
//! matches whole components: `example.com/foo` matches `example.com/foo/app` and
//! `example.com/foo:1`, not `example.com/foobar`; `*.example.com` matches any host under
//! it); its mirrors are tried in order, then its location. The first source that has the
//! image is used, and a source that fails is reported with the others if all fail.
//!
//! Files read: the one given (`--registries-conf`, `CONTAINERS_REGISTRIES_CONF`) alone; else
//! `${XDG_CONFIG_HOME:-~/.config}/containers/registries.conf` if it exists, otherwise
//! `/etc/containers/registries.conf`, then the drop-ins `*.conf` of
//! `/etc/containers/registries.conf.d/` and of the per-user `registries.conf.d/`, in name
//! order; a later `[[registry]]` with the same prefix replaces an earlier one. Everything
//! else in these files (search registries, aliases, the version 1 tables) is not about
//! pulling a fully qualified name and is ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Reference, RegistryError};

#[derive(Debug, Default, Deserialize)]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryTable>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryTable {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorTable {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: PullFromMirror,
}

/// Which references a mirror serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// One `[[registry]]` table, checked, with the file it came from.
#[derive(Debug, Clone)]
struct Entry {
    table: RegistryTable,
    file: PathBuf,
}

impl Entry {
    /// The prefix the table is chosen by (its `location` when it has none).
    fn prefix(&self) -> &str {
        if self.table.prefix.is_empty() {
            &self.table.location
        } else {
            &self.table.prefix
        }
    }

    /// How well the table's prefix matches `reference` (longer is better), and how much of
    /// the reference's text it replaces when the image is pulled from elsewhere.
    fn matches(&self, reference: &Reference, full: &str) -> Option<(usize, usize)> {
        let prefix = self.prefix();
        if let Some(domain) = prefix.strip_prefix('*') {
            let host = reference.registry.split(':').next().unwrap_or_default();
            return host
                .ends_with(domain)
                .then_some((prefix.len(), reference.registry.len()));
        }
        let rest = full.strip_prefix(prefix)?;
        let whole_component = match rest.chars().next() {
            None | Some('/' | '@') => true,
            // After a host alone, ':' starts a port, not a tag.
            Some(':') => prefix.contains('/'),
            Some(_) => false,
        };
        whole_component.then_some((prefix.len(), prefix.len()))
    }
}

/// Where to try pulling one image from, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The image at this source.
    pub reference: Reference,
    /// Whether plain HTTP or an unverified certificate is allowed there.
    pub insecure: bool,
    /// A mirror (else the image's own location).
    pub mirror: bool,
}

/// The `[[registry]]` tables of the registries.conf files in force.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    entries: Vec<Entry>,
}

impl RegistriesConf {
    /// Reads `explicit` alone, or the default files (see the module docs). A file that does
    /// not exist is skipped, except `explicit`.
    pub fn load(explicit: Option<&Path>) -> Result<Self, RegistryError> {
        let mut conf = Self::default();
        if let Some(path) = explicit {
            let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            conf.add(path, &text)?;
            return Ok(conf);
        }
        let user_dir = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(dir) => Some(PathBuf::from(dir).join("containers")),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/containers")),
        };
        let system_dir = PathBuf::from("/etc/containers");
        let main = user_dir
            .as_ref()
            .map(|d| d.join("registries.conf"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| system_dir.join("registries.conf"));
        let mut files = vec![main];
        for dir in std::iter::once(system_dir).chain(user_dir) {
            let Ok(entries) = std::fs::read_dir(dir.join("registries.conf.d")) else {
                continue;
            };
            let mut drop_ins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => conf.add(&path, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(RegistryError::Io { path, source }),
            }
        }
        Ok(conf)
    }

    /// Parses one file's text and adds its tables (replacing those with the same prefix).
    fn add(&mut self, path: &Path, text: &str) -> Result<(), RegistryError> {
        let bad = |message: String| {
            RegistryError::Config(format!(
                "{}: not a valid registries.conf: {message}",
                path.display()
            ))
        };
        let file: ConfFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for table in file.registry {
            let entry = Entry {
                table,
                file: path.to_path_buf(),
            };
            let prefix = entry.prefix();
            if prefix.is_empty() {
                return Err(bad("a [[registry]] has neither prefix nor location".into()));
            }
            if prefix.starts_with('*') {
                if !prefix.starts_with("*.") || prefix[2..].contains(['*', '/']) {
                    return Err(bad(format!(
                        "prefix '{prefix}': a wildcard is '*.' followed by a domain"
                    )));
                }
                if !entry.table.location.is_empty() {
                    return Err(bad(format!(
                        "prefix '{prefix}': a wildcard prefix cannot have a location"
                    )));
                }
            }
            if let Some(m) = entry.table.mirror.iter().find(|m| m.location.is_empty()) {
                return Err(bad(format!(
                    "a mirror of '{prefix}' has no location (insecure = {})",
                    m.insecure
                )));
            }
            let prefix = prefix.to_string();
            self.entries.retain(|e| e.prefix() != prefix);
            self.entries.push(entry);
        }
        Ok(())
    }

    /// The sources to try for `reference`, in order: the mirrors of the table that matches it
    /// (those that serve a reference of its kind), then its location. An image no table
    /// matches has one source, itself.
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<PullSource>, RegistryError> {
        let full = reference.to_string();
        let Some((entry, replaced)) = self
            .entries
            .iter()
            .filter_map(|e| e.matches(reference, &full).map(|(rank, r)| (rank, e, r)))
            .max_by_key(|(rank, _, _)| *rank)
            .map(|(_, e, r)| (e, r))
        else {
            return Ok(vec![PullSource {
                reference: reference.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if entry.table.blocked {
            return Err(RegistryError::Config(format!(
                "pulling {reference} is blocked by the [[registry]] '{}' in {}",
                entry.prefix(),
                entry.file.display()
            )));
        }
        let rest = &full[replaced..];
        let at = |location: &str| -> Result<Reference, RegistryError> {
            format!("{location}{rest}").parse().map_err(|e| {
                RegistryError::Config(format!(
                    "{}: the [[registry]] '{}' maps {reference} to an invalid reference: {e}",
                    entry.file.display(),
                    entry.prefix()
                ))
            })
        };
        let by_digest = reference.digest.is_some();
        let mut sources = Vec::new();
        if by_digest || !entry.table.mirror_by_digest_only {
            for mirror in &entry.table.mirror {
                let serves = match mirror.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                };
                if serves {
                    sources.push(PullSource {
                        reference: at(&mirror.location)?,
                        insecure: mirror.insecure,
                        mirror: true,
                    });
                }
            }
        }
        sources.push(PullSource {
            reference: if entry.table.location.is_empty() {
                reference.clone()
            } else {
                at(&entry.table.location)?
            },
            insecure: entry.table.insecure,
            mirror: false,
        });
        Ok(sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.add(Path::new("registries.conf"), text).unwrap();
        c
    }

    fn sources(c: &RegistriesConf, reference: &str) -> Vec<String> {
        c.pull_sources(&reference.parse().unwrap())
            .unwrap()
            .into_iter()
            .map(|s| {
                format!(
                    "{}{}{}",
                    s.reference,
                    if s.mirror { " mirror" } else { "" },
                    if s.insecure { " insecure" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn the_manual_page_example() {
        let c = conf(
            r#"
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "example.com/foo/image:latest"),
            [
                "example-mirror-0.local/mirror-for-foo/image:latest mirror",
                "example-mirror-1.local/mirrors/foo/image:latest mirror insecure",
                "internal-registry-for-example.com/bar/image:latest",
            ]
        );
        // Whole components only; an unmatched name is pulled from where it says.
        assert_eq!(
            sources(&c, "example.com/foobar/image:1"),
            ["example.com/foobar/image:1"]
        );
    }

    #[test]
    fn docker_hub_mirrors_and_the_longest_prefix() {
        let c = conf(
            r#"
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/hub"
insecure = true

[[registry]]
prefix = "docker.io/library/debian"
location = "docker.io/library/debian"
[[registry.mirror]]
location = "debian-mirror.local/debian"
pull-from-mirror = "digest-only"
"#,
        );
        assert_eq!(
            sources(&c, "busybox:1.36"),
            [
                "127.0.0.1:5000/hub/library/busybox:1.36 mirror insecure",
                "docker.io/library/busybox:1.36"
            ]
        );
        // The longer prefix wins; its mirror serves only references with a digest.
        assert_eq!(
            sources(&c, "debian:bookworm-slim"),
            ["docker.io/library/debian:bookworm-slim"]
        );
        let pinned = format!("debian@sha256:{}", "a".repeat(64));
        assert_eq!(
            sources(&c, &pinned),
            [
                format!(
                    "debian-mirror.local/debian@sha256:{} mirror",
                    "a".repeat(64)
                ),
                format!("docker.io/library/debian@sha256:{}", "a".repeat(64)),
            ]
        );
    }

    #[test]
    fn a_host_prefix_does_not_match_another_port_and_wildcards_match_hosts() {
        let c = conf(
            r#"
[[registry]]
location = "reg.local"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true
[[registry.mirror]]
location = "cache.local:5000"
"#,
        );
        assert_eq!(
            sources(&c, "reg.local:5000/app:1"),
            ["reg.local:5000/app:1"]
        );
        let err = c
            .pull_sources(&"reg.local/app:1".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
        assert_eq!(
            sources(&c, "hub.corp.example/team/app:2"),
            [
                "cache.local:5000/team/app:2 mirror",
                "hub.corp.example/team/app:2 insecure"
            ]
        );
    }

    #[test]
    fn drop_ins_replace_tables_with_the_same_prefix_and_bad_files_are_named() {
        let mut c = conf("[[registry]]\nlocation = \"a.io\"\nblocked = true\n");
        c.add(
            Path::new("50-mirror.conf"),
            "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\n",
        )
        .unwrap();
        assert_eq!(sources(&c, "a.io/x:1"), ["m.io/x:1 mirror", "a.io/x:1"]);
        let mut c = RegistriesConf::default();
        for (text, needle) in [
            ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
            ("[[registry]]\nprefix = \"*.a.io\"\nlocation = \"b.io\"\n", "wildcard"),
            ("[[registry]\n", "not a valid registries.conf"),
            (
                "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
                "sometimes",
            ),
        ] {
            let err = c.add(Path::new("bad.conf"), text).unwrap_err().to_string();
            assert!(err.contains("bad.conf") && err.contains(needle), "{err}");
        }
    }
}
