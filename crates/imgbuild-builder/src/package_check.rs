//! What a package may ask the installer to do, checked before anything is linked.
//!
//! rattler's installer trusts `info/paths.json`: an entry `../../tmp/x` is linked outside the
//! prefix (and an existing file there unlinked first), an absolute one panics its path
//! resolver, and an entry through a symlink — one only the package's tar holds, or one an
//! earlier package planted — is written (or read) through it, outside the staging root. Real
//! packages do none of this, so every entry of every package is checked here first and a
//! package that breaks a rule is refused by name:
//!
//! * a path is relative, non-empty, without `..`, `.` or empty components and without NUL;
//! * no path goes through a symlink: not one in the package's own extracted files, and not one
//!   that any package of the environment installs (`path_type: softlink`);
//! * a file's size is the `size_in_bytes` `paths.json` declares, where it declares one.
//!
//! (Reported upstream in spirit: rattler should refuse such entries itself; until it does,
//! imgbuild checks before calling it.)

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use rattler_conda_types::package::{PathType, PathsJson};

/// Why a package is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing {package}: its paths.json entry '{entry}' {rule}; nothing was installed from it \
     (the package is malformed or hostile: remove it from the environment or fix the channel)"
)]
pub struct UnsafeEntry {
    pub package: String,
    pub entry: String,
    pub rule: String,
}

/// One package's entries, as the checks need them.
pub(crate) struct PackageEntries<'a> {
    pub package: String,
    pub dir: &'a Path,
    pub paths: &'a PathsJson,
}

/// Checks every package of an environment (see the module docs). `packages` are all the
/// packages that will be in the staging root, so a symlink one installs is seen by all.
pub(crate) fn check_environment(packages: &[PackageEntries<'_>]) -> Result<(), UnsafeEntry> {
    // Every symlink the environment will hold, and who installs it.
    let mut symlinks: BTreeMap<PathBuf, &str> = BTreeMap::new();
    for p in packages {
        for entry in &p.paths.paths {
            check_path(&p.package, &entry.relative_path)?;
            if entry.path_type == PathType::SoftLink {
                symlinks.insert(entry.relative_path.clone(), &p.package);
            }
        }
    }
    for p in packages {
        // Directories of this package already known not to be symlinks on disk: each is
        // looked at once, not once per file under it.
        let mut plain_dirs: std::collections::HashSet<&Path> = std::collections::HashSet::new();
        for entry in &p.paths.paths {
            let path = &entry.relative_path;
            let refuse = |rule: String| UnsafeEntry {
                package: p.package.clone(),
                entry: path.display().to_string(),
                rule,
            };
            for ancestor in path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
            {
                if let Some(owner) = symlinks.get(ancestor) {
                    return Err(refuse(format!(
                        "goes through {}, a symlink that {owner} installs",
                        ancestor.display()
                    )));
                }
                if plain_dirs.contains(ancestor) {
                    continue;
                }
                if p.dir
                    .join(ancestor)
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(refuse(format!(
                        "goes through {}, a symlink in the package's files that paths.json does \
                         not list",
                        ancestor.display()
                    )));
                }
                plain_dirs.insert(ancestor);
            }
            if entry.path_type == PathType::HardLink {
                if let Some(declared) = entry.size_in_bytes {
                    let file = p.dir.join(path);
                    let meta = file
                        .symlink_metadata()
                        .map_err(|e| refuse(format!("is not in the package's files ({e})")))?;
                    if !meta.file_type().is_file() {
                        return Err(refuse("is listed as a file but is not one".to_string()));
                    }
                    if meta.len() != declared {
                        return Err(refuse(format!(
                            "is {} bytes, but paths.json declares {declared}",
                            meta.len()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A path a package may install: relative, normalized, no NUL.
fn check_path(package: &str, path: &Path) -> Result<(), UnsafeEntry> {
    let refuse = |rule: &str| UnsafeEntry {
        package: package.to_string(),
        entry: path.display().to_string(),
        rule: rule.to_string(),
    };
    if path.as_os_str().is_empty() {
        return Err(refuse("is empty"));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(refuse("contains a NUL byte"));
    }
    for component in path.components() {
        match component {
            Component::Normal(_) => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(
                    "is an absolute path (package paths are relative to the prefix)",
                ))
            }
            Component::ParentDir => {
                return Err(refuse("leaves the prefix with '..'"));
            }
            Component::CurDir => return Err(refuse("is not normalized ('.')")),
        }
    }
    // `Path::components` folds `a//b` and a trailing '/'; the raw text must not have them.
    let raw = path.as_os_str().as_encoded_bytes();
    if raw.windows(2).any(|w| w == b"//") || raw.ends_with(b"/") {
        return Err(refuse("is not normalized (empty component)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_in_the_prefix() {
        let ok = |p: &str| check_path("pkg-1-0", Path::new(p));
        assert!(ok("lib/libz.so.1").is_ok());
        for (path, rule) in [
            ("../../tmp/x/secret.txt", "leaves the prefix with '..'"),
            ("lib/../../etc/passwd", "leaves the prefix with '..'"),
            ("/tmp/x/secret.txt", "is an absolute path"),
            ("./lib/x", "is not normalized ('.')"),
            ("lib//x", "is not normalized (empty component)"),
            ("", "is empty"),
        ] {
            let e = ok(path).unwrap_err();
            assert!(e.rule.starts_with(rule), "{path}: {}", e.rule);
            assert!(
                e.to_string()
                    .starts_with(&format!("refusing pkg-1-0: its paths.json entry '{path}'")),
                "{e}"
            );
        }
    }
}
