//! Finding the uv program, and running it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PipError, PipRequirements, PipTarget};

/// The uv program.
#[derive(Debug, Clone)]
pub struct Uv {
    path: PathBuf,
    cache_dir: PathBuf,
}

impl Uv {
    /// `explicit` (`--uv PATH`) or `uv` on `PATH`; uv's own cache under `cache_dir`.
    pub fn find(explicit: Option<&Path>, cache_dir: &Path) -> Result<Self, PipError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => find_on_path("uv").ok_or(PipError::UvMissing)?,
        };
        let out =
            Command::new(&path)
                .arg("--version")
                .output()
                .map_err(|e| PipError::UvUnusable {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        if !out.status.success() {
            return Err(PipError::UvUnusable {
                path,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::debug!(
            "using {} ({})",
            path.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(Self {
            path,
            cache_dir: crate::cache_dir::CacheDir::new(cache_dir).uv(),
        })
    }

    /// `uv pip SUBCOMMAND` with the options every call shares: no user config, no Python
    /// downloads, imgbuild's cache, the target's platform and Python, wheels only.
    pub(super) fn pip(
        &self,
        subcommand: &str,
        target: &PipTarget,
        reqs: &PipRequirements,
    ) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(["pip", subcommand, "--no-config", "--color", "never"])
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(["--python-version", &target.uv_python_version()])
            .args(["--python-platform", &target.uv_platform])
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env_remove("UV_INDEX_URL")
            .env_remove("UV_EXTRA_INDEX_URL")
            .env_remove("PIP_INDEX_URL");
        if !target.allow_sdist {
            cmd.args(["--only-binary", ":all:"]);
        }
        if let Some(url) = &reqs.index_url {
            cmd.args(["--index-url", url]);
        }
        for url in &reqs.extra_index_urls {
            cmd.args(["--extra-index-url", url]);
        }
        if reqs.pre {
            cmd.args(["--prerelease", "allow"]);
        }
        cmd
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

pub(super) fn run(mut cmd: Command) -> Result<std::process::Output, PipError> {
    tracing::debug!("running {cmd:?}");
    cmd.output().map_err(|e| PipError::Install {
        message: format!("cannot run {:?}: {e}", cmd.get_program()),
    })
}
