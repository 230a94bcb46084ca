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

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The platform verifier, plus acceptance of an explicitly trusted certificate presented as
/// its own leaf.
#[derive(Debug)]
struct TrustedAsLeaf {
    inner: rustls_platform_verifier::Verifier,
    trusted: Vec<CertificateDer<'static>>,
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
            Err(err) => {
                let pinned = self
                    .trusted
                    .iter()
                    .any(|t| t.as_ref() == end_entity.as_ref());
                let names_host = || {
                    webpki::EndEntityCert::try_from(end_entity)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(server_name).is_ok())
                };
                if pinned && names_host() {
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

/// A rustls client config trusting the platform's roots and `trusted` (DER certificates),
/// with the rule above.
pub(super) fn client_config(
    trusted: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner =
        rustls_platform_verifier::Verifier::new_with_extra_roots(trusted.clone(), provider.clone())
            .map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustedAsLeaf { inner, trusted }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
