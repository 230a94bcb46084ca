//! Tokens: the `WWW-Authenticate` challenge answered (basic or bearer), tokens kept per scope.

use reqwest::StatusCode;
use url::Url;

use crate::registry::auth::Challenge;
use crate::registry::RegistryError;

use super::{redact, RegistryClient};

impl RegistryClient {
    pub(super) fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let state = self.state.lock().expect("auth state");
        if let Some(token) = state.tokens.get(&scopes.join(" ")) {
            return Some(format!("Bearer {token}"));
        }
        if state.basic {
            return self.creds.as_ref().map(|(c, _)| c.basic_header());
        }
        None
    }

    pub(super) fn unauthorized(&self, repository: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: repository.to_string(),
            rejected: self
                .creds
                .as_ref()
                .map(|(c, source)| Box::new((c.username.clone(), source.clone()))),
        }
    }

    /// Answers a 401. `rejected` is the Authorization header the refused request carried: when
    /// another task has already replaced it (or it was a token that has since expired and been
    /// refreshed), nothing is fetched.
    pub(super) async fn authenticate(
        &self,
        challenge: Option<Challenge>,
        scopes: &[String],
        repository: &str,
        rejected: Option<&str>,
    ) -> Result<(), RegistryError> {
        let _negotiating = self.negotiating.lock().await;
        if self.auth_header(scopes).as_deref() != rejected {
            return Ok(());
        }
        match challenge {
            Some(Challenge::Basic) | None => {
                if self.creds.is_none() {
                    return Err(self.unauthorized(repository));
                }
                self.state.lock().expect("auth state").basic = true;
                Ok(())
            }
            Some(Challenge::Bearer { realm, params }) => {
                let mut url = Url::parse(&realm).map_err(|e| RegistryError::Unexpected {
                    registry: self.registry.clone(),
                    repository: repository.to_string(),
                    message: format!("token realm '{realm}' is not a URL: {e}"),
                })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(service) = params.get("service") {
                        q.append_pair("service", service);
                    }
                    for scope in scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req = self.http.get(url.clone());
                if let Some((c, _)) = &self.creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let resp = req.send().await.map_err(|e| RegistryError::Transport {
                    registry: self.registry.clone(),
                    action: format!("token request to {}", redact(&url)),
                    source: e.without_url(),
                })?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.unauthorized(repository));
                }
                if !resp.status().is_success() {
                    return Err(RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: format!(
                            "token server {} answered {}",
                            redact(&url),
                            resp.status()
                        ),
                    });
                }
                let body: serde_json::Value =
                    resp.json().await.map_err(|e| RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: format!("token server answered something that is not JSON: {e}"),
                    })?;
                let token = body["token"]
                    .as_str()
                    .or_else(|| body["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Unexpected {
                        registry: self.registry.clone(),
                        repository: repository.to_string(),
                        message: "token server answered without a token".into(),
                    })?;
                self.state
                    .lock()
                    .expect("auth state")
                    .tokens
                    .insert(scopes.join(" "), token.to_string());
                Ok(())
            }
        }
    }
}
