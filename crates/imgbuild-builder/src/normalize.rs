//! Removing the build host from a staging root.
//!
//! rattler writes, for its own use, things that must not reach an image: `CACHEDIR.TAG` at the
//! prefix root, and in every `conda-meta/*.json` the host paths of the package cache
//! (`extracted_package_dir`, `package_tarball_full_path`, `link.source`), in files of mode
//! 0600. Left alone, a different `--cache-dir` would change the image digest and a non-root
//! user in the image could not read the records.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::error::BuildError;

/// Fields of a conda-meta record that describe the build host, not the environment.
const HOST_FIELDS: &[&str] = &["extracted_package_dir", "package_tarball_full_path", "link"];

pub(crate) fn normalize_staging_root(root: &Path) -> Result<(), BuildError> {
    let tag = root.join("CACHEDIR.TAG");
    if tag.exists() {
        fs::remove_file(&tag).map_err(|e| BuildError::io(&tag, e))?;
    }
    let meta = root.join("conda-meta");
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(&meta).map_err(|e| BuildError::io(&meta, e))? {
        let path = entry.map_err(|e| BuildError::io(&meta, e))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = fs::read(&path).map_err(|e| BuildError::io(&path, e))?;
            let mut value: Value =
                serde_json::from_slice(&bytes).map_err(|e| BuildError::Install {
                    message: format!("{}: unreadable record: {e}", path.display()),
                })?;
            let mut changed = false;
            if let Value::Object(map) = &mut value {
                for field in HOST_FIELDS {
                    changed |= map.shift_remove(*field).is_some();
                }
            }
            let mode = fs::metadata(&path)
                .map_err(|e| BuildError::io(&path, e))?
                .permissions()
                .mode();
            // A reused staging root keeps the records of unchanged packages as they were.
            if changed || mode & 0o777 != 0o644 {
                let mut out = serde_json::to_vec_pretty(&value).expect("JSON value serializes");
                out.push(b'\n');
                rewrite_file(&path, &out)?;
            }
        } else if path.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .map_err(|e| BuildError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Rewrites `path` with `bytes` in place when it is a file of its own (rattler's fresh
/// records): no new inode, which on ext4 right after a big deletion costs a scan for inodes
/// deleted recently. A hard-linked file goes through [`replace_file`]. Not atomic: a build
/// interrupted here leaves the staging root marked incomplete (see `install.rs`), so it is
/// wiped, not reused.
fn rewrite_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(|e| BuildError::io(path, e))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return replace_file(path, bytes);
    }
    fs::write(path, bytes).map_err(|e| BuildError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| BuildError::io(path, e))
}

/// Writes a new file and renames it over `path`: the old one may be a hard link into the
/// package cache, which must never be modified in place.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    // A staging root is scratch: a crash discards it, so no fsync.
    imgbuild_fs::write_atomically(path, bytes, 0o644, imgbuild_fs::Durability::Unsynced)
        .map_err(|e| BuildError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> String {
        format!(
            r#"{{"name": "{name}", "version": "1", "build": "0", "files": [],
               "extracted_package_dir": "/host/cache/pkgs/{name}-1-0",
               "link": {{"source": "/host/cache/pkgs/{name}-1-0", "type": 1}}}}"#
        )
    }

    #[test]
    fn records_lose_host_paths_and_a_hard_linked_one_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("root/conda-meta");
        fs::create_dir_all(&meta).unwrap();
        fs::write(meta.join("own-1-0.json"), record("own")).unwrap();
        // A record that is a hard link to a file outside the root (as a package cache file
        // would be): the outside file must keep its bytes.
        let outside = dir.path().join("outside.json");
        fs::write(&outside, record("linked")).unwrap();
        fs::hard_link(&outside, meta.join("linked-1-0.json")).unwrap();

        normalize_staging_root(&dir.path().join("root")).unwrap();

        for name in ["own", "linked"] {
            let path = meta.join(format!("{name}-1-0.json"));
            let text = fs::read_to_string(&path).unwrap();
            assert!(!text.contains("/host/cache"), "{name}: {text}");
            assert!(
                text.contains(&format!("\"name\": \"{name}\"")),
                "{name}: {text}"
            );
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{name}");
        }
        assert_eq!(fs::read_to_string(&outside).unwrap(), record("linked"));
    }
}
