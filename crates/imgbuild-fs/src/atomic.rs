//! Replacing a file atomically: the one way every imgbuild crate does it: the bytes go to a
//! temporary file in the same directory (`.tmp-…`, which the cache sweep knows as a leftover),
//! get their mode, optionally reach the disk, and are renamed over the target. Readers see
//! the old file or the new one, never a mix; a file that was a hard link (into rattler's or
//! uv's cache) is replaced, never written through.
//!
//! Not a crate of its own for its size but for its place: imgbuild-builder and imgbuild-oci
//! both need it and neither may depend on the other. `tempfile`'s `persist` does the rename;
//! what it does not do is the mode (it creates files `0600`, which is how lock files once came
//! out unreadable to others) and the fsync.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Whether the new file must be on disk before it replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: for what is kept (layouts, lock files, cache entries).
    Synced,
    /// No fsync: for files in a staging root, which a crash discards anyway.
    Unsynced,
}

/// Replaces `path` with `bytes`, as the module docs say, with permissions `mode`.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    if durability == Durability::Synced {
        temp.as_file().sync_all()?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    #[test]
    fn replaces_with_the_mode_and_never_writes_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("cached");
        let linked = dir.path().join("linked");
        std::fs::write(&cached, b"cache").unwrap();
        std::fs::hard_link(&cached, &linked).unwrap();
        write_atomically(&linked, b"new", 0o644, Durability::Synced).unwrap();
        assert_eq!(std::fs::read(&linked).unwrap(), b"new");
        assert_eq!(std::fs::read(&cached).unwrap(), b"cache");
        let meta = std::fs::metadata(&linked).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(meta.nlink(), 1);
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn the_mode_is_the_one_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomically(&path, b"{}", 0o600, Durability::Unsynced).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
