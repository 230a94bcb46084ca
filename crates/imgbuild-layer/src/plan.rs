//! Cutting owners into layers.
//!
//! The rule that makes layers shareable between images: *a layer's bytes depend only on the
//! owners in it*. So owners are never split across layers, and which layer a small package
//! lands in depends only on its own name, not on what else is in the environment:
//!
//! * a conda package whose installed size is over `big_package_threshold` gets a layer of its
//!   own (pytorch, cudatoolkit, mkl…), in name order;
//! * the other packages go to one of `small_groups` buckets chosen by a stable hash of the
//!   package name, so adding or upgrading one small package changes one bucket's digest;
//! * packages the pip step installed follow the conda layers (they change more often): a big
//!   one alone, the others spread over up to 4 groups by the same stable name hash;
//! * the environment owner (`conda-meta/`, files no package claims) is last, as it changes with
//!   every change to the environment.
//!
//! Example, threshold 32 MiB, 8 groups: `pytorch` (1.5 GiB) and `cudatoolkit` (900 MiB) get
//! layers 1 and 2; `zlib`, `xz`, `python`, `numpy`… are spread over layers 3–10 by name hash;
//! layers 11–14 hold the small pip packages (`transformers`, `datasets`…); the last holds
//! `conda-meta/`.
//!
//! Why 8 groups: an upgrade rewrites one group, so smaller groups make upgrades cheaper (the
//! benchmark's one-package upgrade: 0.20 s with 4 groups, 0.15 s with 8), while a dozen layers
//! cost a registry and a pull nothing worth counting. With the base, the environment stays far
//! below the 125-layer limit.

use std::path::PathBuf;

use imgbuild_oci::inspect::LayerKind;

use crate::ownership::{Owner, OwnerKind, OwnerLabel};
use crate::LayerError;

/// How many groups small pip packages are spread over (fewer under a tight budget): a pip
/// section of a real ML environment has ~50 small packages, and one bumped should rewrite a
/// few MiB, not all of them.
const PIP_GROUPS: usize = 4;

/// Knobs of the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Packages installed larger than this (bytes) get their own layer.
    pub big_package_threshold: u64,
    /// How many buckets small packages are spread over.
    pub small_groups: usize,
    /// The most layers the environment may use.
    pub max_layers: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            big_package_threshold: 32 * 1024 * 1024,
            small_groups: 8,
            max_layers: 32,
        }
    }
}

impl PlanOptions {
    /// How many groups the small packages are spread over: a tight --max-layers shrinks the
    /// groups first (to half the budget at most), so the big packages keep layers of their own.
    fn groups(&self) -> usize {
        self.small_groups
            .min(self.max_layers.saturating_sub(1) / 2)
            .max(1)
    }

    /// How many big packages get a layer of their own (the largest, by installed size then
    /// label): what the budget leaves beside the groups and the environment layer.
    pub fn max_big_layers(&self) -> usize {
        self.max_layers.saturating_sub(self.groups() + 1)
    }
}

/// One layer to write: the owners it holds and their paths.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    /// The owners it holds ([`OwnerLabel::Sbom`] alone for the layer that holds the SBOM).
    pub owners: Vec<OwnerLabel>,
    /// Paths relative to the staging root.
    pub paths: Vec<PathBuf>,
    /// Bytes of regular files.
    pub size: u64,
    /// What the layer's bytes depend on besides the write options, when that is known without
    /// reading its files: the identity and sha256 of each conda package in it, plus the
    /// environment's python version (noarch python files and entry points depend on it).
    /// `None` for the environment layer, whose content is only known by reading it.
    pub recipe: Option<String>,
}

impl PlannedLayer {
    /// The history line for this layer.
    pub fn description(&self) -> String {
        self.kind()
            .created_by()
            .expect("imgbuild's layers are never Base")
    }

    /// What the layer holds, by its owners' labels (see [`crate::Owner::label`]).
    pub fn kind(&self) -> LayerKind {
        let pip: Option<Vec<String>> = self.owners.iter().map(OwnerLabel::as_pip).collect();
        if let Some(packages) = pip.filter(|p| !p.is_empty()) {
            return LayerKind::Pip { packages };
        }
        if self.owners == [OwnerLabel::Environment] {
            LayerKind::Environment
        } else if self.owners == [OwnerLabel::Sbom] {
            LayerKind::Sbom {
                files: self.paths.iter().map(|p| p.display().to_string()).collect(),
            }
        } else {
            LayerKind::Conda {
                packages: self.owners.iter().map(ToString::to_string).collect(),
            }
        }
    }
}

/// Groups owners into layers as the module docs describe.
pub fn plan_layers(
    owners: &[Owner],
    options: &PlanOptions,
) -> Result<Vec<PlannedLayer>, LayerError> {
    let groups = options.groups();
    let mut conda: Vec<&Owner> = owners
        .iter()
        .filter(|o| matches!(o.kind, OwnerKind::Conda { .. }))
        .collect();
    conda.sort_by_key(|o| o.label());
    let env: Vec<&Owner> = owners
        .iter()
        .filter(|o| matches!(o.kind, OwnerKind::Environment))
        .collect();

    let mut big: Vec<&Owner> = conda
        .iter()
        .copied()
        .filter(|o| o.size > options.big_package_threshold)
        .collect();
    // Keep within budget: big layers + small buckets + the environment layer.
    let budget = options.max_layers;
    if budget < groups + 1 {
        return Err(LayerError::Budget {
            max_layers: budget,
            needed: groups + 1,
        });
    }
    if big.len() > options.max_big_layers() {
        // The largest packages keep their own layers; the rest join the buckets.
        big.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.label().cmp(&b.label())));
        big.truncate(options.max_big_layers());
        big.sort_by_key(|o| o.label());
    }
    let is_big = |o: &Owner| big.iter().any(|b| std::ptr::eq(*b, o));

    let python = owners
        .iter()
        .find(|o| o.package_name() == Some("python"))
        .map(|o| o.label().to_string())
        .unwrap_or_default();
    let layer_of = |members: &[&Owner]| layer_of(members, &python);
    let mut layers: Vec<PlannedLayer> = big.iter().map(|o| layer_of(&[*o])).collect();
    let mut buckets: Vec<Vec<&Owner>> = vec![Vec::new(); groups];
    for owner in conda.iter().copied().filter(|o| !is_big(o)) {
        let name = owner.package_name().unwrap_or_default();
        buckets[(stable_hash(name.as_bytes()) % groups as u64) as usize].push(owner);
    }
    layers.extend(
        buckets
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| layer_of(b)),
    );
    // pip packages after conda's (they change more often): big ones alone, the rest in
    // groups by name hash, within what the budget leaves.
    let pip: Vec<&Owner> = owners
        .iter()
        .filter(|o| matches!(o.kind, OwnerKind::Pip { .. }))
        .collect();
    if !pip.is_empty() {
        // Leave room for the environment layer; what remains is shared by big pip packages
        // and the pip groups.
        let room = budget.saturating_sub(layers.len() + 1);
        let (mut pip_big, mut pip_small): (Vec<&Owner>, Vec<&Owner>) = pip
            .iter()
            .partition(|o| o.size > options.big_package_threshold);
        let groups = PIP_GROUPS.min(room / 2).max(1);
        let big_room = room.saturating_sub(groups);
        if pip_big.len() > big_room {
            // The largest keep their own layers; the rest join the groups.
            pip_big.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.label().cmp(&b.label())));
            pip_small.extend(pip_big.drain(big_room..));
            pip_big.sort_by_key(|o| o.label());
        }
        layers.extend(pip_big.iter().map(|o| layer_of(&[*o])));
        let mut buckets: Vec<Vec<&Owner>> = vec![Vec::new(); groups];
        for owner in pip_small {
            let OwnerKind::Pip { name, .. } = &owner.kind else {
                unreachable!("pip owners only")
            };
            buckets[(stable_hash(name.as_bytes()) % groups as u64) as usize].push(owner);
        }
        for bucket in buckets.iter_mut().filter(|b| !b.is_empty()) {
            bucket.sort_by_key(|o| o.label());
            layers.push(layer_of(bucket));
        }
    }
    if layers.len() + 1 > budget {
        return Err(LayerError::Budget {
            max_layers: budget,
            needed: layers.len() + 1,
        });
    }
    let env_layer = layer_of(&env);
    if !env_layer.paths.is_empty() {
        layers.push(env_layer);
    }
    Ok(layers)
}

/// The layer holding `owners`; `python` is the environment's python label (see
/// [`PlannedLayer::recipe`]).
pub(crate) fn layer_of(owners: &[&Owner], python: &str) -> PlannedLayer {
    let mut paths: Vec<PathBuf> = owners
        .iter()
        .flat_map(|o| o.paths.iter().cloned())
        .collect();
    paths.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    let recipe = owners
        .iter()
        .map(|o| match &o.kind {
            OwnerKind::Conda {
                sha256: Some(sha), ..
            } => Some(format!("{}@{sha}", o.label())),
            OwnerKind::Pip { record_sha256, .. } => {
                Some(format!("{}@record:{record_sha256}", o.label()))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .filter(|parts| !parts.is_empty())
        .map(|parts| format!("python={python};{}", parts.join(";")));
    PlannedLayer {
        owners: owners.iter().map(|o| o.label()).collect(),
        paths,
        size: owners.iter().map(|o| o.size).sum(),
        recipe,
    }
}

/// FNV-1a: fixed across Rust versions and machines, unlike `DefaultHasher`.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, size: u64) -> Owner {
        Owner {
            kind: OwnerKind::Conda {
                name: name.into(),
                version: "1".into(),
                build: "0".into(),
                sha256: None,
            },
            paths: vec![PathBuf::from(format!("lib/{name}"))],
            size,
        }
    }

    fn env() -> Owner {
        Owner {
            kind: OwnerKind::Environment,
            paths: vec![PathBuf::from("conda-meta/history")],
            size: 0,
        }
    }

    #[test]
    fn big_alone_small_by_name_env_last() {
        let opts = PlanOptions::default();
        let owners = vec![
            pkg("pytorch", 100 << 20),
            pkg("zlib", 10),
            pkg("xz", 10),
            env(),
        ];
        let layers = plan_layers(&owners, &opts).unwrap();
        assert_eq!(layers[0].owners, vec!["pytorch-1-0"]);
        assert_eq!(layers.last().unwrap().owners, vec!["environment"]);
        let all: Vec<_> = layers.iter().flat_map(|l| l.owners.clone()).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn adding_a_small_package_touches_one_bucket() {
        let opts = PlanOptions::default();
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let before: Vec<Owner> = names.iter().map(|n| pkg(n, 1)).collect();
        let mut after = before.clone();
        after.push(pkg("newpkg", 1));
        let l1 = plan_layers(&before, &opts).unwrap();
        let l2 = plan_layers(&after, &opts).unwrap();
        let set1: std::collections::BTreeSet<_> = l1.iter().map(|l| l.owners.clone()).collect();
        let set2: std::collections::BTreeSet<_> = l2.iter().map(|l| l.owners.clone()).collect();
        assert_eq!(set2.difference(&set1).count(), 1);
    }

    fn wheel(name: &str, version: &str, size: u64) -> Owner {
        Owner {
            kind: OwnerKind::Pip {
                name: name.into(),
                version: version.into(),
                record_sha256: format!("{name}{version}"),
            },
            paths: vec![PathBuf::from(format!(
                "lib/python3.11/site-packages/{name}"
            ))],
            size,
        }
    }

    #[test]
    fn pip_packages_big_alone_small_in_groups_one_bump_one_group() {
        let opts = PlanOptions::default();
        let names = [
            "aiohttp",
            "attrs",
            "certifi",
            "filelock",
            "idna",
            "jinja2",
            "packaging",
            "regex",
            "requests",
            "six",
            "tqdm",
            "urllib3",
        ];
        let mut owners: Vec<Owner> = names.iter().map(|n| wheel(n, "1", 1 << 20)).collect();
        owners.push(wheel("torch", "2.0.1", 1 << 30));
        let before = plan_layers(&owners, &opts).unwrap();
        assert_eq!(before[0].owners, ["pip:torch-2.0.1"]);
        assert_eq!(before.len(), 1 + PIP_GROUPS, "{before:?}");
        owners[10] = wheel("tqdm", "2", 1 << 20);
        let after = plan_layers(&owners, &opts).unwrap();
        let set = |l: &[PlannedLayer]| -> std::collections::BTreeSet<Vec<OwnerLabel>> {
            l.iter().map(|l| l.owners.clone()).collect()
        };
        assert_eq!(set(&after).difference(&set(&before)).count(), 1);
    }

    #[test]
    fn many_big_pip_packages_stay_within_the_budget() {
        let opts = PlanOptions {
            max_layers: 12,
            ..PlanOptions::default()
        };
        let owners: Vec<Owner> = (0..20)
            .map(|i| wheel(&format!("nvidia{i:02}"), "1", (100 + i) << 20))
            .chain([wheel("six", "1", 10)])
            .collect();
        let layers = plan_layers(&owners, &opts).unwrap();
        assert!(layers.len() <= 12, "{}", layers.len());
        // The largest keep layers of their own; every package is somewhere.
        assert!(layers.iter().any(|l| l.owners == ["pip:nvidia19-1"]));
        assert_eq!(layers.iter().map(|l| l.owners.len()).sum::<usize>(), 21);
    }

    #[test]
    fn budget_is_enforced() {
        let opts = PlanOptions {
            max_layers: 6,
            ..PlanOptions::default()
        };
        let owners: Vec<Owner> = (0..10)
            .map(|i| pkg(&format!("big{i}"), (100 + i) << 20))
            .collect();
        let layers = plan_layers(&owners, &opts).unwrap();
        assert!(layers.len() <= 6);
        // The biggest one keeps its own layer.
        assert!(layers.iter().any(|l| l.owners == ["big9-1-0"]));
        // Two layers: one group and the environment.
        let two = PlanOptions {
            max_layers: 2,
            ..PlanOptions::default()
        };
        assert_eq!(plan_layers(&owners, &two).unwrap().len(), 1);
        let too_small = PlanOptions {
            max_layers: 1,
            ..PlanOptions::default()
        };
        assert!(plan_layers(&owners, &too_small).is_err());
    }
}
