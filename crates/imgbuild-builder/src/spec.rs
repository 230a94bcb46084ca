//! `environment.yml`: the input users already have.

use std::path::{Path, PathBuf};

use rattler_conda_types::{Channel, ChannelConfig, MatchSpec, ParseStrictness};
use serde_yaml::Value;

use crate::error::SpecError;

/// Image options kept in the spec itself, under `x-imgbuild:`. Command-line flags win.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageOptions {
    pub base: Option<String>,
    pub prefix: Option<String>,
    pub cuda: Option<String>,
    pub glibc: Option<String>,
    /// Built (and locked) for each: several make an image index.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `cuda` and `glibc` for one platform, where they differ from the ones above, keyed by
    /// the platform as `platforms` names it: `platform-options: {linux/arm64: {cuda: "12.2"}}`.
    #[serde(default)]
    pub platform_options: std::collections::BTreeMap<String, PlatformOptions>,
    /// Registry repositories of the shared environment cache (`--cache-to`, `--cache-from`).
    pub cache_to: Option<String>,
    #[serde(default)]
    pub cache_from: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What `x-imgbuild: platform-options:` may set for one platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformOptions {
    pub cuda: Option<String>,
    pub glibc: Option<String>,
}

/// A parsed `environment.yml`.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The file it came from (relative channel paths resolve against its directory).
    pub path: PathBuf,
    pub name: Option<String>,
    /// Channels as written, highest priority first.
    pub channels: Vec<String>,
    /// Conda dependencies, in file order.
    pub dependencies: Vec<MatchSpec>,
    /// The `pip:` sub-list, as written.
    pub pip: Vec<String>,
    /// The `x-imgbuild:` block: image options that travel with the environment.
    pub image: ImageOptions,
}

impl EnvSpec {
    /// Reads and parses the spec at `path`.
    pub fn from_path(path: &Path) -> Result<Self, SpecError> {
        let text = crate::bounded::read(path, crate::bounded::SPEC)
            .map_err(|source| SpecError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .map_err(|too_much| SpecError::Invalid {
                path: path.to_path_buf(),
                message: too_much.to_string(),
            })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses spec text; `path` is used for messages and relative channels.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self, SpecError> {
        crate::bounded::check_depth(text, crate::bounded::SPEC.max_depth).map_err(|too_much| {
            SpecError::Invalid {
                path: path.to_path_buf(),
                message: too_much.to_string(),
            }
        })?;
        let doc: Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string();
            // serde_yaml appends the location we already put in front.
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            SpecError::Yaml {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        let invalid = |message: String| SpecError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let Value::Mapping(map) = doc else {
            return Err(invalid(
                "expected a mapping with 'channels' and 'dependencies'".into(),
            ));
        };
        let mut spec = EnvSpec {
            path: path.to_path_buf(),
            name: None,
            channels: Vec::new(),
            dependencies: Vec::new(),
            pip: Vec::new(),
            image: ImageOptions::default(),
        };
        for (key, value) in map {
            let key = key.as_str().unwrap_or_default().to_string();
            match key.as_str() {
                "name" => {
                    spec.name = Some(
                        scalar(&value).ok_or_else(|| invalid("'name' must be a string".into()))?,
                    )
                }
                "channels" => spec.channels = string_list(&value, "channels").map_err(invalid)?,
                "dependencies" => {
                    let Value::Sequence(items) = value else {
                        return Err(invalid("'dependencies' must be a list".into()));
                    };
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::Mapping(m) if m.len() == 1 && m.contains_key("pip") => {
                                spec.pip
                                    .extend(string_list(&m["pip"], "pip").map_err(invalid)?);
                            }
                            other => {
                                let text = scalar(other).ok_or_else(|| {
                                    invalid(format!(
                                        "dependencies[{i}]: expected a package spec such as 'numpy>=1.26' or a 'pip:' list"
                                    ))
                                })?;
                                let ms = MatchSpec::from_str(&text, ParseStrictness::Lenient)
                                    .map_err(|e| SpecError::MatchSpec {
                                        path: path.to_path_buf(),
                                        spec: text.clone(),
                                        message: e.to_string(),
                                    })?;
                                spec.dependencies.push(ms);
                            }
                        }
                    }
                }
                "x-imgbuild" => {
                    spec.image = serde_yaml::from_value(value).map_err(|e| {
                        invalid(format!(
                            "x-imgbuild: {e} (keys: base, prefix, cuda, glibc, platforms, \
                             platform-options, cache-to, cache-from, entrypoint, cmd, user, workdir, \
                             env, labels)"
                        ))
                    })?
                }
                // Keys conda itself writes that have no meaning for an image build.
                "prefix" | "variables" => {
                    tracing::warn!(
                        "{}: ignoring '{key}', which has no meaning in an image",
                        path.display()
                    )
                }
                other => tracing::warn!("{}: ignoring unknown key '{other}'", path.display()),
            }
        }
        if spec.dependencies.is_empty() {
            return Err(invalid(
                "no conda dependencies: add a 'dependencies:' list".into(),
            ));
        }
        Ok(spec)
    }

    /// The channel configuration that resolves names and relative paths for this spec.
    pub fn channel_config(&self) -> ChannelConfig {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        ChannelConfig::default_with_root_dir(dir)
    }

    /// The channels to query, highest priority first: the listed ones, then any named only in a
    /// `channel::package` spec.
    pub fn resolved_channels(&self) -> Result<Vec<Channel>, SpecError> {
        let config = self.channel_config();
        let mut channels = Vec::new();
        for name in &self.channels {
            let channel = Channel::from_str(name, &config).map_err(|e| SpecError::Channel {
                path: self.path.clone(),
                channel: name.clone(),
                message: e.to_string(),
            })?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        for dep in &self.dependencies {
            if let Some(channel) = &dep.channel {
                if !channels.iter().any(|c| c.base_url == channel.base_url) {
                    channels.push((**channel).clone());
                }
            }
        }
        if channels.is_empty() {
            return Err(SpecError::Invalid {
                path: self.path.clone(),
                message: "no channels: add a 'channels:' list (imgbuild has no default channel)"
                    .into(),
            });
        }
        Ok(channels)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let Value::Sequence(items) = v else {
        return Err(format!("'{what}' must be a list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| scalar(item).ok_or_else(|| format!("{what}[{i}] must be a string")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_channels_deps_and_pip() {
        let text = "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.10\n  - conda-forge::numpy>=1.26=py310*\n  - pip:\n    - transformers==4.30\n";
        let spec = EnvSpec::from_yaml_str(text, Path::new("/tmp/env.yml")).unwrap();
        assert_eq!(spec.name.as_deref(), Some("x"));
        assert_eq!(spec.dependencies.len(), 2);
        assert!(spec.dependencies[1].channel.is_some());
        assert_eq!(spec.pip, vec!["transformers==4.30"]);
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = EnvSpec::from_yaml_str(
            "channels: [a\ndependencies:\n  - x: [\n",
            Path::new("e.yml"),
        )
        .unwrap_err();
        match err {
            SpecError::Yaml { line, column, .. } => assert!(line > 0 && column > 0),
            other => panic!("unexpected {other}"),
        }
    }
}
