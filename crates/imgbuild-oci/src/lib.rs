//! OCI images for imgbuild: image config, manifest and index; OCI image layouts and archives.
//!
//! The model: every blob (layer, config, manifest) lives in a content-addressed
//! [`BlobStore`]. [`image::assemble`] turns layer blobs (plus an optional [`BaseImage`]) into a
//! config and a manifest in that store, and [`index::assemble_index`] several platforms' images
//! into an image index; [`layout::write_layout`] and
//! [`archive::write_archive`] then publish the image by linking or copying blobs out of it.
//! [`registry`] pushes images (and their referrers) over the distribution API, and
//! [`pull_image`] pulls a base image through it. [`BaseImage`] is an image to build on,
//! from a layout or a registry; [`inspect`] reads what imgbuild's layers hold from the
//! config history alone.
//! Every JSON document is written in canonical form (sorted keys, no whitespace), so the same
//! content always has the same digest.
//!
//! What it does not do: know about conda, packages or how layers are cut (imgbuild-layer
//! makes layer blobs; this crate only stores, assembles and moves them), or run containers.

pub mod archive;
mod base;
pub mod blob_store;
mod blob_writer;
mod canonical;
pub mod digest;
mod error;
pub mod image;
pub mod index;
pub mod inspect;
pub mod layout;
mod progress;
mod pull;
mod reference;
pub mod registry;
mod time;

pub use base::BaseImage;
pub use blob_store::BlobStore;
pub use blob_writer::BlobWriter;
pub use canonical::to_canonical_json;
pub use digest::Digest;
pub use error::OciError;
pub use image::{BuiltImage, Compression, ImagePlatform, LayerBlob, RuntimeConfig};
pub use index::{assemble_index, Built, BuiltIndex};
pub use progress::TransferProgress;
pub use pull::{pull_image, pull_image_from_sources};
pub use time::{parse_rfc3339_utc, rfc3339_utc};
