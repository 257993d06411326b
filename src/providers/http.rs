//! The HTTP client every provider call goes through: a timeout on each
//! call, redirects off (a provider endpoint that redirects is a
//! misconfiguration or an attack, never followed with a token attached),
//! bounded response sizes, and errors that name the step but never a token.
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use crate::core::ProviderError;

/// The largest provider response read (JWKS, token, Graph, GitHub).
const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("could not build the provider HTTP client: {e}"))?;
        Ok(Http { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET a JSON document, with a bearer token when given. A non-2xx answer
    /// becomes `Rejected` carrying the provider's body (JSON as sent, else
    /// wrapped as `{"error": "<text>"}`).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        stage: &'static str,
        url: &Url,
        bearer: Option<&str>,
    ) -> Result<T, ProviderError> {
        let mut req = self
            .client
            .get(url.clone())
            .header("accept", "application/json");
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        // GitHub wants this; other providers ignore it.
        req = req.header("x-github-api-version", "2022-11-28");
        let resp = req.send().await.map_err(|e| unavailable(stage, &e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(ProviderError::Unavailable(format!(
                "{stage}: answered with a redirect (not followed)"
            )));
        }
        let body = read_limited(resp)
            .await
            .map_err(|e| unavailable(stage, &e))?;
        if !status.is_success() {
            return Err(ProviderError::Rejected {
                stage,
                status: status.as_u16(),
                body: error_body(&body),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("{stage}: unexpected response ({e})")))
    }
}

/// Back-channel logout (OpenID Connect Back-Channel Logout 1.0 2.5): the
/// token as a form post; the relying party answers 200 (or any 2xx).
#[async_trait::async_trait]
impl crate::core::ports::notify::LogoutNotifier for Http {
    async fn send_logout(&self, uri: &str, logout_token: &str) -> Result<(), String> {
        let resp = self
            .client
            .post(uri)
            .form(&[("logout_token", logout_token)])
            .send()
            .await
            .map_err(|e| format!("cannot reach it: {}", e.without_url()))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("it answered {}", s.as_u16())),
        }
    }
}

/// The body of an error answer as JSON: as sent when it is JSON, else the
/// (shortened) text under `error`.
pub fn error_body(body: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.is_object() => v,
        _ => {
            let text = String::from_utf8_lossy(body);
            let short: String = text.chars().take(200).collect();
            serde_json::json!({ "error": short })
        }
    }
}

pub fn unavailable(stage: &str, e: &reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(format!("{stage}: {}", describe(e)))
}

/// What went wrong with a request, in words that never carry a header or a
/// form field.
pub fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() || e.is_body() {
        "unreadable response"
    } else {
        "request failed"
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_BODY {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
