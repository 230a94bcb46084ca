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

    /// The tags of `repository` (one page of up to 10,000).
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        let scopes = [pull_scope(repository)];
        let mut url = self.url(&format!("v2/{repository}/tags/list"));
        url.query_pairs_mut().append_pair("n", "10000");
        let resp = self
            .send(Call::new(Method::GET, url, &scopes, repository))
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(self.fail_response(repository, "list tags", resp).await);
        }
        let body = resp.bytes().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            action: format!("listing the tags of {repository}"),
            source: e.without_url(),
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Unexpected {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message: format!("tag list is not JSON: {e}"),
            })?;
        Ok(value["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect())
    }

    /// Deletes the manifest `digest` from `repository` (the registry must allow deletes).
    /// Its blobs stay: the registry's garbage collection removes those no manifest uses.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let scopes = [push_scope(repository)];
        let resp = self
            .send(Call::new(
                Method::DELETE,
                self.url(&format!("v2/{repository}/manifests/{digest}")),
                &scopes,
                repository,
            ))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self
                .fail_response(repository, &format!("delete manifest {digest}"), resp)
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
