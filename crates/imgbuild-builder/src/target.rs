//! The machine the image will run on, which is not the machine building it.
//!
//! The solver sees the *target's* virtual packages only. A build host without a GPU would
//! otherwise resolve CPU-only builds of pytorch; a build host with a new glibc would pick
//! packages the image's base cannot run.

use std::str::FromStr;

use rattler_conda_types::{GenericVirtualPackage, PackageName, Subdir, Version};

/// A platform or version that does not name a target.
#[derive(Debug, thiserror::Error)]
#[error("invalid target: {0}")]
pub struct TargetError(String);

/// `__glibc` assumed when `--glibc` is not given: the glibc of RHEL 8 / manylinux_2_28,
/// which every current mainstream base image (Debian 11+, Ubuntu 20.04+, UBI 8+) meets.
pub const DEFAULT_GLIBC: &str = "2.28";
/// `__linux` announced to the solver; packages only ever ask for a minimum.
pub const DEFAULT_LINUX: &str = "5.10";

/// A supported target platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetPlatform {
    LinuxAmd64,
    LinuxArm64,
    LinuxPpc64le,
}

impl TargetPlatform {
    /// Every platform imgbuild builds for.
    pub const ALL: [Self; 3] = [Self::LinuxAmd64, Self::LinuxArm64, Self::LinuxPpc64le];

    /// The platform of the machine imgbuild runs on, where it is one of the targets.
    pub fn host() -> Self {
        match std::env::consts::ARCH {
            "aarch64" => Self::LinuxArm64,
            "powerpc64" => Self::LinuxPpc64le,
            _ => Self::LinuxAmd64,
        }
    }

    /// The conda subdir packages come from.
    pub fn subdir(self) -> Subdir {
        match self {
            Self::LinuxAmd64 => Subdir::Linux64,
            Self::LinuxArm64 => Subdir::LinuxAarch64,
            Self::LinuxPpc64le => Subdir::LinuxPpc64le,
        }
    }

    /// OCI `os`.
    pub fn oci_os(self) -> &'static str {
        "linux"
    }

    /// OCI `architecture`.
    pub fn oci_architecture(self) -> &'static str {
        match self {
            Self::LinuxAmd64 => "amd64",
            Self::LinuxArm64 => "arm64",
            Self::LinuxPpc64le => "ppc64le",
        }
    }

    /// OCI `variant`, where one is customary.
    pub fn oci_variant(self) -> Option<&'static str> {
        match self {
            Self::LinuxArm64 => Some("v8"),
            _ => None,
        }
    }

    fn archspec(self) -> &'static str {
        match self {
            Self::LinuxAmd64 => "x86_64",
            Self::LinuxArm64 => "aarch64",
            Self::LinuxPpc64le => "ppc64le",
        }
    }
}

impl FromStr for TargetPlatform {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linux/amd64" | "linux-64" | "linux/x86_64" => Ok(Self::LinuxAmd64),
            "linux/arm64" | "linux/arm64/v8" | "linux-aarch64" | "linux/aarch64" => {
                Ok(Self::LinuxArm64)
            }
            "linux/ppc64le" | "linux-ppc64le" => Ok(Self::LinuxPpc64le),
            other => Err(TargetError(format!(
                "unknown platform '{other}'; use linux/amd64, linux/arm64, linux/ppc64le \
                 (or the conda names linux-64, linux-aarch64, linux-ppc64le)"
            ))),
        }
    }
}

impl std::fmt::Display for TargetPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.oci_os(), self.oci_architecture())
    }
}

/// The target machine as the solver sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub platform: TargetPlatform,
    pub glibc: Version,
    pub cuda: Option<Version>,
}

impl Target {
    /// A target with the documented defaults; `glibc`/`cuda` override them.
    pub fn new(
        platform: TargetPlatform,
        glibc: Option<&str>,
        cuda: Option<&str>,
    ) -> Result<Self, TargetError> {
        let version = |what: &str, v: &str| {
            Version::from_str(v)
                .map_err(|e| TargetError(format!("invalid {what} version '{v}': {e}")))
        };
        Ok(Self {
            platform,
            glibc: version("glibc", glibc.unwrap_or(DEFAULT_GLIBC))?,
            cuda: cuda.map(|c| version("CUDA", c)).transpose()?,
        })
    }

    /// `__unix`, `__linux`, `__glibc`, `__archspec` and, when asked for, `__cuda`.
    pub fn virtual_packages(&self) -> Vec<GenericVirtualPackage> {
        let vp = |name: &str, version: &str, build: &str| GenericVirtualPackage {
            name: PackageName::new_unchecked(name),
            version: Version::from_str(version).expect("static version"),
            build_string: build.parse().expect("static build string"),
        };
        let mut out = vec![
            vp("__unix", "0", "0"),
            vp("__linux", DEFAULT_LINUX, "0"),
            vp("__glibc", &self.glibc.to_string(), "0"),
            vp("__archspec", "1", self.platform.archspec()),
        ];
        if let Some(cuda) = &self.cuda {
            out.push(vp("__cuda", &cuda.to_string(), "0"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_both_spellings() {
        assert_eq!(
            "linux/amd64".parse::<TargetPlatform>().unwrap(),
            TargetPlatform::LinuxAmd64
        );
        assert_eq!(
            "linux-aarch64".parse::<TargetPlatform>().unwrap(),
            TargetPlatform::LinuxArm64
        );
        assert!("windows/amd64".parse::<TargetPlatform>().is_err());
    }

    #[test]
    fn cuda_only_when_asked() {
        let t = Target::new(TargetPlatform::LinuxAmd64, None, None).unwrap();
        assert!(!t
            .virtual_packages()
            .iter()
            .any(|v| v.name.as_normalized() == "__cuda"));
        let t = Target::new(TargetPlatform::LinuxAmd64, Some("2.17"), Some("11.8")).unwrap();
        let vps = t.virtual_packages();
        assert!(vps.iter().any(|v| v.to_string().starts_with("__cuda=11.8")));
        assert!(vps
            .iter()
            .any(|v| v.to_string().starts_with("__glibc=2.17")));
    }
}
