//! authgate as an OpenID Provider: discovery, JWKS, the authorization
//! endpoint (which signs the person in on the hosted pages), the token
//! endpoint and userinfo. Wire translation only: the rules are in
//! `core::oidc`. Errors are OAuth 2's JSON (`error`, `error_description`),
//! or, where nothing may be redirected (an unknown client or redirect URI),
//! a page in the person's language.
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Client;
use super::pages::{self, Settings as PageSettings, see_other};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, Secret, err};
use crate::core::oidc::clients::{Credential, client_id_problem};
use crate::core::oidc::{
    AccessTokenFormat, AuthorizationRequest, Client as OidcClient, ClientAuth, ClientSettings,
    GrantType, LogoutRequest, Next, OAuthError, OidcPolicy, SigningAlg, SubjectType, TokenRequest,
    hash_client_secret,
};

pub const DECLARATION: Surface = Surface {
    tag: "openid provider",
    description: "authgate as an OpenID Provider: discovery, authorize, token, userinfo, JWKS",
    enabled: |s| s.oidc,
    router,
    errors: None,
    validate,
};

/// `[oidc]`: the provider's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The algorithm of new ID-token signing keys: `RS256`, `ES256`, `EdDSA`.
    pub signing_alg: String,
    /// Seconds an authorization code lives.
    pub code_ttl_secs: i64,
    /// Seconds this instance keeps the signing keys in memory before it
    /// reads them again (a rotation elsewhere is seen after at most this).
    pub key_cache_secs: i64,
    /// Seconds a new key from `authgate keys rotate` is published before
    /// it signs, so that relying parties' key caches hold it first.
    pub key_rotation_lead_secs: i64,
    /// The salt of pairwise subjects (at least 32 characters; needed when a
    /// client has `subject_type = "pairwise"`; never change it: every
    /// pairwise `sub` would change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairwise_secret: Option<Secret>,
    /// Seconds a userinfo answer may be served from memory, on SQLite (a
    /// revocation by another process is seen after at most this; 0: never).
    pub userinfo_cache_secs: i64,
    /// Seconds this instance keeps the clients registered by `authgate
    /// client` in memory (a change is seen after at most this).
    pub client_cache_secs: i64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            signing_alg: "RS256".into(),
            code_ttl_secs: 60,
            key_cache_secs: 5,
            key_rotation_lead_secs: 300,
            pairwise_secret: None,
            userinfo_cache_secs: 5,
            client_cache_secs: 5,
        }
    }
}

/// `[clients.<id>]`: a relying party (the same fields as `authgate
/// client add`, see [`ClientSettings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The client secret (at least 32 characters); none: a public client,
    /// which must use PKCE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// A file holding `client_secret` (one line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// The name the consent page shows (default: the id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the browser may be sent back with a code (exact matches).
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: Vec<GrantType>,
    /// The scopes it may ask for (default: openid, email, profile,
    /// offline_access).
    pub scopes: Vec<String>,
    pub access_token_ttl_secs: i64,
    pub id_token_ttl_secs: i64,
    /// How long a refresh-token family lives from the sign-in.
    pub refresh_token_ttl_secs: i64,
    /// A JWK set of public keys (`private_key_jwt`): the client then has
    /// no secret and authenticates with assertions signed by these keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// `public` (authgate's user id as `sub`) or `pairwise` (a `sub` of
    /// its own per sector: the host of its redirect URIs).
    pub subject_type: SubjectType,
    /// Someone else's application: the person is asked to consent.
    pub third_party: bool,
    /// `opaque` or `jwt` (RFC 9068).
    pub access_token_format: AccessTokenFormat,
    /// Back-channel logout: where logout tokens are posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let d = ClientSettings::default();
        ClientConfig {
            client_secret: None,
            client_secret_file: None,
            name: d.name,
            redirect_uris: d.redirect_uris,
            post_logout_redirect_uris: d.post_logout_redirect_uris,
            grant_types: d.grant_types,
            scopes: d.scopes,
            access_token_ttl_secs: d.access_token_ttl_secs,
            id_token_ttl_secs: d.id_token_ttl_secs,
            refresh_token_ttl_secs: d.refresh_token_ttl_secs,
            jwks: d.jwks,
            subject_type: d.subject_type,
            third_party: d.third_party,
            access_token_format: d.access_token_format,
            backchannel_logout_uri: d.backchannel_logout_uri,
        }
    }
}

impl ClientConfig {
    /// The core's form (without the secret).
    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            name: self.name.clone(),
            redirect_uris: self.redirect_uris.clone(),
            post_logout_redirect_uris: self.post_logout_redirect_uris.clone(),
            grant_types: self.grant_types.clone(),
            scopes: self.scopes.clone(),
            access_token_ttl_secs: self.access_token_ttl_secs,
            id_token_ttl_secs: self.id_token_ttl_secs,
            refresh_token_ttl_secs: self.refresh_token_ttl_secs,
            jwks: self.jwks.clone(),
            subject_type: self.subject_type,
            third_party: self.third_party,
            access_token_format: self.access_token_format,
            backchannel_logout_uri: self.backchannel_logout_uri.clone(),
        }
    }

    fn credential(&self) -> Credential {
        match (&self.client_secret, &self.jwks) {
            (Some(_), _) => Credential::Secret,
            (None, Some(_)) => Credential::Keys,
            (None, None) => Credential::Public,
        }
    }
}

/// The config's clients in the core's form (for `authgate client list`).
pub fn client_settings(cfg: &Config) -> BTreeMap<String, ClientSettings> {
    cfg.clients
        .iter()
        .map(|(id, c)| (id.clone(), c.settings()))
        .collect()
}

/// The core's policy from `[oidc]` and `[clients.*]`.
pub fn policy(cfg: &Config) -> OidcPolicy {
    let clients = cfg
        .clients
        .iter()
        .map(|(id, c)| {
            let hash = c
                .client_secret
                .as_ref()
                .map(|s| hash_client_secret(s.expose()));
            (id.clone(), Arc::new(c.settings().client(id, hash)))
        })
        .collect();
    OidcPolicy {
        issuer: issuer(cfg),
        clients,
        client_cache_secs: cfg.oidc.client_cache_secs,
        code_ttl: cfg.oidc.code_ttl_secs,
        signing_alg: SigningAlg::parse(&cfg.oidc.signing_alg).unwrap_or_default(),
        key_cache_secs: cfg.oidc.key_cache_secs,
        rotation_lead: cfg.oidc.key_rotation_lead_secs,
        pairwise_secret: cfg
            .oidc
            .pairwise_secret
            .as_ref()
            .filter(|s| s.expose().len() >= 32)
            .map(|s| crate::core::oidc::Salt(s.expose().to_string())),
        userinfo_cache_secs: cfg.oidc.userinfo_cache_secs,
    }
}

/// `server.public_url` without its trailing slash.
fn issuer(cfg: &Config) -> String {
    cfg.server
        .public_url()
        .as_str()
        .trim_end_matches('/')
        .to_string()
}

fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let o = &cfg.oidc;
    if SigningAlg::parse(&o.signing_alg).is_none() {
        errors.push(err("oidc.signing_alg", "must be RS256, ES256 or EdDSA"));
    }
    if !(10..=600).contains(&o.code_ttl_secs) {
        errors.push(err("oidc.code_ttl_secs", "must be between 10 and 600"));
    }
    if !(0..=86_400).contains(&o.key_rotation_lead_secs) {
        errors.push(err(
            "oidc.key_rotation_lead_secs",
            "must be between 0 and 86400",
        ));
    }
    if !(0..=300).contains(&o.userinfo_cache_secs) {
        errors.push(err("oidc.userinfo_cache_secs", "must be between 0 and 300"));
    }
    for (field, v) in [
        ("oidc.key_cache_secs", o.key_cache_secs),
        ("oidc.client_cache_secs", o.client_cache_secs),
    ] {
        if !(0..=3600).contains(&v) {
            errors.push(err(field, "must be between 0 and 3600"));
        }
    }
    if o.pairwise_secret
        .as_ref()
        .is_some_and(|s| s.expose().len() < 32)
    {
        errors.push(err(
            "oidc.pairwise_secret",
            "must be at least 32 characters",
        ));
    }
    for (id, c) in &cfg.clients {
        let key = |f: &str| format!("clients.{id}.{f}");
        if let Some(problem) = client_id_problem(id) {
            errors.push(err(&format!("clients.{id}"), problem));
        }
        if c.client_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 32)
        {
            errors.push(err(&key("client_secret"), "must be at least 32 characters"));
        }
        let salt = o
            .pairwise_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() >= 32);
        for (field, problem) in c.settings().problems(c.credential(), salt) {
            errors.push(err(&key(field), problem));
        }
    }
    if cfg.needs_oidc_keys()
        && cfg.vault.keys.is_empty()
        && cfg.vault.key_file_for(cfg.database.url.expose()).is_none()
    {
        errors.push(err(
            "vault.keys",
            "the OpenID provider keeps its signing keys encrypted: set vault.keys (the same on every instance)",
        ));
    }
    if cfg.needs_oidc_keys() && !cfg.surfaces.pages {
        errors.push(err(
            "surfaces.pages",
            "the OpenID provider signs people in on the pages: turn them on",
        ));
    }
}

/// The path the sign-in page sends the person back to.
const RESUME_PATH: &str = "/oauth2/authorize/resume";

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let r = OpenApiRouter::new()
        .routes(routes!(discovery))
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(discovery),
        )
        .routes(routes!(jwks))
        .routes(routes!(authorize, authorize_post))
        .routes(routes!(resume))
        .routes(routes!(consent))
        .routes(routes!(token))
        .routes(routes!(introspect))
        .routes(routes!(revoke))
        .routes(routes!(logout, logout_post))
        .routes(routes!(userinfo, userinfo_post))
        .layer(pages::page_headers(cfg));
    with_settings(r, PageSettings::new(cfg))
}

// ---------------------------------------------------------------- errors

/// An OAuth error as JSON, with its status and `WWW-Authenticate` where
/// RFC 6749 and RFC 6750 ask for one.
fn oauth_error(e: OAuthError) -> Response {
    let status = match &e {
        OAuthError::InvalidClient(_) | OAuthError::InvalidToken => StatusCode::UNAUTHORIZED,
        OAuthError::Server(e) if e.is_outage() => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Server(e) => {
            tracing::error!(error = %e, "openid provider: request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({ "error": e.code(), "error_description": e.description() });
    let mut r = (status, Json(body)).into_response();
    let challenge = match &e {
        OAuthError::InvalidClient(_) => Some("Basic realm=\"authgate\"".to_string()),
        OAuthError::InvalidToken => Some(format!(
            "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"{}\"",
            e.description()
        )),
        _ => None,
    };
    if let Some(v) = challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

// ---------------------------------------------------------------- discovery

/// The OpenID Provider's metadata (OpenID Connect Discovery 1.0, RFC 8414).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "openid provider",
    responses((status = 200, description = "The provider metadata")))]
async fn discovery(State(state): State<AppState>) -> Response {
    Json(state.core.oidc_metadata()).into_response()
}

/// The public keys ID tokens are signed with (RFC 7517).
#[utoipa::path(get, path = "/oauth2/jwks", tag = "openid provider",
    responses((status = 200, description = "The JWK set")))]
async fn jwks(State(state): State<AppState>) -> Response {
    match state.core.jwks().await {
        Ok(set) => {
            let mut r = Json(set).into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            r
        }
        Err(e) => oauth_error(OAuthError::Server(e)),
    }
}

// ---------------------------------------------------------------- authorize

/// The authorization endpoint: authorization code flow only, PKCE S256.
/// A signed-in person goes straight back with a code; anyone else signs in
/// on the hosted page first.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "openid provider",
    params(
        ("client_id" = String, Query), ("redirect_uri" = String, Query),
        ("response_type" = String, Query, description = "code"),
        ("scope" = String, Query, description = "must include openid"),
        ("state" = Option<String>, Query), ("nonce" = Option<String>, Query),
        ("code_challenge" = Option<String>, Query), ("code_challenge_method" = Option<String>, Query, description = "S256"),
        ("prompt" = Option<String>, Query), ("max_age" = Option<i64>, Query),
        ("login_hint" = Option<String>, Query), ("ui_locales" = Option<String>, Query),
    ),
    responses(
        (status = 303, description = "Back to the client (code or error), or to the sign-in page"),
        (status = 400, description = "An unknown client or redirect URI: a page, no redirect"),
    ))]
async fn authorize(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<AuthorizationRequest>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(req)) => authorization(&state, &s, &client, &headers, &req).await,
        Err(_) => untrusted(&s, &headers),
    }
}

/// Parameters that did not parse (one given twice, or not text): nothing
/// in them is trusted, not even a redirect URI, so a page answers.
fn untrusted(s: &PageSettings, headers: &HeaderMap) -> Response {
    pages::error_page(
        s,
        headers,
        None,
        StatusCode::BAD_REQUEST,
        "err_unknown_client",
    )
}

/// The authorization endpoint by form post (OpenID Connect Core 3.1.2.1).
#[utoipa::path(post, path = "/oauth2/authorize", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "The GET parameters, as a form"),
    responses((status = 303, description = "As GET")))]
async fn authorize_post(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    form: Result<Form<AuthorizationRequest>, FormRejection>,
) -> Response {
    match form {
        Ok(Form(req)) => authorization(&state, &s, &client, &headers, &req).await,
        Err(_) => untrusted(&s, &headers),
    }
}

async fn authorization(
    state: &AppState,
    s: &PageSettings,
    client: &crate::core::ClientMeta,
    headers: &HeaderMap,
    req: &AuthorizationRequest,
) -> Response {
    let asked = req.ui_locales.as_deref().and_then(pages::known_locale);
    let a = match state.core.check_authorization(req).await {
        Ok(a) => a,
        Err(crate::core::oidc::AuthorizeError::NoRedirect(why)) => {
            tracing::info!(reason = why, client = ?req.client_id, "authorize: refused without a redirect");
            return pages::error_page(
                s,
                headers,
                asked,
                StatusCode::BAD_REQUEST,
                "err_unknown_client",
            );
        }
        Err(crate::core::oidc::AuthorizeError::Redirect(to)) => return see_other(&to, vec![]),
        Err(crate::core::oidc::AuthorizeError::Failed(e)) => {
            return pages::core_error_page(s, headers, asked, &e);
        }
    };
    proceed(state, s, client, headers, &a, None).await
}

/// Send the browser on: back to the client, or to sign in (the request
/// parked under `key`, or parked now).
async fn proceed(
    state: &AppState,
    s: &PageSettings,
    client: &crate::core::ClientMeta,
    headers: &HeaderMap,
    a: &crate::core::oidc::Authorization,
    key: Option<&str>,
) -> Response {
    let core = &state.core;
    let asked = a.ui_locales.as_deref().and_then(pages::known_locale);
    let session = match pages::signed_in(state, s, headers).await {
        Ok(session) => session.map(|(_, check)| check),
        Err(e) => return pages::core_error_page(s, headers, asked, &e),
    };
    match core.authorization_next(a, session.as_ref(), client).await {
        Ok(Next::Redirect(to)) => {
            if let Some(key) = key
                && let Err(e) = core.forget_authorization(key).await
            {
                tracing::warn!(error = %e, "authorize: cannot spend the parked request");
            }
            see_other(&to, vec![])
        }
        Ok(Next::Consent {
            client: name,
            scopes,
        }) => {
            let key = match key {
                Some(k) => k.to_string(),
                None => match core
                    .park_authorization(a, session.as_ref(), client.ip.as_deref())
                    .await
                {
                    Ok(k) => k,
                    Err(e) => return pages::core_error_page(s, headers, asked, &e),
                },
            };
            pages::consent_page(s, headers, asked, &name, &scopes, &key)
        }
        Ok(Next::SignIn { reauth }) => {
            let key = match key {
                Some(k) => k.to_string(),
                None => match core
                    .park_authorization(a, session.as_ref(), client.ip.as_deref())
                    .await
                {
                    Ok(k) => k,
                    Err(e) => return pages::core_error_page(s, headers, asked, &e),
                },
            };
            let resume = format!("{RESUME_PATH}?request={key}");
            let mut login = url::form_urlencoded::Serializer::new(String::new());
            login.append_pair("return_to", &resume);
            if let Some(l) = asked {
                login.append_pair("lang", l);
            }
            if let Some(h) = &a.login_hint {
                login.append_pair("login_hint", h);
            }
            if reauth {
                login.append_pair("reauth", "1");
            }
            see_other(&format!("/login?{}", login.finish()), vec![])
        }
        Err(e) => pages::core_error_page(s, headers, asked, &e),
    }
}

#[derive(Deserialize)]
struct ResumeQuery {
    request: String,
}

/// Back from the sign-in page: the parked request goes on.
#[utoipa::path(get, path = "/oauth2/authorize/resume", tag = "openid provider",
    params(("request" = String, Query, description = "The kept request's key")),
    responses(
        (status = 303, description = "On to the client (a code or an error), or to sign in"),
        (status = 200, description = "The consent page (a third-party client)"),
        (status = 410, description = "The request is no longer kept: a page"),
    ))]
async fn resume(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Response {
    let expired = |s: &PageSettings| {
        pages::error_page(s, &headers, None, StatusCode::GONE, "err_request_expired")
    };
    let Ok(Query(q)) = query else {
        return expired(&s);
    };
    match state.core.parked_authorization(&q.request).await {
        Ok(Some(a)) => proceed(&state, &s, &client, &headers, &a, Some(&q.request)).await,
        Ok(None) => expired(&s),
        Err(e) => pages::core_error_page(&s, &headers, None, &e),
    }
}

/// The consent page's answer.
#[derive(Deserialize)]
pub(crate) struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    request: String,
    /// `allow` or `deny`.
    #[serde(default)]
    decision: String,
}

impl pages::Posted for ConsentForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
    fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }
}

/// The person allowed or denied a third-party client (a page form: this
/// origin, this browser's CSRF token, its session).
#[utoipa::path(post, path = "/oauth2/authorize/consent", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf, lang, request (the kept request's key), decision (allow or deny)"),
    responses(
        (status = 303, description = "On to the client: a code, or error=access_denied"),
        (status = 403, description = "Not this page's form (origin, CSRF token): a page"),
        (status = 410, description = "The request is no longer kept: a page"),
    ))]
async fn consent(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    pages::PageForm { form, lang }: pages::PageForm<ConsentForm>,
) -> Response {
    let core = &state.core;
    let asked = Some(lang);
    let a = match core.parked_authorization(&form.request).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return pages::error_page(&s, &headers, asked, StatusCode::GONE, "err_request_expired");
        }
        Err(e) => return pages::core_error_page(&s, &headers, asked, &e),
    };
    let session = match pages::signed_in(&state, &s, &headers).await {
        Ok(Some((_, check))) => check,
        // Signed out meanwhile: the request goes on through the sign-in.
        Ok(None) => return proceed(&state, &s, &client, &headers, &a, Some(&form.request)).await,
        Err(e) => return pages::core_error_page(&s, &headers, asked, &e),
    };
    let allow = match form.decision.as_str() {
        "allow" => true,
        "deny" => false,
        _ => {
            return pages::error_page(
                &s,
                &headers,
                asked,
                StatusCode::BAD_REQUEST,
                "err_forbidden",
            );
        }
    };
    match core.answer_consent(&a, &session, allow, &client).await {
        Ok(Ok(consented)) => {
            proceed(
                &state,
                &s,
                &client,
                &headers,
                &consented,
                Some(&form.request),
            )
            .await
        }
        Ok(Err(to)) => {
            if let Err(e) = core.forget_authorization(&form.request).await {
                tracing::warn!(error = %e, "consent: cannot spend the parked request");
            }
            see_other(&to, vec![])
        }
        Err(e) => pages::core_error_page(&s, &headers, asked, &e),
    }
}

// ---------------------------------------------------------------- token

/// The token endpoint's form: the grant's parameters and, for
/// `client_secret_post` or public clients, the client's.
#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// Decode one `application/x-www-form-urlencoded` component (RFC 6749
/// 2.3.1 encodes the id and secret so before Basic).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The client credentials a form post carries (beside the Authorization
/// header).
struct FormCredentials<'a> {
    id: Option<&'a str>,
    secret: Option<&'a str>,
    assertion_type: Option<&'a str>,
    assertion: Option<&'a str>,
}

/// The client of a `private_key_jwt` assertion: its `sub` (RFC 7523 3),
/// read before the signature is checked against that client's keys.
fn assertion_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

/// The client's credentials: HTTP Basic (`client_secret_basic`), a signed
/// assertion (`private_key_jwt`), or the form's `client_id` with or without
/// `client_secret`. Two methods at once are refused (RFC 6749 2.3).
fn client_auth(headers: &HeaderMap, form: &FormCredentials) -> Result<ClientAuth, OAuthError> {
    const BAD_BASIC: &str = "the Authorization header is not valid HTTP Basic";
    let two = || OAuthError::InvalidRequest("use one client authentication method, not two".into());
    if let Some(value) = headers.get(AUTHORIZATION) {
        let basic = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .ok_or(OAuthError::InvalidClient(BAD_BASIC))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(OAuthError::InvalidClient(BAD_BASIC))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or(OAuthError::InvalidClient(BAD_BASIC))?;
        let (id, secret) = form_decode(id)
            .zip(form_decode(secret))
            .ok_or(OAuthError::InvalidClient(BAD_BASIC))?;
        if form.secret.is_some() || form.assertion.is_some() {
            return Err(two());
        }
        if form.id.is_some_and(|f| f != id) {
            return Err(OAuthError::InvalidRequest(
                "client_id differs from the Authorization header's".into(),
            ));
        }
        return Ok(ClientAuth {
            client_id: id,
            secret: Some(secret),
            assertion: None,
        });
    }
    if let Some(assertion) = form.assertion {
        if form.assertion_type != Some(crate::core::oidc::JWT_BEARER) {
            return Err(OAuthError::InvalidRequest(format!(
                "client_assertion_type must be {}",
                crate::core::oidc::JWT_BEARER
            )));
        }
        if form.secret.is_some() {
            return Err(two());
        }
        let client_id = assertion_subject(assertion).ok_or(OAuthError::InvalidClient(
            "the client assertion is malformed",
        ))?;
        if form.id.is_some_and(|f| f != client_id) {
            return Err(OAuthError::InvalidClient(
                "client_id differs from the assertion's subject",
            ));
        }
        return Ok(ClientAuth {
            client_id,
            secret: None,
            assertion: Some(assertion.to_string()),
        });
    }
    let client_id = form
        .id
        .filter(|c| !c.is_empty())
        .ok_or(OAuthError::InvalidClient(
            "client authentication is missing",
        ))?;
    Ok(ClientAuth {
        client_id: client_id.to_string(),
        secret: form.secret.map(str::to_string),
        assertion: None,
    })
}

/// The authenticated client of a form post to the token, introspection or
/// revocation endpoint.
async fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
    form: FormCredentials<'_>,
) -> Result<Arc<OidcClient>, OAuthError> {
    let auth = client_auth(headers, &form)?;
    state.core.authenticate_client(&auth).await.inspect_err(|_| {
        tracing::info!(client = %auth.client_id, "openid provider: client authentication failed");
    })
}

/// A form body's rejection as `invalid_request`.
fn bad_form(e: FormRejection) -> Response {
    oauth_error(form_error(e))
}

fn form_error(e: FormRejection) -> OAuthError {
    OAuthError::InvalidRequest(match e {
        FormRejection::InvalidFormContentType(_) => {
            "the body must be application/x-www-form-urlencoded".to_string()
        }
        FormRejection::FailedToDeserializeForm(e) => format!("the form is malformed: {e}"),
        other => other.body_text(),
    })
}

/// The token endpoint: `authorization_code` (with PKCE), `refresh_token`
/// (rotated), `client_credentials`.
#[utoipa::path(post, path = "/oauth2/token", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type and its parameters"),
    responses(
        (status = 200, description = "Tokens"),
        (status = 400, description = "OAuth error (invalid_request, invalid_grant, ...)"),
        (status = 401, description = "invalid_client, with WWW-Authenticate"),
    ))]
async fn token(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => return bad_form(e),
    };
    let core = &state.core;
    let oidc_client = match authenticated(
        &state,
        &headers,
        FormCredentials {
            id: form.client_id.as_deref(),
            secret: form.client_secret.as_deref(),
            assertion_type: form.client_assertion_type.as_deref(),
            assertion: form.client_assertion.as_deref(),
        },
    )
    .await
    {
        Ok(c) => c.clone(),
        Err(e) => return oauth_error(e),
    };
    let req = TokenRequest {
        grant_type: form.grant_type,
        code: form.code,
        redirect_uri: form.redirect_uri,
        code_verifier: form.code_verifier,
        refresh_token: form.refresh_token,
        scope: form.scope,
    };
    match core.token(&oidc_client, &req, &client).await {
        Ok(tokens) => {
            let mut r = Json(tokens).into_response();
            r.headers_mut().insert(
                axum::http::header::PRAGMA,
                HeaderValue::from_static("no-cache"),
            );
            r
        }
        Err(e) => oauth_error(e),
    }
}

// ---------------------------------------------------------------- introspection, revocation

/// The form of the introspection and revocation endpoints.
#[derive(Deserialize)]
struct TokenOnlyForm {
    token: Option<String>,
    /// Accepted and not needed: the token tells its own kind.
    #[serde(rename = "token_type_hint")]
    _token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// The client and the token of an introspection or revocation request.
async fn token_only(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Result<(Arc<OidcClient>, String), OAuthError> {
    let form = form.map_err(form_error)?.0;
    let client = authenticated(
        state,
        headers,
        FormCredentials {
            id: form.client_id.as_deref(),
            secret: form.client_secret.as_deref(),
            assertion_type: form.client_assertion_type.as_deref(),
            assertion: form.client_assertion.as_deref(),
        },
    )
    .await?;
    let token = form
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("token is missing".into()))?;
    Ok((client, token))
}

/// Token introspection (RFC 7662): whether a token of this client's is
/// live, and what it carries.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "token, and the client's credentials"),
    responses((status = 200, description = "{active, ...}"), (status = 401, description = "invalid_client")))]
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Response {
    let (client, token) = match token_only(&state, &headers, form).await {
        Ok(x) => x,
        Err(e) => return oauth_error(e),
    };
    match state.core.introspect(&client, &token).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => oauth_error(e),
    }
}

/// Token revocation (RFC 7009): a refresh token ends its grant, an access
/// token itself. 200 for unknown tokens too.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "token, and the client's credentials"),
    responses((status = 200, description = "Revoked (or never valid)"), (status = 401, description = "invalid_client")))]
async fn revoke(
    State(state): State<AppState>,
    Client(meta): Client,
    headers: HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Response {
    let (client, token) = match token_only(&state, &headers, form).await {
        Ok(x) => x,
        Err(e) => return oauth_error(e),
    };
    match state.core.revoke_token(&client, &token, &meta).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => oauth_error(e),
    }
}

// ---------------------------------------------------------------- logout

/// RP-initiated logout (`end_session_endpoint`): with an `id_token_hint`
/// of this person the session ends at once; otherwise the person is asked.
/// Then on to the registered `post_logout_redirect_uri`, with `state`.
#[utoipa::path(get, path = "/oauth2/logout", tag = "openid provider",
    params(
        ("id_token_hint" = Option<String>, Query), ("post_logout_redirect_uri" = Option<String>, Query),
        ("state" = Option<String>, Query), ("client_id" = Option<String>, Query), ("ui_locales" = Option<String>, Query),
    ),
    responses(
        (status = 303, description = "Signed out: on to the client, or to the sign-in page"),
        (status = 200, description = "The question whether to sign out"),
        (status = 400, description = "A bad hint, client or post-logout URI: a page"),
    ))]
async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<LogoutRequest>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(req)) => end_session(&state, &s, &client, &headers, &req).await,
        Err(_) => untrusted(&s, &headers),
    }
}

/// As GET, by form post.
#[utoipa::path(post, path = "/oauth2/logout", tag = "openid provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "The GET parameters, as a form"),
    responses((status = 303, description = "As GET")))]
async fn logout_post(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<PageSettings>>,
    Client(client): Client,
    headers: HeaderMap,
    form: Result<Form<LogoutRequest>, FormRejection>,
) -> Response {
    match form {
        Ok(Form(req)) => end_session(&state, &s, &client, &headers, &req).await,
        Err(_) => untrusted(&s, &headers),
    }
}

async fn end_session(
    state: &AppState,
    s: &PageSettings,
    client: &crate::core::ClientMeta,
    headers: &HeaderMap,
    req: &LogoutRequest,
) -> Response {
    let asked = req.ui_locales.as_deref().and_then(pages::known_locale);
    let plan = match state.core.check_logout(req).await {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(reason = why, "logout: refused");
            return pages::error_page(
                s,
                headers,
                asked,
                StatusCode::BAD_REQUEST,
                "err_unknown_client",
            );
        }
    };
    let to = plan.target.clone().unwrap_or_else(|| "/login".to_string());
    let session = match pages::signed_in(state, s, headers).await {
        Ok(session) => session.map(|(_, check)| check),
        Err(e) => return pages::core_error_page(s, headers, asked, &e),
    };
    match session {
        // Nobody is signed in here: nothing to end.
        None => see_other(&to, vec![]),
        Some(check) if state.core.logout_is_about(&plan, &check).await => {
            pages::sign_out(state, s, client, headers, asked, &to).await
        }
        Some(_) => {
            let then = match plan.target {
                Some(target) => match state
                    .core
                    .remember_return(pages::LOGOUT_SURFACE, target, client.ip.as_deref())
                    .await
                {
                    Ok(key) => Some(key),
                    Err(e) => return pages::core_error_page(s, headers, asked, &e),
                },
                None => None,
            };
            pages::logout_confirmation(s, headers, asked, then.as_deref())
        }
    }
}

// ---------------------------------------------------------------- userinfo

/// The bearer token of `Authorization: Bearer ...` (RFC 6750 2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn userinfo_answer(state: &AppState, headers: &HeaderMap) -> Response {
    let Some(token) = bearer(headers) else {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_request", "error_description": "a bearer access token is required" })),
        )
            .into_response();
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"authgate\""),
        );
        return r;
    };
    match state.core.userinfo(token).await {
        Ok(claims) => Json::<Value>(claims).into_response(),
        Err(e) => oauth_error(e),
    }
}

/// The claims about the signed-in person the access token's scope allows.
#[utoipa::path(get, path = "/oauth2/userinfo", tag = "openid provider",
    security(("bearer" = [])),
    responses((status = 200, description = "Claims"), (status = 401, description = "invalid_token")))]
async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    userinfo_answer(&state, &headers).await
}

/// As GET (OpenID Connect Core 5.3.1 allows both).
#[utoipa::path(post, path = "/oauth2/userinfo", tag = "openid provider",
    security(("bearer" = [])),
    responses((status = 200, description = "Claims"), (status = 401, description = "invalid_token")))]
async fn userinfo_post(State(state): State<AppState>, headers: HeaderMap) -> Response {
    userinfo_answer(&state, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("bad%2"), None);
        assert_eq!(form_decode("bad%zz"), None);
    }

    fn problems(toml: &str) -> Vec<String> {
        match Config::from_toml_str(toml) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.key).collect(),
        }
    }

    #[test]
    fn client_configs_are_checked() {
        let ok = "[vault]\nkeys = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n\
                  [clients.web]\nredirect_uris = [\"https://app.example/cb\"]\n";
        assert_eq!(problems(ok), Vec::<String>::new());
        let bad = "[oidc]\nsigning_alg = \"HS256\"\n\
                   [clients.\"we b\"]\nclient_secret = \"short\"\nredirect_uris = [\"http://app.example/cb\"]\n\
                   [clients.m]\ngrant_types = [\"client_credentials\"]\naccess_token_ttl_secs = 1\n\
                   [clients.n]\n";
        let p = problems(bad);
        for key in [
            "oidc.signing_alg",
            "clients.we b",
            "clients.we b.client_secret",
            "clients.we b.redirect_uris",
            "clients.m.grant_types",
            "clients.m.access_token_ttl_secs",
            "clients.n.redirect_uris",
        ] {
            assert!(p.iter().any(|k| k == key), "{key} in {p:?}");
        }
        let unknown = "[clients.web]\nredirect_uris = [\"https://a.example/cb\"]\nsecret = \"x\"\n";
        assert!(!problems(unknown).is_empty(), "unknown keys are refused");
    }
}
