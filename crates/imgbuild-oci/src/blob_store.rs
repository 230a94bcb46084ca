//! A content-addressed blob directory (`<root>/blobs/sha256/<hex>`), the same shape for the
//! build cache and for an OCI image layout, so blobs move between them by hard link.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::blob_writer::BlobWriter;
use crate::{Digest, OciError};

/// Blobs under `<root>/blobs/sha256/`. A blob file only ever appears complete: it is written to
/// a temporary file in the same directory and renamed to its digest.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store rooted at `root`; directories are created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root this store lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob with this digest lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir().join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A temporary file in the blob directory, to be completed with [`BlobStore::commit`].
    pub fn temp_file(&self) -> Result<NamedTempFile, OciError> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(|e| OciError::io(&dir, e))?;
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| OciError::io(&dir, e))
    }

    /// A writer for a new blob of about `expected` bytes (big ones bypass the page cache, see
    /// `blob_writer.rs`); [`BlobWriter::finish`] hands back the file for [`BlobStore::commit`].
    pub fn writer(&self, expected: Option<u64>) -> Result<BlobWriter, OciError> {
        Ok(BlobWriter::new(self.temp_file()?, expected))
    }

    /// Moves a finished temporary file into place under its digest.
    pub fn commit(&self, temp: NamedTempFile, digest: &Digest) -> Result<PathBuf, OciError> {
        let dest = self.path(digest);
        temp.as_file()
            .sync_all()
            .map_err(|e| OciError::io(&dest, e))?;
        temp.persist(&dest)
            .map_err(|e| OciError::io(&dest, e.error))?;
        Ok(dest)
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, OciError> {
        let digest = Digest::of(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut temp = self.temp_file()?;
        temp.write_all(bytes)
            .map_err(|e| OciError::io(temp.path(), e))?;
        self.commit(temp, &digest)?;
        Ok(digest)
    }

    /// Reads a whole blob (for small JSON blobs: configs, manifests, indexes).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.path(digest);
        let bytes = fs::read(&path).map_err(|e| OciError::io(&path, e))?;
        if Digest::of(&bytes) != *digest {
            return Err(OciError::DigestMismatch {
                path,
                expected: *digest,
                actual: Digest::of(&bytes),
            });
        }
        Ok(bytes)
    }

    /// Makes `digest` present here by taking it from `source`: a hard link where the two share a
    /// file system, a copy otherwise. With `verify`, the bytes are hashed on the way (for blobs
    /// that come from outside imgbuild's own cache, such as a base image layout).
    pub fn import(
        &self,
        source: &BlobStore,
        digest: &Digest,
        verify: bool,
    ) -> Result<(), OciError> {
        if self.contains(digest) {
            return Ok(());
        }
        let from = source.path(digest);
        if verify {
            let actual = hash_file(&from)?;
            if actual != *digest {
                return Err(OciError::DigestMismatch {
                    path: from,
                    expected: *digest,
                    actual,
                });
            }
        }
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(|e| OciError::io(&dir, e))?;
        let dest = self.path(digest);
        if fs::hard_link(&from, &dest).is_ok() {
            return Ok(());
        }
        let mut temp = self.temp_file()?;
        let mut src = fs::File::open(&from).map_err(|e| OciError::io(&from, e))?;
        // A failed read names the source, a failed write (a full disk) the destination.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).map_err(|e| OciError::io(&from, e))?;
            if n == 0 {
                break;
            }
            temp.as_file_mut()
                .write_all(&buf[..n])
                .map_err(|e| OciError::io(&dest, e))?;
        }
        self.commit(temp, digest)?;
        Ok(())
    }
}

/// sha256 of a file's bytes, streamed.
pub fn hash_file(path: &Path) -> Result<Digest, OciError> {
    let mut file = fs::File::open(path).map_err(|e| OciError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| OciError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(hasher))
}
