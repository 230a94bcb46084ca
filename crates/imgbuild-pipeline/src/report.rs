//! What a build did, as values: the CLI prints a [`BuildReport`], tests assert on it.

use std::time::{Duration, Instant};

use imgbuild_builder::install::RootUpdate;
use imgbuild_layer::LayerOrigin;
use imgbuild_oci::registry::{PushSummary, ReferrersMode};
use imgbuild_oci::Digest;

/// What [`crate::Builder::build_platforms`] did: the image or index, each platform's report,
/// the pushes.
#[derive(Debug, Clone)]
pub struct IndexReport {
    /// The index's digest, or the image manifest's for a single platform.
    pub digest: Digest,
    /// One per platform, in the order of the plans.
    pub images: Vec<BuildReport>,
    /// One per registry pushed to, in the order of [`crate::Outputs::push`].
    pub pushes: Vec<PushReport>,
    pub elapsed: Duration,
}

/// What [`crate::Builder::build`] did (and, per platform, [`crate::Builder::build_platforms`]).
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub platform: imgbuild_builder::TargetPlatform,
    /// The image manifest's digest: the image's identity.
    pub manifest_digest: Digest,
    pub conda_packages: usize,
    pub pip_packages: usize,
    /// The image's own layers (the base's are not listed), in order; the SBOM's is last.
    pub layers: Vec<LayerReport>,
    pub environment: EnvironmentOrigin,
    pub downloads: Downloads,
    /// One per registry pushed to, in the order of [`crate::Outputs::push`] (empty per
    /// platform of an index: its pushes are the [`IndexReport`]'s).
    pub pushes: Vec<PushReport>,
    /// What the build warned about (also logged as it happened).
    pub warnings: Vec<String>,
    /// Wall time per stage, in the order they ran; a stage's inner parts (`pip`) are
    /// reported after it and not counted in it.
    pub stages: Vec<(&'static str, Duration)>,
    pub elapsed: Duration,
}

impl BuildReport {
    /// Compressed bytes of the image's own layers.
    pub fn compressed_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Bytes not stored because a file was already in its layer.
    pub fn deduplicated_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.dedup_saved).sum()
    }

    /// How many layers came to be in `origin`.
    pub fn layers_from(&self, origin: LayerOrigin) -> usize {
        self.layers.iter().filter(|l| l.origin == origin).count()
    }
}

/// One layer of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    pub digest: Digest,
    /// Compressed size.
    pub size: u64,
    /// What the layer holds: package labels (`python-3.11.9-h…_0`, `pip:torch-2.0.1`), or
    /// `environment` / `sbom`.
    pub owners: Vec<imgbuild_layer::OwnerLabel>,
    pub origin: LayerOrigin,
    pub dedup_saved: u64,
}

impl LayerReport {
    /// The owners' labels, space-separated, as the CLI prints them.
    pub fn holds(&self) -> String {
        let labels: Vec<String> = self.owners.iter().map(ToString::to_string).collect();
        labels.join(" ")
    }
}

/// Where the environment's layers came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentOrigin {
    /// An earlier build made the same environment: nothing installed, read or written.
    Cached,
    /// Installed into a staging root; the counts are rattler's for a reused root (`None` for
    /// a fresh one, where everything is linked).
    Installed { staging: Option<RootUpdate> },
    /// Another build (another runner) made the same environment and kept it in this
    /// registry repository (`--cache-from`): nothing installed or written here.
    RegistryCache {
        repository: imgbuild_oci::registry::Reference,
    },
}

/// Bytes downloaded by the build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Downloads {
    pub packages: u64,
    pub package_bytes: u64,
    pub wheels: u64,
    pub wheel_bytes: u64,
}

/// One push: what went up, and the SBOM attached.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub summary: PushSummary,
    /// The SBOM attached to each image pushed.
    pub attached: Vec<Attached>,
}

/// An artifact attached to a pushed image.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The image manifest it is attached to.
    pub subject: Digest,
    pub artifact_type: String,
    pub digest: Digest,
    pub mode: ReferrersMode,
}

/// Wall time per stage.
pub(crate) struct Stages {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Stages {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            last: started,
            done: Vec::new(),
        }
    }

    /// Ends the stage called `name` now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        self.mark_excluding(name, &[]);
    }

    /// Ends the stage called `name` now, reporting the parts of it in `parts` (that took
    /// any time) as stages of their own after it.
    pub(crate) fn mark_excluding(
        &mut self,
        name: &'static str,
        parts: &[(&'static str, Duration)],
    ) {
        let now = Instant::now();
        let inner: Duration = parts.iter().map(|(_, d)| *d).sum();
        self.done
            .push((name, (now - self.last).saturating_sub(inner)));
        self.done
            .extend(parts.iter().filter(|(_, d)| !d.is_zero()).copied());
        self.last = now;
    }

    /// Starts the next stage now: the time since the last mark was another platform's.
    pub(crate) fn resume(&mut self) {
        self.last = Instant::now();
    }

    /// The time the stages took, together.
    pub(crate) fn total(&self) -> Duration {
        self.done.iter().map(|(_, d)| *d).sum()
    }

    pub(crate) fn into_vec(self) -> Vec<(&'static str, Duration)> {
        self.done
    }
}
