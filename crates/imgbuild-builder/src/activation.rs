//! Activation baked into the image: the variables `conda activate` would set (from
//! `etc/conda/activate.d/*.sh` scripts and `conda-meta/state` env vars) are computed at build
//! time with rattler_shell and go into the image config's `Env`, so containers start with the
//! environment active: no `conda activate`, no `conda run`, no shell wrapper.
//!
//! The scripts run on the build host against the staging root, with a minimal environment;
//! every mention of the staging path in their results is rewritten to the final prefix.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rattler_shell::activation::{ActivationVariables, Activator, PathModificationBehavior};
use rattler_shell::shell::Bash;

use crate::error::BuildError;
use crate::prefix::InstallPrefix;
use crate::target::TargetPlatform;

/// What activation adds to the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activation {
    /// Directories to put in front of `PATH`, in order.
    pub path_prepend: Vec<String>,
    /// Variables, sorted by name.
    pub env: Vec<(String, String)>,
}

/// Shell bookkeeping that activation sets but that means nothing in an image.
const IGNORED: &[&str] = &[
    "PATH",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "PS1",
    "CONDA_SHLVL",
    "CONDA_PROMPT_MODIFIER",
];

/// Evaluates the environment's activation for the image. Scripts only run when the target
/// is the build host's platform; otherwise they are named in a warning and skipped.
pub fn bake(
    root: &Path,
    prefix: &InstallPrefix,
    platform: TargetPlatform,
) -> Result<Activation, BuildError> {
    let err = |e: &dyn std::error::Error| BuildError::Install {
        message: format!(
            "activation of the environment failed: {}",
            crate::error::chain(e)
        ),
    };
    let activator =
        Activator::from_path(root, Bash::default(), platform.subdir()).map_err(|e| err(&e))?;
    let mut out = Activation {
        path_prepend: vec![format!("{prefix}/bin")],
        env: vec![
            ("CONDA_PREFIX".into(), prefix.to_string()),
            ("CONDA_DEFAULT_ENV".into(), prefix.to_string()),
        ],
    };
    let root_str = root.to_string_lossy().into_owned();
    let relocate = |v: &str| v.replace(&root_str, prefix.as_str());
    for (k, v) in &activator.env_vars {
        out.env.push((k.clone(), relocate(v)));
    }
    if !activator.activation_scripts.is_empty() {
        let names: Vec<String> = activator
            .activation_scripts
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if rattler_conda_types::Subdir::current() != Some(platform.subdir()) {
            tracing::warn!(
                "activation scripts cannot run on this host for {platform}; their variables are not in the image: {}",
                names.join(", ")
            );
        } else {
            let minimal_path = "/usr/bin:/bin";
            let environment: HashMap<&OsStr, &OsStr> = HashMap::from([
                (OsStr::new("PATH"), OsStr::new(minimal_path)),
                (OsStr::new("HOME"), OsStr::new("/nonexistent")),
                (OsStr::new("LANG"), OsStr::new("C.UTF-8")),
            ]);
            let changed = activator
                .run_activation(
                    ActivationVariables {
                        conda_prefix: None,
                        path: Some(vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin")]),
                        path_modification_behavior: PathModificationBehavior::Prepend,
                        current_env: HashMap::new(),
                    },
                    Some(environment),
                )
                .map_err(|e| err(&e))?;
            for (k, v) in changed {
                if k == "PATH" {
                    // Entries the scripts added, relocated; ours and the minimal ones are known.
                    for entry in v.split(':').map(relocate) {
                        let known = minimal_path.split(':').any(|m| m == entry)
                            || out.path_prepend.contains(&entry);
                        if !known {
                            out.path_prepend.push(entry);
                        }
                    }
                } else if !IGNORED.contains(&k.as_str()) && !k.starts_with("CONDA_") {
                    out.env.push((k, relocate(&v)));
                }
            }
            tracing::info!(
                "baked activation scripts into the image: {}",
                names.join(", ")
            );
        }
    }
    out.env.sort();
    out.env.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}
