//! Which wheel of a release the target installs.
//!
//! uv's `pylock.toml` lists *every* wheel of a release that fits the target platform, not the
//! one an installer would take (charset-normalizer has a `cp311`, an `abi3` and a `py3-none-any`
//! wheel for `x86_64-manylinux_2_28`; the nvidia-*-cu11 wheels come with and without a build
//! tag). An installer takes the most specific one, and so does [`choose`]:
//!
//! 1. the best tag in the target's PEP 425 priority order: `cp311-cp311` over `cp37-abi3` over
//!    `py3-none`; the newest `manylinux_2_N` the target's glibc allows first; a platform wheel
//!    over `any`;
//! 2. among wheels with equally good tags, the highest build tag (no build tag is lowest);
//! 3. then the smallest file name, so the choice never depends on the order the index lists
//!    wheels in.
//!
//! The tag order is uv's own ([`uv_platform_tags::Tags`], the same crate its installer uses),
//! built from the solved `python` record and the target (never from the build host), so a
//! build on any machine picks the same file. Wheel file names are parsed with
//! [`uv_distribution_filename::WheelFilename`] (name, version, build tag, compressed tag sets).

use std::cmp::Ordering;

use uv_distribution_filename::WheelFilename;
use uv_platform_tags::{Arch, Os, Platform, TagCompatibility, Tags, TagsOptions};

use crate::target::TargetPlatform;

/// The PEP 425 tags a target accepts, in priority order.
#[derive(Debug, Clone)]
pub struct TargetTags {
    tags: Tags,
    /// `cp311-cp311-manylinux_2_28_x86_64`: the most specific tag, for messages.
    best: String,
}

/// A problem describing the target's tags.
#[derive(Debug, thiserror::Error)]
#[error("cannot compute the wheel tags of Python {python} on {platform}: {message}")]
pub struct TagsError {
    python: String,
    platform: String,
    message: String,
}

impl TargetTags {
    /// The tags CPython `python` (`(3, 11)`; `free_threaded` for a `cp313t` build) accepts on
    /// `platform` with glibc `2.<glibc_minor>`.
    pub fn new(
        platform: TargetPlatform,
        glibc_minor: u16,
        python: (u8, u8),
        free_threaded: bool,
    ) -> Result<Self, TagsError> {
        let arch = match platform {
            TargetPlatform::LinuxAmd64 => Arch::X86_64,
            TargetPlatform::LinuxArm64 => Arch::Aarch64,
            TargetPlatform::LinuxPpc64le => Arch::Powerpc64Le,
        };
        let tags = Tags::from_env(
            Platform::new(
                Os::Manylinux {
                    major: 2,
                    minor: glibc_minor,
                },
                arch,
            ),
            python,
            "cpython",
            python,
            TagsOptions {
                manylinux_compatible: true,
                gil_disabled: free_threaded,
                debug_enabled: false,
                is_cross: true,
            },
        )
        .map_err(|e| TagsError {
            python: format!("{}.{}", python.0, python.1),
            platform: platform.to_string(),
            message: e.to_string(),
        })?;
        let best = match (tags.python_tag(), tags.abi_tag(), tags.platform_tag()) {
            (Some(py), Some(abi), Some(plat)) => format!("{py}-{abi}-{plat}"),
            _ => format!("Python {}.{} on {platform}", python.0, python.1),
        };
        Ok(Self { tags, best })
    }

    /// The target's most specific tag, e.g. `cp311-cp311-manylinux_2_28_x86_64`.
    pub fn best(&self) -> &str {
        &self.best
    }

    /// How well a wheel file name fits; `None` if it is no wheel name at all.
    pub fn compatibility(&self, file_name: &str) -> Option<TagCompatibility> {
        let wheel: WheelFilename = file_name.parse().ok()?;
        Some(wheel.compatibility(&self.tags))
    }
}

/// One wheel of a release, as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelFile {
    /// The file name, percent-decoded: `torch-2.0.1-cp311-cp311-manylinux1_x86_64.whl`.
    pub file_name: String,
    pub url: String,
    /// Hex sha256.
    pub sha256: String,
}

/// Why no wheel of a release fits the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} {version} has no wheel for the target ({tags}); the index has: {}",
    if available.is_empty() { "no wheels".to_string() } else { available.join(", ") }
)]
pub struct NoWheelForTarget {
    pub name: String,
    pub version: String,
    /// The target's most specific tag.
    pub tags: String,
    /// The wheel file names the index offers.
    pub available: Vec<String>,
}

/// The wheel an installer takes for the target (see the module docs).
pub fn choose<'a>(
    name: &str,
    version: &str,
    wheels: &'a [WheelFile],
    tags: &TargetTags,
) -> Result<&'a WheelFile, NoWheelForTarget> {
    let ranked = wheels.iter().filter_map(|w| {
        let parsed: WheelFilename = w.file_name.parse().ok()?;
        match parsed.compatibility(&tags.tags) {
            TagCompatibility::Compatible(priority) => {
                Some((priority, parsed.build_tag().cloned(), w))
            }
            TagCompatibility::Incompatible(_) => None,
        }
    });
    ranked
        .max_by(|(pa, ba, wa), (pb, bb, wb)| {
            pa.cmp(pb)
                .then_with(|| ba.cmp(bb))
                // Reversed: the smaller name wins a full tie.
                .then_with(|| wb.file_name.cmp(&wa.file_name))
                .then(Ordering::Equal)
        })
        .map(|(_, _, w)| w)
        .ok_or_else(|| NoWheelForTarget {
            name: name.to_string(),
            version: version.to_string(),
            tags: tags.best().to_string(),
            available: wheels.iter().map(|w| w.file_name.clone()).collect(),
        })
}

/// The percent-decoded last path segment of a URL: the wheel's file name
/// (`torch-2.0.1%2Bcu117-…` on an index is `torch-2.0.1+cu117-…`).
pub fn file_name_of(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or(path);
    percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheels(names: &[&str]) -> Vec<WheelFile> {
        names
            .iter()
            .map(|n| WheelFile {
                file_name: n.to_string(),
                url: format!("https://files.example/{n}"),
                sha256: "00".repeat(32),
            })
            .collect()
    }

    fn amd64_311() -> TargetTags {
        TargetTags::new(TargetPlatform::LinuxAmd64, 28, (3, 11), false).unwrap()
    }

    fn pick(names: &[&str], tags: &TargetTags) -> String {
        let w = wheels(names);
        choose("x", "1", &w, tags).unwrap().file_name.clone()
    }

    // The file names below are the ones uv 0.13.9 listed in pylock.toml for
    // `--python-version 3.11 --python-platform x86_64-manylinux_2_28` (2026-12-02).
    #[test]
    fn the_most_specific_abi_wins() {
        let t = amd64_311();
        assert_eq!(
            pick(
                &[
                    "charset_normalizer-3.5.3-py3-none-any.whl",
                    "charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
                    "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
                ],
                &t
            ),
            "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl"
        );
        assert_eq!(
            pick(
                &[
                    "charset_normalizer-3.5.3-py3-none-any.whl",
                    "charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
                ],
                &t
            ),
            "charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl"
        );
        assert_eq!(
            pick(
                &[
                    "multiprocess-0.70.15-py310-none-any.whl",
                    "multiprocess-0.70.15-py311-none-any.whl",
                    "multiprocess-0.70.15-py37-none-any.whl",
                    "multiprocess-0.70.15-py38-none-any.whl",
                ],
                &t
            ),
            "multiprocess-0.70.15-py311-none-any.whl"
        );
    }

    #[test]
    fn the_newest_manylinux_the_glibc_allows_wins() {
        let names = [
            "regex-2026.11.19-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            "regex-2026.11.19-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
        ];
        assert_eq!(pick(&names, &amd64_311()), names[1]);
        // A glibc 2.17 target cannot take a wheel that needs 2.28 at all.
        let old = TargetTags::new(TargetPlatform::LinuxAmd64, 17, (3, 11), false).unwrap();
        let w = wheels(&["x-1-cp311-cp311-manylinux_2_28_x86_64.whl"]);
        assert!(choose("x", "1", &w, &old).is_err());
        let w = wheels(&[
            "x-1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "x-1-cp311-cp311-manylinux_2_17_x86_64.whl",
        ]);
        assert_eq!(
            choose("x", "1", &w, &old).unwrap().file_name,
            "x-1-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
        // And order in the listing does not matter.
        let reversed = [names[1], names[0]];
        assert_eq!(pick(&reversed, &amd64_311()), names[1]);
    }

    #[test]
    fn the_highest_build_tag_wins_among_equal_tags() {
        let t = amd64_311();
        assert_eq!(
            pick(
                &[
                    "nvidia_cudnn_cu11-8.5.0.96-py3-none-manylinux1_x86_64.whl",
                    "nvidia_cudnn_cu11-8.5.0.96-2-py3-none-manylinux1_x86_64.whl",
                ],
                &t
            ),
            "nvidia_cudnn_cu11-8.5.0.96-2-py3-none-manylinux1_x86_64.whl"
        );
        // A better tag beats a build tag.
        assert_eq!(
            pick(
                &[
                    "nvidia_cufft_cu11-10.9.0.58-py3-none-manylinux1_x86_64.whl",
                    "nvidia_cufft_cu11-10.9.0.58-py3-none-manylinux2014_x86_64.whl",
                ],
                &t
            ),
            "nvidia_cufft_cu11-10.9.0.58-py3-none-manylinux2014_x86_64.whl"
        );
    }

    #[test]
    fn arm64_takes_aarch64_wheels_and_refuses_x86_ones() {
        let t = TargetTags::new(TargetPlatform::LinuxArm64, 28, (3, 11), false).unwrap();
        let names = [
            "frozenlist-1.8.0-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
            "frozenlist-1.8.0-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl",
            "frozenlist-1.8.0-py3-none-any.whl",
        ];
        assert_eq!(pick(&names, &t), names[1]);
        let w = wheels(&names[..1]);
        let e = choose("frozenlist", "1.8.0", &w, &t).unwrap_err();
        assert_eq!(e.tags, "cp311-cp311-manylinux_2_28_aarch64");
        let text = e.to_string();
        assert!(
            text.contains(
                "frozenlist 1.8.0 has no wheel for the target (cp311-cp311-manylinux_2_28_aarch64)"
            ) && text.contains(names[0]),
            "{text}"
        );
    }

    #[test]
    fn free_threaded_python_takes_only_its_own_abi() {
        let t = TargetTags::new(TargetPlatform::LinuxAmd64, 28, (3, 13), true).unwrap();
        let names = [
            "x-1-cp313-cp313-manylinux_2_28_x86_64.whl",
            "x-1-cp313-cp313t-manylinux_2_28_x86_64.whl",
        ];
        assert_eq!(pick(&names, &t), names[1]);
    }

    #[test]
    fn file_names_are_percent_decoded() {
        assert_eq!(
            file_name_of("https://download.example/whl/cu117/torch-2.0.1%2Bcu117-cp311-cp311-linux_x86_64.whl#sha256=ab"),
            "torch-2.0.1+cu117-cp311-cp311-linux_x86_64.whl"
        );
        assert_eq!(
            file_name_of("file:///w/six-1.16.0-py2.py3-none-any.whl"),
            "six-1.16.0-py2.py3-none-any.whl"
        );
        assert_eq!(file_name_of("https://x/a%2"), "a%2");
    }
}
