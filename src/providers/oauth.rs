//! The OAuth 2 half every provider shares, on the `oauth2` crate: the
//! authorize URL (state, PKCE S256, nonce) and the code redemption, with the
//! provider's error document kept whole (the code-exchange API hands
//! Microsoft's error JSON to its client under `data`).
use std::borrow::Cow;
use std::fmt;

use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::{Http, error_body};
use crate::core::providers::{AuthorizeRequest, ExchangeRequest};
use crate::core::{ProviderError, ProviderTokenSet};

/// A provider's token-endpoint error, kept as the JSON it sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawError(pub serde_json::Value);

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self
            .0
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("unknown");
        write!(f, "{code}")
    }
}

impl oauth2::ErrorResponse for RawError {}

/// The token response's `id_token` (OpenID Connect).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenField {}

type TokenResp = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OAuthClient = oauth2::Client<
    RawError,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The tokens of a redeemed code, and the ID token when there was one.
pub struct Redeemed {
    pub tokens: ProviderTokenSet,
    pub id_token: Option<String>,
}

pub struct OAuth {
    client: OAuthClient,
    scopes: Vec<String>,
    /// Send `nonce` (OpenID Connect providers).
    oidc: bool,
}

impl OAuth {
    pub fn new(
        client_id: &str,
        client_secret: &str,
        auth_url: &Url,
        token_url: &Url,
        scopes: Vec<String>,
        oidc: bool,
    ) -> Self {
        let client = oauth2::Client::new(ClientId::new(client_id.to_string()))
            .set_client_secret(ClientSecret::new(client_secret.to_string()))
            .set_auth_uri(AuthUrl::from_url(auth_url.clone()))
            .set_token_uri(TokenUrl::from_url(token_url.clone()))
            // client_secret_post: what Microsoft and GitHub document, and
            // what Google accepts.
            .set_auth_type(AuthType::RequestBody);
        OAuth {
            client,
            scopes,
            oidc,
        }
    }

    pub fn authorize_url(&self, req: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        let redirect = redirect_url(req.redirect_uri)?;
        let state = req.state.to_string();
        let mut auth = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(
                &PkceCodeVerifier::new(req.pkce_verifier.to_string()),
            ))
            .set_redirect_uri(Cow::Owned(redirect));
        if self.oidc {
            auth = auth.add_extra_param("nonce", req.nonce);
        }
        Ok(auth.url().0)
    }

    pub async fn redeem(
        &self,
        http: &Http,
        req: &ExchangeRequest<'_>,
    ) -> Result<Redeemed, ProviderError> {
        let redirect = redirect_url(req.redirect_uri)?;
        let mut exchange = self
            .client
            .exchange_code(AuthorizationCode::new(req.code.to_string()))
            .set_redirect_uri(Cow::Owned(redirect));
        if let Some(v) = req.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(v.to_string()));
        }
        let resp = exchange
            .request_async(http.client())
            .await
            .map_err(token_error)?;
        Ok(Redeemed {
            tokens: token_set(&resp),
            id_token: resp.extra_fields().id_token.clone(),
        })
    }

    /// The refresh-token grant, asking for the scopes granted before (a
    /// subset of the grant is always allowed; Microsoft wants `scope`).
    /// Returns the ID token too, when the answer has one: the caller
    /// validates it (a refresh must not change who the person is).
    pub async fn refresh(
        &self,
        http: &Http,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<Redeemed, ProviderError> {
        let token = oauth2::RefreshToken::new(refresh_token.to_string());
        let resp = self
            .client
            .exchange_refresh_token(&token)
            .add_scopes(
                scope
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|s| Scope::new(s.to_string())),
            )
            .request_async(http.client())
            .await
            .map_err(token_error)?;
        Ok(Redeemed {
            tokens: token_set(&resp),
            id_token: resp.extra_fields().id_token.clone(),
        })
    }
}

fn token_set(resp: &TokenResp) -> ProviderTokenSet {
    ProviderTokenSet {
        access_token: resp.access_token().secret().clone(),
        refresh_token: resp.refresh_token().map(|r| r.secret().clone()),
        expires_in: resp
            .expires_in()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        scope: resp
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
    }
}

fn token_error(
    e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, RawError>,
) -> ProviderError {
    match e {
        RequestTokenError::ServerResponse(RawError(body)) => ProviderError::Rejected {
            stage: "token",
            status: 400,
            body,
        },
        // A 200 that is no token response: GitHub reports errors so.
        RequestTokenError::Parse(_, body) => {
            let doc = error_body(&body);
            if doc.get("error").is_some_and(|e| e.is_string()) && !body.is_empty() {
                ProviderError::Rejected {
                    stage: "token",
                    status: 200,
                    body: doc,
                }
            } else {
                ProviderError::Unavailable("token: unexpected response".into())
            }
        }
        RequestTokenError::Request(inner) => {
            ProviderError::Unavailable(format!("token: {}", request_error(&inner)))
        }
        RequestTokenError::Other(m) => ProviderError::Unavailable(format!("token: {m}")),
    }
}

fn redirect_url(s: &str) -> Result<RedirectUrl, ProviderError> {
    RedirectUrl::new(s.to_string())
        .map_err(|_| ProviderError::Invalid("the redirect URI is not a URL".into()))
}

fn request_error(e: &oauth2::HttpClientError<reqwest::Error>) -> String {
    match e {
        oauth2::HttpClientError::Reqwest(inner) => super::http::describe(inner).to_string(),
        other => other.to_string(),
    }
}
