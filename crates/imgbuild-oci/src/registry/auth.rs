//! Who we are to a registry: credentials from flags, the environment or Docker's config, and
//! the Basic / Bearer-token challenge dance. Secrets never reach `Debug`, logs or errors.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use super::RegistryError;

/// A username and password (or token). `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// `user:password`, as `--creds` takes it.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Self {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(RegistryError::Config(
                "--creds takes USER:PASSWORD (the password may be empty, the user may not)".into(),
            )),
        }
    }

    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials came from, for messages ("rejected the credentials from …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Flag,
    Environment,
    /// A containers auth.json (`--authfile`, `REGISTRY_AUTH_FILE`, or the default locations).
    AuthFile(PathBuf),
    DockerConfig(PathBuf),
    Helper(String),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => write!(f, "--creds"),
            Self::Environment => write!(f, "IMGBUILD_REGISTRY_USER/IMGBUILD_REGISTRY_PASSWORD"),
            Self::DockerConfig(p) | Self::AuthFile(p) => write!(f, "{}", p.display()),
            Self::Helper(h) => write!(f, "docker-credential-{h}"),
        }
    }
}

/// Credentials for `registry`, in the order users of Docker and of podman/skopeo expect:
/// `--creds`; the `IMGBUILD_REGISTRY_USER`/`_PASSWORD` variables; the auth file given
/// (`--authfile`, else `REGISTRY_AUTH_FILE`; it must exist); the containers auth files
/// `$XDG_RUNTIME_DIR/containers/auth.json` and `$XDG_CONFIG_HOME/containers/auth.json` (default
/// `~/.config`); then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file:
/// `credHelpers`, `auths`, `credsStore`; in `auths` the most specific key for `namespace`
/// first (`registry/acme/llm-env`, `registry/acme`, then `registry` in its spellings), as
/// containers-auth.json(5) says. `None` means anonymous.
pub fn resolve_credentials(
    registry: &str,
    namespace: &str,
    flag: Option<&Credentials>,
    auth_file: Option<&std::path::Path>,
) -> Result<Option<(Credentials, CredentialSource)>, RegistryError> {
    if let Some(c) = flag {
        return Ok(Some((c.clone(), CredentialSource::Flag)));
    }
    if let (Ok(user), Ok(password)) = (
        std::env::var("IMGBUILD_REGISTRY_USER"),
        std::env::var("IMGBUILD_REGISTRY_PASSWORD"),
    ) {
        if !user.is_empty() {
            return Ok(Some((
                Credentials {
                    username: user,
                    password,
                },
                CredentialSource::Environment,
            )));
        }
    }
    let given = auth_file
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from));
    if let Some(path) = given {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            RegistryError::Config(format!("cannot read the auth file {}: {e}", path.display()))
        })?;
        return from_file(
            registry,
            namespace,
            &text,
            &path,
            CredentialSource::AuthFile(path.clone()),
        );
    }
    for path in containers_auth_files() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let found = from_file(
                registry,
                namespace,
                &text,
                &path,
                CredentialSource::AuthFile(path.clone()),
            )?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    let Some(path) = docker_config_file() else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    from_file(
        registry,
        namespace,
        &text,
        &path,
        CredentialSource::DockerConfig(path.clone()),
    )
}

/// The credentials for `registry` in one auth file (`text`, read from `path`): its
/// `credHelpers`, `auths`, then `credsStore`, as Docker and containers/image read them.
fn from_file(
    registry: &str,
    namespace: &str,
    text: &str,
    path: &std::path::Path,
    source: CredentialSource,
) -> Result<Option<(Credentials, CredentialSource)>, RegistryError> {
    let config: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| RegistryError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    let keys = config_keys(registry);
    if let Some(helper) = keys
        .iter()
        .find_map(|k| config["credHelpers"][k.as_str()].as_str())
    {
        return helper_get(helper, registry)
            .map(|c| c.map(|c| (c, CredentialSource::Helper(helper.to_string()))));
    }
    if let Some(entry) = namespace_keys(registry, namespace)
        .iter()
        .chain(&keys)
        .map(|k| &config["auths"][k.as_str()])
        .find(|e| e.is_object())
    {
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    RegistryError::Config(format!(
                        "{}: the 'auth' entry for {registry} is not base64 of user:password",
                        path.display()
                    ))
                })?;
            let creds = Credentials::parse(&decoded).map_err(|_| {
                RegistryError::Config(format!(
                    "{}: the 'auth' entry for {registry} is not user:password",
                    path.display()
                ))
            })?;
            return Ok(Some((creds, source)));
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some((
                Credentials {
                    username: u.into(),
                    password: p.into(),
                },
                source,
            )));
        }
    }
    if let Some(store) = config["credsStore"].as_str() {
        return helper_get(store, registry)
            .map(|c| c.map(|c| (c, CredentialSource::Helper(store.to_string()))));
    }
    Ok(None)
}

/// podman's and skopeo's default auth files, in the order they are read.
fn containers_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => files.push(PathBuf::from(dir).join("containers/auth.json")),
        None => files.extend(dirs_home().map(|h| h.join(".config/containers/auth.json"))),
    }
    files
}

fn docker_config_file() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => dirs_home().map(|h| h.join(".docker/config.json")),
    }
}

/// Every place [`resolve_credentials`] looks after the flag and the variables, in order, for
/// a message that says where no credentials were found: the auth file given (or
/// `REGISTRY_AUTH_FILE`) alone, else the containers auth files and Docker's config.
pub fn credential_files(auth_file: Option<&Path>) -> Vec<PathBuf> {
    if let Some(given) = auth_file
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from))
    {
        return vec![given];
    }
    let mut files = containers_auth_files();
    files.extend(docker_config_file());
    files
}

/// The auth file `imgbuild login` writes when none is given: podman's default,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Some(PathBuf::from(dir).join("containers/auth.json"));
    }
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => Some(PathBuf::from(dir).join("containers/auth.json")),
        None => dirs_home().map(|h| h.join(".config/containers/auth.json")),
    }
}

/// Records `creds` for `registry` in the auth file at `path` (created if missing; other
/// entries kept), as `podman login` does: `auths[registry].auth` = base64 of `user:password`.
/// The file is written whole (temporary file, rename) with mode 0600.
pub fn store_login(path: &Path, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let mut config = read_auth_file(path)?;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    config["auths"][registry] = serde_json::json!({ "auth": auth });
    write_auth_file(path, &config)
}

/// Removes `registry`'s entry from the auth file at `path`; `false` when it had none.
pub fn remove_login(path: &Path, registry: &str) -> Result<bool, RegistryError> {
    let mut config = read_auth_file(path)?;
    let removed = config["auths"]
        .as_object_mut()
        .is_some_and(|auths| auths.remove(registry).is_some());
    if removed {
        write_auth_file(path, &config)?;
    }
    Ok(removed)
}

fn read_auth_file(path: &Path) -> Result<serde_json::Value, RegistryError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                RegistryError::Config(format!("{}: not valid JSON: {e}", path.display()))
            })?;
            if !value.is_object() {
                return Err(RegistryError::Config(format!(
                    "{}: not an auth file (not a JSON object)",
                    path.display()
                )));
            }
            Ok(value)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({"auths": {}})),
        Err(e) => Err(RegistryError::Config(format!("{}: {e}", path.display()))),
    }
}

fn write_auth_file(path: &Path, config: &serde_json::Value) -> Result<(), RegistryError> {
    let io = |e: std::io::Error| RegistryError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = serde_json::to_vec_pretty(config).expect("serializable");
    bytes.push(b'\n');
    imgbuild_fs::write_atomically(path, &bytes, 0o600, imgbuild_fs::Durability::Synced).map_err(io)
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The spellings Docker uses as keys for a registry in config.json.
fn config_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == crate::reference::DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    keys
}

/// The namespaced `auths` keys for a repository, most specific first: `registry/a/b/c`,
/// `registry/a/b`, `registry/a` for `a/b/c`.
fn namespace_keys(registry: &str, namespace: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = namespace.trim_matches('/');
    while !rest.is_empty() {
        keys.push(format!("{registry}/{rest}"));
        rest = rest.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    keys
}

/// `docker-credential-<helper> get`, per Docker's credential-helper protocol.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            RegistryError::Config(format!(
                "cannot run {program} (named in Docker's config.json): {e}"
            ))
        })?;
    let server = if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Config(format!("{program} failed: {e}")))?;
    if !out.status.success() {
        // "credentials not found" is not an error: fall back to anonymous.
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        RegistryError::Config(format!("{program} printed something that is not JSON: {e}"))
    })?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.into(),
            password: s.into(),
        })),
        _ => Ok(None),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        params: HashMap<String, String>,
    },
}

impl Challenge {
    pub(crate) fn parse(header: &str) -> Option<Self> {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = HashMap::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            params.insert(key.trim().to_ascii_lowercase(), value.to_string());
            rest = remainder.trim_start().trim_start_matches(',').trim_start();
        }
        let realm = params.remove("realm")?;
        Some(Self::Bearer { realm, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Some(Challenge::Basic)
        );
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        match c {
            Challenge::Bearer { realm, params } => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(params["service"], "registry.example");
                assert_eq!(params["scope"], "repository:a/b:pull,push");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_most_specific_namespace_entry_wins() {
        assert_eq!(
            namespace_keys("r.io:5000", "acme/ml/env"),
            [
                "r.io:5000/acme/ml/env",
                "r.io:5000/acme/ml",
                "r.io:5000/acme"
            ]
        );
        assert!(namespace_keys("r.io", "").is_empty());
        let entry = |u: &str| {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw"));
            serde_json::json!({ "auth": auth })
        };
        let file = serde_json::json!({ "auths": {
            "r.io": entry("host"),
            "r.io/acme": entry("acme"),
            "r.io/acme/ml/env": entry("env"),
        }})
        .to_string();
        let user = |ns: &str| {
            let source = CredentialSource::AuthFile("auth.json".into());
            from_file("r.io", ns, &file, Path::new("auth.json"), source)
                .unwrap()
                .unwrap()
                .0
                .username
        };
        assert_eq!(user("acme/ml/env"), "env");
        assert_eq!(user("acme/ml/other"), "acme");
        assert_eq!(user("acmeother/x"), "host");
        assert_eq!(user(""), "host");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::parse("me:s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::parse("nocolon").is_err());
    }
}
