//! The `pip:` lines (and `-r` files) as written, checked: editable, VCS and path lines are
//! refused or turned into file URLs, naming the line.

use std::fs;
use std::path::Path;

use super::PipError;

/// The requirement lines and index options of a `pip:` section, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipRequirements {
    /// Requirement lines, in order, as written.
    pub requirements: Vec<String>,
    /// `--index-url` (replaces PyPI).
    pub index_url: Option<String>,
    /// `--extra-index-url`s.
    pub extra_index_urls: Vec<String>,
    /// `--pre`.
    pub pre: bool,
}

impl PipRequirements {
    /// Parses the `pip:` lines of the spec at `spec_path`; `-r FILE` is read relative to the
    /// spec (and nested files relative to their own directory).
    pub fn parse(lines: &[String], spec_path: &Path) -> Result<Self, PipError> {
        let mut out = PipRequirements::default();
        let dir = spec_path.parent().unwrap_or(Path::new("."));
        for (i, line) in lines.iter().enumerate() {
            let origin = format!("{} pip: entry {}", spec_path.display(), i + 1);
            out.add_line(line, &origin, dir, 0)?;
        }
        Ok(out)
    }

    /// Whether there is anything to install.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    fn add_line(
        &mut self,
        raw: &str,
        origin: &str,
        dir: &Path,
        depth: usize,
    ) -> Result<(), PipError> {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            return Ok(());
        }
        let err = |message: &str| PipError::Line {
            origin: origin.to_string(),
            line: line.to_string(),
            message: message.to_string(),
        };
        if line.starts_with('-') {
            let (flag, value) = split_option(line);
            let value = || value.ok_or_else(|| err("this option needs a value"));
            match flag {
                "-e" | "--editable" => {
                    return Err(PipError::Editable {
                        origin: origin.to_string(),
                        line: line.to_string(),
                    })
                }
                "-r" | "--requirement" => {
                    if depth > 8 {
                        return Err(err("-r files nest more than 8 deep"));
                    }
                    let path = dir.join(value()?);
                    let text = fs::read_to_string(&path).map_err(|e| {
                        err(&format!("cannot read {}: {e}", path.display()))
                    })?;
                    let sub_dir = path.parent().unwrap_or(dir).to_path_buf();
                    for (n, l) in join_continuations(&text).iter().enumerate() {
                        let origin = format!("{}:{}", path.display(), n + 1);
                        self.add_line(l, &origin, &sub_dir, depth + 1)?;
                    }
                }
                "-i" | "--index-url" => self.index_url = Some(value()?.to_string()),
                "--extra-index-url" => self.extra_index_urls.push(value()?.to_string()),
                "--pre" => self.pre = true,
                "--only-binary" | "--prefer-binary" => {}
                _ => {
                    return Err(err(
                        "imgbuild understands -r, --index-url, --extra-index-url and --pre in pip: sections",
                    ))
                }
            }
            return Ok(());
        }
        if is_vcs(line) {
            return Err(PipError::Vcs {
                origin: origin.to_string(),
                line: line.to_string(),
            });
        }
        if let Some(location) = local_location(line) {
            let requirement = local_wheel(location, dir).map_err(|m| err(&m))?;
            self.requirements.push(requirement);
            return Ok(());
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(line.len());
        if name_end == 0 {
            return Err(err("expected a requirement such as 'requests>=2.31'"));
        }
        self.requirements.push(line.to_string());
        Ok(())
    }
}

/// `--flag value`, `--flag=value` or `-rvalue`.
fn split_option(line: &str) -> (&str, Option<&str>) {
    if let Some((flag, value)) = line.split_once('=').filter(|(f, _)| f.starts_with("--")) {
        return (flag, Some(value.trim()));
    }
    match line.split_once(char::is_whitespace) {
        Some((flag, value)) => (flag, Some(value.trim())),
        None if line.len() > 2 && !line.starts_with("--") => (&line[..2], Some(&line[2..])),
        None => (line, None),
    }
}

fn strip_comment(line: &str) -> &str {
    // A '#' starts a comment at the line start or after whitespace (URLs keep their fragments).
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn join_continuations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        out.push(std::mem::take(&mut current));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The location of a line that names a local file: `./x.whl`, `/abs/x.whl`, `dist/x.whl`,
/// `file:///abs/x.whl`, optionally after `name @ `.
fn local_location(line: &str) -> Option<&str> {
    let location = line.split_once(" @ ").map_or(line, |(_, l)| l).trim();
    let local = location.starts_with('.')
        || location.starts_with('/')
        || location.starts_with("file:")
        || (!location.contains("://") && location.ends_with(".whl"));
    local.then_some(location)
}

/// A local wheel file as the requirement uv gets: `name @ file:///abs/path.whl`. Directories
/// and source archives are refused: they would be built on this machine.
fn local_wheel(location: &str, dir: &Path) -> Result<String, String> {
    let path = match location.strip_prefix("file:") {
        Some(_) => url::Url::parse(location)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| format!("'{location}' is not a file URL with an absolute path"))?,
        None => dir.join(location),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !file_name.ends_with(".whl") {
        return Err(
            "only local wheel files (*.whl) are installed from a path; a source tree or archive \
             would be built on this machine. Build a wheel and list it, or publish the package"
                .to_string(),
        );
    }
    let wheel: uv_distribution_filename::WheelFilename = file_name
        .parse()
        .map_err(|e| format!("'{file_name}' is not a wheel file name: {e}"))?;
    let path = path
        .canonicalize()
        .map_err(|e| format!("cannot read the wheel {}: {e}", path.display()))?;
    let url = url::Url::from_file_path(&path)
        .map_err(|()| format!("{} is not an absolute path", path.display()))?;
    Ok(format!("{} @ {url}", wheel.name))
}

fn is_vcs(line: &str) -> bool {
    let url = line.split_once('@').map_or(line, |(_, u)| u).trim();
    ["git+", "hg+", "svn+", "bzr+"]
        .iter()
        .any(|p| url.starts_with(p) || line.starts_with(p))
}
