//! OCI image layouts on disk: reading a base image from one, writing the built image into one.
//!
//! A layout directory is only ever seen complete: a new layout is assembled in a sibling
//! temporary directory and renamed into place; adding to an existing layout copies blobs first
//! (content-addressed, so harmless if interrupted) and replaces `index.json` last, atomically.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
    ANNOTATION_REF_NAME,
};

use crate::base::BaseImage;
use crate::canonical::to_canonical_json;
use crate::image::ImagePlatform;
use crate::index::Built;
use crate::{BlobStore, Digest, OciError};

/// The `oci-layout` file every layout carries.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl BaseImage {
    /// Reads the image tagged `tag` (or the only image, when `tag` is `None`) from the layout at
    /// `dir`, resolving an image index to the manifest for `platform`.
    pub fn from_layout(
        dir: &Path,
        tag: Option<&str>,
        platform: &ImagePlatform,
    ) -> Result<Self, OciError> {
        let source = BlobStore::new(dir);
        let err = |message: String| OciError::Base {
            layout: dir.to_path_buf(),
            message,
        };
        let desc = find_entry(dir, tag)?;
        let desc = &desc;
        let manifest_desc = resolve_platform(&source, desc, platform, dir)?;
        let manifest_digest = checked_digest(&manifest_desc, dir)?;
        let manifest: ImageManifest =
            parse(&source.read(&manifest_digest)?, dir, "image manifest")?;
        let config_digest = checked_digest(manifest.config(), dir)?;
        let config: ImageConfiguration = parse(&source.read(&config_digest)?, dir, "image config")?;
        if config.os().to_string() != platform.os
            || config.architecture().to_string() != platform.architecture
        {
            return Err(err(format!(
                "base image is {}/{}, but the target platform is {}/{}",
                config.os(),
                config.architecture(),
                platform.os,
                platform.architecture
            )));
        }
        if config.rootfs().diff_ids().len() != manifest.layers().len() {
            return Err(err(format!(
                "config lists {} diff_ids for {} layers",
                config.rootfs().diff_ids().len(),
                manifest.layers().len()
            )));
        }
        for layer in manifest.layers() {
            checked_digest(layer, dir)?;
            let mt = layer.media_type().to_string();
            if !(mt.contains("tar") || mt.contains("layer")) {
                return Err(err(format!(
                    "layer {} has unsupported media type {mt}",
                    layer.digest()
                )));
            }
        }
        Ok(Self::from_parts(
            config,
            manifest.layers().clone(),
            manifest_digest,
            source,
            None,
        ))
    }

    /// Copies (or hard-links) the base layers into `store`, checking each digest.
    pub fn import_into(&self, store: &BlobStore) -> Result<(), OciError> {
        for layer in &self.layers {
            store.import(
                self.source(),
                &checked_digest(layer, self.source().root())?,
                true,
            )?;
        }
        Ok(())
    }
}

/// The index.json entry tagged `tag`, or the only entry when `tag` is `None`.
pub fn find_entry(dir: &Path, tag: Option<&str>) -> Result<Descriptor, OciError> {
    let index = read_index(dir)?;
    let tags: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| ref_name(d).map(str::to_string))
        .collect();
    let err = |message: String| OciError::Base {
        layout: dir.to_path_buf(),
        message,
    };
    match tag {
        Some(tag) => index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .cloned()
            .ok_or_else(|| OciError::TagNotFound {
                layout: dir.to_path_buf(),
                tag: tag.to_string(),
                available: if tags.is_empty() {
                    "none".into()
                } else {
                    tags.join(", ")
                },
            }),
        None => match index.manifests().as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(err("the layout holds no image".into())),
            _ => Err(err(format!(
                "the layout holds several images; name one with DIR:TAG (tags: {})",
                tags.join(", ")
            ))),
        },
    }
}

/// The digest of the image manifest for `tag` (or the only image) in the layout at `dir`,
/// resolving an image index for `platform`.
pub fn find_manifest(
    dir: &Path,
    tag: Option<&str>,
    platform: &ImagePlatform,
) -> Result<Digest, OciError> {
    let entry = find_entry(dir, tag)?;
    checked_digest(
        &resolve_platform(&BlobStore::new(dir), &entry, platform, dir)?,
        dir,
    )
}

/// The platforms of the index that `tag` (or the only entry) names in the layout at `dir`, in
/// its order; `None` when the entry is a plain image manifest.
pub fn entry_platforms(
    dir: &Path,
    tag: Option<&str>,
) -> Result<Option<Vec<ImagePlatform>>, OciError> {
    let entry = find_entry(dir, tag)?;
    if entry.media_type() != &MediaType::ImageIndex {
        return Ok(None);
    }
    let digest = checked_digest(&entry, dir)?;
    let index: ImageIndex = parse(&BlobStore::new(dir).read(&digest)?, dir, "image index")?;
    Ok(Some(
        crate::index::index_entries(&index)
            .into_iter()
            .map(|e| e.platform)
            .collect(),
    ))
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

fn checked_digest(d: &Descriptor, dir: &Path) -> Result<Digest, OciError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e: crate::digest::ParseDigestError| OciError::Invalid {
            path: dir.to_path_buf(),
            what: "descriptor",
            message: e.to_string(),
        })
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    dir: &Path,
    what: &'static str,
) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Invalid {
        path: dir.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

fn read_index(dir: &Path) -> Result<ImageIndex, OciError> {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).map_err(|e| OciError::io(&path, e))?;
    parse(&bytes, dir, "index.json")
}

fn resolve_platform(
    store: &BlobStore,
    desc: &Descriptor,
    platform: &ImagePlatform,
    dir: &Path,
) -> Result<Descriptor, OciError> {
    let mt = desc.media_type();
    let is_index = matches!(mt, MediaType::ImageIndex)
        || mt.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json";
    if !is_index {
        return Ok(desc.clone());
    }
    let nested: ImageIndex = parse(
        &store.read(&checked_digest(desc, dir)?)?,
        dir,
        "image index",
    )?;
    nested
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == platform.os
                    && p.architecture().to_string() == platform.architecture
            })
        })
        .cloned()
        .ok_or_else(|| OciError::Base {
            layout: dir.to_path_buf(),
            message: format!(
                "the image index has no manifest for {}/{}",
                platform.os, platform.architecture
            ),
        })
}

/// The index.json entries for `built` under each tag (one untagged entry when there are none).
fn index_entries(built: &Built, tags: &[String]) -> Result<Vec<Descriptor>, OciError> {
    let base = built.descriptor()?;
    if tags.is_empty() {
        return Ok(vec![base]);
    }
    Ok(tags
        .iter()
        .map(|tag| {
            let mut d = base.clone();
            d.set_annotations(Some(HashMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                tag.clone(),
            )])));
            d
        })
        .collect())
}

fn index_bytes(manifests: Vec<Descriptor>) -> Result<Vec<u8>, OciError> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| OciError::Invalid {
            path: PathBuf::new(),
            what: "index",
            message: e.to_string(),
        })?;
    to_canonical_json(&index).map_err(OciError::json("index.json"))
}

/// Splits `DIR[:TAG]` (a layout and the tag of an image in it), as skopeo does: the path ends
/// at the first ':' (a layout path cannot contain one), so tags such as `llm-env:cu118`
/// survive whole. An empty tag (`DIR:`) is no tag.
pub fn split_dir_tag(text: &str) -> (PathBuf, Option<String>) {
    match text.split_once(':') {
        Some((dir, tag)) if !tag.is_empty() => (PathBuf::from(dir), Some(tag.to_string())),
        _ => (PathBuf::from(text.trim_end_matches(':')), None),
    }
}

/// Checks that `tag` can be an `org.opencontainers.image.ref.name`: the image-layout spec's
/// grammar, `component ("/" component)*` where a component is runs of `[A-Za-z0-9]` joined by
/// one of `-._:@+` (or `--`). Tools that read layouts (skopeo, umoci, podman) refuse others, so
/// an image written under one would be there but unreachable.
pub fn check_tag(tag: &str) -> Result<(), OciError> {
    let bad = |why| OciError::BadTag {
        tag: tag.to_string(),
        why,
    };
    if tag.is_empty() {
        return Err(bad("it is empty"));
    }
    for component in tag.split('/') {
        if component.is_empty() {
            return Err(bad("it has an empty component ('//', or '/' at an end)"));
        }
        let bytes = component.as_bytes();
        let separator = |b: u8| b"-._:@+".contains(&b);
        if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return Err(bad(
                "a component starts or ends with something other than a letter or digit",
            ));
        }
        // Separators come singly, or as "--".
        for run in component.split(|c: char| c.is_ascii_alphanumeric()) {
            if run.bytes().any(|b| !separator(b)) {
                return Err(bad(
                    "it holds a character that is not a letter, a digit or a separator",
                ));
            }
            if run.len() > 1 && run != "--" {
                return Err(bad("two separators in a row"));
            }
        }
    }
    Ok(())
}

/// The bytes of the index.json for a layout that holds only `built`.
pub fn single_image_index(built: &Built, tags: &[String]) -> Result<Vec<u8>, OciError> {
    index_bytes(index_entries(built, tags)?)
}

/// What is at an output path today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDir {
    Missing,
    Empty,
    Layout,
}

/// Tells whether `dir` can take an image, before any work is done: a missing or empty
/// directory, or an existing layout. Anything else (a file, a directory of other things) is
/// refused, so a typo never scatters blobs into someone's home directory.
pub fn check_output_dir(dir: &Path) -> Result<OutputDir, OciError> {
    if !dir.exists() {
        return Ok(OutputDir::Missing);
    }
    if !dir.is_dir() {
        return Err(OciError::NotALayout(dir.to_path_buf()));
    }
    let empty = fs::read_dir(dir)
        .map_err(|e| OciError::io(dir, e))?
        .next()
        .is_none();
    if empty {
        Ok(OutputDir::Empty)
    } else if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        Ok(OutputDir::Layout)
    } else {
        Err(OciError::NotALayout(dir.to_path_buf()))
    }
}

/// Writes `image` (an image or an index, whose blobs are in `store`) into the layout at `dir`
/// under `tags`.
///
/// A missing or empty `dir` becomes a new layout; an existing layout gets the image added, and
/// any entry already carrying one of `tags` is replaced. Anything else is refused. Builds that
/// write into the same `dir` at once take turns (a lock on the directory): each adds its image
/// to what the one before left, so all of them succeed.
pub fn write_layout(
    dir: &Path,
    store: &BlobStore,
    image: &Built,
    tags: &[String],
) -> Result<(), OciError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| OciError::io(&parent, e))?;
    let (_lock, created) = lock_output(dir)?;
    let temp_prefix = format!(
        ".imgbuild-layout-{}-",
        dir.file_name()
            .map_or("layout".into(), |n| n.to_string_lossy())
    );
    remove_leftovers(dir, &parent, &temp_prefix);
    let result = write_locked(dir, &parent, &temp_prefix, store, image, tags);
    if result.is_err() && created {
        // Leave nothing behind where there was nothing (fails, as it should, if not empty).
        let _ = fs::remove_dir(dir);
    }
    result
}

/// Locks the output directory `dir` (made if missing; the flag says so) for this process. The
/// directory can be replaced while a build waits for the lock (a new layout is renamed over
/// the empty directory), so the lock only counts when it is still on what `dir` names.
fn lock_output(dir: &Path) -> Result<(fs::File, bool), OciError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut announced = false;
    loop {
        let created = match fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(OciError::io(dir, e)),
        };
        let handle = fs::File::open(dir).map_err(|e| OciError::io(dir, e))?;
        let held = handle.metadata().map_err(|e| OciError::io(dir, e))?;
        if !held.is_dir() {
            return Err(OciError::NotALayout(dir.to_path_buf()));
        }
        match handle.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                if !announced {
                    tracing::info!(
                        "waiting for another build that is writing to {}",
                        dir.display()
                    );
                    announced = true;
                }
                handle.lock().map_err(|e| OciError::io(dir, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(OciError::io(dir, e)),
        }
        match fs::metadata(dir) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok((handle, created))
            }
            _ => continue,
        }
    }
}

/// Removes what builds killed while writing this output left: their temporary layouts beside
/// it (`<prefix>` and tempfile's six random characters) and temporary files inside it. Only
/// lock holders make those, so with the lock held they are all dead.
fn remove_leftovers(dir: &Path, parent: &Path, temp_prefix: &str) {
    let listing = |d: &Path| fs::read_dir(d).into_iter().flatten().flatten();
    for entry in listing(parent) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix(temp_prefix)
            .is_some_and(|rest| rest.len() == 6)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    for d in [dir.to_path_buf(), dir.join("blobs").join("sha256")] {
        for entry in listing(&d) {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn write_locked(
    dir: &Path,
    parent: &Path,
    temp_prefix: &str,
    store: &BlobStore,
    image: &Built,
    tags: &[String],
) -> Result<(), OciError> {
    if check_output_dir(dir)? == OutputDir::Layout {
        let target = BlobStore::new(dir);
        for blob in image.blobs() {
            target.import(store, &blob, false)?;
        }
        let mut index = read_index(dir)?;
        let ours = index_entries(image, tags)?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| match ref_name(d) {
                Some(name) => !tags.iter().any(|t| t == name),
                None => !(tags.is_empty() && d.digest().to_string() == image.digest().to_string()),
            })
            .cloned()
            .collect();
        manifests.extend(ours);
        index.set_manifests(manifests);
        let bytes = to_canonical_json(&index).map_err(OciError::json("index.json"))?;
        return write_atomically(&dir.join("index.json"), &bytes);
    }

    // An empty directory (the lock made it, or the user did): the new layout is put together
    // beside it and renamed over it, so no one ever sees half a layout.
    let staging = tempfile::Builder::new()
        .prefix(temp_prefix)
        .tempdir_in(parent)
        .map_err(|e| OciError::io(parent, e))?;
    let target = BlobStore::new(staging.path());
    for blob in image.blobs() {
        target.import(store, &blob, false)?;
    }
    write_file(&staging.path().join("oci-layout"), OCI_LAYOUT_FILE)?;
    write_file(
        &staging.path().join("index.json"),
        &single_image_index(image, tags)?,
    )?;
    // Make the directory world-readable like any other output (tempdir creates it 0700).
    set_mode(staging.path(), 0o755)?;
    let staging = staging.keep();
    fs::rename(&staging, dir).map_err(|e| {
        let _ = fs::remove_dir_all(&staging);
        OciError::io(dir, e)
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), OciError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| OciError::io(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    fs::write(path, bytes).map_err(|e| OciError::io(path, e))
}

/// Replaces `path` with `bytes` (mode 0644, synced) so that readers see the old or the new
/// file, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    imgbuild_fs::write_atomically(path, bytes, 0o644, imgbuild_fs::Durability::Synced)
        .map_err(|e| OciError::io(path, e))
}

#[cfg(test)]
mod tag_tests {
    #[test]
    fn dir_and_tag_split_at_the_first_colon() {
        use std::path::PathBuf;
        let split = super::split_dir_tag;
        assert_eq!(split("/x/base"), (PathBuf::from("/x/base"), None));
        assert_eq!(split("/x/base:"), (PathBuf::from("/x/base"), None));
        assert_eq!(
            split("/x/out:llm-env:cu118"),
            (PathBuf::from("/x/out"), Some("llm-env:cu118".to_string()))
        );
    }

    #[test]
    fn tags_follow_the_layout_grammar() {
        for good in [
            "latest",
            "llm-env:cu118",
            "ghcr.io/acme/llm-env:cu118",
            "a--b",
            "v1.0+build",
            "x@sha256",
        ] {
            super::check_tag(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "my repo:tag",
            "repo:a\nb",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a..b",
            "a:-b",
            "ü",
        ] {
            assert!(super::check_tag(bad).is_err(), "{bad:?} passed");
        }
    }
}
