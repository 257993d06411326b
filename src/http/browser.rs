//! Cookie sessions for a browser front end (seed 002, ConsultFlow):
//! `GET /auth/login` sends the browser to the provider, `GET /auth/callback`
//! signs it in with a session cookie and sends it to the front end,
//! `POST /auth/logout`, `GET /auth/me`, and `GET /auth/test-token` (the kept
//! provider token's summary and the provider's profile read with it).
//!
//! Errors are `{"error": "..."}`; sign-in failures are redirects to the
//! front end's error page with `?error=<error_type>`.
use axum::Json;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, ORIGIN, REFERER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use axum::Extension;

use super::extract::{CallbackParams, Client, cookie_value, cookie_values, set_cookie};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::secret::TokenFormat;
use crate::core::{
    Callback, CallbackError, Error, FlowStart, ProviderError, SessionCheck, Then, Timestamp,
    clock::rfc3339, return_path,
};

const SURFACE: &str = "browser";
/// Binds a flow to the browser that went to the provider.
const FLOW_COOKIE: &str = "authgate_auth_state";
const FLOW_COOKIE_PATH: &str = "/auth/callback";
/// The `kind` of the sessions this surface makes.
const SESSION_KIND: &str = "cookie";

/// This surface's settings, resolved from the config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub provider: String,
    /// The session cookie's full name (`connect.sid`, `__Host-...`).
    pub cookie: String,
    pub cookie_secure: bool,
    /// Cookie `Max-Age`: the sessions' absolute lifetime.
    pub cookie_max_age: i64,
    pub signup: bool,
    /// The front end (no trailing slash) and its origin.
    pub frontend: String,
    pub frontend_origin: String,
    /// Origins a cookie-authenticated POST may come from.
    pub trusted_origins: Vec<String>,
    pub success_path: String,
    pub error_path: String,
    /// `{public_url}/auth/callback`.
    pub redirect_uri: String,
}

impl Settings {
    pub fn new(cfg: &Config) -> Self {
        let b = &cfg.browser;
        let public = cfg.server.public_url();
        let frontend = cfg.server.frontend_url.clone().unwrap_or(public.clone());
        let frontend_origin = frontend.origin().ascii_serialization();
        let mut trusted_origins = vec![
            frontend_origin.clone(),
            public.origin().ascii_serialization(),
        ];
        trusted_origins.extend(cfg.server.allowed_origins(&cfg.oauth.languages));
        Settings {
            provider: b.provider_name().to_string(),
            cookie: b.cookie(public.scheme() == "https"),
            cookie_secure: public.scheme() == "https" || b.cookie_host_prefix == Some(true),
            cookie_max_age: cfg.session.absolute_timeout_secs,
            signup: b.signup,
            frontend: frontend.as_str().trim_end_matches('/').to_string(),
            frontend_origin,
            trusted_origins,
            success_path: b.success_path.clone(),
            error_path: b.error_path.clone(),
            redirect_uri: format!("{}/auth/callback", public.as_str().trim_end_matches('/')),
        }
    }

    fn session_cookie(&self, value: &str, max_age: i64) -> Option<HeaderValue> {
        set_cookie(&self.cookie, value, "/", Some(max_age), self.cookie_secure)
    }

    fn error_redirect(&self, error: &str, secure: bool) -> Response {
        let to = format!(
            "{}{}?error={}",
            self.frontend,
            self.error_path,
            super::extract::url_encode(error)
        );
        redirect(&to, &[clear_flow_cookie(secure)])
    }
}

fn clear_flow_cookie(secure: bool) -> Option<HeaderValue> {
    set_cookie(FLOW_COOKIE, "", FLOW_COOKIE_PATH, Some(0), secure)
}

fn redirect(to: &str, cookies: &[Option<HeaderValue>]) -> Response {
    let Ok(location) = HeaderValue::from_str(to) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(LOCATION, location);
    for c in cookies.iter().flatten() {
        r.headers_mut().append(SET_COOKIE, c.clone());
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Unauthorized")
}

pub const DECLARATION: Surface = Surface {
    tag: "browser",
    description: "Cookie sessions for a browser front end, with Microsoft sign-in and a token vault (ConsultFlow's /auth API)",
    enabled: |s| s.browser,
    router,
    errors: None,
    validate,
};

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(callback))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(test_token));
    with_settings(routes, Settings::new(cfg))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct LoginParams {
    /// Where to land after sign-in: a path on the front end (or a URL of
    /// its origin). Default `browser.success_path`.
    return_to: Option<String>,
}

/// Start a sign-in: 302 to the provider (state, PKCE S256, nonce), the
/// state bound to this browser by a short-lived cookie.
#[utoipa::path(get, path = "/auth/login", tag = "browser",
    params(LoginParams),
    responses(
        (status = 302, description = "To the provider's authorize URL; or to the front end's error page (`invalid_return_to`, `provider_unavailable`, `rate_limited`: too many sign-ins started from this address)"),
        (status = 404, description = "No provider is configured for this surface")))]
async fn login(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    query: Result<Query<LoginParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let secure = s.cookie_secure;
    if state.core.provider(&s.provider).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let return_to = match query {
        Ok(Query(LoginParams { return_to: None })) => None,
        Ok(Query(LoginParams { return_to: Some(r) })) => {
            match return_path(&s.frontend_origin, &r) {
                Some(p) => Some(p),
                None => return s.error_redirect("invalid_return_to", secure),
            }
        }
        Err(_) => return s.error_redirect("invalid_return_to", secure),
    };
    let started = state
        .core
        .start_flow(FlowStart {
            provider: s.provider.clone(),
            surface: SURFACE,
            redirect_uri: s.redirect_uri.clone(),
            redirect_to: return_to,
            ip: client.ip,
            ..FlowStart::default()
        })
        .await;
    match started {
        Ok(flow) => redirect(
            flow.authorize_url.as_str(),
            &[set_cookie(
                FLOW_COOKIE,
                &flow.state,
                FLOW_COOKIE_PATH,
                Some(crate::core::providers::FLOW_TTL_SECS),
                secure,
            )],
        ),
        Err(Error::RateLimited { .. }) => s.error_redirect("rate_limited", secure),
        Err(e) => {
            tracing::warn!(error = %e, "browser login: cannot start a flow");
            s.error_redirect("provider_unavailable", secure)
        }
    }
}

/// The provider sends the browser here. Success: a new session cookie and
/// 302 to `{frontend_url}/dashboard` (or the flow's return path); failure:
/// 302 to `{frontend_url}/login?error=<error_type>`.
#[utoipa::path(get, path = "/auth/callback", tag = "browser",
    params(CallbackParams),
    responses((status = 302, description = "To the front end: the dashboard, or the login page with `?error=`")))]
async fn callback(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let core = &state.core;
    let secure = s.cookie_secure;
    let Ok(Query(params)) = query else {
        return s.error_redirect("invalid_request", secure);
    };
    let flow_cookie = cookie_value(&headers, FLOW_COOKIE);
    let replacing = cookie_values(&headers, &s.cookie);
    let finished = core
        .finish_callback(
            &Callback {
                provider: &s.provider,
                surface: SURFACE,
                redirect_uri: &s.redirect_uri,
                signup: s.signup,
                then: Then::SignIn {
                    kind: SESSION_KIND,
                    format: TokenFormat::UrlSafe32,
                    replacing: &replacing,
                    second_step: false,
                },
                ..params.callback(flow_cookie.as_deref())
            },
            &client,
        )
        .await;
    let error_type = match &finished {
        Ok(f) => match &f.session {
            Some((token, _)) => {
                let to = format!("{}{}", s.frontend, f.landing(&s.success_path));
                let cookies = [
                    s.session_cookie(token, s.cookie_max_age),
                    clear_flow_cookie(secure),
                ];
                return redirect(&to, &cookies);
            }
            None => "server_error",
        },
        Err(CallbackError::ProviderError { error, .. }) => error.as_str(),
        Err(CallbackError::InvalidState) => "invalid_state",
        Err(CallbackError::NoCode(_)) => "no_code",
        Err(CallbackError::Failed { error, .. }) => match error {
            Error::Provider(ProviderError::Unavailable(_)) => "provider_unavailable",
            Error::Provider(_) => "auth_failed",
            Error::Disabled => "account_disabled",
            Error::NotFound => "not_registered",
            e => {
                tracing::error!(error = %e, "browser callback: cannot finish the sign-in");
                "server_error"
            }
        },
    };
    s.error_redirect(error_type, secure)
}

/// The session behind the request's cookie, or the response to send.
async fn session(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
) -> Result<(String, SessionCheck), Response> {
    // Two cookies of this name (one tossed in by a sibling site) are
    // ambiguous: neither is believed.
    let mut tokens = cookie_values(headers, &s.cookie);
    if tokens.len() != 1 {
        return Err(unauthorized());
    }
    let token = tokens.remove(0);
    match state.core.check_session(&token).await {
        Ok(Some(check)) => Ok((token, check)),
        Ok(None) => Err(unauthorized()),
        Err(e) => {
            tracing::error!(error = %e, "browser: session check failed");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ))
        }
    }
}

/// A cookie-authenticated POST must come from a trusted origin: `Origin`,
/// else `Referer`, must name the front end, authgate itself or an allowed
/// origin. Neither header: refused (browsers send `Origin` on every POST).
fn same_origin(s: &Settings, headers: &HeaderMap) -> bool {
    let origin = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| Url::parse(r).ok())
                .map(|u| u.origin().ascii_serialization())
        });
    origin.is_some_and(|o| s.trusted_origins.contains(&o))
}

#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    success: bool,
}

/// End the session: server-side, and the cookie is cleared.
#[utoipa::path(post, path = "/auth/logout", tag = "browser",
    responses(
        (status = 200, description = "Signed out (also when there was no session)", body = LogoutResponse),
        (status = 403, description = "`{\"error\": \"Forbidden\"}`: not from the front end's origin"),
        (status = 500, description = "`{\"error\": \"Logout failed\"}`")))]
async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&s, &headers) {
        return error(StatusCode::FORBIDDEN, "Forbidden");
    }
    // Every session cookie the browser sent ends (a tossed duplicate too).
    for token in cookie_values(&headers, &s.cookie) {
        if let Err(e) = state.core.revoke_session_token(&token, &client).await {
            tracing::error!(error = %e, "logout failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Logout failed");
        }
    }
    let mut r = Json(LogoutResponse { success: true }).into_response();
    if let Some(c) = s.session_cookie("", 0) {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

/// A timestamp as JavaScript's `toISOString()` writes it.
fn iso(t: Timestamp) -> String {
    let s = rfc3339(t);
    match s.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.000Z"),
        _ => s,
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    #[serde(rename = "_id")]
    id: String,
    /// The Microsoft account's object id (the provider's subject).
    microsoft_id: Option<String>,
    email: Option<String>,
    name: Option<String>,
    created_at: String,
    updated_at: String,
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", tag = "browser",
    responses(
        (status = 200, description = "The user", body = MeResponse),
        (status = 401, description = "`{\"error\": \"Unauthorized\"}`")))]
async fn me(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
) -> Response {
    let (_, check) = match session(&state, &s, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user = check.user;
    let identity = match state.core.user_identities(user.id).await {
        Ok(mut list) => {
            list.retain(|i| i.provider == s.provider);
            list.into_iter().max_by_key(|i| i.last_used_at)
        }
        Err(e) => {
            tracing::error!(error = %e, "browser: cannot read identities");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    Json(MeResponse {
        id: user.id.to_string(),
        microsoft_id: identity.map(|i| i.subject),
        email: user.email.map(|e| e.as_str().to_string()),
        name: user.display_name,
        created_at: iso(user.created_at),
        updated_at: iso(user.updated_at),
    })
    .into_response()
}

/// The claims of a JWT access token, unverified (a summary for display;
/// nothing is decided on them). `None` for an opaque token.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Value {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .map(|t| Value::String(iso(t)))
        .unwrap_or(Value::Null)
}

/// Test the kept provider token: its claims, its expiry, and the provider's
/// profile (Microsoft Graph `/me`) read with it. An expired token is
/// refreshed first; when that fails the session ends.
#[utoipa::path(get, path = "/auth/test-token", tag = "browser",
    responses(
        (status = 200, description = "`{success, message, user, tokenClaims, graphProfile}`"),
        (status = 401, description = "`{\"error\": \"Unauthorized\"}`, `{\"error\": \"User access token not found\"}` or `{\"error\": \"Session expired\"}`"),
        (status = 500, description = "`{\"success\": false, \"error\": \"Token test failed\", \"message\"}`")))]
async fn test_token(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
) -> Response {
    let (token, check) = match session(&state, &s, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let core = &state.core;
    let user = check.user;
    let read = core
        .session_provider_profile(&token, user.id, &s.provider, &client)
        .await;
    let (access, profile) = match read {
        Ok(Some(v)) => v,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "User access token not found"),
        // The provider no longer honours this sign-in, or answers for
        // someone else: the core ended the session; the cookie goes too.
        Err(Error::Unauthorized) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "Session expired");
            if let Some(c) = s.session_cookie("", 0) {
                r.headers_mut().insert(SET_COOKIE, c);
            }
            return r;
        }
        // The provider is not configured (any more).
        Err(Error::Invalid { .. }) => return error(StatusCode::NOT_FOUND, "Not Found"),
        Err(Error::Provider(e)) => {
            tracing::info!(error = %e, "test-token: the provider refused the token");
            return test_failed(&e.to_string());
        }
        Err(e) => return test_failed(&e.to_string()),
    };
    let now = core.now();
    let claims = unverified_claims(&access.token);
    let token_claims = match &claims {
        Some(c) => json!({
            "scp": c.get("scp").cloned().unwrap_or(Value::Null),
            "aud": c.get("aud").cloned().unwrap_or(Value::Null),
            "exp": time_claim(c, "exp"),
            "iss": c.get("iss").cloned().unwrap_or(Value::Null),
            "iat": time_claim(c, "iat"),
        }),
        // An opaque token: what the token endpoint said about it.
        None => json!({
            "scp": access.scope,
            "aud": Value::Null,
            "exp": access.expires_at.map(iso),
            "iss": Value::Null,
            "iat": Value::Null,
        }),
    };
    let field = |k: &str| profile.get(k).cloned().unwrap_or(Value::Null);
    Json(json!({
        "success": true,
        "message": "Token is valid",
        "user": {
            "id": user.id.to_string(),
            "email": user.email.as_ref().map(|e| e.as_str()),
            "name": user.display_name,
            "tokenExpiresAt": access.expires_at.map(iso),
            "tokenIsExpired": access.expires_at.is_some_and(|e| e <= now),
            "tokenLength": access.token.len(),
        },
        "tokenClaims": token_claims,
        "graphProfile": {
            "id": field("id"),
            "displayName": field("displayName"),
            "mail": field("mail"),
            "userPrincipalName": field("userPrincipalName"),
        }
    }))
    .into_response()
}

fn test_failed(message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "success": false, "error": "Token test failed", "message": message })),
    )
        .into_response()
}

/// The cookie-session surface (seed 002, ConsultFlow): `/auth/login`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    /// The provider `/auth/login` signs in with. Unset: `microsoft` when it
    /// is configured; otherwise the surface answers 404.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The session cookie's name.
    pub cookie_name: String,
    /// Prefix the name with `__Host-` (Secure, Path=/, no Domain: the
    /// browser refuses it from anyone but this host). Needs https. Unset:
    /// on whenever `server.public_url` is https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_host_prefix: Option<bool>,
    /// Create a user at first sign-in (the original did).
    pub signup: bool,
    /// Where a signed-in browser lands, on the front end.
    pub success_path: String,
    /// Where a failed sign-in lands (`?error=<error_type>` is added).
    pub error_path: String,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            provider: None,
            cookie_name: "connect.sid".into(),
            cookie_host_prefix: None,
            signup: true,
            success_path: "/dashboard".into(),
            error_path: "/login".into(),
        }
    }
}

impl BrowserConfig {
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or("microsoft")
    }

    /// Whether the cookie is `__Host-` prefixed (by default on https).
    pub fn host_prefix(&self, https: bool) -> bool {
        self.cookie_host_prefix.unwrap_or(https)
    }

    /// The cookie's full name.
    pub fn cookie(&self, https: bool) -> String {
        if self.host_prefix(https) {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        }
    }
}

/// Checks of this surface's config section (`config check`, start).
fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let b = &cfg.browser;
    if let Some(p) = b.provider.as_ref().filter(|_| cfg.surfaces.browser)
        && !cfg.providers.contains_key(p)
    {
        errors.push(err(
            "browser.provider",
            format!("{p:?} is not a configured provider"),
        ));
    }
    super::extract::check_cookie_keys(cfg, "browser", &b.cookie_name, b.cookie_host_prefix, errors);
    for (key, path) in [
        ("browser.success_path", &b.success_path),
        ("browser.error_path", &b.error_path),
    ] {
        if !path.starts_with('/') || path.starts_with("//") || path.contains(['?', '#', '\\']) {
            errors.push(err(
                key,
                "must be a path on the front end, such as /dashboard",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_the_front_end() {
        let mut cfg = Config::default();
        cfg.server.frontend_url = Some("https://app.example.com".parse().unwrap());
        let s = Settings::new(&cfg);
        assert_eq!(
            return_path(&s.frontend_origin, "/reports?x=1").as_deref(),
            Some("/reports?x=1")
        );
        assert_eq!(
            return_path(&s.frontend_origin, "https://app.example.com/a/b?c").as_deref(),
            Some("/a/b?c")
        );
        for bad in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "http://app.example.com/",
            "javascript:alert(1)",
            "reports",
        ] {
            assert_eq!(return_path(&s.frontend_origin, bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_look_like_javascript_ones() {
        assert_eq!(iso(1_734_688_800), "2024-12-20T10:00:00.000Z");
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert!(unverified_claims("opaque-token").is_none());
        let jwt = format!(
            "h.{}.s",
            URL_SAFE_NO_PAD.encode(br#"{"scp":"User.Read","exp":1}"#)
        );
        assert_eq!(unverified_claims(&jwt).unwrap()["scp"], "User.Read");
    }
}
