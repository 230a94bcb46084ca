//! Manifests: put and get.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;

use crate::registry::RegistryError;
use crate::Digest;

use super::{pull_scope, push_scope, Call, RegistryClient};

impl RegistryClient {
    /// Puts a manifest (or index) under `reference` (a tag or digest); returns the response
    /// headers (`OCI-Subject` tells whether the registry indexes referrers itself).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<HeaderMap, RegistryError> {
        let scopes = [push_scope(repository)];
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).expect("media types are ascii"),
        );
        let resp = self
            .send(Call {
                method: Method::PUT,
                url: self.url(&format!("v2/{repository}/manifests/{reference}")),
                scopes: &scopes,
                headers,
                body: Some(bytes),
                repository,
            })
            .await?;
        if resp.status().is_success() {
            Ok(resp.headers().clone())
        } else {
            Err(self
                .fail_response(repository, &format!("put manifest {reference}"), resp)
                .await)
        }
    }

    /// Fetches a manifest or index: its bytes and media type. The digest is checked when the
    /// reference is one.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Bytes, String), RegistryError> {
        let scopes = [pull_scope(repository)];
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            ),
        );
        let resp = self
            .send(Call {
                method: Method::GET,
                url: self.url(&format!("v2/{repository}/manifests/{reference}")),
                scopes: &scopes,
                headers,
                body: None,
                repository,
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail_response(repository, &format!("manifest {reference}"), resp)
                .await);
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            action: format!("reading manifest {reference} of {repository}"),
            source: e.without_url(),
        })?;
        if let Ok(d) = reference.parse::<Digest>() {
            if Digest::of(&bytes) != d {
                return Err(RegistryError::Unexpected {
                    registry: self.registry.clone(),
                    repository: repository.to_string(),
                    message: format!("manifest {reference} has digest {}", Digest::of(&bytes)),
                });
            }
        }
        Ok((bytes, media_type))
    }
}
