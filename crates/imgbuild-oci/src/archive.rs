//! OCI archives: a tar of a single-image layout, as `podman load` and `skopeo oci-archive:` read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::index::Built;
use crate::layout::{single_image_index, OCI_LAYOUT_FILE};
use crate::{BlobStore, OciError};

/// Writes `image` (an image or an index) as an OCI archive at `path` (via a temporary file, renamed when complete).
pub fn write_archive(
    path: &Path,
    store: &BlobStore,
    image: &Built,
    tags: &[String],
) -> Result<(), OciError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| OciError::io(&dir, e))?;
    let temp = tempfile::Builder::new()
        .prefix(".imgbuild-archive-")
        .tempfile_in(&dir)
        .map_err(|e| OciError::io(&dir, e))?;
    let io = |e| OciError::io(path, e);
    {
        let mut tar = tar::Builder::new(BufWriter::new(temp.as_file()));
        tar.mode(tar::HeaderMode::Deterministic);
        append_dir(&mut tar, "blobs/").map_err(io)?;
        append_dir(&mut tar, "blobs/sha256/").map_err(io)?;
        let mut blobs = image.blobs();
        blobs.sort();
        blobs.dedup();
        for blob in &blobs {
            let src = store.path(blob);
            let mut file = File::open(&src).map_err(|e| OciError::io(&src, e))?;
            let len = file.metadata().map_err(|e| OciError::io(&src, e))?.len();
            let mut header = file_header(len);
            tar.append_data(
                &mut header,
                format!("blobs/sha256/{}", blob.hex()),
                &mut file,
            )
            .map_err(io)?;
        }
        let index = single_image_index(image, tags)?;
        tar.append_data(
            &mut file_header(index.len() as u64),
            "index.json",
            index.as_slice(),
        )
        .map_err(io)?;
        tar.append_data(
            &mut file_header(OCI_LAYOUT_FILE.len() as u64),
            "oci-layout",
            OCI_LAYOUT_FILE,
        )
        .map_err(io)?;
        let mut out = tar.into_inner().map_err(io)?;
        out.flush().map_err(io)?;
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path)
        .map_err(|e| OciError::io(path, e.error))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    Ok(())
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    tar.append_data(&mut h, name, std::io::empty())
}

/// Unpacks the OCI archive at `path` into the empty directory `dest`, which then is an OCI
/// image layout. Entries that would land outside `dest` are refused (tar's `unpack_in`).
pub fn unpack_archive(path: &Path, dest: &Path) -> Result<(), OciError> {
    let file = File::open(path).map_err(|e| OciError::io(path, e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries().map_err(|e| OciError::io(path, e))? {
        let mut entry = entry.map_err(|e| OciError::io(path, e))?;
        let inside = entry.unpack_in(dest).map_err(|e| OciError::io(path, e))?;
        if !inside {
            return Err(OciError::Invalid {
                path: path.to_path_buf(),
                what: "OCI archive",
                message: format!(
                    "entry '{}' points outside the archive",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            });
        }
    }
    if !dest.join("oci-layout").is_file() {
        return Err(OciError::Invalid {
            path: path.to_path_buf(),
            what: "OCI archive",
            message: "no oci-layout file in it".into(),
        });
    }
    Ok(())
}
