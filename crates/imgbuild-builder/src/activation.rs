//! Activation baked into the image: the variables `conda activate` would set (from
//! `etc/conda/activate.d/*.sh` scripts and `conda-meta/state` env vars) go into the image
//! config's `Env`, so containers start with the environment active: no `conda activate`, no
//! `conda run`, no shell wrapper.
//!
//! By default no script runs: each one is read by [`crate::activation_script`], which
//! evaluates the plain `export` lines most of them are made of and refuses anything else; a
//! refused script is named in a warning and left out. A package's script is code by whoever
//! published the package, and imgbuild often runs as root on a CI machine. With
//! [`ActivationScripts::Run`] the scripts run as conda would run them, in a sandbox: new user,
//! network and mount namespaces (no network; the staging root mounted read-only), a throwaway
//! `HOME`, a minimal environment and a time limit; every mention of the staging path in their
//! results is rewritten to the final prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rattler_shell::activation::{ActivationVariables, Activator, PathModificationBehavior};
use rattler_shell::shell::Bash;

use crate::error::BuildError;
use crate::target::TargetPlatform;
use imgbuild_fs::InstallPrefix;

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

/// What to do with `activate.d` scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActivationScripts {
    /// Read them and evaluate what is plain assignments; skip (with a warning) the others.
    #[default]
    Evaluate,
    /// Run them in a sandbox on the build host (only when it is the target platform).
    Run,
}

impl ActivationScripts {
    /// A stable name, for cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evaluate => "evaluate",
            Self::Run => "run",
        }
    }
}

/// The most a script may be for evaluation (real ones are well under 10 KiB).
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// The longest sandboxed scripts may run.
const RUN_TIMEOUT_SECONDS: u32 = 120;

/// Evaluates the environment's activation for the image.
pub fn bake(
    root: &Path,
    prefix: &InstallPrefix,
    platform: TargetPlatform,
    scripts: ActivationScripts,
) -> Result<Activation, BuildError> {
    let activator = Activator::from_path(root, Bash::default(), platform.subdir())
        .map_err(|e| failed(&e.to_string()))?;
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
        let run = scripts == ActivationScripts::Run;
        if run && rattler_conda_types::Subdir::current() == Some(platform.subdir()) {
            run_scripts(&activator, root, &relocate, &mut out)?;
        } else {
            if run {
                tracing::warn!(
                    "activation scripts cannot run on this host for {platform}; they are read instead"
                );
            }
            evaluate_scripts(&activator.activation_scripts, root, &mut out)?;
        }
    }
    out.env.sort();
    out.env.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

fn failed(message: &str) -> BuildError {
    BuildError::Install {
        message: format!("activation of the environment failed: {message}"),
    }
}

fn keep(name: &str) -> bool {
    !IGNORED.contains(&name) && !name.starts_with("CONDA_")
}

/// Reads each script and takes what it sets, if it is static; warns about the others.
fn evaluate_scripts(
    scripts: &[PathBuf],
    root: &Path,
    out: &mut Activation,
) -> Result<(), BuildError> {
    use std::io::Read as _;
    let mut known: BTreeMap<String, String> = out.env.iter().cloned().collect();
    let (mut taken, mut skipped) = (Vec::new(), Vec::new());
    for path in scripts {
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        let mut text = String::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SCRIPT_BYTES + 1).read_to_string(&mut text));
        let result = match read {
            Ok(n) if n as u64 > MAX_SCRIPT_BYTES => {
                Err(format!("larger than {} KiB", MAX_SCRIPT_BYTES / 1024))
            }
            Ok(_) => crate::activation_script::evaluate(&text, &known).map_err(|e| e.to_string()),
            Err(e) => Err(format!("unreadable: {e}")),
        };
        match result {
            Ok(script) => {
                for (k, v) in script.exports {
                    known.insert(k.clone(), v.clone());
                    if keep(&k) {
                        out.env.retain(|(n, _)| *n != k);
                        out.env.push((k, v));
                    }
                }
                for dir in script.path_prepend {
                    if !out.path_prepend.contains(&dir) {
                        out.path_prepend.push(dir);
                    }
                }
                taken.push(name);
            }
            Err(why) => {
                tracing::warn!(
                    "activation script {name} is not used: it is more than plain assignments \
                     ({why}); what it sets is not in the image. Set it with --env, or pass \
                     --run-activation-scripts to run activation scripts in a sandbox"
                );
                skipped.push(name);
            }
        }
    }
    if !taken.is_empty() {
        tracing::info!(
            "baked activation scripts into the image (read, not run): {}",
            taken.join(", ")
        );
    }
    Ok(())
}

/// Runs the scripts as conda activation would, in a sandbox (see the module docs), and takes
/// the variables they changed.
fn run_scripts(
    activator: &Activator<Bash>,
    root: &Path,
    relocate: &dyn Fn(&str) -> String,
    out: &mut Activation,
) -> Result<(), BuildError> {
    const SEPARATOR: &str = "____IMGBUILD_ENV____";
    let minimal_path = "/usr/bin:/bin";
    let activation = activator
        .activation(ActivationVariables {
            conda_prefix: None,
            path: Some(vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin")]),
            path_modification_behavior: PathModificationBehavior::Prepend,
            current_env: HashMap::new(),
        })
        .map_err(|e| failed(&e.to_string()))?;
    let body = activation
        .script
        .contents()
        .map_err(|e| failed(&e.to_string()))?;
    let work = tempfile::Builder::new()
        .prefix("imgbuild-activation-")
        .tempdir()
        .map_err(|e| BuildError::io(&std::env::temp_dir(), e))?;
    let home = work.path().join("home");
    std::fs::create_dir(&home).map_err(|e| BuildError::io(&home, e))?;
    let script = work.path().join("activate.sh");
    std::fs::write(
        &script,
        format!("env -0\nprintf '%s' {SEPARATOR}\n{body}\nprintf '%s' {SEPARATOR}\nenv -0\n"),
    )
    .map_err(|e| BuildError::io(&script, e))?;

    // Inside the namespaces: make the staging root read-only, then run the scripts.
    let inner = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" || exit 97
exec timeout --kill-after=5 "$3" bash --noprofile --norc "$2""#;
    let mut cmd = std::process::Command::new("unshare");
    // root can make the namespaces itself; anyone else needs a user namespace for them.
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args([
        "--net",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(inner)
    .arg("sh")
    .arg(root)
    .arg(&script)
    .arg(RUN_TIMEOUT_SECONDS.to_string())
    .env_clear()
    .env("PATH", minimal_path)
    .env("HOME", &home)
    .env("LANG", "C.UTF-8")
    .current_dir(work.path());
    let result = cmd.output().map_err(|e| {
        failed(&format!(
            "cannot start unshare(1) to sandbox --run-activation-scripts: {e}; install \
             util-linux, or leave out --run-activation-scripts"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    match result.status.code() {
        Some(0) => Ok(()),
        Some(97) => sandbox_failed(&stderr),
        Some(1) if stderr.trim_start().starts_with("unshare") => sandbox_failed(&stderr),
        Some(124) | Some(137) => Err(failed(&format!(
            "the activation scripts did not finish within {RUN_TIMEOUT_SECONDS} s"
        ))),
        _ => Err(failed(&format!(
            "the activation scripts failed ({}): {}",
            result.status,
            stderr.trim()
        ))),
    }?;
    let mut parts = stdout.split(SEPARATOR);
    let (Some(before), Some(_), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(failed("the activation scripts' output could not be read"));
    };
    let parse = |text: &str| -> HashMap<String, String> {
        text.split('\0')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim_start_matches('\n').to_string(), v.to_string()))
            .collect()
    };
    let (before, after) = (parse(before), parse(after));
    let mut changed: Vec<(String, String)> = after
        .into_iter()
        .filter(|(k, v)| before.get(k) != Some(v) && !k.is_empty())
        .collect();
    changed.sort();
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
        } else if keep(&k) && k != "HOME" {
            out.env.retain(|(n, _)| *n != k);
            out.env.push((k, relocate(&v)));
        }
    }
    let names: Vec<String> = activator
        .activation_scripts
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    tracing::info!(
        "ran activation scripts in a sandbox and baked what they set: {}",
        names.join(", ")
    );
    Ok(())
}

fn sandbox_failed(stderr: &str) -> Result<(), BuildError> {
    Err(failed(&format!(
        "cannot sandbox --run-activation-scripts (it needs new user, network and mount \
         namespaces): {}; run imgbuild where unshare(1) may create them, or leave out \
         --run-activation-scripts",
        stderr.trim()
    )))
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
