//! What the pip step installs for: the target's Python, platform tags and site-packages.

use std::path::PathBuf;

use rattler_conda_types::RepoDataRecord;

use super::PipError;
use crate::target::{Target, TargetPlatform};
use crate::wheel::TargetTags;

/// The Python and platform pip packages are chosen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipTarget {
    pub platform: TargetPlatform,
    /// `3.11`.
    pub python: String,
    /// `(3, 11)`.
    pub python_version: (u8, u8),
    /// A free-threaded CPython build (`python_abi … *_cp313t`): `cp313t` wheels only.
    pub free_threaded: bool,
    /// The `N` of `manylinux_2_N`: the target glibc's minor version.
    pub manylinux_minor: u16,
    /// uv's `--python-platform`, e.g. `x86_64-manylinux_2_28`.
    pub uv_platform: String,
    /// Source distributions may be built (on this machine, with the environment's Python);
    /// only for a target this machine can run.
    pub allow_sdist: bool,
}

/// The manylinux levels uv knows as `--python-platform` values.
const MANYLINUX_MINORS: std::ops::RangeInclusive<u16> = 17..=40;

impl PipTarget {
    /// From the solved records (their `python`) and the target (its architecture and glibc).
    pub fn new(records: &[RepoDataRecord], target: &Target) -> Result<Self, PipError> {
        let python = records
            .iter()
            .find(|r| r.package_record.name.as_normalized() == "python")
            .ok_or(PipError::NoPython)?;
        let version = python.package_record.version.to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u8>());
        let python_version = match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
            _ => return Err(PipError::NoPython),
        };
        // conda-forge marks free-threaded CPython in the build string (`…_cp313t`).
        let build = python.package_record.build.to_string();
        let free_threaded = build.ends_with('t') && build.contains("_cp");
        let glibc = target.glibc.to_string();
        let minor: u16 = glibc
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(17)
            .clamp(*MANYLINUX_MINORS.start(), *MANYLINUX_MINORS.end());
        let arch = match target.platform {
            TargetPlatform::LinuxAmd64 => "x86_64",
            TargetPlatform::LinuxArm64 => "aarch64",
            TargetPlatform::LinuxPpc64le => "powerpc64le",
        };
        Ok(Self {
            platform: target.platform,
            python: format!("{}.{}", python_version.0, python_version.1),
            python_version,
            free_threaded,
            manylinux_minor: minor,
            uv_platform: format!("{arch}-manylinux_2_{minor}"),
            allow_sdist: false,
        })
    }

    /// The PEP 425 tags this target accepts, in priority order.
    pub fn tags(&self) -> Result<TargetTags, PipError> {
        Ok(TargetTags::new(
            self.platform,
            self.manylinux_minor,
            self.python_version,
            self.free_threaded,
        )?)
    }

    /// uv's `--python-version`: `3.11`, or `3.13t` for a free-threaded build.
    pub(super) fn uv_python_version(&self) -> String {
        if self.free_threaded {
            format!("{}t", self.python)
        } else {
            self.python.clone()
        }
    }

    /// Lets source distributions be built (`--allow-sdist`): refused unless this machine runs
    /// the target, as the build runs the environment's own Python here.
    pub fn allowing_sdist(mut self, allow: bool) -> Result<Self, PipError> {
        if allow && self.platform != TargetPlatform::host() {
            return Err(PipError::SdistCrossPlatform {
                target: self.platform.to_string(),
                host: TargetPlatform::host().to_string(),
            });
        }
        self.allow_sdist = allow;
        Ok(self)
    }

    /// `lib/pythonX.Y/site-packages`, relative to the prefix.
    pub fn site_packages(&self) -> PathBuf {
        PathBuf::from(format!("lib/python{}/site-packages", self.python))
    }
}
