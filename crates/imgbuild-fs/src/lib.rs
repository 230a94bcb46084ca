//! The small file-system values every imgbuild crate shares, and which no crate may own
//! because the crates that need them may not depend on each other (imgbuild-builder and
//! imgbuild-layer both take an [`InstallPrefix`]; imgbuild-builder and imgbuild-oci both
//! replace files with [`write_atomically`]).
//!
//! - [`atomic`]: replacing a file so that readers see the old file or the new one.
//! - [`prefix`]: the environment's absolute path inside the image.

pub mod atomic;
pub mod prefix;

pub use atomic::{write_atomically, Durability};
pub use prefix::{InstallPrefix, PrefixError};
