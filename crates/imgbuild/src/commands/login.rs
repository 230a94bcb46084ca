//! `imgbuild login` / `logout`: credentials checked against the registry and kept in (or
//! removed from) the containers auth.json, the file podman and skopeo read and write.

use std::io::Read as _;

use anyhow::{bail, Context as _, Result};
use imgbuild_oci::registry::{
    default_auth_file, remove_login, store_login, ClientOptions, Credentials, RegistryClient,
    DOCKER_HUB,
};

use crate::args::{LoginArgs, LogoutArgs};

fn auth_file(given: Option<&std::path::Path>) -> Result<std::path::PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => default_auth_file()
            .context("cannot tell where the auth file goes (no HOME); pass --authfile FILE"),
    }
}

pub async fn login(args: LoginArgs) -> Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password on standard input (--password-stdin)");
    }
    let creds = Credentials {
        username: args.username.clone(),
        password,
    };
    let options = ClientOptions {
        credentials: Some(creds.clone()),
        insecure_hosts: args.insecure_registries.clone(),
        cert_dir: args.cert_dir.clone(),
        ..ClientOptions::default()
    };
    // `HOST/NAMESPACE` (as podman takes it) keeps credentials for that namespace only; they
    // are checked against HOST.
    let (registry, namespace) = args
        .registry
        .split_once('/')
        .unwrap_or((args.registry.as_str(), ""));
    let host = if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    };
    let client = RegistryClient::new(registry, host, namespace, &options)?;
    client
        .check_login()
        .await
        .with_context(|| format!("cannot log in to {}", args.registry))?;
    let path = auth_file(args.authfile.as_deref())?;
    store_login(&path, &args.registry, &creds)?;
    println!("Login Succeeded (credentials kept in {})", path.display());
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let path = auth_file(args.authfile.as_deref())?;
    if !remove_login(&path, &args.registry)? {
        bail!(
            "not logged in to {} (no entry in {})",
            args.registry,
            path.display()
        );
    }
    println!(
        "Removed login credentials for {} from {}",
        args.registry,
        path.display()
    );
    Ok(())
}
