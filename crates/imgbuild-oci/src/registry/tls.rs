//! Certificate verification for registries: the platform's (system roots plus the CAs the
//! user trusted — `SSL_CERT_FILE`, certs.d, `--cert-dir`), with one rule added, the one Go's
//! TLS stack (and so docker, podman and skopeo) has: a certificate the user explicitly trusted
//! is accepted when the server presents that very certificate for a name it covers, even if it
//! is a CA (Docker's documented one-command self-signed certificate is `CA:TRUE` and serves
//! as its own leaf; webpki refuses it as `CaUsedAsEndEntity`). Nothing else becomes trusted:
//! the presented certificate must be byte-identical to a trusted one and name the host, and
//! the handshake's signatures are still checked against it.
//!
//! Why not reqwest's own TLS setup: it has no hook for an extra rule, so the client gets a
//! rustls config built here (same provider, aws-lc-rs, and the same platform verifier).
//!
//! [`TlsFiles`] reads what the user configured for a registry the way podman, skopeo and
//! Docker do (containers-certs.d(5)): `SSL_CERT_FILE` and `SSL_CERT_DIR`, then in each certs.d
//! directory for `HOST[:PORT]` the `*.crt` files as CAs and a `NAME.cert` / `NAME.key` pair as
//! the client certificate for mutual TLS. It remembers which files it read, so a refused
//! certificate can be reported with the list of what was trusted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The platform verifier, plus acceptance of an explicitly trusted certificate presented as
/// its own leaf; with `insecure` (`--insecure-registry`), any certificate (the handshake's
/// signatures are still checked against it).
#[derive(Debug)]
struct TrustedAsLeaf {
    inner: rustls_platform_verifier::Verifier,
    trusted: Vec<CertificateDer<'static>>,
    insecure: bool,
}

impl ServerCertVerifier for TrustedAsLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => Ok(ok),
            Err(_) if self.insecure => Ok(ServerCertVerified::assertion()),
            Err(err) => {
                let pinned = self
                    .trusted
                    .iter()
                    .any(|t| t.as_ref() == end_entity.as_ref());
                let names_host = || {
                    webpki::EndEntityCert::try_from(end_entity)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(server_name).is_ok())
                };
                if pinned && names_host() && within_validity(end_entity, now) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `now` lies within the certificate's validity period (webpki checks it for the
/// certificates it accepts; for one it refused as a CA, this rule must).
fn within_validity(cert: &CertificateDer<'_>, now: UnixTime) -> bool {
    use x509_cert::der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let validity = &cert.tbs_certificate.validity;
    let now = std::time::Duration::from_secs(now.as_secs());
    validity.not_before.to_unix_duration() <= now && now <= validity.not_after.to_unix_duration()
}

/// A client certificate and its key, for registries that require mutual TLS.
pub(super) struct ClientIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The `.cert` file, for messages.
    pub(super) file: PathBuf,
}

/// What a client for one registry trusts and presents, read from the user's files.
#[derive(Default)]
pub(super) struct TlsFiles {
    /// CA certificates trusted beside the system's.
    trusted: Vec<CertificateDer<'static>>,
    /// Where they were read from, in order: `SSL_CERT_FILE=…`, `SSL_CERT_DIR=…`, then each
    /// certs.d `*.crt` file.
    pub(super) ca_sources: Vec<String>,
    pub(super) identity: Option<ClientIdentity>,
}

impl TlsFiles {
    /// Reads `SSL_CERT_FILE`, `SSL_CERT_DIR` and the certs.d directories of `registry`
    /// (`host` or `host:port`): `cert_dir` alone when given (skopeo's `--cert-dir`), else those
    /// of [`cert_dirs`] that exist.
    pub(super) fn load(registry: &str, cert_dir: Option<&Path>) -> Result<Self, String> {
        let mut files = Self::default();
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from) {
            let certs =
                pem_certs(&path).map_err(|e| format!("SSL_CERT_FILE={}: {e}", path.display()))?;
            files.add_cas(format!("SSL_CERT_FILE={}", path.display()), certs);
        }
        if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
            for dir in std::env::split_paths(&dirs).filter(|d| !d.as_os_str().is_empty()) {
                // An OpenSSL certificate directory: every file that holds certificates
                // (hashed names and links to them, `*.pem`…), each read once.
                let mut seen = std::collections::HashSet::new();
                let mut certs = Vec::new();
                for path in sorted_entries(&dir, |_| true)
                    .map_err(|e| format!("SSL_CERT_DIR={}: {e}", dir.display()))?
                {
                    let real = std::fs::canonicalize(&path).unwrap_or(path);
                    if seen.insert(real.clone()) {
                        certs.extend(pem_certs(&real).unwrap_or_default());
                    }
                }
                files.add_cas(format!("SSL_CERT_DIR={}", dir.display()), certs);
            }
        }
        let dirs = match cert_dir {
            Some(dir) => vec![dir.to_path_buf()],
            None => cert_dirs(registry),
        };
        for dir in dirs {
            files.read_certs_d(&dir)?;
        }
        Ok(files)
    }

    fn add_cas(&mut self, source: String, certs: Vec<CertificateDer<'static>>) {
        self.trusted.extend(certs);
        self.ca_sources.push(source);
    }

    /// One certs.d directory: `*.crt` CAs, and a `NAME.cert` with its `NAME.key` (each needs
    /// the other, as containers/image insists). The first pair found is the one presented.
    fn read_certs_d(&mut self, dir: &Path) -> Result<(), String> {
        let with_ext = |ext: &'static str| move |p: &Path| p.extension().is_some_and(|x| x == ext);
        let bad = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        for path in sorted_entries(dir, with_ext("crt")).map_err(|e| bad(dir, &e))? {
            let certs = pem_certs(&path).map_err(|e| bad(&path, &e))?;
            self.add_cas(path.display().to_string(), certs);
        }
        for cert in sorted_entries(dir, with_ext("cert")).map_err(|e| bad(dir, &e))? {
            let key = cert.with_extension("key");
            if !key.is_file() {
                return Err(format!(
                    "{}: a client certificate without its key (expected {})",
                    cert.display(),
                    key.display()
                ));
            }
            if self.identity.is_none() {
                let certs = pem_certs(&cert).map_err(|e| bad(&cert, &e))?;
                let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, &e))?;
                self.identity = Some(ClientIdentity {
                    certs,
                    key,
                    file: cert,
                });
            }
        }
        for key in sorted_entries(dir, with_ext("key")).map_err(|e| bad(dir, &e))? {
            if !key.with_extension("cert").is_file() {
                return Err(format!(
                    "{}: a client key without its certificate (expected {})",
                    key.display(),
                    key.with_extension("cert").display()
                ));
            }
        }
        Ok(())
    }

    /// A rustls client config trusting the platform's roots and these CAs, with the rule
    /// above, presenting the client certificate if there is one; with `insecure`, accepting
    /// any server certificate. Without a client certificate, `asked` is set when a server
    /// asks for one: in TLS 1.3 the server checks it after the handshake and may close the
    /// connection before its alert can be read, so a request that then fails is known to
    /// have failed for that reason and is not retried.
    pub(super) fn client_config(
        self,
        insecure: bool,
        asked: Arc<AtomicBool>,
    ) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let inner = rustls_platform_verifier::Verifier::new_with_extra_roots(
            self.trusted.clone(),
            provider.clone(),
        )
        .map_err(|e| e.to_string())?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustedAsLeaf {
                inner,
                trusted: self.trusted,
                insecure,
            }));
        let mut config = match self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.certs, id.key)
                .map_err(|e| format!("{}: {e}", id.file.display()))?,
            None => builder.with_client_cert_resolver(Arc::new(NoClientCert { asked })),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The client certificate resolver when there is none: it notes that a server asked.
#[derive(Debug)]
struct NoClientCert {
    asked: Arc<AtomicBool>,
}

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _acceptable_issuers: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The certs.d directories podman, skopeo, buildah and Docker read for `registry` (`host` or
/// `host:port`) — `/etc/containers/certs.d/REGISTRY`,
/// `${XDG_CONFIG_HOME:-~/.config}/containers/certs.d/REGISTRY` and
/// `/etc/docker/certs.d/REGISTRY` — those that exist.
fn cert_dirs(registry: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/etc/containers/certs.d")];
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => roots.push(PathBuf::from(dir).join("containers/certs.d")),
        None => roots.extend(
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/containers/certs.d")),
        ),
    }
    roots.push("/etc/docker/certs.d".into());
    roots
        .into_iter()
        .map(|r| r.join(registry))
        .filter(|d| d.is_dir())
        .collect()
}

/// The regular files (or links to them) in `dir` that `keep` accepts, sorted by name.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && keep(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The certificates in the PEM file at `path`.
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Whether `error` (anywhere in its chain) is a TLS failure, and of which kind.
pub(super) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut next = Some(error);
    while let Some(e) = next {
        match e.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(_)) => {
                return Some(TlsFailure::ServerCertificate)
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                return refuses_client_certificate(*alert).then_some(TlsFailure::ClientCertificate)
            }
            Some(_) => return None,
            None => {}
        }
        // An alert the server sends after the handshake (TLS 1.3 checks the client's
        // certificate then) reaches us from the connection's reader as rustls's message
        // only, so it is recognized by that message.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
            && CLIENT_CERTIFICATE_ALERTS
                .iter()
                .any(|alert| e.to_string() == rustls::Error::AlertReceived(*alert).to_string())
        {
            return Some(TlsFailure::ClientCertificate);
        }
        // An io::Error's `source()` skips the error it wraps (which may be another io::Error
        // around rustls's), so step into it.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The alerts a server sends when it does not accept the client's certificate, or the lack
/// of one (Go's TLS stack, which distribution uses, sends `bad_certificate` or
/// `certificate_required`).
const CLIENT_CERTIFICATE_ALERTS: [rustls::AlertDescription; 5] = [
    rustls::AlertDescription::CertificateRequired,
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::HandshakeFailure,
];

fn refuses_client_certificate(alert: rustls::AlertDescription) -> bool {
    CLIENT_CERTIFICATE_ALERTS.contains(&alert)
}

/// Which side's certificate a TLS handshake failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The registry's certificate did not verify.
    ServerCertificate,
    /// The registry refused ours (or the lack of one).
    ClientCertificate,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's one-command self-signed certificate (CA:TRUE, its own leaf), made by openssl.
    fn self_signed(dir: &Path) -> CertificateDer<'static> {
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("domain.key"))
            .arg("-out")
            .arg(dir.join("domain.crt"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(status.success());
        pem_certs(&dir.join("domain.crt")).unwrap().remove(0)
    }

    #[test]
    fn a_trusted_self_signed_certificate_is_its_own_leaf_only_for_its_name_and_while_valid() {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed(dir.path());
        let config = TlsFiles {
            trusted: vec![cert.clone()],
            ..TlsFiles::default()
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = TrustedAsLeaf {
            inner: rustls_platform_verifier::Verifier::new_with_extra_roots(
                config.trusted.clone(),
                provider,
            )
            .unwrap(),
            trusted: config.trusted,
            insecure: false,
        };
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let verify = |name: &ServerName<'_>, now: UnixTime| {
            verifier.verify_server_cert(&cert, &[], name, &[], now)
        };
        assert!(verify(&ip, UnixTime::now()).is_ok());
        let other = ServerName::try_from("localhost").unwrap();
        assert!(verify(&other, UnixTime::now()).is_err());
        let in_a_week = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            UnixTime::now().as_secs() + 7 * 24 * 3600,
        ));
        assert!(verify(&ip, in_a_week).is_err(), "expired, yet accepted");
    }

    #[test]
    fn certs_d_pairs_client_certificates_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        std::fs::rename(
            dir.path().join("domain.crt"),
            dir.path().join("client.cert"),
        )
        .unwrap();
        std::fs::rename(dir.path().join("domain.key"), dir.path().join("client.key")).unwrap();
        let mut files = TlsFiles::default();
        files.read_certs_d(dir.path()).unwrap();
        assert_eq!(
            files.identity.as_ref().map(|i| i.file.clone()),
            Some(dir.path().join("client.cert"))
        );
        assert!(files.ca_sources.is_empty(), "a .cert is not a CA");
        std::fs::rename(dir.path().join("client.key"), dir.path().join("other.key")).unwrap();
        let err = TlsFiles::default().read_certs_d(dir.path()).unwrap_err();
        assert!(
            err.contains("client.cert") && err.contains("without its key"),
            "{err}"
        );
    }
}
