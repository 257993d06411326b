//! Sign-in providers: Microsoft (Entra ID), Google, GitHub and any OpenID
//! Connect issuer, behind the core's [`IdentityProvider`] trait. They know
//! no surface: they build authorize URLs, redeem codes, validate what comes
//! back, and say who the person is.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use url::Url;

use crate::config::{Config, ProviderConfig, ProviderKind, Secret};
use crate::core::providers::{AuthResponse, AuthorizeRequest, ExchangeRequest, RefreshRequest};
use crate::core::{IdentityProvider, ProviderError, ProviderProfile, ProviderTokenSet, Providers};

pub mod http;
pub mod id_token;
pub mod jwks;
mod oauth;

use http::Http;
use id_token::{Expectations, IssuerRule, TenantRule, str_claim};
use jwks::JwksCache;
use oauth::OAuth;

const MICROSOFT_AUTHORITY: &str = "https://login.microsoftonline.com";
const GRAPH: &str = "https://graph.microsoft.com";
const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const GITHUB_AUTH: &str = "https://github.com/login/oauth/authorize";
const GITHUB_TOKEN: &str = "https://github.com/login/oauth/access_token";
const GITHUB_API: &str = "https://api.github.com";
/// The namespace GitHub user ids live in.
pub const GITHUB_ISSUER: &str = "https://github.com";

/// Build every configured provider.
pub fn from_config(cfg: &Config) -> Result<Providers, String> {
    let mut out = Providers::new();
    for (name, p) in &cfg.providers {
        let provider = Provider::new(name, p).map_err(|e| format!("providers.{name}: {e}"))?;
        out.insert(
            name.clone(),
            Arc::new(provider) as Arc<dyn IdentityProvider>,
        );
    }
    Ok(out)
}

/// Endpoints, known from config or found by discovery.
struct Endpoints {
    oauth: OAuth,
    /// OpenID providers: the signing keys.
    jwks: Option<JwksCache>,
    userinfo: Option<Url>,
    /// Discovery announces `authorization_response_iss_parameter_supported`:
    /// a response without `iss` is refused.
    iss_parameter: bool,
}

enum Flavor {
    Microsoft {
        tenant: TenantRule,
        graph: Url,
    },
    /// Google and any OpenID Connect issuer.
    Oidc {
        discovery: Option<Url>,
    },
    Github {
        api: Url,
    },
}

pub struct Provider {
    name: String,
    flavor: Flavor,
    client_id: String,
    client_secret: Secret,
    scopes: Vec<String>,
    http: Http,
    issuer: Option<IssuerRule>,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    refetch_interval: Duration,
    trust_email: bool,
    linking: Option<crate::core::Linking>,
    trusted_audiences: Vec<String>,
    /// Explicit endpoint overrides (all three known: no discovery).
    overrides: (Option<Url>, Option<Url>, Option<Url>, Option<Url>),
    endpoints: OnceCell<Endpoints>,
}

fn url(s: &str) -> Result<Url, String> {
    Url::parse(s).map_err(|e| format!("{s}: {e}"))
}

/// `base` + `path`, keeping any path `base` already has.
fn join(base: &Url, path: &str) -> Result<Url, String> {
    url(&format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    ))
}

impl Provider {
    pub fn new(name: &str, p: &ProviderConfig) -> Result<Self, String> {
        let kind = p.kind_for(name).ok_or("unknown provider kind")?;
        let http = Http::new(Duration::from_secs(p.timeout_secs.unwrap_or(10)))?;
        let scopes = |default: &[&str]| {
            p.scopes
                .clone()
                .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
        };
        let mut overrides = (
            p.auth_url.clone(),
            p.token_url.clone(),
            p.jwks_url.clone(),
            p.userinfo_url.clone(),
        );
        let (flavor, issuer, scopes) = match kind {
            ProviderKind::Microsoft => {
                let authority = p.authority.clone().unwrap_or(url(MICROSOFT_AUTHORITY)?);
                let tenant = p.tenant.clone().unwrap_or_else(|| "common".into());
                let base = join(&authority, &tenant)?;
                overrides
                    .0
                    .get_or_insert(join(&base, "oauth2/v2.0/authorize")?);
                overrides.1.get_or_insert(join(&base, "oauth2/v2.0/token")?);
                overrides
                    .2
                    .get_or_insert(join(&base, "discovery/v2.0/keys")?);
                let rule = TenantRule::from_config(&tenant);
                (
                    Flavor::Microsoft {
                        tenant: rule.clone(),
                        graph: p.graph_url.clone().unwrap_or(url(GRAPH)?),
                    },
                    Some(IssuerRule::Microsoft {
                        authority: authority.as_str().trim_end_matches('/').to_string(),
                        tenant: rule,
                        allowed: p.allowed_tenants.clone(),
                    }),
                    scopes(&["openid", "profile", "email", "offline_access", "User.Read"]),
                )
            }
            ProviderKind::Google | ProviderKind::Oidc => {
                let issuer = match (&p.issuer, kind) {
                    (Some(i), _) => i.clone(),
                    (None, ProviderKind::Google) => url(GOOGLE_ISSUER)?,
                    (None, _) => return Err("issuer is required".into()),
                };
                let issuer_str = issuer.as_str().trim_end_matches('/').to_string();
                let mut accepted = vec![issuer_str.clone()];
                if issuer_str == GOOGLE_ISSUER {
                    // Google documents both spellings of its issuer.
                    accepted.push("accounts.google.com".into());
                }
                let all_set =
                    overrides.0.is_some() && overrides.1.is_some() && overrides.2.is_some();
                (
                    Flavor::Oidc {
                        discovery: (!all_set)
                            .then(|| join(&issuer, ".well-known/openid-configuration"))
                            .transpose()?,
                    },
                    Some(IssuerRule::Exact(accepted)),
                    scopes(&["openid", "email", "profile"]),
                )
            }
            ProviderKind::Github => {
                overrides.0.get_or_insert(url(GITHUB_AUTH)?);
                overrides.1.get_or_insert(url(GITHUB_TOKEN)?);
                (
                    Flavor::Github {
                        api: p.api_url.clone().unwrap_or(url(GITHUB_API)?),
                    },
                    None,
                    scopes(&["read:user", "user:email"]),
                )
            }
        };
        Ok(Provider {
            name: name.to_string(),
            flavor,
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone().unwrap_or_else(|| Secret::new("")),
            scopes,
            http,
            issuer,
            algorithms: id_token::algorithms(p.algorithms.as_deref()),
            leeway: p.leeway_secs.unwrap_or(60),
            refetch_interval: Duration::from_secs(p.jwks_refetch_interval_secs.unwrap_or(60)),
            trust_email: p.trust_email.unwrap_or(true),
            linking: p.linking,
            trusted_audiences: p.trusted_audiences.clone().unwrap_or_default(),
            overrides,
            endpoints: OnceCell::new(),
        })
    }

    async fn endpoints(&self) -> Result<&Endpoints, ProviderError> {
        self.endpoints.get_or_try_init(|| self.resolve()).await
    }

    /// Endpoints from config, else from the issuer's discovery document
    /// (whose `issuer` must be the configured one: no mix-up).
    async fn resolve(&self) -> Result<Endpoints, ProviderError> {
        let (mut auth, mut token, mut jwks, mut userinfo) = self.overrides.clone();
        let mut iss_parameter = false;
        if let Flavor::Oidc {
            discovery: Some(discovery),
        } = &self.flavor
        {
            #[derive(Deserialize)]
            struct Discovery {
                issuer: String,
                authorization_endpoint: Url,
                token_endpoint: Url,
                jwks_uri: Url,
                userinfo_endpoint: Option<Url>,
                #[serde(default)]
                authorization_response_iss_parameter_supported: bool,
            }
            let doc: Discovery = self.http.get_json("discovery", discovery, None).await?;
            let expected = match &self.issuer {
                Some(IssuerRule::Exact(list)) => list.first().cloned(),
                _ => None,
            };
            if expected.as_deref() != Some(doc.issuer.trim_end_matches('/')) {
                return Err(ProviderError::Invalid(
                    "discovery: the document names another issuer".into(),
                ));
            }
            auth.get_or_insert(doc.authorization_endpoint);
            token.get_or_insert(doc.token_endpoint);
            jwks.get_or_insert(doc.jwks_uri);
            if userinfo.is_none() {
                userinfo = doc.userinfo_endpoint;
            }
            iss_parameter = doc.authorization_response_iss_parameter_supported;
        }
        let (Some(auth), Some(token)) = (auth, token) else {
            return Err(ProviderError::Invalid(
                "no authorize or token endpoint".into(),
            ));
        };
        let oidc = self.issuer.is_some();
        Ok(Endpoints {
            oauth: OAuth::new(
                &self.client_id,
                self.client_secret.expose(),
                &auth,
                &token,
                self.scopes.clone(),
                oidc,
            ),
            jwks: jwks
                .filter(|_| oidc)
                .map(|u| JwksCache::new(u, self.refetch_interval)),
            userinfo,
            iss_parameter,
        })
    }

    async fn id_token_claims(
        &self,
        endpoints: &Endpoints,
        id_token: Option<&str>,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<Map<String, Value>, ProviderError> {
        let (Some(rule), Some(jwks)) = (&self.issuer, &endpoints.jwks) else {
            return Err(ProviderError::Invalid("no signing keys configured".into()));
        };
        let token = id_token.ok_or_else(|| ProviderError::Invalid("no ID token".into()))?;
        id_token::validate(
            token,
            jwks,
            &self.http,
            &Expectations {
                issuer: rule,
                client_id: &self.client_id,
                trusted_audiences: &self.trusted_audiences,
                nonce,
                algorithms: &self.algorithms,
                now,
                leeway: self.leeway,
            },
        )
        .await
    }
}

/// `email_verified` as providers send it (a boolean, or Google's old string).
fn claim_true(claims: &Map<String, Value>, name: &str) -> bool {
    matches!(claims.get(name), Some(Value::Bool(true))) || str_claim(claims, name) == Some("true")
}

#[derive(Deserialize)]
struct GraphMe {
    id: Option<String>,
    #[serde(rename = "userPrincipalName")]
    user_principal_name: Option<String>,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct GithubUser {
    id: i64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

#[async_trait]
impl IdentityProvider for Provider {
    fn name(&self) -> &str {
        &self.name
    }

    fn linking(&self) -> Option<crate::core::Linking> {
        self.linking
    }

    async fn authorize_url(&self, req: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        self.endpoints().await?.oauth.authorize_url(req)
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<ProviderProfile, ProviderError> {
        let endpoints = self.endpoints().await?;
        // RFC 9207: an authorization response that names its issuer must
        // name this provider (mix-up defence), before the code is spent.
        if let AuthResponse::Received { iss } = req.response {
            match (iss, &self.issuer) {
                (Some(iss), Some(rule)) if !rule.names(iss) => {
                    return Err(ProviderError::Invalid(
                        "the authorization response comes from another issuer".into(),
                    ));
                }
                (None, _) if endpoints.iss_parameter => {
                    return Err(ProviderError::Invalid(
                        "the authorization response has no iss parameter, which the provider announces (RFC 9207)".into(),
                    ));
                }
                _ => {}
            }
        }
        let redeemed = endpoints.oauth.redeem(&self.http, req).await?;
        let access = redeemed.tokens.access_token.clone();
        let profile = match &self.flavor {
            Flavor::Microsoft { tenant, graph } => {
                let claims = self
                    .id_token_claims(endpoints, redeemed.id_token.as_deref(), req.nonce, req.now)
                    .await?;
                let tid = str_claim(&claims, "tid").unwrap_or_default().to_string();
                let oid = str_claim(&claims, "oid")
                    .ok_or_else(|| ProviderError::Invalid("ID token: no oid claim".into()))?
                    .to_string();
                let me: GraphMe = self
                    .http
                    .get_json(
                        "graph",
                        &join(graph, "v1.0/me").map_err(ProviderError::Invalid)?,
                        Some(&access),
                    )
                    .await?;
                if me
                    .id
                    .as_deref()
                    .is_some_and(|id| !id.eq_ignore_ascii_case(&oid))
                {
                    return Err(ProviderError::Invalid(
                        "Graph profile belongs to another account than the ID token".into(),
                    ));
                }
                // The tenant vouches for an address only when it is the one
                // tenant configured (an organisation's own directory), or
                // when Microsoft says the domain owner verified it.
                let single =
                    matches!(tenant, TenantRule::Single(t) if t.eq_ignore_ascii_case(&tid));
                let vouched = self.trust_email && (single || claim_true(&claims, "xms_edov"));
                ProviderProfile {
                    provider: self.name.clone(),
                    issuer: tid,
                    subject: oid,
                    email: me
                        .user_principal_name
                        .or_else(|| str_claim(&claims, "email").map(String::from)),
                    email_verified: vouched,
                    name: me
                        .display_name
                        .or_else(|| str_claim(&claims, "name").map(String::from)),
                    tokens: redeemed.tokens,
                }
            }
            Flavor::Oidc { .. } => {
                let mut claims = self
                    .id_token_claims(endpoints, redeemed.id_token.as_deref(), req.nonce, req.now)
                    .await?;
                if !claims.contains_key("email")
                    && let Some(userinfo) = &endpoints.userinfo
                {
                    let info: Map<String, Value> = self
                        .http
                        .get_json("userinfo", userinfo, Some(&access))
                        .await?;
                    if info.get("sub") != claims.get("sub") {
                        return Err(ProviderError::Invalid(
                            "userinfo describes another subject than the ID token".into(),
                        ));
                    }
                    for k in ["email", "email_verified", "name"] {
                        if let Some(v) = info.get(k) {
                            claims.entry(k).or_insert_with(|| v.clone());
                        }
                    }
                }
                ProviderProfile {
                    provider: self.name.clone(),
                    issuer: str_claim(&claims, "iss").unwrap_or_default().to_string(),
                    subject: str_claim(&claims, "sub").unwrap_or_default().to_string(),
                    email: str_claim(&claims, "email").map(String::from),
                    email_verified: self.trust_email && claim_true(&claims, "email_verified"),
                    name: str_claim(&claims, "name").map(String::from),
                    tokens: redeemed.tokens,
                }
            }
            Flavor::Github { api } => {
                let bad = |e: String| ProviderError::Invalid(e);
                let user: GithubUser = self
                    .http
                    .get_json(
                        "github_user",
                        &join(api, "user").map_err(bad)?,
                        Some(&access),
                    )
                    .await?;
                // Only a verified primary address is ever used; without the
                // user:email scope there is none.
                let emails: Vec<GithubEmail> = match self
                    .http
                    .get_json(
                        "github_emails",
                        &join(api, "user/emails").map_err(bad)?,
                        Some(&access),
                    )
                    .await
                {
                    Ok(list) => list,
                    Err(ProviderError::Rejected {
                        status: 403 | 404, ..
                    }) => Vec::new(),
                    Err(e) => return Err(e),
                };
                let email = emails
                    .into_iter()
                    .find(|e| e.primary && e.verified)
                    .map(|e| e.email);
                ProviderProfile {
                    provider: self.name.clone(),
                    issuer: GITHUB_ISSUER.into(),
                    subject: user.id.to_string(),
                    email_verified: self.trust_email && email.is_some(),
                    email,
                    name: user.name.or(Some(user.login)),
                    tokens: redeemed.tokens,
                }
            }
        };
        if profile.issuer.is_empty() || profile.subject.is_empty() {
            return Err(ProviderError::Invalid("no subject".into()));
        }
        Ok(profile)
    }

    async fn refresh(&self, req: &RefreshRequest<'_>) -> Result<ProviderTokenSet, ProviderError> {
        let endpoints = self.endpoints().await?;
        let refreshed = endpoints
            .oauth
            .refresh(&self.http, req.refresh_token, req.scope)
            .await?;
        if let Some(id_token) = refreshed.id_token.as_deref()
            && self.issuer.is_some()
        {
            // Validated as at sign-in (no nonce: a refresh has none), and it
            // must be the same person (OpenID Connect Core 12.2).
            let claims = self
                .id_token_claims(endpoints, Some(id_token), None, req.now)
                .await?;
            let subject = match &self.flavor {
                Flavor::Microsoft { .. } => str_claim(&claims, "oid"),
                _ => str_claim(&claims, "sub"),
            };
            if subject != Some(req.subject) {
                return Err(ProviderError::Invalid(
                    "the refreshed ID token names another person".into(),
                ));
            }
        }
        Ok(refreshed.tokens)
    }

    async fn api_profile(&self, access_token: &str) -> Result<Value, ProviderError> {
        let bad = |e: String| ProviderError::Invalid(e);
        let (stage, url) = match &self.flavor {
            Flavor::Microsoft { graph, .. } => ("graph", join(graph, "v1.0/me").map_err(bad)?),
            Flavor::Github { api } => ("github_user", join(api, "user").map_err(bad)?),
            Flavor::Oidc { .. } => (
                "userinfo",
                self.endpoints()
                    .await?
                    .userinfo
                    .clone()
                    .ok_or_else(|| ProviderError::Invalid("no userinfo endpoint".into()))?,
            ),
        };
        self.http.get_json(stage, &url, Some(access_token)).await
    }
}
